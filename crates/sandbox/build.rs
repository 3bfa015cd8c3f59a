//! Builds the Lua guest component (`guest-lua/`) for wasm32-wasip2 with a
//! nested cargo and embeds it: `cargo build` at the root is all it takes.
//! Needs what `scripts/setup.sh` installs (the wasm32-wasip2 target and the
//! zig toolchain under `build/`).
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest
        .join("../..")
        .canonicalize()
        .expect("workspace root");
    let guest = root.join("guest-lua");
    for path in [
        "src",
        "rt",
        "build.rs",
        "Cargo.toml",
        "Cargo.lock",
        ".cargo/config.toml",
        "toolchain",
    ] {
        println!("cargo:rerun-if-changed={}", guest.join(path).display());
    }
    println!("cargo:rerun-if-changed={}", root.join("wit").display());

    let zig = root.join("build/zig-venv/bin/python");
    if !zig.exists() {
        panic!(
            "the guest toolchain is missing ({} not found): run `scripts/setup.sh` once",
            zig.display()
        );
    }
    let target_dir = root.join("target/guest");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&guest)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    // The outer build's settings must not leak into the guest build.
    for (key, _) in std::env::vars() {
        if (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || matches!(
                key.as_str(),
                "RUSTFLAGS"
                    | "TARGET"
                    | "RUSTC"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "RUSTDOC"
            )
        {
            cmd.env_remove(key);
        }
    }
    let status = cmd.status().expect("running cargo for guest-lua");
    if !status.success() {
        panic!("building guest-lua failed (see above); is `scripts/setup.sh` done?");
    }
    let built = target_dir.join("wasm32-wasip2/release/kemibox_guest_lua.wasm");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("guest.wasm");
    copy_if_changed(&built, &out);
}

fn copy_if_changed(from: &Path, to: &Path) {
    let new = std::fs::read(from).unwrap_or_else(|e| panic!("reading {}: {e}", from.display()));
    if std::fs::read(to).ok().as_deref() != Some(&new[..]) {
        std::fs::write(to, new).unwrap_or_else(|e| panic!("writing {}: {e}", to.display()));
    }
}

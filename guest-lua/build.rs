//! Builds the setjmp/longjmp runtime Lua needs in wasm (see rt/setjmp.c) and
//! an empty `libwasi-emulated-signal.a`: lua-src asks the linker for it, but
//! Lua never calls signal().
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=rt/setjmp.c");
    println!("cargo:rerun-if-changed=rt/tag.S");
    cc::Build::new()
        .file("rt/setjmp.c")
        .file("rt/tag.S")
        .flag("-mexception-handling")
        .opt_level(2)
        .compile("setjmp");

    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let lib = out.join("libwasi-emulated-signal.a");
    if !lib.exists() {
        let ar = std::env::var("AR_wasm32_wasip2").unwrap_or_else(|_| "ar".into());
        let status = Command::new(&ar)
            .arg("rcs")
            .arg(&lib)
            .status()
            .unwrap_or_else(|e| panic!("running {ar}: {e}"));
        assert!(status.success(), "{ar} failed to create {}", lib.display());
    }
    println!("cargo:rustc-link-search=native={}", out.display());
}

//! The precompiled guest on disk, keyed by the hash of the component and
//! of the engine settings, so start-up deserializes (about 1 ms) instead of
//! compiling (about 300 ms).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where the precompiled artifact goes when none is configured:
/// `$KEMIBOX_CACHE_DIR`, else `$XDG_CACHE_HOME/kemibox`, else `~/.cache/kemibox`.
pub fn default_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("KEMIBOX_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(dir).join("kemibox"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kemibox"))
}

fn artifact_path(dir: &Path, engine: &Engine, wasm: &[u8]) -> PathBuf {
    let mut hash = Sha256::new();
    hash.update(wasm);
    std::hash::Hash::hash(
        &engine.precompile_compatibility_hash(),
        &mut HashWriter(&mut hash),
    );
    let digest = hash.finalize();
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    dir.join(format!("guest-{hex}.cwasm"))
}

/// Feeds `std::hash::Hash` output into the digest.
struct HashWriter<'a>(&'a mut Sha256);

impl std::hash::Hasher for HashWriter<'_> {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Load the component from the cache, or compile it and store it there.
/// Cache problems are logged and never fatal.
pub fn load_component(
    engine: &Engine,
    wasm: &[u8],
    dir: Option<&Path>,
) -> wasmtime::Result<Component> {
    let Some(dir) = dir else {
        return Component::new(engine, wasm);
    };
    let path = artifact_path(dir, engine, wasm);
    if path.exists() {
        // SAFETY: the file is one this code wrote, named by the hash of the
        // component and of the engine configuration it was compiled with.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => {
                tracing::debug!(path = %path.display(), "guest component loaded from cache");
                return Ok(c);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unusable cached component")
            }
        }
    }
    let started = std::time::Instant::now();
    tracing::info!("compiling the guest component (once; cached afterwards)");
    let component = Component::new(engine, wasm)?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "guest component compiled"
    );
    if let Err(e) = store(&path, &component) {
        tracing::warn!(path = %path.display(), error = %e, "could not cache the compiled component");
    }
    Ok(component)
}

fn store(path: &Path, component: &Component) -> wasmtime::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, component.serialize()?)?;
    std::fs::rename(&tmp, path)?;
    // Artifacts of other guest builds or engine versions are dead weight.
    for entry in std::fs::read_dir(dir)?.flatten() {
        let other = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if other != path && name.starts_with("guest-") && name.ends_with(".cwasm") {
            let _ = std::fs::remove_file(other);
        }
    }
    Ok(())
}

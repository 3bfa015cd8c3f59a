//! The precompiled guest on disk, keyed by the hash of the component and
//! of the engine settings, so start-up deserializes (about 1 ms) instead of
//! compiling (about 300 ms).
//!
//! Deserializing an artifact runs it as native code, so the cache trusts no
//! file it cannot prove this user's kemibox wrote:
//! - the directory must be a real directory (not a symbolic link) owned by
//!   the effective user, and private: it is created with mode 0700. One we
//!   own that only lets group or others *read* (what an older kemibox or a
//!   0022 umask made) is tightened to 0700 with a log line: nobody else could
//!   have written in it, and the fix is ours to make. One that group or
//!   others may *write* (or that has the sticky bit, like /tmp) is refused:
//!   it is a shared directory, changing its mode could break its other
//!   users, and anyone could have put files in it. A refused directory means
//!   the component is compiled in memory and the start goes on;
//! - every artifact carries an HMAC-SHA256 tag under a random key that lives
//!   in the directory (`artifact.key`, mode 0600, owned by this user; a key
//!   file that is not is discarded and a new one made). The file is read
//!   once into memory, its tag checked over all of those bytes, and only
//!   those bytes are deserialized, so it cannot be swapped between check and
//!   use. A file that does not verify is deleted and the component
//!   recompiled, with a warning naming it;
//! - writes go to a fresh 0600 temporary file renamed into place. No fsync:
//!   a torn file after a crash simply fails its tag and is recompiled.
//!
//! Files are opened by path below the checked directory; the tag, not the
//! path, is what makes a file trusted, so a directory swapped after the
//! checks still yields nothing that verifies.

use std::fs::{self, OpenOptions, Permissions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

type HmacSha256 = Hmac<Sha256>;

/// The key's file name inside the cache directory.
const KEY_FILE: &str = "artifact.key";
const KEY_LEN: usize = 32;
/// An artifact file starts with this, then the tag, then wasmtime's bytes.
const MAGIC: &[u8; 16] = b"kemibox-cwasm-1\n";
const TAG_LEN: usize = 32;
const HEADER_LEN: usize = MAGIC.len() + TAG_LEN;
/// Mode bits that make a directory shared rather than private: group or
/// other write, and the sticky bit.
const SHARED_BITS: u32 = 0o1022;

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

/// Load the component from the cache, or compile it and store it there.
/// Cache problems are logged and never fatal: without a usable cache the
/// component is compiled in memory.
pub fn load_component(
    engine: &Engine,
    wasm: &[u8],
    dir: Option<&Path>,
) -> wasmtime::Result<Component> {
    let cache = dir.and_then(|dir| match Cache::open(dir) {
        Ok(cache) => Some(cache),
        Err(e) => {
            tracing::warn!(
                dir = %dir.display(),
                "component cache not used, compiling in memory: {e:#}"
            );
            None
        }
    });
    let id = ArtifactId::new(engine, wasm);
    if let Some(cache) = &cache
        && let Some(artifact) = cache.read_verified(&id)
    {
        let path = cache.dir.join(id.file_name());
        // SAFETY: deserializing runs these bytes as native code. They are
        // exactly the bytes whose HMAC was just checked, under a key only
        // this user can read, bound to this component and engine: this code
        // serialized them (`Cache::store`). They sit in memory, so the file
        // can no longer change under us.
        #[allow(unsafe_code, reason = "loading a cached compiled component")]
        let loaded = unsafe { Component::deserialize(engine, &artifact) };
        match loaded {
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
    tracing::info!(
        cached_afterwards = cache.is_some(),
        "compiling the guest component"
    );
    let component = Component::new(engine, wasm)?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "guest component compiled"
    );
    if let Some(cache) = &cache {
        let stored = component
            .serialize()
            .map_err(anyhow::Error::from)
            .and_then(|bytes| cache.store(&id, &bytes));
        if let Err(e) = stored {
            tracing::warn!(
                dir = %cache.dir.display(),
                "could not cache the compiled component: {e:#}"
            );
        }
    }
    Ok(component)
}

/// What an artifact was compiled from: the component and the engine
/// settings. Names the file and is covered by the tag, so a genuine
/// artifact of another build cannot pass for this one's.
struct ArtifactId {
    digest: [u8; 32],
}

impl ArtifactId {
    fn new(engine: &Engine, wasm: &[u8]) -> ArtifactId {
        let mut hash = Sha256::new();
        hash.update(wasm);
        std::hash::Hash::hash(
            &engine.precompile_compatibility_hash(),
            &mut HashWriter(&mut hash),
        );
        ArtifactId {
            digest: hash.finalize().into(),
        }
    }

    fn file_name(&self) -> String {
        let hex: String = self.digest[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("guest-{hex}.cwasm")
    }
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

/// A checked, private cache directory and its key.
struct Cache {
    dir: PathBuf,
    key: [u8; KEY_LEN],
}

impl Cache {
    /// Create or check `dir` (see the module doc) and load or make its key.
    /// An error says which directory, why it is refused and the fix.
    fn open(dir: &Path) -> anyhow::Result<Cache> {
        private_dir(dir)?;
        let key = load_or_create_key(dir)?;
        Ok(Cache {
            dir: dir.to_owned(),
            key,
        })
    }

    fn tag(&self, id: &ArtifactId, artifact: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(MAGIC);
        mac.update(&id.digest);
        mac.update(artifact);
        mac
    }

    /// The artifact for `id`, if there is one and its tag verifies. One that
    /// does not is deleted, with a warning naming it.
    fn read_verified(&self, id: &ArtifactId) -> Option<Vec<u8>> {
        let path = self.dir.join(id.file_name());
        let verified = read_private(&path).and_then(|bytes| {
            let Some(mut bytes) = bytes else {
                return Ok(None);
            };
            if bytes.len() < HEADER_LEN || &bytes[..MAGIC.len()] != MAGIC {
                bail!("not a kemibox artifact (no header)");
            }
            self.tag(id, &bytes[HEADER_LEN..])
                .verify_slice(&bytes[MAGIC.len()..HEADER_LEN])
                .map_err(|_| {
                    anyhow::anyhow!("its tag does not match its contents under this cache's key")
                })?;
            bytes.drain(..HEADER_LEN);
            Ok(Some(bytes))
        });
        match verified {
            Ok(artifact) => artifact,
            Err(e) => {
                tracing::warn!(
                    path = %path.display(),
                    "cached component did not verify, deleting it and recompiling: {e:#}"
                );
                if let Err(e) = fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "could not delete the unverified cache file");
                }
                None
            }
        }
    }

    /// Store `artifact` for `id` with its tag (atomically: a 0600 temporary
    /// file renamed into place), then delete the artifacts of other guest
    /// builds or engine versions, which are dead weight.
    fn store(&self, id: &ArtifactId, artifact: &[u8]) -> anyhow::Result<()> {
        let name = id.file_name();
        let path = self.dir.join(&name);
        let tag = self.tag(id, artifact).finalize().into_bytes();
        let tmp = write_temp(&self.dir, &name, &[MAGIC, &tag, artifact])?;
        if let Err(e) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("renaming into {}", path.display()));
        }
        for entry in fs::read_dir(&self.dir)?.flatten() {
            let other = entry.file_name();
            let other = other.to_string_lossy();
            if other != name && other.starts_with("guest-") && other.ends_with(".cwasm") {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(())
    }
}

#[allow(unsafe_code, reason = "std has no safe geteuid")]
fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Make sure `dir` is a private directory of this user: create it 0700 if
/// missing, refuse a symbolic link, another user's directory or a shared
/// one, and tighten one that is only readable by others.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    let shown = dir.display();
    match fs::symlink_metadata(dir) {
        Ok(meta) if meta.file_type().is_symlink() => bail!(
            "cache directory {shown} is a symbolic link, and the cache must be a directory \
             that cannot be redirected elsewhere; fix: replace the link with a real directory \
             (`mkdir -m 700`), or set KEMIBOX_CACHE_DIR to one"
        ),
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            match fs::DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => tracing::debug!(dir = %shown, "cache directory created (mode 700)"),
                // Another kemibox starting at the same time: check theirs.
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).with_context(|| format!("creating {shown}")),
            }
        }
        Err(e) => return Err(e).with_context(|| format!("reading {shown}")),
    }
    // Check and fix the directory through one open handle, not its path, so
    // what is checked is what is changed. O_NOFOLLOW also catches a link
    // put there since the check above.
    let handle = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
        .with_context(|| {
            format!("opening cache directory {shown} (not a directory, or a link?)")
        })?;
    let meta = handle
        .metadata()
        .with_context(|| format!("reading {shown}"))?;
    let me = euid();
    if meta.uid() != me {
        bail!(
            "cache directory {shown} is owned by uid {}, not by this user (uid {me}), and \
             whoever owns it could put code there that kemibox would run; fix: `chown {me} {shown}` \
             and `chmod 700 {shown}`, or set KEMIBOX_CACHE_DIR to a directory of your own",
            meta.uid()
        );
    }
    let mode = meta.mode() & 0o7777;
    if mode & SHARED_BITS != 0 {
        bail!(
            "cache directory {shown} has mode {mode:o}: group or others may write in it, so it \
             is not private to this user; fix: `chmod 700 {shown}`, or set KEMIBOX_CACHE_DIR \
             to a private directory"
        );
    }
    if mode & 0o077 != 0 {
        handle
            .set_permissions(Permissions::from_mode(0o700))
            .with_context(|| format!("making {shown} private (chmod 700)"))?;
        tracing::info!(dir = %shown, old_mode = %format!("{mode:o}"), "cache directory made private (mode 700)");
    }
    Ok(())
}

/// The key of the cache in `dir`, made if there is none. A key file that
/// is not a regular file of this user's that only it can read is discarded
/// (with a warning) for a new one: another could know that key.
fn load_or_create_key(dir: &Path) -> anyhow::Result<[u8; KEY_LEN]> {
    let path = dir.join(KEY_FILE);
    match read_private(&path) {
        Ok(Some(bytes)) if bytes.len() == KEY_LEN => {
            return Ok(bytes.try_into().expect("length checked"));
        }
        Ok(None) => {}
        Ok(Some(bytes)) => discard_key(&path, &format!("{} bytes, not {KEY_LEN}", bytes.len())),
        Err(e) => discard_key(&path, &format!("{e:#}")),
    }
    let mut key = [0; KEY_LEN];
    getrandom::fill(&mut key).context("getting random bytes for the cache key")?;
    // Write it whole under a temporary name, then link it into place: a
    // kemibox starting at the same time either wins the link, and this one
    // uses its key, or sees no key yet; never a half-written one.
    let tmp = write_temp(dir, KEY_FILE, &[&key])?;
    let linked = fs::hard_link(&tmp, &path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            tracing::debug!(path = %path.display(), "cache key created");
            Ok(key)
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => match read_private(&path)? {
            Some(bytes) if bytes.len() == KEY_LEN => Ok(bytes.try_into().expect("length checked")),
            _ => bail!("{} was replaced while being created", path.display()),
        },
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

fn discard_key(path: &Path, why: &str) {
    tracing::warn!(
        path = %path.display(),
        "discarding the cache key ({why}); a new one is made and cached components recompiled"
    );
    if let Err(e) = fs::remove_file(path) {
        tracing::warn!(path = %path.display(), error = %e, "could not delete the cache key");
    }
}

/// The whole of `path`, or `None` if there is no such file. Refused unless
/// it is a regular file (not followed through a link) owned by this user
/// with no group or other permissions.
fn read_private(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context("cannot open it (a symbolic link?)"),
    };
    let meta = file.metadata().context("reading its metadata")?;
    if !meta.is_file() {
        bail!("not a regular file");
    }
    if meta.uid() != euid() {
        bail!("owned by uid {}, not by this user", meta.uid());
    }
    if meta.mode() & 0o077 != 0 {
        bail!(
            "mode {:o}: group or others may use it",
            meta.mode() & 0o7777
        );
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes).context("reading it")?;
    Ok(Some(bytes))
}

/// A new file in `dir` (mode 0600, never an existing one) holding `parts`,
/// named after `name` with a random suffix; its path.
fn write_temp(dir: &Path, name: &str, parts: &[&[u8]]) -> anyhow::Result<PathBuf> {
    let suffix = getrandom::u64().context("getting random bytes for a file name")?;
    let path = dir.join(format!(".{name}.{}-{suffix:016x}.tmp", std::process::id()));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    if let Err(e) = parts.iter().try_for_each(|part| file.write_all(part)) {
        let _ = fs::remove_file(&path);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temporary one, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let path = std::env::temp_dir()
                .join(format!("kemibox-cache-unit-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            Scratch(path)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    fn id(n: u8) -> ArtifactId {
        ArtifactId { digest: [n; 32] }
    }

    /// Put `bytes` at `path` as a private file of ours, so that only its
    /// contents can make it fail.
    fn plant(path: &Path, bytes: &[u8]) {
        let _ = fs::remove_file(path);
        fs::write(path, bytes).unwrap();
        fs::set_permissions(path, Permissions::from_mode(0o600)).unwrap();
    }

    const ARTIFACT: &[u8] = b"stands for wasmtime's serialized component";

    #[test]
    fn a_new_directory_is_private_and_files_are_0600() {
        let scratch = Scratch::new("new");
        let dir = scratch.0.join("nested/kemibox");
        let cache = Cache::open(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let key = dir.join(KEY_FILE);
        assert_eq!(mode(&key), 0o600);
        assert_eq!(fs::read(&key).unwrap(), cache.key);

        cache.store(&id(1), ARTIFACT).unwrap();
        let path = dir.join(id(1).file_name());
        assert_eq!(mode(&path), 0o600);
        assert_eq!(cache.read_verified(&id(1)).unwrap(), ARTIFACT);
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "no temporary file left behind: {names:?}");

        // Reopening keeps the key, so the artifact still verifies.
        let again = Cache::open(&dir).unwrap();
        assert_eq!(again.key, cache.key);
        assert_eq!(again.read_verified(&id(1)).unwrap(), ARTIFACT);
    }

    #[test]
    fn a_modified_artifact_is_deleted_never_returned() {
        let scratch = Scratch::new("modified");
        let cache = Cache::open(&scratch.0).unwrap();
        let path = scratch.0.join(id(1).file_name());
        // A byte of the magic, of the tag, of the artifact, the last one.
        let len = HEADER_LEN + ARTIFACT.len();
        for at in [0, MAGIC.len() + 3, HEADER_LEN + 7, len - 1] {
            cache.store(&id(1), ARTIFACT).unwrap();
            let mut bytes = fs::read(&path).unwrap();
            bytes[at] ^= 0x01;
            plant(&path, &bytes);
            assert_eq!(cache.read_verified(&id(1)), None, "byte {at} flipped");
            assert!(!path.exists(), "byte {at} flipped: the file is deleted");
        }
        // Truncated, and one byte appended.
        cache.store(&id(1), ARTIFACT).unwrap();
        let bytes = fs::read(&path).unwrap();
        plant(&path, &bytes[..len - 1]);
        assert_eq!(cache.read_verified(&id(1)), None);
        plant(&path, &[&bytes[..], b"x"].concat());
        assert_eq!(cache.read_verified(&id(1)), None);
        assert!(!path.exists());
    }

    #[test]
    fn a_substituted_artifact_is_refused() {
        let scratch = Scratch::new("substituted");
        let ours = Cache::open(&scratch.0.join("ours")).unwrap();
        let theirs = Cache::open(&scratch.0.join("theirs")).unwrap();
        let path = ours.dir.join(id(1).file_name());
        ours.store(&id(1), ARTIFACT).unwrap();
        let genuine = fs::read(&path).unwrap();

        // Other contents behind the stale tag of the genuine file.
        let stale = [&genuine[..HEADER_LEN], b"other native code"].concat();
        plant(&path, &stale);
        assert_eq!(ours.read_verified(&id(1)), None);

        // A genuine artifact of another cache (another key).
        theirs.store(&id(1), ARTIFACT).unwrap();
        plant(
            &path,
            &fs::read(theirs.dir.join(id(1).file_name())).unwrap(),
        );
        assert_eq!(ours.read_verified(&id(1)), None);

        // Our own genuine artifact of another build, renamed.
        ours.store(&id(2), ARTIFACT).unwrap();
        fs::rename(ours.dir.join(id(2).file_name()), &path).unwrap();
        assert_eq!(ours.read_verified(&id(1)), None);

        // A bare artifact, as earlier versions wrote them.
        plant(&path, ARTIFACT);
        assert_eq!(ours.read_verified(&id(1)), None);

        // The genuine one, but readable by others or through a link.
        plant(&path, &genuine);
        assert_eq!(
            ours.read_verified(&id(1)).unwrap(),
            ARTIFACT,
            "the genuine one verifies"
        );
        plant(&path, &genuine);
        fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        assert_eq!(ours.read_verified(&id(1)), None);
        let elsewhere = scratch.0.join("elsewhere");
        plant(&elsewhere, &genuine);
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        assert_eq!(ours.read_verified(&id(1)), None);
        assert!(fs::symlink_metadata(&path).is_err(), "the link is deleted");

        // After all that, a fresh store verifies again.
        ours.store(&id(1), ARTIFACT).unwrap();
        assert_eq!(ours.read_verified(&id(1)).unwrap(), ARTIFACT);
    }

    #[test]
    fn a_symlinked_directory_is_refused() {
        let scratch = Scratch::new("symlink");
        let target = scratch.0.join("target");
        fs::create_dir(&target).unwrap();
        fs::set_permissions(&target, Permissions::from_mode(0o700)).unwrap();
        let link = scratch.0.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let error = format!("{:#}", Cache::open(&link).err().unwrap());
        assert!(error.contains(&link.display().to_string()), "{error}");
        assert!(error.contains("symbolic link"), "{error}");
        assert!(error.contains("KEMIBOX_CACHE_DIR"), "{error}");
        assert!(
            !target.join(KEY_FILE).exists(),
            "nothing written through it"
        );
    }

    #[test]
    fn another_users_directory_is_refused() {
        if euid() != 0 {
            eprintln!("skipped: giving a directory to another user needs root");
            return;
        }
        let scratch = Scratch::new("owner");
        let dir = scratch.0.join("kemibox");
        fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        let error = format!("{:#}", Cache::open(&dir).err().unwrap());
        assert!(error.contains(&dir.display().to_string()), "{error}");
        assert!(error.contains("owned by uid 65534"), "{error}");
        assert!(error.contains("chown 0"), "{error}");
        assert!(!dir.join(KEY_FILE).exists(), "nothing written in it");
    }

    #[test]
    fn a_shared_directory_is_refused_and_a_readable_one_tightened() {
        let scratch = Scratch::new("modes");
        let dir = scratch.0.join("kemibox");
        fs::create_dir(&dir).unwrap();
        for shared in [0o770, 0o702, 0o1777] {
            fs::set_permissions(&dir, Permissions::from_mode(shared)).unwrap();
            let error = format!("{:#}", Cache::open(&dir).err().unwrap());
            assert!(error.contains(&format!("mode {shared:o}")), "{error}");
            assert!(error.contains("chmod 700"), "{error}");
            assert_eq!(mode(&dir), shared, "left as it was");
            assert!(!dir.join(KEY_FILE).exists());
        }
        fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        Cache::open(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn an_exposed_or_foreign_key_is_replaced() {
        let scratch = Scratch::new("key");
        let dir = scratch.0.join("kemibox");
        let key = dir.join(KEY_FILE);
        let first = Cache::open(&dir).unwrap();
        first.store(&id(1), ARTIFACT).unwrap();

        // Readable by others: whoever read it could forge tags.
        fs::set_permissions(&key, Permissions::from_mode(0o644)).unwrap();
        let second = Cache::open(&dir).unwrap();
        assert_ne!(second.key, first.key);
        assert_eq!(mode(&key), 0o600);
        assert_eq!(second.read_verified(&id(1)), None, "old tags are void");

        // A link to a key elsewhere.
        let elsewhere = scratch.0.join("planted.key");
        plant(&elsewhere, &[7; KEY_LEN]);
        fs::remove_file(&key).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &key).unwrap();
        let third = Cache::open(&dir).unwrap();
        assert_ne!(third.key, [7; KEY_LEN]);
        assert!(fs::symlink_metadata(&key).unwrap().is_file());

        // Of the wrong length.
        plant(&key, &[7; 8]);
        let fourth = Cache::open(&dir).unwrap();
        assert_ne!(fourth.key[..8], [7; 8]);
        assert_eq!(fs::read(&key).unwrap(), fourth.key);

        // Another user's.
        if euid() == 0 {
            plant(&key, &[7; KEY_LEN]);
            std::os::unix::fs::chown(&key, Some(65534), Some(65534)).unwrap();
            let fifth = Cache::open(&dir).unwrap();
            assert_ne!(fifth.key, [7; KEY_LEN]);
            assert_eq!(fs::metadata(&key).unwrap().uid(), 0);
        } else {
            eprintln!("skipped the foreign key's case: it needs root");
        }
    }
}

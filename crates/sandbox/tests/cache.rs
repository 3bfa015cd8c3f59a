//! The component cache end to end: an artifact that was modified or
//! substituted is never deserialized (the start takes the verification
//! warning, recompiles and rewrites it), and a refused directory leaves the
//! runtime working, compiled in memory. Each start here that compiles takes
//! a second or more in debug builds, so there are few of them.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kemibox_sandbox::{Outcome, Pool, Runtime};

/// What the subscriber below wrote.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

/// A runtime started with the cache in `dir`, and what it logged.
fn start(dir: &Path) -> (Runtime, String) {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let runtime = tracing::subscriber::with_default(subscriber, || {
        Runtime::new(Some(dir.to_owned())).expect("the runtime starts")
    });
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    (runtime, text)
}

/// A fresh directory under the system's temporary one, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let path =
            std::env::temp_dir().join(format!("kemibox-cache-{name}-{}", std::process::id()));
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

/// The one artifact in `dir`.
fn artifact(dir: &Path) -> PathBuf {
    let found: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found.into_iter().next().unwrap()
}

async fn runs_a_script(runtime: &Runtime) {
    let pool = Pool::new(
        runtime,
        common::spec("cache", "function ksr_request_route() return 1 end"),
        1,
    )
    .await
    .expect("script loads");
    let outcome = pool
        .invoke("ksr_request_route", None)
        .await
        .unwrap()
        .outcome;
    assert_eq!(outcome, Outcome::Ok { ret: 1 });
}

#[tokio::test]
async fn a_modified_or_substituted_artifact_is_recompiled_never_run() {
    let scratch = Scratch::new("tamper");
    let dir = scratch.0.join("kemibox");

    let (_, logs) = start(&dir);
    assert!(logs.contains("guest component compiled"), "{logs}");
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("artifact.key")), 0o600);
    let path = artifact(&dir);
    assert_eq!(mode(&path), 0o600);
    let genuine = fs::read(&path).unwrap();

    // One byte of the compiled code flipped.
    let mut modified = genuine.clone();
    let middle = modified.len() / 2;
    modified[middle] ^= 0x01;
    fs::write(&path, &modified).unwrap();
    let (runtime, logs) = start(&dir);
    let warning = format!("path={}", path.display());
    assert!(logs.contains("cached component did not verify"), "{logs}");
    assert!(
        logs.contains(&warning),
        "the warning names the file: {logs}"
    );
    assert!(
        !logs.contains("unusable cached component"),
        "never deserialized: {logs}"
    );
    assert!(logs.contains("guest component compiled"), "{logs}");
    runs_a_script(&runtime).await;
    assert_ne!(fs::read(artifact(&dir)).unwrap(), modified, "rewritten");
    assert_eq!(mode(&path), 0o600);

    // The rewritten file verifies: the next start loads it.
    let (runtime, logs) = start(&dir);
    assert!(logs.contains("guest component loaded from cache"), "{logs}");
    assert!(!logs.contains("WARN"), "{logs}");
    assert!(!logs.contains("compiling the guest component"), "{logs}");
    runs_a_script(&runtime).await;

    // Other contents behind the genuine file's header (and so its tag).
    let header = 16 + 32;
    let substituted = [&genuine[..header], &[0x5a; 4096][..]].concat();
    fs::write(&path, &substituted).unwrap();
    let (runtime, logs) = start(&dir);
    assert!(logs.contains("cached component did not verify"), "{logs}");
    assert!(logs.contains(&warning), "{logs}");
    assert!(
        !logs.contains("unusable cached component"),
        "never deserialized: {logs}"
    );
    assert!(logs.contains("guest component compiled"), "{logs}");
    runs_a_script(&runtime).await;
    assert_ne!(fs::read(artifact(&dir)).unwrap(), substituted, "rewritten");
}

#[tokio::test]
async fn a_refused_directory_leaves_the_runtime_working() {
    let scratch = Scratch::new("refused");
    let target = scratch.0.join("target");
    fs::create_dir(&target).unwrap();
    let link = scratch.0.join("kemibox");
    std::os::unix::fs::symlink(&target, &link).unwrap();

    let (runtime, logs) = start(&link);
    assert!(logs.contains("component cache not used"), "{logs}");
    assert!(
        logs.contains(&format!(
            "cache directory {} is a symbolic link",
            link.display()
        )),
        "{logs}"
    );
    assert!(logs.contains("guest component compiled"), "{logs}");
    runs_a_script(&runtime).await;
    assert_eq!(fs::read_dir(&target).unwrap().count(), 0, "nothing written");
}

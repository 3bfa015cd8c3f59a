//! The embedded default script as registrar and authenticating proxy, over
//! real sockets with SIPp: REGISTER challenged then accepted, a wrong
//! password challenged again, a call between registered users challenged
//! with 407 then routed to the callee's contact, 404 for a user with no
//! registration and for one whose registration expired, and registrations
//! surviving a restart (SQLite).
//!
//! The AORs are `user@127.0.0.1` (the proxy's address is its domain).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::sipp::{Running, answer_one_call, finished, kemibox_cli, kemibox_run, uac};

const PROXY: &str = "127.0.0.1:25060";
/// Where bob's SIPp answers calls (his registered contact).
const BOB_PORT: &str = "25090";

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kemibox-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `kemibox user add` on the SQLite file of `dir`.
fn add_user(dir: &Path, aor: &str, password: &str) {
    let db = dir.join("kemibox.sqlite").display().to_string();
    assert!(kemibox_cli(&["user", "add", aor, password, "--db", &db]).0);
}

/// The default script on PROXY, data in `dir`, extra `config` lines in a
/// config file when given.
fn proxy(dir: &Path, config: Option<&str>, log_name: &str) -> Running {
    let log = dir.join(log_name);
    match config {
        Some(extra) => {
            let file = dir.join("kemibox.toml");
            std::fs::write(
                &file,
                format!(
                    "listen = [\"udp:{PROXY}\"]\nlog = \"info\"\n[database]\nsqlite = \"kemibox.sqlite\"\n{extra}"
                ),
            )
            .unwrap();
            kemibox_run(dir, &["--config", file.to_str().unwrap()], &log)
        }
        None => {
            let db = dir.join("kemibox.sqlite").display().to_string();
            kemibox_run(
                dir,
                &["--listen", &format!("udp:{PROXY}"), "--db", &db],
                &log,
            )
        }
    }
}

fn register(dir: &Path, user: &str, password: &str, contact_port: &str, expires: &str) -> bool {
    common::sipp::register(dir, PROXY, user, password, contact_port, expires)
}

fn call(dir: &Path, scenario: &str, caller: &str, password: &str, callee: &str) -> bool {
    uac(
        dir,
        scenario,
        PROXY,
        "25072",
        &[("user", caller), ("callee", callee)],
        (caller, password),
    )
}

#[test]
fn register_authenticate_and_call_through_the_default_script() {
    let dir = temp_dir("registrar");
    add_user(&dir, "alice@127.0.0.1", "alice-secret");
    add_user(&dir, "bob@127.0.0.1", "bob-secret");
    add_user(&dir, "dave@127.0.0.1", "dave-secret");
    // min_expires = 1, so dave can register for one second.
    let proxy_run = proxy(&dir, Some("[registrar]\nmin_expires = 1\n"), "first.log");

    // REGISTER: 401, then 200 with the credentials.
    assert!(
        register(&dir, "bob", "bob-secret", BOB_PORT, "3600"),
        "bob registers; see {}",
        dir.display()
    );
    // A wrong password: challenged again, no 200.
    assert!(
        uac(
            &dir,
            "reg_auth_wrong.xml",
            PROXY,
            "25073",
            &[
                ("user", "alice"),
                ("contact_port", "25073"),
                ("expires", "3600")
            ],
            ("alice", "not-her-password"),
        ),
        "wrong password is challenged again; see {}",
        dir.display()
    );

    // alice calls bob: 407, then routed to bob's registered contact.
    let bob = answer_one_call(&dir, BOB_PORT);
    assert!(
        call(&dir, "uac_auth.xml", "alice", "alice-secret", "bob"),
        "alice reaches bob; see {}",
        dir.display()
    );
    assert!(finished(bob), "bob's phone got the call");

    // carol is no subscriber's registration: 404 once alice authenticated.
    assert!(
        call(&dir, "uac_auth_404.xml", "alice", "alice-secret", "carol"),
        "an unregistered callee gets 404"
    );

    // dave registers for one second; after it, his contact is not used.
    assert!(register(&dir, "dave", "dave-secret", "25074", "1"));
    std::thread::sleep(Duration::from_millis(2100));
    assert!(
        call(&dir, "uac_auth_404.xml", "alice", "alice-secret", "dave"),
        "an expired contact is not used (404)"
    );

    // Restart on the same SQLite file: bob's registration is still there.
    drop(proxy_run);
    let _proxy_run = proxy(&dir, None, "second.log");
    let bob = answer_one_call(&dir, BOB_PORT);
    assert!(
        call(&dir, "uac_auth.xml", "alice", "alice-secret", "bob"),
        "bob's registration survives the restart; see {}",
        dir.display()
    );
    assert!(finished(bob), "bob's phone got the call after the restart");

    // `kemibox ul show` lists bob's binding from the same file.
    let db = dir.join("kemibox.sqlite").display().to_string();
    let (ok, listing) = kemibox_cli(&["ul", "show", "--db", &db]);
    assert!(ok);
    assert!(
        listing.contains(&format!("bob@127.0.0.1 <sip:bob@127.0.0.1:{BOB_PORT}>")),
        "ul show lists bob: {listing}"
    );
    assert!(
        !listing.contains("dave@"),
        "expired bindings are not listed: {listing}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

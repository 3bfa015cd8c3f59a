//! `kemibox user add|rm|list` on a real SQLite file: subscribers persist
//! between runs, are scoped by tenant, and the password is stored only as
//! HA1 hashes (neither the file nor the output contains it).

mod common;

use common::*;

fn user(db: &std::path::Path, args: &[&str]) -> (i32, String) {
    let db = db.to_str().unwrap();
    let mut all = vec!["user", "--db", db];
    all.extend_from_slice(args);
    let out = kemibox(&all);
    (status(&out), stdout(&out))
}

#[test]
fn add_list_remove_per_tenant() {
    let dir = std::env::temp_dir().join(format!("kemibox-user-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let db = dir.join("data").join("kemibox.sqlite");

    let (code, out) = user(&db, &["add", "alice@example.com", "s3cr3t-pw"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("s3cr3t-pw"), "{out}");
    assert_eq!(user(&db, &["add", "sip:bob@example.com", "pw2"]).0, 0);
    assert_eq!(
        user(
            &db,
            &["add", "--tenant", "other", "carol@example.org", "pw3"]
        )
        .0,
        0
    );

    assert_eq!(
        user(&db, &["list"]),
        (0, "alice@example.com\nbob@example.com\n".into())
    );
    assert_eq!(
        user(&db, &["list", "--tenant", "other"]),
        (0, "carol@example.org\n".into())
    );
    let file = std::fs::read(&db).unwrap();
    assert!(!file.windows(9).any(|w| w == b"s3cr3t-pw"));

    assert_eq!(user(&db, &["rm", "alice@example.com"]).0, 0);
    assert_eq!(user(&db, &["rm", "alice@example.com"]).0, 1);
    assert_eq!(user(&db, &["list"]), (0, "bob@example.com\n".into()));
    // Not user@domain: refused (exit 2 with the reason).
    assert_eq!(user(&db, &["add", "nodomain", "pw"]).0, 2);
    let _ = std::fs::remove_dir_all(&dir);
}

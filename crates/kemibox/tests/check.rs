//! `kemibox check SCRIPT`: exit 0 and silence for a script that loads and
//! defines the entry function; exit 1 and `SCRIPT[:LINE]: message` on
//! stdout otherwise; exit 2 when the script cannot be read.

mod common;

use common::*;

/// Run `kemibox check ARGS...`: (exit status, stdout).
fn check(args: &[&str]) -> (i32, String) {
    let mut all = vec!["check"];
    all.extend_from_slice(args);
    let out = kemibox(&all);
    (status(&out), stdout(&out))
}

/// The shipped scripts and seed 003 load and define `ksr_request_route`.
#[test]
fn accepts_scripts_with_ksr_request_route() {
    for script in [
        "scripts/default.lua",
        "scripts/relay.lua",
        "tests/fixtures/seeds/seed003-route.lua",
    ] {
        assert_eq!(check(&[script]), (0, String::new()), "{script}");
    }
}

/// Seed 004's scripts define `handle_request`, not `ksr_request_route`:
/// refused with exactly one line naming the script and the function.
#[test]
fn refuses_scripts_without_ksr_request_route() {
    for script in [
        "tests/fixtures/seeds/seed004-main.lua",
        "tests/fixtures/seeds/seed004-pbx.lua",
    ] {
        let want = format!("{script}: the script does not define function ksr_request_route()\n");
        assert_eq!(check(&[script]), (1, want), "{script}");
    }
}

/// `--entry` names another required function: seed 004's scripts load
/// (their missing modules are only touched inside functions).
#[test]
fn entry_option_accepts_other_route_names() {
    for script in [
        "tests/fixtures/seeds/seed004-main.lua",
        "tests/fixtures/seeds/seed004-pbx.lua",
    ] {
        let got = check(&[script, "--entry", "handle_request"]);
        assert_eq!(got, (0, String::new()), "{script}");
    }
}

/// A syntax error: exit 1, `SCRIPT:5: ` then Lua's message.
#[test]
fn syntax_error_names_script_and_line() {
    let script = "tests/fixtures/scripts/syntax-error.lua";
    let (code, out) = check(&[script]);
    assert_eq!(code, 1);
    assert!(out.starts_with(&format!("{script}:5: ")), "{out}");
    assert!(out.ends_with("'then' expected near 'do'\n"), "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
}

/// An error raised while the top level runs: exit 1, `SCRIPT:6: ` then
/// Lua's message.
#[test]
fn top_level_runtime_error_names_script_and_line() {
    let script = "tests/fixtures/scripts/toplevel-error.lua";
    let (code, out) = check(&[script]);
    assert_eq!(code, 1);
    assert!(out.starts_with(&format!("{script}:6: ")), "{out}");
    assert!(
        out.ends_with("attempt to index a nil value (field 'nosuchmodule')\n"),
        "{out}"
    );
    assert_eq!(out.lines().count(), 1, "{out}");
}

/// The location is printed once: `SCRIPT:LINE: message`.
#[test]
fn location_is_printed_once() {
    let script = "tests/fixtures/scripts/syntax-error.lua";
    let want = format!("{script}:5: 'then' expected near 'do'\n");
    assert_eq!(check(&[script]), (1, want));
    let script = "tests/fixtures/scripts/toplevel-error.lua";
    let want = format!("{script}:6: attempt to index a nil value (field 'nosuchmodule')\n");
    assert_eq!(check(&[script]), (1, want));
}

/// A script that cannot be read: exit 2, the error on stderr names it.
#[test]
fn unreadable_script_exits_2() {
    let script = "tests/fixtures/scripts/no-such-script.lua";
    let out = kemibox(&["check", script]);
    assert_eq!(status(&out), 2);
    assert_eq!(stdout(&out), "");
    assert!(stderr(&out).contains(script), "{}", stderr(&out));
}

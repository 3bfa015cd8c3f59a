//! `kemibox route`: golden files of what each script does with each
//! message, and the exit statuses for messages, budgets and functions that
//! go wrong.
//!
//! Golden files live in `tests/golden/<script>--<message>.jsonl`: a first
//! line `# exit N: kemibox route ...` with the exit status and the command
//! (run from the workspace root), then the output, one JSON object a line,
//! with `fuel_used` replaced by `"<fuel>"`. Rewrite them with
//! `KEMIBOX_BLESS=1 cargo test -p kemibox --test route`, then review the
//! diff.

mod common;

use std::fs::File;
use std::path::Path;

use common::*;

/// One golden run: `kemibox route SCRIPT --message MESSAGE ARGS...`.
struct Case {
    script: &'static str,
    /// File stem under `tests/fixtures/messages/`.
    message: &'static str,
    args: &'static [&'static str],
}

const fn case(script: &'static str, message: &'static str) -> Case {
    Case {
        script,
        message,
        args: &[],
    }
}

const fn case_with(
    script: &'static str,
    message: &'static str,
    args: &'static [&'static str],
) -> Case {
    Case {
        script,
        message,
        args,
    }
}

const RELAY: &str = "scripts/relay.lua";
const DEFAULT: &str = "scripts/default.lua";
const SEED003: &str = "tests/fixtures/seeds/seed003-route.lua";
const SEED004_MAIN: &str = "tests/fixtures/seeds/seed004-main.lua";
const SEED004_PBX: &str = "tests/fixtures/seeds/seed004-pbx.lua";
/// Every event kind once: the output contract's example.
const EVERY_EVENT: &str = "tests/fixtures/scripts/every-event.lua";
/// Refused when loading: the `load-error` result line.
const SYNTAX_ERROR: &str = "tests/fixtures/scripts/syntax-error.lua";

/// Replies come from the UAS (127.0.0.1:5080) and run the reply route.
const REPLY_ROUTE: &[&str] = &[
    "--function",
    "ksr_reply_route",
    "--source",
    "127.0.0.1:5080",
];

const CASES: &[Case] = &[
    case(RELAY, "invite"),
    case(RELAY, "options"),
    case(RELAY, "bye-in-dialog"),
    case(RELAY, "ack-in-dialog"),
    case(RELAY, "cancel"),
    case(RELAY, "invite-maxfwd0"),
    case_with(RELAY, "reply-180", REPLY_ROUTE),
    case(DEFAULT, "invite"),
    case(DEFAULT, "options"),
    case(DEFAULT, "options-to-other"),
    case(DEFAULT, "bye-in-dialog"),
    case(DEFAULT, "ack-in-dialog"),
    case(DEFAULT, "cancel"),
    case(DEFAULT, "invite-maxfwd0"),
    case(DEFAULT, "register"),
    case(SEED003, "invite"),
    case_with(SEED003, "reply-180", REPLY_ROUTE),
    case_with(SEED004_MAIN, "invite", &["--function", "handle_request"]),
    case_with(
        SEED004_MAIN,
        "reply-180",
        &["--function", "handle_reply", "--source", "127.0.0.1:5080"],
    ),
    case_with(SEED004_PBX, "invite", &["--function", "handle_request"]),
    case(EVERY_EVENT, "invite"),
    case(SYNTAX_ERROR, "invite"),
];

impl Case {
    fn golden_name(&self) -> String {
        let stem = Path::new(self.script)
            .file_stem()
            .unwrap()
            .to_string_lossy();
        format!("{stem}--{}.jsonl", self.message)
    }

    fn args(&self) -> Vec<String> {
        let message = format!("tests/fixtures/messages/{}.sip", self.message);
        let fixed = ["route", self.script, "--message", &message];
        fixed
            .iter()
            .chain(self.args)
            .map(|a| a.to_string())
            .collect()
    }

    /// Run the case: the golden text (the `# exit N: command` line, then
    /// the normalized output), or what is wrong with the run.
    fn run(&self) -> Result<String, String> {
        let args = self.args();
        let command = format!("kemibox {}", args.join(" "));
        let out = kemibox(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let code = status(&out);
        if code == 2 {
            return Err(format!("{command} failed: {}", stderr(&out)));
        }
        let stdout = stdout(&out);
        let lines = try_events(&stdout)?;
        let outcome = &lines.last().expect("a result line")["outcome"];
        let want = if outcome == "ok" { 0 } else { 1 };
        if code != want {
            return Err(format!("outcome {outcome} but exit {code}, want {want}"));
        }
        Ok(format!(
            "# exit {code}: {command}\n{}",
            try_normalize(&stdout)?
        ))
    }
}

/// Every script/message pair in `CASES` prints exactly its golden file
/// (fuel normalized) and exits 0 when the outcome is `ok`, 1 otherwise.
/// All differences are reported together.
#[test]
fn route_output_matches_golden_files() {
    let failures: Vec<String> = CASES
        .iter()
        .filter_map(|case| {
            let name = case.golden_name();
            let checked = case.run().and_then(|text| golden(&name, &text));
            checked.err().map(|e| format!("{name}: {e}"))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `--message -` reads the message from standard input: same output as
/// reading the file.
#[test]
fn message_from_stdin_routes_like_the_file() {
    let file = "tests/fixtures/messages/invite.sip";
    let from_file = kemibox(&["route", RELAY, "--message", file]);
    let input = File::open(root().join(file)).expect("fixture opens");
    let from_stdin = kemibox_with_stdin(&["route", RELAY, "--message", "-"], input.into());
    assert_eq!(status(&from_stdin), 0, "{}", stderr(&from_stdin));
    assert_eq!(
        normalize(&stdout(&from_stdin)),
        normalize(&stdout(&from_file))
    );
}

/// A file that is not a SIP message: exit 2, nothing on stdout, and the
/// error on stderr names the file.
#[test]
fn non_sip_message_exits_2_naming_the_file() {
    let file = "tests/fixtures/messages/not-sip.txt";
    let out = kemibox(&["route", RELAY, "--message", file]);
    assert_eq!(status(&out), 2);
    assert_eq!(stdout(&out), "");
    let err = stderr(&out);
    assert!(err.contains(file), "stderr names the file: {err}");
    assert!(err.contains("not a SIP message"), "{err}");
}

/// A message file that does not exist: exit 2, naming the file.
#[test]
fn missing_message_file_exits_2_naming_the_file() {
    let file = "tests/fixtures/messages/no-such-message.sip";
    let out = kemibox(&["route", RELAY, "--message", file]);
    assert_eq!(status(&out), 2);
    assert_eq!(stdout(&out), "");
    assert!(stderr(&out).contains(file), "{}", stderr(&out));
}

/// A route that never ends is stopped by its fuel budget: outcome
/// `out-of-fuel`, no return value, the whole budget used, exit 1.
#[test]
fn endless_loop_runs_out_of_fuel() {
    let out = kemibox(&[
        "route",
        "tests/fixtures/scripts/endless-loop.lua",
        "--message",
        "tests/fixtures/messages/invite.sip",
        "--fuel",
        "10000000",
    ]);
    assert_eq!(status(&out), 1);
    let result = result(&stdout(&out));
    assert_eq!(result["outcome"], "out-of-fuel");
    assert_eq!(result["ret"], serde_json::Value::Null);
    assert_eq!(result["fuel_used"], 10_000_000);
}

/// `--fuel 200000` (well above a typical route's 10-50 k) is the budget of
/// the route call, so the endless loop ends `out-of-fuel` (loading has its
/// own, larger budget).
#[test]
fn small_fuel_budget_limits_the_route_not_the_load() {
    let out = kemibox(&[
        "route",
        "tests/fixtures/scripts/endless-loop.lua",
        "--message",
        "tests/fixtures/messages/invite.sip",
        "--fuel",
        "200000",
    ]);
    assert_eq!(status(&out), 1);
    assert_eq!(result(&stdout(&out))["outcome"], "out-of-fuel");
}

/// A function the script does not define is refused when loading: a single
/// `result` line with outcome `load-error` naming the function, exit 1.
#[test]
fn undefined_function_is_a_load_error() {
    let out = kemibox(&[
        "route",
        RELAY,
        "--message",
        "tests/fixtures/messages/invite.sip",
        "--function",
        "no_such_route",
    ]);
    assert_eq!(status(&out), 1);
    let lines = events(&stdout(&out));
    assert_eq!(lines.len(), 1, "only the result line");
    assert_eq!(lines[0]["outcome"], "load-error");
    assert_eq!(
        lines[0]["error"],
        "scripts/relay.lua: the script does not define function no_such_route()"
    );
}

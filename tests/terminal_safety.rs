//! Model and provider text never reaches a terminal with its control sequences: `moa run`,
//! `moa sessions list|show|export` and error messages under a real pseudo-terminal (`script`)
//! carry none of a hostile answer's OSC 52 (clipboard), OSC 0 (title), OSC 8 (links), CSI (cursor,
//! erase) or C1 bytes, while a pipe and `--json` keep the exact text.

// Test code may unwrap: a panic there is the failure report.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;

use support::{Reply, Server};

/// Every kind of sequence a hostile answer could carry, split across chunks.
const HOSTILE: &[&str] = &[
    "Safe start. \x1b]52;c;",
    "aGVsbG8=\x07clip. \x1b]0;owned",
    "\x07title. \x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\. ",
    "\x1b[2J\x1b[1;1Herase. \u{9b}31mC1 csi. \u{9d}0;c1 title\u{9c}",
    "end.",
];
const SHOWN: &str = "Safe start. clip. title. link. erase. C1 csi. end.";

fn have_script() -> bool {
    if Command::new("script").arg("--version").output().is_ok() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("script (util-linux) is missing on CI");
    }
    eprintln!("skipping: script(1) is not installed");
    false
}

/// Runs `moa ARGS` with stdout and stderr on a pseudo-terminal; what the terminal received.
fn under_pty(home: &Path, args: &str) -> (String, Option<i32>) {
    let cmd = format!(
        "MOA_HOME={} FAKE_API_KEY=sk-term-SECRET-41 {} {args}",
        home.display(),
        env!("CARGO_BIN_EXE_moa")
    );
    let out = Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script runs");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code(),
    )
}

fn bad_bytes(s: &str) -> Vec<String> {
    // What a terminal acts on: ESC, BEL, C1. (\r is script's own line ending.)
    s.char_indices()
        .filter(|(_, c)| {
            (*c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t')
                || (0x7f..0xa0).contains(&(*c as u32))
        })
        .map(|(i, c)| {
            format!(
                "{:?} at {i}: {:?}",
                c,
                &s[i.saturating_sub(10)..(i + 10).min(s.len())]
            )
        })
        .collect()
}

async fn home(s: &Server) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("config.toml"), s.config("")).unwrap();
    std::fs::create_dir_all(home.path().join("presets")).unwrap();
    std::fs::write(
        home.path().join("presets/solo.toml"),
        "name = \"solo\"\n[[step]]\nop = \"propose\"\nagents = [{ model = \"fake/p\" }]\n[[step]]\nop = \"aggregate\"\nmodel = \"fake/agg\"\n",
    )
    .unwrap();
    home
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_answer_puts_no_control_sequence_on_the_terminal() {
    if !have_script() {
        return;
    }
    let s = Server::start().await;
    s.script("p", vec![Reply::text(HOSTILE, 5, 5)]);
    s.script("agg", vec![Reply::text(HOSTILE, 5, 5)]);
    let home = home(&s).await;

    let (screen, code) = under_pty(home.path(), "run --preset solo 'Be hostile'");
    assert_eq!(code, Some(0), "{screen}");
    assert!(bad_bytes(&screen).is_empty(), "{:?}", bad_bytes(&screen));
    assert!(
        screen.contains(SHOWN),
        "the text itself is kept: {screen:?}"
    );

    // The session it saved, listed, shown, exported to the terminal: clean too.
    let (list, _) = under_pty(home.path(), "sessions list");
    assert!(bad_bytes(&list).is_empty(), "{:?}", bad_bytes(&list));
    let id = list.split_whitespace().next().unwrap().to_string();
    for args in [
        format!("sessions show {id}"),
        format!("sessions export {id}"),
        format!("sessions show {id} --compare"),
    ] {
        let (out, code) = under_pty(home.path(), &args);
        assert_eq!(code, Some(0), "{args}: {out}");
        assert!(bad_bytes(&out).is_empty(), "{args}: {:?}", bad_bytes(&out));
    }

    // A pipe gets the exact bytes; --json keeps them too (as JSON escapes and raw C1).
    let out = support::moa(
        home.path(),
        &["run", "--preset", "solo", "--no-save", "Again"],
        None,
        "sk-term-SECRET-41",
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}\n", HOSTILE.concat())
    );
    let out = support::moa(
        home.path(),
        &["run", "--preset", "solo", "--json", "--no-save", "Again"],
        None,
        "sk-term-SECRET-41",
    )
    .await;
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        record["final"]["text"].as_str(),
        Some(HOSTILE.concat().as_str())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_error_message_is_cleaned_on_stderr() {
    if !have_script() {
        return;
    }
    let s = Server::start().await;
    let body = r#"{"error":{"message":"bad \u001b]52;c;aGVsbG8=\u0007request \u001b[2J"}}"#;
    s.script("p", vec![Reply::status(400, body)]);
    s.script("agg", vec![Reply::status(400, body)]);
    let home = home(&s).await;
    let (screen, code) = under_pty(home.path(), "run --preset solo 'Hi'");
    assert_eq!(code, Some(1), "{screen}");
    assert!(screen.contains("bad request"), "{screen:?}");
    assert!(bad_bytes(&screen).is_empty(), "{:?}", bad_bytes(&screen));
}

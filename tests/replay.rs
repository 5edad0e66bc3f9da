//! What `moa replay` and `moa sessions export --format cast` are given and make, through the real
//! binary: the timeline a run keeps in its session, the asciicast of its replay (frames at the
//! recorded times, model text without its escape sequences), sessions saved without a timeline,
//! and the messages for runs that cannot be replayed. The replay on screen is driven in tmux by
//! tests/tui_tmux.rs.

// Test code may unwrap: a panic there is the failure report.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use support::{Reply, Server};

const KEY: &str = "sk-replay-test-key";

async fn session_with_one_run(s: &Server, home: &std::path::Path) -> (String, Value) {
    std::fs::write(home.join("config.toml"), s.config("")).unwrap();
    std::fs::create_dir_all(home.join("presets")).unwrap();
    std::fs::write(
        home.join("presets/demo.toml"),
        "name = \"demo\"\n[[step]]\nop = \"propose\"\nagents = [{ model = \"fake/p1\" }, { model = \"fake/p2\" }, { model = \"fake/p3\" }]\n[[step]]\nop = \"aggregate\"\nmodel = \"fake/agg\"\n",
    )
    .unwrap();
    let out = support::moa(home, &["run", "--preset", "demo", "Count"], None, KEY).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = support::moa(home, &["sessions", "list", "--json"], None, KEY).await;
    let list: Value = serde_json::from_slice(&list.stdout).unwrap();
    let id = list[0]["id"].as_str().unwrap().to_string();
    let file = home.join("sessions").join(format!("{id}.json"));
    let saved: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    (id, saved)
}

fn script(s: &Server) {
    let words: Vec<String> = (1..=20).map(|i| format!("w{i} ")).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    s.script("p1", vec![Reply::text(&words, 300, 40)]);
    // A hostile proposer: OSC 52 (clipboard), a title change and a CSI clear in its answer.
    s.script(
        "p2",
        vec![Reply::text(
            &[
                "safe ",
                "\u{1b}]52;c;SGVsbG8=\u{7}",
                "\u{1b}]0;pwned\u{7}",
                "\u{1b}[2J",
                "end",
            ],
            100,
            50,
        )],
    );
    // A proposer that fails: the replay shows the failure where and when it happened.
    s.script(
        "p3",
        vec![Reply::status(
            400,
            r#"{"error":{"message":"upstream overloaded"}}"#,
        )],
    );
    s.script("agg", vec![Reply::text(&["Final ", "answer."], 100, 100)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_keeps_its_timeline_and_exports_as_an_asciicast() {
    let s = Server::start().await;
    script(&s);
    let home = tempfile::tempdir().unwrap();
    let (id, saved) = session_with_one_run(&s, home.path()).await;

    // The session keeps when each call started, ended and how its text arrived.
    let tl = &saved["runs"][0]["timeline"];
    assert_eq!(tl["v"], 1, "{saved:#}");
    let calls: Vec<&str> = tl["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("0.2 ") && c.contains(" failed ")),
        "{calls:?}"
    );
    let p1 = calls.iter().find(|c| c.starts_with("0.0 ")).unwrap();
    let w: Vec<&str> = p1.split_whitespace().collect();
    assert_eq!(w[3], "ok");
    // The first point is the first token, about 300 ms after the call started.
    let (dt, _) = w[5].split_once(':').unwrap();
    let dt: u64 = dt.parse().unwrap();
    assert!((250..2000).contains(&dt), "first token after {dt} ms: {p1}");
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("1.0 ") && c.contains(" ok 1"))
    );

    let out = support::moa(
        home.path(),
        &[
            "sessions", "export", &id, "--format", "cast", "--size", "100x30",
        ],
        None,
        KEY,
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let header: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["version"], 2);
    assert_eq!(header["width"], 100);
    assert_eq!(header["height"], 30);
    let frames: Vec<(f64, String)> = lines
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            assert_eq!(v[1], "o");
            (v[0].as_f64().unwrap(), v[2].as_str().unwrap().to_string())
        })
        .collect();
    assert!(frames.len() > 10, "{} frames", frames.len());
    assert!(
        frames.windows(2).all(|w| w[0].0 <= w[1].0),
        "times go forward"
    );
    let at = |what: &str| {
        frames
            .iter()
            .find(|f| f.1.contains(what))
            .map(|f| f.0)
            .unwrap_or_else(|| panic!("{what:?} never drawn"))
    };
    // Words arrive over the recorded ~1 s, not all at once; the aggregation comes after.
    let (first, last) = (at("w1"), at("w20"));
    assert!(first >= 0.25, "first word at {first}s");
    assert!(last - first >= 0.4, "w1 at {first}s, w20 at {last}s");
    assert!(at("Final") > last);
    // The failed proposer's pane says so, before the aggregation.
    assert!(at("upstream overloaded") < at("Final"));
    // The hostile answer's text is there, its escape sequences are not.
    assert!(frames.iter().any(|f| f.1.contains("safe")));
    let all: String = frames.iter().map(|f| f.1.as_str()).collect();
    assert!(!all.contains("\u{1b}]52"), "OSC 52 reached the recording");
    assert!(
        !all.contains("\u{1b}]0;"),
        "a title change reached the recording"
    );
    assert!(!all.contains("pwned\u{7}"));
    // The recording ends on the finished run, held a moment.
    let end = frames.last().unwrap().0;
    assert!(end >= last + 1.0);

    // --speed 2 plays the same frames in half the time.
    let fast = support::moa(
        home.path(),
        &[
            "sessions", "export", &id, "--format", "cast", "--size", "100x30", "--speed", "2",
        ],
        None,
        KEY,
    )
    .await;
    let fast = String::from_utf8(fast.stdout).unwrap();
    let last_fast: Value = serde_json::from_str(fast.lines().last().unwrap()).unwrap();
    let ratio = end / last_fast[0].as_f64().unwrap();
    assert!((1.9..2.1).contains(&ratio), "{ratio}");
    // -o with a bare file name writes it in the current folder (its parent is "").
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_moa"))
        .args([
            "sessions",
            "export",
            &id,
            "--format",
            "cast",
            "-o",
            "demo.cast",
        ])
        .env("MOA_HOME", home.path())
        .current_dir(home.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read_to_string(home.path().join("demo.cast"))
            .unwrap()
            .starts_with("{\"version\":2")
    );
    // Nothing but the one run went to the provider.
    assert_eq!(s.log().len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn older_sessions_replay_at_an_even_pace_and_bad_requests_say_why() {
    let s = Server::start().await;
    script(&s);
    let home = tempfile::tempdir().unwrap();
    let (id, _) = session_with_one_run(&s, home.path()).await;
    // The session as an older moa wrote it: no timeline.
    let file = home.path().join("sessions").join(format!("{id}.json"));
    let mut saved: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    saved["runs"][0].as_object_mut().unwrap().remove("timeline");
    std::fs::write(&file, serde_json::to_vec_pretty(&saved).unwrap()).unwrap();
    let out = support::moa(
        home.path(),
        &["sessions", "export", &id, "--format", "cast"],
        None,
        KEY,
    )
    .await;
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("even pace"), "the recording says so");
    assert!(text.contains("w20"));

    for (args, says) in [
        (vec!["--run", "2"], "has 1 run(s)"),
        (vec!["--run", "0"], "--run counts from 1"),
        (vec!["--speed", "0"], "give a factor"),
    ] {
        let mut a = vec!["sessions", "export", &id, "--format", "cast"];
        a.extend(args);
        let out = support::moa(home.path(), &a, None, KEY).await;
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{err}");
    }
    let out = support::moa(home.path(), &["replay", "no-such-session"], None, KEY).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no-such-session"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.log().len(), 4);
}

//! Sessions and evaluation through the `moa` binary, against the scripted server: saving, listing,
//! comparing, exporting, judging, `moa eval` with its report, and surviving `kill -9`.

// Test code may unwrap: a panic there is the failure report.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Reply, Server};

const KEY: &str = "sk-sessions-test-SECRET-4c3b2a";

async fn moa(home: &Path, args: &[&str]) -> Output {
    support::moa(home, args, None, KEY).await
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const PRESET: &str = r#"name = "mini"
[[step]]
op = "propose"
agents = [{ model = "fake/p1", temperature = 0.7 }, { model = "fake/p2" }]
[[step]]
op = "aggregate"
model = "fake/agg"
[baseline]
model = "fake/base"
"#;

fn home_with(server: &Server, extra: &str) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("config.toml"), server.config(extra)).unwrap();
    std::fs::create_dir_all(home.path().join("presets")).unwrap();
    std::fs::write(home.path().join("presets/mini.toml"), PRESET).unwrap();
    home
}

fn session_files(home: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(home.join("sessions"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                // Sessions only: not the folder's lock file.
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn json_of(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_are_saved_listed_compared_exported_and_removed() {
    let s = Server::start().await;
    s.script("agg", vec![Reply::text(&["MoA ", "says ", "42."], 5, 5)]);
    s.script("base", vec![Reply::text(&["Base ", "says ", "41."], 5, 5)]);
    let home = home_with(&s, "");
    let h = home.path();
    let out = moa(h, &["run", "--preset", "mini", "What is six times seven?"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("saved in session"),
        "{}",
        text(&out.stderr)
    );
    let files = session_files(h);
    assert_eq!(files.len(), 1);
    let sess = json_of(&files[0]);
    assert_eq!(sess["schema"], "moa.session/1");
    assert_eq!(sess["name"], "What is six times seven?");
    assert_eq!(sess["runs"][0]["record"]["final"]["text"], "MoA says 42.");
    assert_eq!(
        sess["runs"][0]["record"]["baseline"]["text"],
        "Base says 41."
    );
    // The preset as it ran, and the conversation with the final answer as the assistant's turn.
    assert_eq!(
        sess["runs"][0]["preset"]["steps"][0]["agents"][0]["temperature"],
        0.7
    );
    assert_eq!(sess["messages"][1]["content"], "MoA says 42.");
    assert!(sess.get("in_progress").is_none());
    let id = sess["id"].as_str().unwrap().to_string();

    // Continue the session with a second turn: earlier turns go to every agent.
    let out = moa(
        h,
        &[
            "run",
            "--preset",
            "mini",
            "--session",
            "six times",
            "And plus one?",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(session_files(h).len(), 1);
    let last = s.requests_for("p1").pop().unwrap();
    let msgs = last.body["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    assert_eq!(msgs[1]["content"], "MoA says 42.");

    // A damaged file and one from a newer moa are reported and skipped.
    std::fs::write(h.join("sessions/broken.json"), b"{\"schema\": \"moa.sess").unwrap();
    std::fs::write(
        h.join("sessions/future.json"),
        br#"{"schema": "moa.session/9"}"#,
    )
    .unwrap();
    let out = moa(h, &["sessions", "list"]).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains(&id), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("2 run(s)"),
        "{}",
        text(&out.stdout)
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("broken.json") && err.contains("damaged"),
        "{err}"
    );
    assert!(
        err.contains("future.json") && err.contains("newer moa"),
        "{err}"
    );
    let out = moa(h, &["sessions", "list", "--json"]).await;
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);

    let out = moa(
        h,
        &["sessions", "show", &id[..8], "--compare", "--run", "1"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let show = text(&out.stdout);
    assert!(
        show.contains("MoA (mini)") && show.contains("baseline (fake/base)"),
        "{show}"
    );
    assert!(
        show.contains("MoA says 42.") && show.contains("Base says 41."),
        "{show}"
    );
    assert!(show.contains("MoA / baseline: latency"), "{show}");
    let out = moa(h, &["sessions", "show", &id, "--compare", "--json"]).await;
    let cmp: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cmp[0]["moa"]["calls"], 3);
    assert_eq!(cmp[0]["baseline"]["text"], "Base says 41.");

    let out = moa(h, &["sessions", "export", &id]).await;
    let md = text(&out.stdout);
    assert!(md.starts_with("# What is six times seven?"), "{md}");
    assert!(
        md.contains("**Final answer** (aggregate):\n\nMoA says 42."),
        "{md}"
    );
    assert!(md.contains("<details><summary>Step 1 propose"), "{md}");
    assert!(md.contains("Answer from p2."), "{md}");
    let out = moa(h, &["sessions", "export", &id, "--format", "json"]).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["id"],
        id.as_str()
    );

    let out = moa(h, &["sessions", "rename", &id, "Arithmetic"]).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json_of(&session_files(h)[0])["name"], "Arithmetic");
    let out = moa(h, &["sessions", "show", "no-such-session"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no session matches"),
        "{}",
        text(&out.stderr)
    );
    let out = moa(h, &["sessions", "rm", &id]).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(!h.join(format!("sessions/{id}.json")).exists());

    // --no-save writes nothing.
    let out = moa(h, &["run", "--preset", "mini", "--no-save", "Q"]).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        session_files(h).len(),
        2,
        "only the two damaged files remain"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_judge_is_asked_in_both_orders_and_its_verdict_stored() {
    let s = Server::start().await;
    s.script(
        "judge",
        vec![Reply::text(&["B is more precise. ", "[[B]]"], 5, 5)],
    );
    let home = home_with(&s, "");
    let h = home.path();
    // A top-level key goes before the provider tables.
    let config = format!("judge_model = \"fake/judge\"\n{}", s.config(""));
    std::fs::write(h.join("config.toml"), config).unwrap();
    let out = moa(h, &["run", "--preset", "mini", "Question?"]).await;
    assert_eq!(out.status.code(), Some(0));
    let out = moa(h, &["sessions", "judge", "Question"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    // [[B]] in both orders: B was the baseline once and MoA once, so the orders disagree.
    assert!(said.contains("MoA ties (inconsistent"), "{said}");
    let asked = s.requests_for("judge");
    assert_eq!(asked.len(), 2);
    let users: Vec<String> = asked
        .iter()
        .map(|r| {
            r.body["messages"][1]["content"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let a_first = "[The Start of Assistant A's Answer]\nAnswer from agg.";
    let b_first = "[The Start of Assistant A's Answer]\nAnswer from base.";
    assert!(
        users.iter().any(|u| u.contains(a_first)) && users.iter().any(|u| u.contains(b_first)),
        "{users:?}"
    );
    assert!(
        asked[0].body["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("impartial judge")
    );
    let sess = json_of(&session_files(h)[0]);
    let j = &sess["runs"][0]["judgements"][0];
    assert_eq!(j["judge_model"], "fake/judge");
    assert_eq!(j["outcome"], "tie");
    assert_eq!(j["inconsistent"], true);
    assert!(
        j["orders"][0]["reasoning"]
            .as_str()
            .unwrap()
            .contains("more precise")
    );
}

/// Wait until `f` holds, polling.
async fn until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_survives_kill_9_mid_run() {
    let s = Server::start().await;
    let slow: Vec<String> = (0..200).map(|i| format!("w{i} ")).collect();
    let parts: Vec<&str> = slow.iter().map(String::as_str).collect();
    s.script("p2", vec![Reply::text(&parts, 5, 50)]);
    let home = home_with(&s, "");
    let h = home.path().to_path_buf();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_moa"))
        .args([
            "run",
            "--preset",
            "mini",
            "--no-baseline",
            "Tell me a long story",
        ])
        .env("MOA_HOME", &h)
        .env("FAKE_API_KEY", KEY)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait for p1 to have finished and p2's partial text to have been written (every 2 s).
    until("a partial session", 20, || {
        session_files(&h).first().is_some_and(|p| {
            std::fs::read(p)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .is_some_and(|v| {
                    v["in_progress"]["record"]["steps"][0]["calls"][1]["text"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("w0 w1"))
                })
        })
    })
    .await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let files = session_files(&h);
    assert_eq!(
        files.len(),
        1,
        "no temporary file is left where it would be read: {files:?}"
    );
    let out = moa(&h, &["sessions", "show", "long story"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("interrupted run"),
        "{}",
        text(&out.stdout)
    );
    let v = json_of(&files[0]);
    let calls = &v["in_progress"]["record"]["steps"][0]["calls"];
    assert_eq!(calls[0]["status"], "ok");
    assert_eq!(calls[0]["text"], "Answer from p1.");
    assert_eq!(calls[1]["status"], "cancelled");
    assert!(calls[1]["error"].as_str().unwrap().contains("interrupted"));
    assert_eq!(v["messages"][0]["content"], "Tell me a long story");
    let out = moa(&h, &["sessions", "export", "long story"]).await;
    assert!(text(&out.stdout).contains("## Interrupted run"));
}

const EVAL_PROMPTS: &str = r#"{"prompt": "Which model aggregates?", "reference": "agg"}
{"instruction": "Say anything"}
{"turns": ["First turn", "Second turn"]}
this line is broken
{"prompt": "Name the baseline", "reference": "base"}
{"prompt": "Fifth"}
{"prompt": "Sixth"}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn eval_with_a_judge_that_always_says_a_gives_all_ties() {
    let s = Server::start().await;
    s.script(
        "judge",
        vec![Reply::text(&["Assistant A is better. ", "[[A]]"], 5, 5)],
    );
    let home = home_with(&s, "");
    let h = home.path();
    let prompts = h.join("prompts.jsonl");
    std::fs::write(&prompts, EVAL_PROMPTS).unwrap();
    let out_dir = h.join("ev");
    let args = [
        "eval",
        "--preset",
        "mini",
        "--prompts",
        prompts.to_str().unwrap(),
        "--judge",
        "fake/judge",
        "--concurrency",
        "3",
        "--out",
        out_dir.to_str().unwrap(),
    ];
    let out = moa(h, &[&args[..], &["--json"]].concat()).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("prompts.jsonl:4: not JSON"), "{err}");
    let sum: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sum["schema"], "moa.eval/1");
    assert_eq!(sum["prompts"], 6);
    assert_eq!(sum["done"], 6);
    assert_eq!(sum["errors"], 0);
    let j = &sum["judge"];
    assert_eq!(
        (j["wins"].as_u64(), j["ties"].as_u64(), j["losses"].as_u64()),
        (Some(0), Some(6), Some(0))
    );
    assert_eq!(j["inconsistent"], 6);
    assert_eq!(j["win_rate"], 0.5);
    let ci = j["ci95"].as_array().unwrap();
    assert!(ci[0].as_f64().unwrap() < 0.5 && ci[1].as_f64().unwrap() > 0.5);
    // "agg" is in MoA's answer ("Answer from agg."), "base" in the baseline's.
    assert_eq!(sum["accuracy"]["n"], 2);
    assert_eq!(sum["accuracy"]["moa"], 0.5);
    assert_eq!(sum["accuracy"]["baseline"], 0.5);
    assert!(sum["latency_ms"]["moa_p50"].as_u64().is_some());
    assert!(sum["latency_ms"]["baseline_p95"].as_u64().is_some());
    assert_eq!(sum["agreement"][0]["op"], "propose");
    // Multi-turn: the second turn carries each side's own first answer.
    let base_second = s
        .requests_for("base")
        .into_iter()
        .find(|r| r.body["messages"].as_array().unwrap().len() == 3)
        .expect("a second-turn baseline request");
    assert_eq!(
        base_second.body["messages"][1]["content"],
        "Answer from base."
    );
    assert_eq!(s.requests_for("judge").len(), 12);
    for f in ["results.jsonl", "summary.json", "report.md", "meta.json"] {
        assert!(out_dir.join(f).exists(), "{f}");
    }
    let md = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(md.contains("| 0 | 6 | 0 | 0.500 |"), "{md}");
    // The text report, with its bars; nothing runs again.
    let before = s.log().len();
    let out = moa(h, &args).await;
    assert_eq!(out.status.code(), Some(0));
    let report = text(&out.stdout);
    assert!(
        report.contains("6 done, 0 errors (6 already done before this run)"),
        "{report}"
    );
    assert!(
        report.contains("tie   ████████████████████████    6  100.0%"),
        "{report}"
    );
    assert_eq!(s.log().len(), before);

    // Another evaluation with another judge: the two side by side.
    s.script(
        "judge2",
        vec![Reply::text(&["[[B]] then... final: [[C]]"], 5, 5)],
    );
    let out_b = h.join("ev-b");
    let out = moa(
        h,
        &[
            "eval",
            "--preset",
            "mini",
            "--prompts",
            prompts.to_str().unwrap(),
            "--judge",
            "fake/judge2",
            "--out",
            out_b.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = moa(
        h,
        &[
            "eval",
            "--compare",
            out_dir.to_str().unwrap(),
            out_b.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let cmp = text(&out.stdout);
    assert!(
        cmp.contains("win/tie/loss")
            && cmp.contains("0/6/0 (6 inc.)")
            && cmp.contains("0/6/0 (0 inc.)"),
        "{cmp}"
    );
    // Reusing a folder for another task is refused.
    let out = moa(
        h,
        &[
            "eval",
            "--preset",
            "mini",
            "--prompts",
            prompts.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("another judge"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_eval_resumes_without_redoing_finished_prompts() {
    let s = Server::start().await;
    s.script("agg", vec![Reply::text(&["slow ", "answer"], 400, 5)]);
    let home = home_with(&s, "");
    let h = home.path().to_path_buf();
    let prompts = h.join("p.jsonl");
    let lines: String = (0..8)
        .map(|i| format!("{{\"prompt\": \"Question {i}\"}}\n"))
        .collect();
    std::fs::write(&prompts, lines).unwrap();
    let out_dir = h.join("ev");
    let args = [
        "eval",
        "--preset",
        "mini",
        "--prompts",
        prompts.to_str().unwrap(),
        "--concurrency",
        "1",
        "--out",
        out_dir.to_str().unwrap(),
        "--json",
    ];
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_moa"))
        .args(args)
        .env("MOA_HOME", &h)
        .env("FAKE_API_KEY", KEY)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let results = out_dir.join("results.jsonl");
    let count = |p: &Path| {
        std::fs::read_to_string(p)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    until("three results", 30, || count(&results) >= 3).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let done_before = count(&results);
    assert!(done_before < 8, "killed before the end");
    for l in std::fs::read_to_string(&results).unwrap().lines() {
        serde_json::from_str::<Value>(l).expect("every line written is whole");
    }
    let agg_before = s.requests_for("agg").len();
    let out = moa(&h, &args).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let sum: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sum["done"], 8);
    assert_eq!(sum["skipped_done"].as_u64().unwrap() as usize, done_before);
    // Only the prompts not finished before the kill were asked again.
    assert_eq!(s.requests_for("agg").len() - agg_before, 8 - done_before);
}

//! Issue 13, files and paths, panics and hangs: through the `moa` binary and the engine, against
//! the scripted server. Session ids are never paths, parallel runs never share a file, what moa
//! writes is private, an interrupted evaluation appends cleanly, a FIFO never hangs a listing, and
//! a panic in a run ends the run (exit 1, the session kept) instead of the process.

// Test code may unwrap: a panic there is the failure report.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use moa_workbench::config::{Config, Folders};
use moa_workbench::engine::preset;
use moa_workbench::engine::prompts::Templates;
use moa_workbench::engine::record::CallStatus;
use moa_workbench::engine::{Engine, RunEvent, RunOptions};
use moa_workbench::metrics::agreement::AgreementScorer;
use moa_workbench::provider::Message;
use moa_workbench::provider::registry::Registry;
use serde_json::Value;
use support::{Reply, Server};

const KEY: &str = "sk-hardening-files-SECRET-9d8e7f";

const PRESET: &str = r#"name = "mini"
[[step]]
op = "propose"
agents = [{ model = "fake/p1" }, { model = "fake/p2" }]
[[step]]
op = "aggregate"
model = "fake/agg"
"#;

fn home_with(server: &Server) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("config.toml"), server.config("")).unwrap();
    std::fs::create_dir_all(home.path().join("presets")).unwrap();
    std::fs::write(home.path().join("presets/mini.toml"), PRESET).unwrap();
    home
}

/// `moa` with MOA_HOME, the fake key and extra environment; killed after `secs`.
async fn moa_env(home: &Path, args: &[&str], env: &[(&str, &str)], secs: u64) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_moa"));
    cmd.args(args)
        .env("MOA_HOME", home)
        .env("FAKE_API_KEY", KEY)
        .env_remove("MOA_MODELS_DIR")
        .env_remove("MOA_DEBUG_PANIC_AT_STEP")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    tokio::time::timeout(Duration::from_secs(secs), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("moa {args:?} did not finish within {secs} s"))
        .unwrap()
}

async fn moa(home: &Path, args: &[&str]) -> Output {
    moa_env(home, args, &[], 60).await
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn session_files(home: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(home.join("sessions"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
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

async fn one_session(home: &Path, prompt: &str) -> PathBuf {
    let out = moa(home, &["run", "--preset", "mini", "-q", prompt]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let files = session_files(home);
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_whose_id_is_a_path_is_damaged_and_touches_nothing_outside() {
    let s = Server::start().await;
    let home = home_with(&s);
    let h = home.path();
    let file = one_session(h, "Shared question").await;
    // A session shared by someone else, its id pointing out of the sessions folder.
    let victim = h.join("victim.json");
    std::fs::write(&victim, b"precious").unwrap();
    let mut v = json_of(&file);
    v["id"] = "../victim".into();
    v["name"] = "evil share".into();
    std::fs::write(h.join("sessions/shared.json"), v.to_string()).unwrap();

    let list = moa(h, &["sessions", "list"]).await;
    assert_eq!(list.status.code(), Some(0));
    assert!(
        text(&list.stderr).contains("not a valid session id"),
        "{}",
        text(&list.stderr)
    );
    for args in [
        &["sessions", "rm", "evil share"][..],
        &["sessions", "rename", "evil share", "x"],
        &["sessions", "rm", "../victim"],
    ] {
        let out = moa(h, args).await;
        assert_ne!(out.status.code(), Some(0), "{args:?}");
    }
    let out = moa(
        h,
        &[
            "run",
            "--preset",
            "mini",
            "-q",
            "--session",
            "evil share",
            "Next",
        ],
    )
    .await;
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_or_renaming_a_copy_acts_on_the_copy() {
    let s = Server::start().await;
    let home = home_with(&s);
    let h = home.path();
    let orig = one_session(h, "Original question").await;
    let copy = h.join("sessions/copy.json");
    let mut v = json_of(&orig);
    v["name"] = "my copy".into();
    std::fs::write(&copy, v.to_string()).unwrap();

    let out = moa(h, &["sessions", "rename", "my copy", "renamed copy"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(json_of(&orig)["name"], "Original question");
    assert_eq!(json_of(&copy)["name"], "renamed copy");

    let out = moa(h, &["sessions", "rm", "renamed copy"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!copy.exists(), "the copy is deleted");
    assert!(orig.exists(), "the original stays");
}

#[tokio::test(flavor = "multi_thread")]
async fn parallel_runs_of_one_prompt_leave_three_sessions() {
    let s = Server::start().await;
    let home = home_with(&s);
    let h = home.path();
    let args = ["run", "--preset", "mini", "-q", "The very same prompt"];
    let (a, b, c) = tokio::join!(moa(h, &args), moa(h, &args), moa(h, &args));
    for o in [&a, &b, &c] {
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    }
    let files = session_files(h);
    assert_eq!(files.len(), 3, "{files:?}");
    for f in &files {
        assert_eq!(json_of(f)["runs"].as_array().unwrap().len(), 1);
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn sessions_and_eval_results_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let s = Server::start().await;
    let home = home_with(&s);
    let h = home.path();
    let file = one_session(h, "A private prompt").await;
    assert_eq!(mode(&h.join("sessions")), 0o700);
    assert_eq!(mode(&file), 0o600);

    let prompts = h.join("p.jsonl");
    std::fs::write(&prompts, "{\"prompt\": \"Private eval prompt\"}\n").unwrap();
    let out_dir = h.join("results/ev");
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
            "--json",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(mode(&out_dir), 0o700);
    for name in std::fs::read_dir(&out_dir).unwrap().flatten() {
        assert_eq!(mode(&name.path()), 0o600, "{}", name.path().display());
    }
    for name in ["results.jsonl", "report.md", "summary.json"] {
        assert!(out_dir.join(name).exists(), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_eval_after_a_crash_does_not_join_its_next_line_onto_a_cut_one() {
    let s = Server::start().await;
    let home = home_with(&s);
    let h = home.path();
    let prompts = h.join("p.jsonl");
    std::fs::write(&prompts, "{\"prompt\": \"Question one\"}\n").unwrap();
    let out_dir = h.join("ev");
    let args = |p: &Path| {
        vec![
            "eval".to_string(),
            "--preset".into(),
            "mini".into(),
            "--prompts".into(),
            p.to_str().unwrap().into(),
            "--out".into(),
            out_dir.to_str().unwrap().into(),
            "--json".into(),
        ]
    };
    let a = args(&prompts);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let out = moa(h, &a).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // As if a kill had cut the line of a second prompt half-way.
    let results = out_dir.join("results.jsonl");
    let mut bytes = std::fs::read(&results).unwrap();
    let whole = bytes.clone();
    bytes.extend_from_slice(&whole[..whole.len() / 2]);
    std::fs::write(&results, &bytes).unwrap();
    // A stale temporary file of ours from a killed writer.
    let stale = out_dir.join(".report.md.999.tmp");
    std::fs::write(&stale, b"half").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(7200))
        .unwrap();

    std::fs::write(
        &prompts,
        "{\"prompt\": \"Question one\"}\n{\"prompt\": \"Question two\"}\n",
    )
    .unwrap();
    let out = moa(h, &a).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cut off"),
        "the repair is reported: {}",
        text(&out.stderr)
    );
    let body = std::fs::read_to_string(&results).unwrap();
    assert!(body.ends_with('\n'));
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), 2, "{body}");
    for l in lines {
        serde_json::from_str::<Value>(l).expect("every line is whole");
    }
    let sum: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sum["done"], 2);
    assert!(!stale.exists(), "the stale temporary file is removed");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn a_fifo_in_the_sessions_folder_does_not_hang_the_listing() {
    let s = Server::start().await;
    let home = home_with(&s);
    let h = home.path();
    one_session(h, "Real session").await;
    let fifo = h.join("sessions/x.json");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let out = moa_env(h, &["sessions", "list", "--json"], &[], 20).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(text(&out.stderr).contains("FIFO"), "{}", text(&out.stderr));
    // Resolving by name lists too.
    let out = moa_env(h, &["sessions", "show", "Real"], &[], 20).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panic_in_the_run_task_fails_the_run_and_keeps_the_session() {
    let s = Server::start().await;
    let home = home_with(&s);
    let h = home.path();
    // Debug builds only: the run task panics as step 1 (the aggregation) starts.
    let out = moa_env(
        h,
        &["run", "--preset", "mini", "Question before a panic"],
        &[("MOA_DEBUG_PANIC_AT_STEP", "1")],
        60,
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
    let files = session_files(h);
    assert_eq!(files.len(), 1);
    let v = json_of(&files[0]);
    let run = &v["runs"][0]["record"];
    assert_eq!(run["final"]["status"], "failed");
    assert_eq!(run["steps"][0]["op"], "propose");
    assert_eq!(run["steps"][0]["calls"].as_array().unwrap().len(), 2);
    assert!(v.get("in_progress").is_none());
}

/// Panics in the run task itself (the aggregator's fallback scores the answers there).
struct PanickingScorer;

impl AgreementScorer for PanickingScorer {
    fn method(&self) -> &str {
        "panics"
    }
    fn matrix(&self, _: &[String]) -> Vec<Vec<f64>> {
        panic!("scorer exploded")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_front_end_sees_a_run_end_when_its_task_panics() {
    let s = Server::start().await;
    s.script("agg", vec![Reply::status(400, "{\"error\": \"bad\"}")]);
    let dir = std::env::temp_dir();
    let folders = Folders {
        config_dir: dir.clone(),
        data_dir: dir.clone(),
        models_dir: dir,
    };
    let config = Config::from_toml(folders, Path::new("test.toml"), &s.config("")).unwrap();
    let engine = Engine {
        registry: Arc::new(Registry::new(Arc::new(config))),
        scorer: Arc::new(PanickingScorer),
    };
    let p = Arc::new(preset::parse(Path::new("mini.toml"), PRESET, &Templates::builtin()).unwrap());
    let mut h = engine.start(p, vec![Message::user("Q")], RunOptions::default());
    let mut done = None;
    let mut notices = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(ev) = h.events.recv().await {
            match ev {
                RunEvent::RunDone { record } => done = Some(record),
                RunEvent::Notice { message, .. } => notices.push(message),
                _ => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the event stream ends");
    let record = done.expect("a RunDone is sent");
    let f = record.final_answer.as_ref().unwrap();
    assert_eq!(f.status, CallStatus::Failed);
    assert!(
        notices.iter().any(|n| n.contains("scorer exploded")),
        "{notices:?}"
    );
    let returned = h.done.await.expect("the handle gives the failed record");
    assert_eq!(returned, *record);
    assert_eq!(returned.steps[0].op, "propose");
}

//! The `moa` binary as users and scripts drive it: stdout, stderr, exit statuses, config errors.

// Test code may unwrap: a panic there is the failure report.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Output;

use support::{Reply, Server};

const KEY: &str = "sk-cli-test-SECRET-9f8e7d";

async fn moa(home: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    support::moa(home, args, stdin, KEY).await
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const PRESET: &str = r#"name = "mini"
description = "two fake proposers and an aggregator"
[[step]]
op = "propose"
agents = [{ model = "fake/p1", temperature = 0.7 }, { model = "fake/p2" }]
[[step]]
op = "aggregate"
model = "fake/agg"
[baseline]
model = "fake/base"
"#;

async fn home_with(server: &Server, extra: &str) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("config.toml"), server.config(extra)).unwrap();
    std::fs::create_dir_all(home.path().join("presets")).unwrap();
    std::fs::write(home.path().join("presets/mini.toml"), PRESET).unwrap();
    home
}

#[tokio::test(flavor = "multi_thread")]
async fn run_streams_the_final_answer_to_stdout() {
    let s = Server::start().await;
    s.script(
        "agg",
        vec![Reply::text(&["The ", "final ", "answer."], 5, 5)],
    );
    let home = home_with(&s, "").await;
    let out = moa(home.path(), &["run", "--preset", "mini", "What?"], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "The final answer.\n");
    let err = text(&out.stderr);
    assert!(
        err.contains("propose[0] fake/p1") && err.contains("baseline"),
        "{err}"
    );
    assert_eq!(
        s.requests_for("p1")[0].authorization.as_deref(),
        Some(&*format!("Bearer {KEY}"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn json_prints_one_run_record_and_stdin_gives_the_prompt() {
    let s = Server::start().await;
    let home = home_with(&s, "").await;
    let out = moa(
        home.path(),
        &["run", "--preset", "mini", "--json", "-q"],
        Some(b"Question from stdin\n"),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    assert_eq!(v["schema"], "moa.run/1");
    assert_eq!(v["preset"], "mini");
    assert_eq!(v["messages"][0]["content"], "Question from stdin");
    assert_eq!(v["final"]["source"], "aggregate");
    assert_eq!(v["final"]["status"], "ok");
    assert_eq!(v["steps"][0]["calls"][0]["temperature"], 0.7);
    for key in [
        "ttft_ms",
        "latency_ms",
        "tokens_in",
        "tokens_out",
        "usage_estimated",
        "cost_usd",
        "retries",
        "status",
        "error",
        "text",
        "slot",
        "model",
    ] {
        assert!(
            v["steps"][0]["calls"][0].get(key).is_some(),
            "call field {key}"
        );
    }
    assert_eq!(v["baseline"]["model"], "fake/base");
    assert!(v["wall_ms"].as_u64().is_some());
    assert!(v["usage"]["tokens_in"].as_u64().unwrap() > 0);
    assert!(text(&out.stderr).is_empty(), "--quiet");
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_turn_conversation_file() {
    let s = Server::start().await;
    let home = home_with(&s, "").await;
    let conv = home.path().join("conv.json");
    std::fs::write(
        &conv,
        r#"[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello!"}]"#,
    )
    .unwrap();
    let out = moa(
        home.path(),
        &[
            "run",
            "--preset",
            "mini",
            "--conversation",
            conv.to_str().unwrap(),
            "And now?",
        ],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let msgs = &s.requests_for("p2")[0].body["messages"];
    assert_eq!(msgs.as_array().unwrap().len(), 3);
    assert_eq!(msgs[2]["content"], "And now?");
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_one_when_no_answer() {
    let s = Server::start().await;
    s.script("p1", vec![Reply::status(500, "boom")]);
    s.script(
        "p2",
        vec![Reply::status(400, r#"{"error":{"message":"bad request"}}"#)],
    );
    let home = home_with(&s, "").await;
    let out = moa(home.path(), &["run", "--preset", "mini", "Q"], None).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).is_empty());
    let err = text(&out.stderr);
    assert!(
        err.contains("bad request") && err.contains("no answer"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_configuration_exits_two_with_file_line_column() {
    let s = Server::start().await;
    let home = home_with(&s, "timeout_idle = 5\n").await;
    let out = moa(home.path(), &["run", "--preset", "mini", "Q"], None).await;
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("config.toml:6:1") && err.contains("timeout_idle"),
        "{err}"
    );

    let home = home_with(&s, "").await;
    std::fs::write(
        home.path().join("presets/broken.toml"),
        "[[step]]\nop = \"propose\"\nagents = [{ model = \"fake/x\", temprature = 1 }]\n",
    )
    .unwrap();
    let out = moa(home.path(), &["run", "--preset", "broken", "Q"], None).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("broken.toml:1:1") && text(&out.stderr).contains("temprature"),
        "{}",
        text(&out.stderr)
    );

    let out = moa(home.path(), &["run", "--preset", "nope", "Q"], None).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown preset \"nope\""));

    let out = moa(home.path(), &["run", "--preset", "groq-moa", "Q"], None).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("GROQ_API_KEY is not set"),
        "{}",
        text(&out.stderr)
    );

    let out = moa(home.path(), &["run", "--preset", "mini"], Some(b"   \n")).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("prompt is empty"));

    let out = moa(
        home.path(),
        &["run", "--preset", "mini"],
        Some(&[0xff, 0xfe, 0x00, 0x81]),
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not UTF-8"));

    let out = moa(
        home.path(),
        &["--config", "/nonexistent/c.toml", "run", "Q"],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent/c.toml"));

    std::fs::write(home.path().join("config.toml"), "[providers.fake]\nkind = \"openai\"\nbase_url = \"http://x\"\napi_key = \"sk-inline-SECRET\"\n").unwrap();
    let out = moa(home.path(), &["presets", "list"], None).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("api_key_env")
            && !text(&out.stderr).contains("sk-inline-SECRET")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn presets_list_and_show() {
    let s = Server::start().await;
    let home = home_with(&s, "").await;
    let out = moa(home.path(), &["presets", "list"], None).await;
    assert_eq!(out.status.code(), Some(0));
    let list = text(&out.stdout);
    for name in [
        "together-moa",
        "moa-lite",
        "self-moa",
        "self-moa-seq",
        "robust-moa",
        "rank-aggregate",
        "vote",
        "refine",
        "groq-moa",
        "local-self-moa",
        "mini",
    ] {
        assert!(list.contains(name), "{name} missing from:\n{list}");
    }
    let out = moa(home.path(), &["presets", "show", "together-moa"], None).await;
    assert!(text(&out.stdout).contains("Qwen/Qwen1.5-110B-Chat"));
}

#[tokio::test(flavor = "multi_thread")]
async fn models_lists_configured_and_served() {
    let s = Server::start().await;
    s.script("served-model", vec![Reply::text(&["x"], 1, 1)]);
    let home = home_with(&s, "").await;
    let out = moa(home.path(), &["models", "fake"], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let o = text(&out.stdout);
    assert!(
        o.contains("fake/p1") && o.contains("fake/served-model  context 4096"),
        "{o}"
    );
}

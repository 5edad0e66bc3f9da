//! A hostile or broken server cannot get a key or a prompt elsewhere, crash moa, or pass off a cut
//! stream as an answer: regression tests for issue 13's network items, through the real binary.

// Test code may unwrap: a panic there is the failure report.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;

use support::{Piece, Reply, Server};

const KEY: &str = "sk-hostile-SECRET-5c4b3a";

const PRESET: &str = "name = \"solo\"\n[[step]]\nop = \"propose\"\nagents = [{ model = \"fake/p\" }]\n[[step]]\nop = \"aggregate\"\nmodel = \"fake/agg\"\n";

fn home_for(config: &str) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("config.toml"), config).unwrap();
    std::fs::create_dir_all(home.path().join("presets")).unwrap();
    std::fs::write(home.path().join("presets/solo.toml"), PRESET).unwrap();
    home
}

async fn run(home: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["run", "--preset", "solo", "--json", "--no-save"];
    args.extend_from_slice(extra);
    args.push("Private prompt");
    support::moa(home, &args, None, KEY).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_sends_neither_key_nor_prompt_elsewhere() {
    let elsewhere = Server::start().await;
    elsewhere.script("p", vec![Reply::text(&["stolen"], 0, 0)]);
    elsewhere.script("agg", vec![Reply::text(&["stolen"], 0, 0)]);
    let s = Server::start().await;
    let target = format!("{}/chat/completions", elsewhere.base_url());
    for model in ["p", "agg"] {
        s.script(
            model,
            vec![Reply::status(307, "").header("location", &target)],
        );
    }
    for kind in ["openai", "anthropic"] {
        let config = s
            .config("")
            .replace("kind = \"openai\"", &format!("kind = \"{kind}\""));
        let home = home_for(&config);
        let out = run(home.path(), &[]).await;
        assert_eq!(out.status.code(), Some(1), "{kind}");
        assert!(
            elsewhere.log().is_empty(),
            "{kind}: a request reached the other host"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("redirects to"), "{kind}: {err}");
        assert!(err.contains("set base_url"), "{kind}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_finite_retry_after_does_not_crash() {
    let s = Server::start().await;
    for (model, v) in [("p", "nan"), ("agg", "inf")] {
        s.script(
            model,
            vec![
                Reply::status(429, r#"{"error":{"message":"slow down"}}"#).header("retry-after", v),
                Reply::text(&["fine"], 0, 0),
            ],
        );
    }
    let home = home_for(&s.config(""));
    let out = run(home.path(), &[]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
    let rec: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rec["final"]["text"], "fine");
    // A huge retry-after-ms too.
    s.script(
        "agg",
        vec![
            Reply::status(429, "{}").header("retry-after-ms", "1e300"),
            Reply::text(&["fine"], 0, 0),
        ],
    );
    let config = s.config("").replace("max_retries = 2", "max_retries = 0");
    let home = home_for(&config);
    let out = run(home.path(), &[]).await;
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_cut_before_its_end_is_failed_with_the_text_kept() {
    let s = Server::start().await;
    s.script("p", vec![Reply::text(&["whole"], 0, 0)]);
    s.script(
        "agg",
        vec![Reply::raw(vec![
            Piece::Bytes(0, support::sse_chunk("half an ").into_bytes()),
            Piece::Bytes(5, support::sse_chunk("answer").into_bytes()),
        ])],
    );
    let home = home_for(&s.config(""));
    let out = run(home.path(), &[]).await;
    let rec: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let agg = &rec["steps"][1]["calls"][0];
    assert_eq!(agg["status"], "failed", "{agg}");
    assert_eq!(agg["text"], "half an answer");
    assert!(
        agg["error"]
            .as_str()
            .unwrap_or("")
            .contains("closed the stream before finishing"),
        "{agg}"
    );
    // The aggregator failed: the answer comes from a proposer, and says so.
    assert_eq!(rec["final"]["source"], "fallback:0");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_huge_error_body_is_cut_where_it_is_shown_and_stored() {
    let s = Server::start().await;
    let huge = format!(r#"{{"error":{{"message":"{}"}}}}"#, "x".repeat(5_000_000));
    s.script("p", vec![Reply::status(400, &huge)]);
    s.script("agg", vec![Reply::status(400, &huge)]);
    let home = home_for(&s.config(""));
    let out = run(home.path(), &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.len() < 20_000,
        "stderr has {} bytes",
        out.stderr.len()
    );
    assert!(
        out.stdout.len() < 50_000,
        "the record has {} bytes",
        out.stdout.len()
    );
}

/// A reader that stalls (a pager nobody scrolls, Ctrl-Z) must not make moa's own deadlines fire:
/// the answer is larger than a pipe's buffer and nobody reads stdout for 5 idle timeouts.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_stdout_reader_does_not_time_the_calls_out() {
    use tokio::io::AsyncReadExt;
    let s = Server::start().await;
    let piece = "0123456789abcdef".repeat(64); // 1 KiB
    let parts: Vec<&str> = std::iter::repeat_n(piece.as_str(), 300).collect();
    s.script("p", vec![Reply::text(&["short"], 0, 0)]);
    s.script("agg", vec![Reply::text(&parts, 0, 1)]);
    let home = home_for(&s.config("timeout_idle_ms = 300\ntimeout_first_token_ms = 2000\n"));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_moa"))
        .args([
            "run",
            "--preset",
            "solo",
            "--no-save",
            "-q",
            "Long answer please",
        ])
        .env("MOA_HOME", home.path())
        .env("FAKE_API_KEY", KEY)
        .env_remove("MOA_MODELS_DIR")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Nobody reads for 1.5 s: the pipe fills after 64 KiB.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let mut out = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut out)
        .await
        .unwrap();
    let mut err = Vec::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut err)
        .await
        .unwrap();
    let status = child.wait().await.unwrap();
    assert_eq!(status.code(), Some(0), "{}", String::from_utf8_lossy(&err));
    assert_eq!(
        out.len(),
        300 * 1024 + 1,
        "the whole answer and its newline"
    );
}

/// A key pasted with its newline works (trimmed), and a key that cannot be a header fails once,
/// naming the variable and never the value.
#[tokio::test(flavor = "multi_thread")]
async fn keys_are_trimmed_and_a_bad_key_is_named_not_shown() {
    let s = Server::start().await;
    s.script("p", vec![Reply::text(&["ok"], 0, 0)]);
    s.script("agg", vec![Reply::text(&["ok"], 0, 0)]);
    let home = home_for(&s.config(""));
    let run_with = |key: &'static str| {
        let home = home.path().to_path_buf();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_moa"))
                .args(["run", "--preset", "solo", "--no-save", "Hi"])
                .env("MOA_HOME", home)
                .env("FAKE_API_KEY", key)
                .env_remove("MOA_MODELS_DIR")
                .output()
                .await
                .unwrap()
        }
    };
    let out = run_with("sk-trim-SECRET-77\r\n").await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        s.requests_for("p")[0].authorization.as_deref(),
        Some("Bearer sk-trim-SECRET-77")
    );
    let before = s.log().len();
    let out = run_with("sk-bad\u{7}SECRET-88").await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("FAKE_API_KEY"), "{err}");
    assert!(
        !err.contains("SECRET-88"),
        "the key's value was shown: {err}"
    );
    assert_eq!(
        s.log().len(),
        before,
        "nothing was sent with a key that cannot be a header"
    );
}

//! `moa serve` through the real binary on a free port, against the scripted provider server:
//! real streaming (chunks as the aggregator sends them), streamed text == non-streamed text,
//! usage, every error status, auth, saturation, /v1/models, /metrics, a client that goes away
//! mid-stream, SIGTERM under load, 200 concurrent streams under a provider limit, --record, and
//! the official `openai` Python package and curl as clients.

// Test code may unwrap: a panic there is the failure report.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use support::{Reply, Server};
use tokio::io::{AsyncBufReadExt, BufReader};

const KEY: &str = "sk-serve-test-SECRET-4c3b2a";

const PRESET: &str = r#"name = "mini"
description = "two fake proposers and an aggregator"
[[step]]
op = "propose"
agents = [{ model = "fake/p1", temperature = 0.7 }, { model = "fake/p2" }]
[[step]]
op = "aggregate"
model = "fake/agg"
temperature = 0.3
[baseline]
model = "fake/base"
"#;

/// A running `moa serve`, killed when dropped.
struct Moa {
    child: tokio::process::Child,
    base: String,
    stderr: Arc<Mutex<String>>,
    home: PathBuf,
}

impl Moa {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET path` as text, with no key.
    async fn text(&self, path: &str) -> String {
        client()
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn json(&self, path: &str) -> Value {
        serde_json::from_str(&self.text(path).await).unwrap()
    }

    /// A chat completion request with this body, not sent yet.
    fn chat(&self, c: &reqwest::Client, body: &Value) -> reqwest::RequestBuilder {
        c.post(self.url("/v1/chat/completions")).json(body)
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = self.child.id().unwrap() as libc::pid_t;
        // SAFETY: kill only sends a signal to our own child.
        unsafe { libc::kill(pid, sig) };
    }
}

fn home_with(server: &Server, provider_extra: &str, toml_tail: &str) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("config.toml"),
        format!("{}\n{toml_tail}", server.config(provider_extra)),
    )
    .unwrap();
    std::fs::create_dir_all(home.path().join("presets")).unwrap();
    std::fs::write(home.path().join("presets/mini.toml"), PRESET).unwrap();
    home
}

fn preset(home: &Path, name: &str, text: &str) {
    std::fs::write(home.join(format!("presets/{name}.toml")), text).unwrap();
}

async fn start(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Moa {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_moa"));
    cmd.arg("serve")
        .args(args)
        .env("MOA_HOME", home)
        .env("FAKE_API_KEY", KEY)
        .env_remove("MOA_SERVE_KEY")
        .env_remove("MOA_MODELS_DIR")
        .env_remove("GROQ_API_KEY")
        .env_remove("TOGETHER_API_KEY")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    if !args.contains(&"--listen") {
        cmd.args(["--listen", "127.0.0.1:0"]);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let stderr = Arc::new(Mutex::new(String::new()));
    let deadline = Instant::now() + Duration::from_secs(30);
    let base = loop {
        let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
            .await
            .expect("moa serve said where it listens within 30 s")
            .unwrap();
        let Some(line) = line else {
            let status = child.wait().await.unwrap();
            panic!(
                "moa serve ended ({status}) before listening:\n{}",
                stderr.lock().unwrap()
            );
        };
        stderr.lock().unwrap().push_str(&format!("{line}\n"));
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let sink = stderr.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            sink.lock().unwrap().push_str(&format!("{line}\n"));
        }
    });
    Moa {
        child,
        base,
        stderr,
        home: home.to_path_buf(),
    }
}

/// `/metrics` text holds this series with this value.
fn metric(m: &str, line: &str) {
    assert!(m.contains(line), "{line} not in\n{m}");
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

fn chat_body(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is MoA?"}],
        "stream": stream,
        "stream_options": {"include_usage": true},
        "some_future_field": {"ignored": true},
    })
}

/// SSE frames of a streamed response, each with when it arrived.
async fn read_sse(resp: reqwest::Response) -> Vec<(Instant, String)> {
    let mut frames = Vec::new();
    let mut buf = String::new();
    let mut body = resp.bytes_stream();
    while let Some(b) = body.next().await {
        buf.push_str(std::str::from_utf8(&b.unwrap()).unwrap());
        while let Some(i) = buf.find("\n\n") {
            let frame = buf[..i].to_string();
            buf.drain(..i + 2);
            frames.push((Instant::now(), frame));
        }
    }
    frames
}

fn data(frame: &str) -> Option<Value> {
    let d = frame.lines().find_map(|l| l.strip_prefix("data: "))?;
    if d == "[DONE]" {
        return None;
    }
    Some(serde_json::from_str(d).unwrap())
}

fn content_of(frames: &[(Instant, String)]) -> String {
    frames
        .iter()
        .filter_map(|(_, f)| data(f))
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn streaming_sends_the_aggregators_tokens_as_they_arrive() {
    let s = Server::start().await;
    s.script("p1", vec![Reply::text(&["One."], 5, 5)]);
    s.script("p2", vec![Reply::text(&["Two."], 5, 5)]);
    s.script(
        "agg",
        vec![Reply::text(&["Mixture ", "of ", "agents."], 20, 300)],
    );
    let home = home_with(&s, "", "");
    let moa = start(home.path(), &["--preset", "mini"], &[]).await;
    let sent = Instant::now();
    let resp = moa
        .chat(&client(), &chat_body("moa/mini", true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let frames = read_sse(resp).await;
    assert_eq!(frames.last().unwrap().1, "data: [DONE]");
    let contents: Vec<(Instant, String)> = frames
        .iter()
        .filter_map(|(t, f)| {
            let c = data(f)?["choices"][0]["delta"]["content"]
                .as_str()?
                .to_string();
            (!c.is_empty()).then_some((*t, c))
        })
        .collect();
    assert_eq!(
        contents.iter().map(|c| c.1.as_str()).collect::<Vec<_>>(),
        ["Mixture ", "of ", "agents."]
    );
    // The aggregator spaces its tokens 300 ms apart: they arrive spaced, not together at the end.
    let spread = contents[2].0 - contents[0].0;
    assert!(spread >= Duration::from_millis(450), "{spread:?}");
    let first = contents[0].0 - sent;
    let total = frames.last().unwrap().0 - sent;
    assert!(
        total - first >= Duration::from_millis(450),
        "{first:?} {total:?}"
    );
    // The first chunk names the role; the one with finish_reason carries the run summary.
    let v: Vec<Value> = frames.iter().filter_map(|(_, f)| data(f)).collect();
    assert_eq!(v[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(v[0]["object"], "chat.completion.chunk");
    assert_eq!(v[0]["model"], "moa/mini");
    let fin = v
        .iter()
        .find(|c| c["choices"][0]["finish_reason"] == "stop")
        .unwrap();
    assert_eq!(fin["moa"]["final"]["source"], "aggregate");
    assert_eq!(fin["moa"]["steps"][0]["op"], "propose");
    assert_eq!(fin["moa"]["steps"][0]["calls"][1]["model"], "fake/p2");
    assert_eq!(fin["moa"]["steps"][1]["calls"][0]["status"], "ok");
    assert!(fin["moa"]["steps"][0]["agreement"].is_number(), "{fin}");
    // Usage of the whole pipeline: the scripted server reports 10 tokens in per call and one
    // out per part: 3 calls in, 1 + 1 + 3 out.
    let usage = v.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 30, "completion_tokens": 5, "total_tokens": 35})
    );
    // The baseline is off for served runs; the request's settings went to the aggregator only.
    assert!(s.requests_for("base").is_empty());
    assert_eq!(s.requests_for("agg")[0].body["temperature"], 0.3);

    // The same request without streaming: the same text.
    let body = moa
        .chat(
            &client(),
            &json!({"model": "moa/mini", "messages": [{"role": "user", "content": "Q"}],
                      "temperature": 1.1, "max_tokens": 77, "top_p": 0.5}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(body.status(), 200);
    let body: Value = body.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        content_of(&frames)
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["total_tokens"], 35);
    assert_eq!(body["moa"]["final"]["source"], "aggregate");
    let agg = &s.requests_for("agg")[1].body;
    assert_eq!(
        (&agg["temperature"], &agg["max_tokens"], &agg["top_p"]),
        (&json!(1.1), &json!(77), &json!(0.5))
    );
    assert_eq!(s.requests_for("p1")[1].body["temperature"], 0.7);
    assert!(s.requests_for("p1")[1].body.get("max_tokens").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_aggregator_falls_back_and_says_so() {
    let s = Server::start().await;
    s.script("p1", vec![Reply::text(&["One."], 5, 5)]);
    s.script("p2", vec![Reply::text(&["Two."], 5, 5)]);
    s.script("agg", vec![Reply::status(400, "{\"error\":\"bad\"}")]);
    let home = home_with(&s, "", "");
    let moa = start(home.path(), &["--preset", "mini"], &[]).await;
    let resp = moa
        .chat(&client(), &chat_body("moa/mini", true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let frames = read_sse(resp).await;
    let text = content_of(&frames);
    assert!(text == "One." || text == "Two.", "{text}");
    let fin = frames
        .iter()
        .filter_map(|(_, f)| data(f))
        .find(|c| c["choices"][0]["finish_reason"] == "stop")
        .unwrap();
    assert!(
        fin["moa"]["final"]["source"]
            .as_str()
            .unwrap()
            .starts_with("fallback:"),
        "{fin}"
    );
    // Mid-stream: the part sent stays, and the stream ends with an error frame holding the
    // fallback answer.
    s.script(
        "agg",
        vec![Reply::raw(vec![
            support::Piece::Bytes(5, support::sse_chunk("Half an ").into_bytes()),
            support::Piece::Disconnect(50),
        ])],
    );
    let resp = moa
        .chat(&client(), &chat_body("moa/mini", true))
        .send()
        .await
        .unwrap();
    let frames = read_sse(resp).await;
    assert_eq!(content_of(&frames), "Half an ");
    let last = data(&frames.last().unwrap().1).unwrap();
    assert_eq!(last["error"]["code"], "aggregator_interrupted", "{last}");
    let fb = last["moa"]["final_text"].as_str().unwrap();
    assert!(fb == "One." || fb == "Two.", "{last}");
    let m = moa.text("/metrics").await;
    assert!(m.contains("moa_fallbacks_total{preset=\"mini\"} 2"), "{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_come_in_openais_shape_with_their_status() {
    let s = Server::start().await;
    s.script("bad", vec![Reply::status(400, "{\"error\":\"no\"}")]);
    let home = home_with(&s, "", "[serve]\nmax_body_bytes = 3000\n");
    preset(
        home.path(),
        "nokey",
        "[[step]]\nop = \"propose\"\nagents = [{ model = \"groq/llama-3.1-8b-instant\" }]\n[[step]]\nop = \"aggregate\"\nmodel = \"groq/llama-3.1-8b-instant\"\n",
    );
    preset(
        home.path(),
        "broken",
        "[[step]]\nop = \"propose\"\nagents = [{ model = \"fake/bad\" }, { model = \"fake/bad\" }]\n[[step]]\nop = \"aggregate\"\nmodel = \"fake/agg\"\n",
    );
    // GROQ_API_KEY is not set (start removes it): the preset is reported and refused with 503.
    let moa = start(
        home.path(),
        &[
            "--preset", "mini", "--preset", "nokey", "--preset", "broken",
        ],
        &[],
    )
    .await;
    let c = client();
    let post = |body: String| {
        c.post(moa.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let check = |status: u16, v: &Value, code: Option<&str>| {
        let e = &v["error"];
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        assert!(e["type"].is_string(), "{v}");
        assert!(e.get("param").is_some() && e.get("code").is_some(), "{v}");
        if let Some(code) = code {
            assert_eq!(e["code"], code, "{status}: {v}");
        }
    };
    let r = post("{\"model\": ".into()).await.unwrap();
    assert_eq!(r.status(), 400);
    check(400, &r.json().await.unwrap(), Some("invalid_json"));
    let r = post(
        r#"{"model":"moa/mini","messages":[{"role":"user","content":"q"}],"temperature":"warm"}"#
            .into(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    check(400, &v, None);
    assert_eq!(v["error"]["param"], "temperature");
    let r = post(r#"{"model":"moa/nope","messages":[{"role":"user","content":"q"}]}"#.into())
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    check(404, &v, Some("model_not_found"));
    assert!(
        v["error"]["message"].as_str().unwrap().contains("moa/mini"),
        "{v}"
    );
    let big = "x".repeat(5000);
    let r =
        post(json!({"model":"moa/mini","messages":[{"role":"user","content":big}]}).to_string())
            .await
            .unwrap();
    assert_eq!(r.status(), 413);
    check(413, &r.json().await.unwrap(), Some("request_too_large"));
    let r = post(r#"{"model":"moa/nokey","messages":[{"role":"user","content":"q"}]}"#.into())
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    check(503, &v, Some("preset_unavailable"));
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("GROQ_API_KEY"),
        "{v}"
    );
    assert!(
        moa.stderr().contains("moa/nokey is unavailable") && moa.stderr().contains("GROQ_API_KEY"),
        "{}",
        moa.stderr()
    );
    for stream in [false, true] {
        let r = post(
            json!({"model":"moa/broken","stream":stream,"messages":[{"role":"user","content":"q"}]})
                .to_string(),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 502);
        let v: Value = r.json().await.unwrap();
        check(502, &v, Some("no_answer"));
        assert!(
            v["error"]["message"].as_str().unwrap().contains("fake/bad"),
            "{v}"
        );
    }
    let r = c.get(moa.url("/v1/nothing")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    check(404, &r.json().await.unwrap(), None);
    assert!(!moa.stderr().contains(KEY));
}

#[tokio::test(flavor = "multi_thread")]
async fn saturation_is_429_with_retry_after_and_the_deadline_is_504() {
    let s = Server::start().await;
    s.script("agg", vec![Reply::text(&["slow"], 4000, 5)]);
    let home = home_with(
        &s,
        "",
        "[serve]\nmax_concurrent_requests = 2\nrequest_timeout_ms = 1500\n",
    );
    let moa = start(home.path(), &["--preset", "mini"], &[]).await;
    let c = client();
    let req = |stream: bool| moa.chat(&c, &chat_body("moa/mini", stream)).send();
    let started = Instant::now();
    let a = tokio::spawn(req(false));
    let b = tokio::spawn(req(true));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = req(false).await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");
    for h in [a, b] {
        let r = h.await.unwrap().unwrap();
        assert_eq!(r.status(), 504);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "deadline_exceeded");
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_millis(3500),
        "{took:?}"
    );
    // The deadline cancelled the aggregator calls at the provider.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.in_flight(), 0);
    let m = moa.text("/metrics").await;
    metric(&m, "moa_requests_total{preset=\"mini\",status=\"429\"} 1");
    metric(&m, "moa_requests_total{preset=\"mini\",status=\"504\"} 2");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_is_needed_everywhere_but_health() {
    let s = Server::start().await;
    let home = home_with(&s, "", "");
    let moa = start(
        home.path(),
        &["--preset", "mini"],
        &[("MOA_SERVE_KEY", "first-key, second-key")],
    )
    .await;
    let c = client();
    for path in ["/v1/models", "/metrics"] {
        let r = c.get(moa.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_api_key");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("MOA_SERVE_KEY")
        );
        let r = c
            .get(moa.url(path))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let r = c
            .get(moa.url(path))
            .bearer_auth("second-key")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let r = moa
        .chat(&c, &chat_body("moa/mini", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(moa.url("/v1/chat/completions"))
        .bearer_auth("first-key")
        .json(&chat_body("moa/mini", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(moa.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(moa.stderr().contains("bearer key required"));
    assert!(!moa.stderr().contains("first-key"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_public_address_needs_a_key_or_insecure() {
    let s = Server::start().await;
    let home = home_with(&s, "", "");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_moa"))
        .args(["serve", "--listen", "0.0.0.0:0", "--preset", "mini"])
        .env("MOA_HOME", home.path())
        .env_remove("MOA_SERVE_KEY")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("MOA_SERVE_KEY") && err.contains("--insecure"),
        "{err}"
    );
    let moa = start(
        home.path(),
        &["--listen", "0.0.0.0:0", "--insecure", "--preset", "mini"],
        &[],
    )
    .await;
    assert!(moa.base.starts_with("http://0.0.0.0:"), "{}", moa.base);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_preset_is_a_model() {
    let s = Server::start().await;
    let home = home_with(&s, "", "");
    let moa = start(home.path(), &[], &[]).await;
    let v: Value = moa.json("/v1/models").await;
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    for id in [
        "moa/mini",
        "moa/together-moa",
        "moa/groq-moa",
        "moa/local-self-moa",
    ] {
        assert!(ids.contains(&id), "{id} not in {ids:?}");
    }
    let mini = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "moa/mini")
        .unwrap();
    assert_eq!(mini["object"], "model");
    assert_eq!(mini["moa"]["available"], true);
    assert_eq!(
        mini["moa"]["models"],
        json!(["fake/p1", "fake/p2", "fake/agg"])
    );
    let groq = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "moa/groq-moa")
        .unwrap();
    assert_eq!(groq["moa"]["available"], false);
    assert!(
        groq["moa"]["problem"]
            .as_str()
            .unwrap()
            .contains("GROQ_API_KEY")
    );
    assert!(moa.stderr().contains("GROQ_API_KEY"), "{}", moa.stderr());
    drop(moa);
    let only = start(home.path(), &["--preset", "mini"], &[]).await;
    let v: Value = only.json("/v1/models").await;
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    let r = client()
        .get(only.url("/v1/models/moa/mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_what_was_served() {
    let s = Server::start().await;
    s.script("p1", vec![Reply::text(&["One", " answer."], 150, 5)]);
    s.script("p2", vec![Reply::text(&["One", " answer", " too."], 5, 5)]);
    s.script("bad", vec![Reply::status(400, "{\"error\":\"no\"}")]);
    let home = home_with(&s, "", "");
    preset(
        home.path(),
        "trio",
        "[[step]]\nop = \"propose\"\nagents = [{ model = \"fake/p1\" }, { model = \"fake/p2\" }, { model = \"fake/bad\" }]\n[[step]]\nop = \"aggregate\"\nmodel = \"fake/agg\"\n",
    );
    let moa = start(home.path(), &["--preset", "trio"], &[]).await;
    let c = client();
    let (mut tokens_in, mut tokens_out) = (0, 0);
    for _ in 0..3 {
        let r = moa
            .chat(&c, &chat_body("moa/trio", false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        tokens_in += v["usage"]["prompt_tokens"].as_u64().unwrap();
        tokens_out += v["usage"]["completion_tokens"].as_u64().unwrap();
    }
    let m = c.get(moa.url("/metrics")).send().await.unwrap();
    assert!(
        m.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let m = m.text().await.unwrap();
    for line in [
        "moa_proposer_latency_seconds_count{preset=\"trio\",proposer_id=\"fake/p1#0\"} 3".to_string(),
        "moa_proposer_latency_seconds_bucket{le=\"0.1\",preset=\"trio\",proposer_id=\"fake/p1#0\"} 0".into(),
        "moa_proposer_latency_seconds_bucket{le=\"60.0\",preset=\"trio\",proposer_id=\"fake/p1#0\"} 3".into(),
        "moa_proposer_latency_seconds_count{preset=\"trio\",proposer_id=\"fake/p2#1\"} 3".into(),
        "moa_aggregator_latency_seconds_count{preset=\"trio\"} 3".into(),
        "moa_requests_total{preset=\"trio\",status=\"200\"} 3".into(),
        "moa_call_failures_total{preset=\"trio\",kind=\"http_error\"} 3".into(),
        "moa_requests_in_flight 0".into(),
        "moa_proposer_agreement_score{preset=\"trio\"} ".into(),
        "moa_proposer_agreement_score_distribution_count{preset=\"trio\"} 3".into(),
        format!("moa_tokens_in_total{{preset=\"trio\"}} {tokens_in}"),
        format!("moa_tokens_out_total{{preset=\"trio\"}} {tokens_out}"),
    ] {
        assert!(m.contains(&line), "{line} not in\n{m}");
    }
    assert!(tokens_out >= 3 * (2 + 3 + 4), "{tokens_out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_goes_away_cancels_its_pipeline() {
    let s = Server::start().await;
    let words: Vec<String> = (0..400).map(|i| format!("w{i} ")).collect();
    let parts: Vec<&str> = words.iter().map(String::as_str).collect();
    s.script("agg", vec![Reply::text(&parts, 10, 20)]);
    s.script("p1", vec![Reply::text(&["One."], 5, 5)]);
    s.script("p2", vec![Reply::text(&["Two."], 5, 5)]);
    let home = home_with(&s, "", "");
    let moa = start(home.path(), &["--preset", "mini"], &[]).await;
    let resp = moa
        .chat(&client(), &chat_body("moa/mini", true))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("w3 ") {
        seen.push_str(std::str::from_utf8(&body.next().await.unwrap().unwrap()).unwrap());
    }
    assert_eq!(s.in_flight(), 1);
    drop(body);
    let gone = Instant::now();
    while s.in_flight() > 0 && gone.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let agg = s.requests_for("agg").pop().unwrap();
    let ended = agg.ended.expect("the aggregator request ended");
    let after = ended.saturating_duration_since(gone);
    assert!(
        after < Duration::from_millis(100),
        "cancelled after {after:?}"
    );
    // Before the first byte too: proposers still thinking when the client leaves.
    s.script("p1", vec![Reply::text(&["late"], 10_000, 5)]);
    s.script("p2", vec![Reply::text(&["late"], 10_000, 5)]);
    let c = client();
    let pending = tokio::spawn(moa.chat(&c, &chat_body("moa/mini", true)).send());
    while s.in_flight() < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    pending.abort();
    let _ = pending.await;
    drop(c);
    let gone = Instant::now();
    while s.in_flight() > 0 && gone.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let after = gone.elapsed();
    assert!(
        after < Duration::from_millis(100),
        "cancelled after {after:?}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let m = moa.text("/metrics").await;
    metric(&m, "moa_requests_total{preset=\"mini\",status=\"499\"} 2");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_requests_in_flight_finish_and_refuses_new_ones() {
    let s = Server::start().await;
    s.script(
        "agg",
        vec![Reply::text(&["a ", "b ", "c ", "d ", "e"], 100, 200)],
    );
    let home = home_with(&s, "", "");
    let mut moa = start(home.path(), &["--preset", "mini"], &[]).await;
    let c = client();
    let mut running = Vec::new();
    for _ in 0..10 {
        let r = moa.chat(&c, &chat_body("moa/mini", true));
        running.push(tokio::spawn(async move {
            let resp = r.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            content_of(&read_sse(resp).await)
        }));
    }
    while s.requests_for("agg").len() < 10 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    moa.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = reqwest::Client::new()
        .get(moa.url("/health"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(
        refused.as_ref().is_err_and(|e| e.is_connect()),
        "{refused:?}"
    );
    for r in running {
        assert_eq!(r.await.unwrap(), "a b c d e");
    }
    let status = tokio::time::timeout(Duration::from_secs(10), moa.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0), "{}", moa.stderr());
    let err = moa.stderr();
    assert!(err.contains("10 request(s) in flight"), "{err}");
    assert!(err.contains("every request finished"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_drain_timeout_bounds_shutdown() {
    let s = Server::start().await;
    s.script(
        "agg",
        vec![Reply::text(&["never ", "finishes"], 100, 30_000)],
    );
    let home = home_with(&s, "", "[serve]\ndrain_timeout_ms = 300\n");
    let mut moa = start(home.path(), &["--preset", "mini"], &[]).await;
    let c = client();
    let r = moa
        .chat(&c, &chat_body("moa/mini", true))
        .send()
        .await
        .unwrap();
    let mut body = r.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("chat.completion.chunk"));
    let signalled = Instant::now();
    moa.signal(libc::SIGINT);
    let status = tokio::time::timeout(Duration::from_secs(10), moa.child.wait())
        .await
        .unwrap()
        .unwrap();
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{}", moa.stderr());
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(
        moa.stderr().contains("still running; they were cancelled"),
        "{}",
        moa.stderr()
    );
    // The aggregator's request was dropped with the process.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_concurrent_streams_under_a_provider_limit() {
    let s = Server::start().await;
    let words: Vec<String> = (0..20).map(|i| format!("t{i} ")).collect();
    let parts: Vec<&str> = words.iter().map(String::as_str).collect();
    for m in ["p1", "p2", "agg"] {
        s.script(m, vec![Reply::text(&parts, 5, 2)]);
    }
    let home = home_with(
        &s,
        "max_concurrency = 8\n",
        "[serve]\nmax_concurrent_requests = 256\n",
    );
    let moa = start(home.path(), &["--preset", "mini"], &[]).await;
    let c = client();
    let expected: String = words.concat();
    let mut all = Vec::new();
    for i in 0..200 {
        let r = moa.chat(
            &c,
            &json!({"model": "moa/mini", "stream": true,
                          "messages": [{"role": "user", "content": format!("question {i}")}]}),
        );
        all.push(tokio::spawn(async move {
            let resp = r.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            let frames = read_sse(resp).await;
            assert_eq!(frames.last().unwrap().1, "data: [DONE]");
            content_of(&frames)
        }));
    }
    for h in all {
        assert_eq!(h.await.unwrap(), expected);
    }
    assert_eq!(s.log().len(), 600);
    assert!(s.max_in_flight() <= 8, "{}", s.max_in_flight());
    assert!(s.max_in_flight() >= 4, "{}", s.max_in_flight());
    let rss = std::fs::read_to_string(format!("/proc/{}/status", moa.child.id().unwrap()))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap()
        .to_string();
    eprintln!("moa serve after 200 streams: {rss}");
    // Bounded: a few hundred kB per stream at most (the bench measures 34 MB at 100 clients,
    // 121 MB at 500); a leak per request or per chunk would pass this by far.
    let kb: u64 = rss
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(kb < 400 * 1024, "peak RSS {kb} kB after 200 streams");
}

#[tokio::test(flavor = "multi_thread")]
async fn record_saves_served_runs_as_sessions() {
    let s = Server::start().await;
    let home = home_with(&s, "", "");
    let moa = start(home.path(), &["--preset", "mini", "--record"], &[]).await;
    let r = moa
        .chat(&client(), &chat_body("moa/mini", true))
        .send()
        .await
        .unwrap();
    let frames = read_sse(r).await;
    let run_id = data(&frames[0].1).unwrap()["id"]
        .as_str()
        .unwrap()
        .strip_prefix("chatcmpl-")
        .unwrap()
        .to_string();
    let mut sessions = String::new();
    for _ in 0..100 {
        let out = support::moa(&moa.home, &["sessions", "list", "--json"], None, KEY).await;
        sessions = String::from_utf8_lossy(&out.stdout).into_owned();
        if sessions.contains("What is MoA") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(sessions.contains("What is MoA"), "{sessions}");
    let dir = moa.home.join("sessions");
    let text: String = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(text.contains(&run_id), "the session holds run {run_id}");
    assert!(!text.contains(KEY));
}

/// The Python interpreter of a venv with the official `openai` package (`.ci/run` makes one and
/// sets MOA_TEST_OPENAI_PYTHON); skipped when absent, except in CI.
fn openai_python() -> Option<String> {
    let found = std::env::var("MOA_TEST_OPENAI_PYTHON")
        .ok()
        .filter(|p| Path::new(p).exists())
        .or_else(|| {
            let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/venv-openai/bin/python");
            p.exists().then(|| p.display().to_string())
        });
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("no Python with the openai package: .ci/run must create target/venv-openai");
        }
        eprintln!(
            "skipping: no Python with the openai package (python3 -m venv target/venv-openai && target/venv-openai/bin/pip install openai)"
        );
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn the_official_openai_client_works_against_it() {
    let Some(python) = openai_python() else {
        return;
    };
    let s = Server::start().await;
    s.script(
        "agg",
        vec![Reply::text(&["Mixture ", "of ", "agents ", "é ✓."], 20, 20)],
    );
    let home = home_with(&s, "", "");
    let moa = start(
        home.path(),
        &["--preset", "mini"],
        &[("MOA_SERVE_KEY", "py-key")],
    )
    .await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/serve/openai_client.py");
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .env("MOA_BASE_URL", moa.url("/v1"))
        .env("MOA_KEY", "py-key")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["models"].as_array().unwrap().contains(&json!("moa/mini")),
        "{v}"
    );
    assert_eq!(v["plain"]["text"], "Mixture of agents é ✓.");
    assert_eq!(v["streamed"]["text"], v["plain"]["text"]);
    assert!(v["streamed"]["chunks"].as_u64().unwrap() >= 4, "{v}");
    // 10 tokens in per call; p1 and p2 answer in 4 parts (the scripted default), the aggregator 4.
    assert_eq!(v["plain"]["usage"]["total_tokens"], 42);
    assert_eq!(v["streamed"]["usage"]["total_tokens"], 42);
    assert_eq!(v["plain"]["moa_source"], "aggregate");
    assert_eq!(
        v["errors"]["unknown_model"],
        json!({"status": 404, "code": "model_not_found", "param": "model"})
    );
    assert_eq!(v["errors"]["bad_key"]["status"], 401);
    assert_eq!(v["errors"]["bad_type"]["status"], 400);
    assert_eq!(v["errors"]["bad_type"]["param"], "temperature");
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_sees_the_raw_sse() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("curl is missing");
        }
        eprintln!("skipping: curl is not installed");
        return;
    }
    let s = Server::start().await;
    s.script("agg", vec![Reply::text(&["raw ", "sse"], 10, 10)]);
    let home = home_with(&s, "", "");
    let moa = start(home.path(), &["--preset", "mini"], &[]).await;
    let body = json!({"model": "moa/mini", "stream": true, "moa": {"progress": true},
                      "messages": [{"role": "user", "content": "q"}]})
    .to_string();
    let out = tokio::process::Command::new("curl")
        .args(["-sN", "-H", "content-type: application/json", "-d", &body])
        .arg(moa.url("/v1/chat/completions"))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.starts_with("event: moa.progress\ndata: {"), "{text}");
    assert!(text.contains("\"type\":\"call_started\""), "{text}");
    assert!(text.contains("\"type\":\"step_done\""), "{text}");
    assert!(
        text.contains("\"object\":\"chat.completion.chunk\""),
        "{text}"
    );
    assert!(text.contains("\"id\":\"chatcmpl-"), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let frames: Vec<(Instant, String)> = text
        .split("\n\n")
        .filter(|f| !f.is_empty())
        .map(|f| (Instant::now(), f.to_string()))
        .collect();
    // Progress events are named; content comes in unnamed data frames only.
    assert_eq!(
        content_of(
            &frames
                .into_iter()
                .filter(|f| !f.1.starts_with("event:"))
                .collect::<Vec<_>>()
        ),
        "raw sse"
    );
}

const CACHED: &str = "name = \"cached\"\ncache = true\n[[step]]\nop = \"propose\"\nagents = [{ model = \"fake/p1\" }, { model = \"fake/p2\" }]\n[[step]]\nop = \"aggregate\"\nmodel = \"fake/agg\"\n";

async fn ask(moa: &Moa, model: &str) -> Value {
    let r = moa
        .chat(&client(), &chat_body(model, false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// A preset with `cache = true`: the same request again sends nothing to the providers, and
/// /metrics counts each proposer's hit.
#[tokio::test(flavor = "multi_thread")]
async fn an_identical_request_is_answered_from_the_cache() {
    let s = Server::start().await;
    s.script("p1", vec![Reply::text(&["One", " answer."], 5, 5)]);
    s.script("p2", vec![Reply::text(&["Two", " answers."], 5, 5)]);
    s.script("agg", vec![Reply::text(&["Both", " agree."], 5, 5)]);
    let home = home_with(&s, "", "");
    preset(home.path(), "cached", CACHED);
    let moa = start(
        home.path(),
        &["--preset", "cached", "--preset", "mini"],
        &[],
    )
    .await;
    let first = ask(&moa, "moa/cached").await;
    let sent = s.log().len();
    assert_eq!(sent, 3);
    let second = ask(&moa, "moa/cached").await;
    assert_eq!(s.log().len(), sent, "the second request sent nothing");
    assert_eq!(
        first["choices"][0]["message"]["content"],
        second["choices"][0]["message"]["content"]
    );
    let m = moa.text("/metrics").await;
    for line in [
        "moa_cache_hits_total{preset=\"cached\",proposer_id=\"fake/p1#0\"} 1",
        "moa_cache_hits_total{preset=\"cached\",proposer_id=\"fake/p2#1\"} 1",
    ] {
        assert!(m.contains(line), "{line} not in\n{m}");
    }
    // A preset without `cache = true` (and no [cache] enabled) is never cached.
    s.script(
        "p1",
        vec![Reply::text(&["x"], 5, 5), Reply::text(&["y"], 5, 5)],
    );
    let _ = (ask(&moa, "moa/mini").await, ask(&moa, "moa/mini").await);
    assert_eq!(s.requests_for("p1").len(), 3);
}

/// Two servers (two replicas behind a load balancer) sharing one redis-server share hits; with
/// Redis gone, requests go on uncached.
#[tokio::test(flavor = "multi_thread")]
async fn two_servers_share_hits_through_redis_and_go_on_without_it() {
    let Some(mut redis) = support::redis::Redis::start() else {
        return;
    };
    let s = Server::start().await;
    s.script("p1", vec![Reply::text(&["One", " answer."], 5, 5)]);
    s.script("p2", vec![Reply::text(&["Two", " answers."], 5, 5)]);
    s.script("agg", vec![Reply::text(&["Both", " agree."], 5, 5)]);
    let tail = format!("[cache]\ncache_url = \"{}\"\n", redis.url());
    let (h1, h2) = (home_with(&s, "", &tail), home_with(&s, "", &tail));
    preset(h1.path(), "cached", CACHED);
    preset(h2.path(), "cached", CACHED);
    let a = start(h1.path(), &["--preset", "cached"], &[]).await;
    let b = start(h2.path(), &["--preset", "cached"], &[]).await;
    ask(&a, "moa/cached").await;
    assert_eq!(s.log().len(), 3);
    ask(&b, "moa/cached").await;
    assert_eq!(
        s.log().len(),
        3,
        "the other replica's answers came from Redis"
    );
    assert!(
        b.text("/metrics")
            .await
            .contains("moa_cache_hits_total{preset=\"cached\",proposer_id=\"fake/p1#0\"} 1")
    );
    redis.stop();
    s.script("p1", vec![Reply::text(&["Fresh"], 5, 5)]);
    s.script("p2", vec![Reply::text(&["Fresh"], 5, 5)]);
    s.script("agg", vec![Reply::text(&["Fresh"], 5, 5)]);
    let v = ask(&b, "moa/cached").await;
    assert_eq!(v["choices"][0]["message"]["content"], "Fresh");
    assert_eq!(s.log().len(), 6, "uncached without Redis");
}

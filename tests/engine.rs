//! The engine against a scripted OpenAI-compatible server: every op, gates, failures, timeouts,
//! retries, cancellation, multi-turn and the SSE quirks real providers send.

// Test code may unwrap: a panic there is the failure report.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moa_workbench::config::{Config, Folders};
use moa_workbench::engine::preset::{self, AgentSpec, Preset};
use moa_workbench::engine::prompts::Templates;
use moa_workbench::engine::record::{CallStatus, RunRecord};
use moa_workbench::engine::{Engine, ReaggregateError, RunEvent, RunOptions, Stage};
use moa_workbench::metrics::agreement::TfIdf;
use moa_workbench::provider::Message;
use moa_workbench::provider::registry::Registry;
use support::{Piece, Reply, Server, sse_chunk, sse_finish, sse_usage};

fn engine(server: &Server, extra: &str) -> Engine {
    let dir = std::env::temp_dir();
    let folders = Folders {
        config_dir: dir.clone(),
        data_dir: dir.clone(),
        models_dir: dir,
    };
    let config = Config::from_toml(folders, Path::new("test.toml"), &server.config(extra)).unwrap();
    Engine {
        registry: Arc::new(Registry::new(Arc::new(config))),
        scorer: Arc::new(TfIdf),
    }
}

fn preset(text: &str) -> Arc<Preset> {
    Arc::new(preset::parse(Path::new("test-preset.toml"), text, &Templates::builtin()).unwrap())
}

async fn run(
    engine: &Engine,
    preset: Arc<Preset>,
    messages: Vec<Message>,
) -> (RunRecord, Vec<RunEvent>) {
    let mut events = Vec::new();
    let rec = engine
        .run_to_end(preset, messages, RunOptions::default(), |e| {
            events.push(e.clone())
        })
        .await;
    (rec, events)
}

fn ask(q: &str) -> Vec<Message> {
    vec![Message::user(q)]
}

const TOGETHER: &str = include_str!("../assets/prompts/together.md");

fn basic(proposers: &[&str], aggregator: &str) -> String {
    let agents: Vec<String> = proposers
        .iter()
        .map(|m| format!("{{ model = \"fake/{m}\", temperature = 0.7, max_tokens = 512 }}"))
        .collect();
    format!(
        "[[step]]\nop = \"propose\"\nagents = [{}]\n\n[[step]]\nop = \"aggregate\"\nmodel = \"fake/{aggregator}\"\ntemperature = 0.3\n",
        agents.join(", ")
    )
}

#[tokio::test]
async fn propose_aggregate_streams_every_token_in_order() {
    let s = Server::start().await;
    s.script(
        "p1",
        vec![Reply::text(&["Paris ", "is ", "the capital."], 10, 5)],
    );
    s.script("p2", vec![Reply::text(&["It's ", "Paris."], 20, 5)]);
    s.script(
        "agg",
        vec![Reply::text(&["The capital ", "is Paris."], 5, 5)],
    );
    let e = engine(&s, "");
    let (rec, events) = run(
        &e,
        preset(&basic(&["p1", "p2"], "agg")),
        ask("Capital of France?"),
    )
    .await;

    let f = rec.final_answer.as_ref().unwrap();
    assert_eq!(f.text, "The capital is Paris.");
    assert_eq!(f.source, "aggregate");
    assert_eq!(rec.schema, "moa.run/1");
    assert_eq!(rec.steps.len(), 2);
    let p = &rec.steps[0];
    assert_eq!(p.op, "propose");
    assert_eq!(p.calls[0].text, "Paris is the capital.");
    assert_eq!(p.calls[0].status, CallStatus::Ok);
    assert_eq!(p.calls[0].tokens_out, 3);
    assert!(!p.calls[0].usage_estimated);
    assert!(p.calls[0].ttft_ms.unwrap() >= 10);
    assert_eq!(p.calls[0].finish_reason.as_deref(), Some("stop"));
    assert_eq!(p.agreement_method.as_deref(), Some("tfidf"));
    assert!(p.agreement.unwrap() > 0.0);

    // Deltas, per call, in order, tagged with run/step/slot/model, and they add up to the text.
    for (stage, slot, model, text) in [
        (Stage::Step(0), 0, "fake/p1", "Paris is the capital."),
        (Stage::Step(0), 1, "fake/p2", "It's Paris."),
        (Stage::Step(1), 0, "fake/agg", "The capital is Paris."),
    ] {
        let mut joined = String::new();
        let mut started = false;
        let mut finished = false;
        for ev in &events {
            match ev {
                RunEvent::CallStarted { tag, .. } if tag.stage == stage && tag.slot == slot => {
                    assert_eq!(&*tag.model, model);
                    assert_eq!(&*tag.run, rec.id.as_str());
                    started = true;
                }
                RunEvent::Delta { tag, text } if tag.stage == stage && tag.slot == slot => {
                    assert!(started && !finished, "delta outside the call");
                    joined.push_str(text);
                }
                RunEvent::CallFinished { tag, .. } if tag.stage == stage && tag.slot == slot => {
                    finished = true
                }
                _ => {}
            }
        }
        assert!(finished);
        assert_eq!(joined, text);
    }
    assert!(matches!(events.last(), Some(RunEvent::RunDone { .. })));
}

#[tokio::test]
async fn parameters_and_together_prompt_reach_the_server_exactly() {
    let s = Server::start().await;
    s.script("p1", vec![Reply::text(&["one"], 1, 1)]);
    s.script("p2", vec![Reply::text(&["two"], 1, 1)]);
    let e = engine(&s, "");
    let conv = vec![
        Message::system("You are terse."),
        Message::user("Hi"),
        Message::assistant("Hello."),
        Message::user("Count."),
    ];
    let (rec, _) = run(&e, preset(&basic(&["p1", "p2"], "agg")), conv.clone()).await;
    assert!(rec.final_answer.is_some());

    // Multi-turn: every proposer got the whole conversation, unchanged.
    for m in ["p1", "p2"] {
        let req = &s.requests_for(m)[0];
        assert_eq!(req.body["messages"], serde_json::to_value(&conv).unwrap());
        assert_eq!(req.body["temperature"].to_string(), "0.7");
        assert_eq!(req.body["max_tokens"], 512);
        assert_eq!(req.body["stream_options"]["include_usage"], true);
    }
    // The aggregator: Together's block appended to the existing system message; user turns unchanged.
    let agg = &s.requests_for("agg")[0];
    let msgs = agg.body["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 4);
    let expected = format!(
        "You are terse.\n\n{}\n1. one\n2. two",
        TOGETHER.trim_end_matches('\n')
    );
    assert_eq!(msgs[0]["content"].as_str().unwrap(), expected);
    assert_eq!(msgs[3]["content"], "Count.");
    assert_eq!(agg.body["temperature"].to_string(), "0.3");
}

#[tokio::test]
async fn synthesize_layers_see_the_previous_layer() {
    let s = Server::start().await;
    s.script(
        "a",
        vec![Reply::text(&["A1"], 1, 1), Reply::text(&["A2"], 1, 1)],
    );
    s.script(
        "b",
        vec![Reply::text(&["B1"], 1, 1), Reply::text(&["B2"], 1, 1)],
    );
    let e = engine(&s, "");
    let p = preset(
        "[[step]]\nop = \"propose\"\nagents = [{ model = \"fake/a\" }, { model = \"fake/b\" }]\n[[step]]\nop = \"synthesize\"\nagents = \"previous\"\n[[step]]\nop = \"aggregate\"\nmodel = \"fake/agg\"\n",
    );
    let (rec, _) = run(&e, p, ask("Q")).await;
    assert_eq!(rec.steps.len(), 3);
    let a2 = &s.requests_for("a")[1];
    assert!(
        a2.body["messages"][0]["content"]
            .as_str()
            .unwrap()
            .ends_with("\n1. A1\n2. B1")
    );
    let agg = &s.requests_for("agg")[0];
    assert!(
        agg.body["messages"][0]["content"]
            .as_str()
            .unwrap()
            .ends_with("\n1. A2\n2. B2")
    );
}

#[tokio::test]
async fn a_failed_proposer_leaves_the_others_running() {
    let s = Server::start().await;
    s.script(
        "bad",
        vec![Reply::status(
            400,
            r#"{"error":{"message":"model overloaded with nonsense"}}"#,
        )],
    );
    s.script("good", vec![Reply::text(&["fine"], 1, 1)]);
    s.script("good2", vec![Reply::text(&["also fine"], 1, 1)]);
    let e = engine(&s, "");
    let (rec, _) = run(
        &e,
        preset(&basic(&["bad", "good", "good2"], "agg")),
        ask("Q"),
    )
    .await;
    let calls = &rec.steps[0].calls;
    assert_eq!(calls[0].status, CallStatus::Failed);
    assert!(
        calls[0]
            .error
            .as_ref()
            .unwrap()
            .contains("model overloaded with nonsense")
    );
    assert_eq!(calls[0].error_kind.as_deref(), Some("http_error"));
    let agg = &s.requests_for("agg")[0];
    assert!(
        agg.body["messages"][0]["content"]
            .as_str()
            .unwrap()
            .ends_with("\n1. fine\n2. also fine")
    );
    assert_eq!(rec.final_answer.unwrap().source, "aggregate");
}

#[tokio::test]
async fn aggregator_failure_falls_back_to_a_proposer() {
    let s = Server::start().await;
    s.script(
        "p1",
        vec![Reply::text(&["Paris is the capital of France."], 1, 1)],
    );
    s.script(
        "p2",
        vec![Reply::text(&["The capital of France is Paris."], 1, 1)],
    );
    s.script("p3", vec![Reply::text(&["Bananas are yellow."], 1, 1)]);
    s.script(
        "agg",
        vec![Reply::raw(vec![
            Piece::Bytes(1, sse_chunk("partial aggreg").into_bytes()),
            Piece::Disconnect(5),
        ])],
    );
    let e = engine(&s, "");
    let (rec, _) = run(&e, preset(&basic(&["p1", "p2", "p3"], "agg")), ask("Q")).await;
    let f = rec.final_answer.unwrap();
    assert!(f.source.starts_with("fallback:"), "{}", f.source);
    assert_ne!(f.source, "fallback:2", "the outlier is not the fallback");
    assert_eq!(f.status, CallStatus::Ok);
    let agg = &rec.steps[1].calls[0];
    assert_eq!(agg.status, CallStatus::Failed);
    assert_eq!(agg.text, "partial aggreg", "partial text is kept");
    assert_eq!(
        s.requests_for("agg").len(),
        1,
        "never re-sent after output was seen"
    );
    assert!(
        rec.steps[1]
            .notes
            .iter()
            .any(|n| n.contains("falling back"))
    );
}

#[tokio::test]
async fn every_proposer_failing_gives_no_answer() {
    let s = Server::start().await;
    s.script("x", vec![Reply::status(404, "no such model")]);
    let e = engine(&s, "");
    let (rec, _) = run(&e, preset(&basic(&["x", "x"], "agg")), ask("Q")).await;
    assert!(rec.final_answer.is_none());
    assert_eq!(rec.steps.len(), 1, "the aggregator is not called");
    assert!(s.requests_for("agg").is_empty());
    assert!(
        rec.steps[0].calls[0]
            .error
            .as_ref()
            .unwrap()
            .contains("moa models")
    );
}

#[tokio::test]
async fn retries_429_and_5xx_before_the_first_token_honouring_retry_after() {
    let s = Server::start().await;
    s.script(
        "flaky",
        vec![
            Reply::status(429, r#"{"error":{"message":"slow down"}}"#)
                .header("retry-after-ms", "300"),
            Reply::status(503, "busy"),
            Reply::text(&["ok"], 1, 1),
        ],
    );
    let e = engine(&s, "");
    let started = Instant::now();
    let (rec, events) = run(&e, preset(&basic(&["flaky"], "agg")), ask("Q")).await;
    let c = &rec.steps[0].calls[0];
    assert_eq!(c.status, CallStatus::Ok);
    assert_eq!(c.retries, 2);
    let log = s.requests_for("flaky");
    assert_eq!(log.len(), 3);
    assert!(
        log[1].at - log[0].at >= Duration::from_millis(300),
        "Retry-After honoured"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let retries: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, RunEvent::Retrying { .. }))
        .collect();
    assert_eq!(retries.len(), 2);
}

#[tokio::test]
async fn retries_stop_at_max_retries() {
    let s = Server::start().await;
    s.script("down", vec![Reply::status(502, "Bad Gateway")]);
    let e = engine(&s, "");
    let (rec, _) = run(&e, preset(&basic(&["down"], "agg")), ask("Q")).await;
    let c = &rec.steps[0].calls[0];
    assert_eq!(c.status, CallStatus::Failed);
    assert_eq!(c.retries, 2);
    assert_eq!(s.requests_for("down").len(), 3);
    assert!(c.error.as_ref().unwrap().contains("502"));
}

#[tokio::test]
async fn a_disconnect_after_output_is_not_retried_and_keeps_the_text() {
    let s = Server::start().await;
    s.script(
        "cut",
        vec![Reply::raw(vec![
            Piece::Bytes(1, sse_chunk("Half an ").into_bytes()),
            Piece::Bytes(1, sse_chunk("answer").into_bytes()),
            Piece::Disconnect(5),
        ])],
    );
    let e = engine(&s, "");
    let (rec, _) = run(&e, preset(&basic(&["cut", "ok"], "agg")), ask("Q")).await;
    let c = &rec.steps[0].calls[0];
    assert_eq!(c.status, CallStatus::Failed);
    assert_eq!(c.error_kind.as_deref(), Some("disconnect"));
    assert_eq!(c.text, "Half an answer");
    assert_eq!(s.requests_for("cut").len(), 1);
    assert_eq!(rec.final_answer.unwrap().source, "aggregate");
}

#[tokio::test]
async fn first_token_idle_and_total_timeouts() {
    let s = Server::start().await;
    s.script("hang", vec![Reply::hang()]);
    s.script(
        "silent_after_headers",
        vec![Reply::raw(vec![Piece::Bytes(3_600_000, vec![])])],
    );
    s.script(
        "trickle",
        vec![Reply::raw(vec![
            Piece::Bytes(1, sse_chunk("a").into_bytes()),
            Piece::Bytes(2_000, sse_chunk("b").into_bytes()),
        ])],
    );
    let e = engine(
        &s,
        "timeout_first_token_ms = 300\ntimeout_idle_ms = 300\ntimeout_total_ms = 5000\n",
    );
    let started = Instant::now();
    let (rec, _) = run(
        &e,
        preset(&basic(
            &["hang", "silent_after_headers", "trickle", "ok"],
            "agg",
        )),
        ask("Q"),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(3));
    let c = &rec.steps[0].calls;
    assert_eq!(c[0].status, CallStatus::Timeout);
    assert_eq!(c[0].error_kind.as_deref(), Some("first_token_timeout"));
    assert_eq!(c[1].error_kind.as_deref(), Some("first_token_timeout"));
    assert_eq!(c[2].status, CallStatus::Timeout);
    assert_eq!(c[2].error_kind.as_deref(), Some("idle_timeout"));
    assert_eq!(c[2].text, "a");
    assert_eq!(c[3].status, CallStatus::Ok);

    let e = engine(&s, "timeout_total_ms = 400\ntimeout_idle_ms = 10000\n");
    s.script("slow", vec![Reply::text(&["x"; 50], 1, 50)]);
    let (rec, _) = run(&e, preset(&basic(&["slow", "ok"], "agg")), ask("Q")).await;
    let c = &rec.steps[0].calls[0];
    assert_eq!(c.status, CallStatus::Timeout);
    assert_eq!(c.error_kind.as_deref(), Some("total_timeout"));
    assert!(!c.text.is_empty());
}

/// The idle deadline moves with every chunk while one timer serves the whole stream: a steady
/// stream longer than the idle timeout goes on, and silence ends it one idle timeout after the last
/// chunk, not at the (later) first-token deadline.
#[tokio::test]
async fn the_idle_deadline_follows_the_stream() {
    let s = Server::start().await;
    let mut pieces: Vec<Piece> = (0..10)
        .map(|i| Piece::Bytes(100, sse_chunk(&format!("t{i} ")).into_bytes()))
        .collect();
    pieces.push(Piece::Bytes(3_600_000, vec![]));
    s.script("steady_then_silent", vec![Reply::raw(pieces)]);
    let e = engine(
        &s,
        "timeout_first_token_ms = 5000\ntimeout_idle_ms = 300\ntimeout_total_ms = 20000\n",
    );
    let (rec, _) = run(
        &e,
        preset(&basic(&["steady_then_silent", "ok"], "agg")),
        ask("Q"),
    )
    .await;
    let c = &rec.steps[0].calls[0];
    assert_eq!(c.error_kind.as_deref(), Some("idle_timeout"), "{c:?}");
    assert_eq!(c.text.matches('t').count(), 10, "{}", c.text);
    // Ten chunks 100 ms apart, then 300 ms of silence: 1.3 s (a loaded machine adds some).
    assert!(
        (1_250..2_500).contains(&c.latency_ms),
        "ended after {} ms",
        c.latency_ms
    );
}

#[tokio::test]
async fn cancelling_stops_every_request_quickly_and_keeps_partial_text() {
    let s = Server::start().await;
    for m in ["s1", "s2", "s3"] {
        s.script(m, vec![Reply::text(&["tok "; 200], 1, 20)]);
    }
    let e = engine(&s, "");
    let mut h = e.start(
        preset(&basic(&["s1", "s2", "s3"], "agg")),
        ask("Q"),
        RunOptions::default(),
    );
    let drain = tokio::spawn(async move { while h.events.recv().await.is_some() {} });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    h.cancel.cancel();
    let rec = h.done.await.unwrap();
    let took = t.elapsed();
    drain.await.unwrap();
    assert!(took < Duration::from_millis(1000), "cancel took {took:?}");
    assert!(rec.cancelled);
    assert!(rec.final_answer.is_none());
    for c in &rec.steps[0].calls {
        assert_eq!(c.status, CallStatus::Cancelled);
        assert!(
            c.text.starts_with("tok tok"),
            "partial text kept: {:?}",
            c.text
        );
    }
    assert!(s.requests_for("agg").is_empty());
    // The server sees the connections close: nothing is left streaming to us.
    assert_eq!(s.log().len(), 3);
    let mut waited = 0;
    while s.in_flight() > 0 && waited < 50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 1;
    }
    assert_eq!(
        s.in_flight(),
        0,
        "requests still open on the server after cancel"
    );
}

#[tokio::test]
async fn cancelling_after_the_answer_keeps_it_and_stops_the_baseline() {
    let s = Server::start().await;
    s.script("slowbase", vec![Reply::text(&["tok "; 200], 1, 20)]);
    let e = engine(&s, "");
    let text = format!(
        "{}[baseline]\nmodel = \"fake/slowbase\"\n",
        basic(&["a", "b"], "agg")
    );
    let mut h = e.start(preset(&text), ask("Q"), RunOptions::default());
    let mut final_done = false;
    while let Some(ev) = h.events.recv().await {
        if let RunEvent::StepDone { step: 1, .. } = ev {
            final_done = true;
            h.cancel.cancel();
        }
    }
    assert!(final_done);
    let rec = h.done.await.unwrap();
    assert!(rec.cancelled);
    let f = rec.final_answer.expect("the answer stays");
    assert_eq!(f.status, CallStatus::Ok);
    assert_eq!(f.text, "Answer from agg.");
    let b = rec.baseline.unwrap();
    assert_eq!(b.status, CallStatus::Cancelled);
    assert!(b.text.starts_with("tok"), "{:?}", b.text);
}

#[tokio::test]
async fn quorum_moves_on_and_records_late_calls() {
    let s = Server::start().await;
    s.script("fast1", vec![Reply::text(&["one"], 1, 1)]);
    s.script("fast2", vec![Reply::text(&["two"], 1, 1)]);
    s.script("slow", vec![Reply::text(&["late ", "answer"], 3_000, 1)]);
    let e = engine(&s, "");
    let text = basic(&["fast1", "fast2", "slow"], "agg").replacen(
        "\n\n[[step]]\nop = \"aggregate\"",
        "\nquorum = 2\n\n[[step]]\nop = \"aggregate\"",
        1,
    );
    let started = Instant::now();
    let (rec, _) = run(&e, preset(&text), ask("Q")).await;
    assert!(started.elapsed() < Duration::from_millis(2_500));
    let calls = &rec.steps[0].calls;
    assert_eq!(
        calls[2].status,
        CallStatus::Cancelled,
        "still running at the end: cancelled"
    );
    assert!(rec.steps[0].notes[0].contains("quorum of 2"));
    let agg = &s.requests_for("agg")[0];
    assert!(
        agg.body["messages"][0]["content"]
            .as_str()
            .unwrap()
            .ends_with("\n1. one\n2. two")
    );
}

#[tokio::test]
async fn a_late_call_that_finishes_before_the_end_is_recorded_as_late() {
    let s = Server::start().await;
    s.script("fast", vec![Reply::text(&["one"], 1, 1)]);
    s.script("medium", vec![Reply::text(&["two"], 300, 1)]);
    s.script("agg", vec![Reply::text(&["final"], 800, 1)]);
    let e = engine(&s, "");
    let text = basic(&["fast", "medium"], "agg").replacen(
        "\n\n[[step]]\nop = \"aggregate\"",
        "\ndeadline_ms = 100\n\n[[step]]\nop = \"aggregate\"",
        1,
    );
    let (rec, _) = run(&e, preset(&text), ask("Q")).await;
    let calls = &rec.steps[0].calls;
    assert_eq!(calls[0].status, CallStatus::Ok);
    assert_eq!(calls[1].status, CallStatus::Late);
    assert_eq!(calls[1].text, "two");
    assert!(rec.steps[0].notes[0].contains("deadline of 100 ms"));
    assert!(
        s.requests_for("agg")[0].body["messages"][0]["content"]
            .as_str()
            .unwrap()
            .ends_with("\n1. one")
    );
    assert_eq!(rec.final_answer.unwrap().text, "final");
}

#[tokio::test]
async fn sse_quirks_of_real_providers() {
    let s = Server::start().await;
    let euro = "€".as_bytes();
    let quirky = Reply::raw(vec![
        Piece::Bytes(1, b": keep-alive\n\n".to_vec()),
        Piece::Bytes(1, b": OPENROUTER PROCESSING\n\n".to_vec()),
        // finish_reason "" on a middle chunk, unknown fields
        Piece::Bytes(1, br#"data: {"id":"x","choices":[{"index":0,"delta":{"role":"assistant","content":"Price: "},"finish_reason":"","logprobs":null}],"system_fingerprint":"fp"}"#.to_vec()),
        Piece::Bytes(1, b"\n\n".to_vec()),
        // an SSE line split across reads, and a UTF-8 character split across reads
        Piece::Bytes(1, b"data: {\"choices\":[{\"delta\":{\"content\":\"10 ".to_vec()),
        Piece::Bytes(1, euro[..1].to_vec()),
        Piece::Bytes(1, [&euro[1..], b"\"}}]}\n\n"].concat()),
        Piece::Bytes(1, b"data: this is not json\n\n".to_vec()),
        Piece::Bytes(1, sse_finish().into_bytes()),
        // usage-only chunk with empty choices
        Piece::Bytes(1, sse_usage(7, 3).into_bytes()),
        Piece::Bytes(1, b"data: [DONE]\n\n".to_vec()),
    ]);
    s.script("quirky", vec![quirky]);
    // CRLF line endings and no usage at all.
    s.script(
        "crlf",
        vec![Reply::raw(vec![
            Piece::Bytes(
                1,
                b"data: {\"choices\":[{\"delta\":{\"content\":\"crlf ok\"}}]}\r\n\r\n".to_vec(),
            ),
            Piece::Bytes(1, b"data: [DONE]\r\n\r\n".to_vec()),
        ])],
    );
    let e = engine(&s, "");
    let (rec, _) = run(&e, preset(&basic(&["quirky", "crlf"], "agg")), ask("Q")).await;
    let c = &rec.steps[0].calls[0];
    assert_eq!(c.status, CallStatus::Ok, "{:?}", c.error);
    assert_eq!(c.text, "Price: 10 €");
    assert_eq!(
        (c.tokens_in, c.tokens_out, c.usage_estimated),
        (7, 3, false)
    );
    let c = &rec.steps[0].calls[1];
    assert_eq!(c.text, "crlf ok");
    assert!(
        c.usage_estimated,
        "no usage reported: estimated and flagged"
    );
    assert!(c.tokens_out > 0 && c.tokens_in > 0);
}

#[tokio::test]
async fn auth_errors_name_the_variable_never_the_key() {
    let s = Server::start().await;
    s.script(
        "m",
        vec![Reply::status(
            401,
            r#"{"error":{"message":"Incorrect API key provided"}}"#,
        )],
    );
    // SAFETY: tests in this binary that read FAKE_API_KEY all set the same value.
    unsafe { std::env::set_var("FAKE_API_KEY", "sk-test-SECRET-4242") };
    let e = engine(&s, "");
    let (rec, _) = run(&e, preset(&basic(&["m"], "agg")), ask("Q")).await;
    let c = &rec.steps[0].calls[0];
    assert_eq!(c.error_kind.as_deref(), Some("auth"));
    let err = c.error.as_ref().unwrap();
    assert!(
        err.contains("FAKE_API_KEY") && err.contains("Incorrect API key"),
        "{err}"
    );
    assert_eq!(
        s.requests_for("m")[0].authorization.as_deref(),
        Some("Bearer sk-test-SECRET-4242")
    );
    assert_eq!(c.retries, 0, "401 is not retried");
    let json = serde_json::to_string(&rec).unwrap();
    assert!(!json.contains("SECRET-4242"));
}

#[tokio::test]
async fn max_concurrency_is_respected() {
    let s = Server::start().await;
    s.script("m", vec![Reply::text(&["a", "b", "c"], 30, 30)]);
    let e = engine(&s, "max_concurrency = 2\n");
    let p = preset(
        "[[step]]\nop = \"propose\"\nagents = [{ model = \"fake/m\", n = 6 }]\n[[step]]\nop = \"aggregate\"\nmodel = \"fake/agg\"\n",
    );
    let (rec, _) = run(&e, p, ask("Q")).await;
    assert!(
        rec.steps[0]
            .calls
            .iter()
            .all(|c| c.status == CallStatus::Ok)
    );
    assert_eq!(s.max_in_flight(), 2);
}

#[tokio::test]
async fn shuffle_and_dropout_are_reproducible_with_a_seed() {
    let s = Server::start().await;
    for (m, t) in [
        ("a", "alpha"),
        ("b", "bravo"),
        ("c", "charlie"),
        ("d", "delta"),
    ] {
        s.script(m, vec![Reply::text(&[t], 1, 1)]);
    }
    let e = engine(&s, "");
    let text = "[[step]]\nop = \"propose\"\nagents = [{ model = \"fake/a\" }, { model = \"fake/b\" }, { model = \"fake/c\" }, { model = \"fake/d\" }]\n[[step]]\nop = \"shuffle\"\nseed = 7\n[[step]]\nop = \"dropout\"\nrate = 0.5\nseed = 3\n[[step]]\nop = \"aggregate\"\nmodel = \"fake/agg\"\n";
    let (r1, _) = run(&e, preset(text), ask("Q")).await;
    let (r2, _) = run(&e, preset(text), ask("Q")).await;
    assert_eq!(r1.steps[1].responses, r2.steps[1].responses);
    assert_eq!(r1.steps[2].responses, r2.steps[2].responses);
    let kept = r1.steps[2].responses.len();
    assert!((1..=4).contains(&kept));
    let dropped = r1.steps[0]
        .calls
        .iter()
        .filter(|c| c.status == CallStatus::Dropped)
        .count();
    assert_eq!(kept + dropped, 4);
    let aggs = s.requests_for("agg");
    assert_eq!(aggs[0].body["messages"], aggs[1].body["messages"]);

    // A rate just below 1 still keeps one response.
    let text = text
        .replace("rate = 0.5", "rate = 0.99")
        .replace("seed = 3", "");
    let (r3, _) = run(&e, preset(&text), ask("Q")).await;
    assert!(!r3.steps[2].responses.is_empty());
}

#[tokio::test]
async fn rank_keeps_the_judges_top_n_in_order() {
    let s = Server::start().await;
    for (m, t) in [("a", "alpha"), ("b", "bravo"), ("c", "charlie")] {
        s.script(m, vec![Reply::text(&[t], 1, 1)]);
    }
    s.script(
        "judge",
        vec![Reply::text(
            &["Response 3 is best, then 1.\nRanking: 3 > 1 > 2"],
            1,
            1,
        )],
    );
    let e = engine(&s, "");
    let text = "[[step]]\nop = \"propose\"\nagents = [{ model = \"fake/a\" }, { model = \"fake/b\" }, { model = \"fake/c\" }]\n[[step]]\nop = \"rank\"\nmodel = \"fake/judge\"\nn = 2\n[[step]]\nop = \"aggregate\"\nmodel = \"fake/agg\"\n";
    let (rec, _) = run(&e, preset(text), ask("Q")).await;
    assert_eq!(rec.steps[1].responses, vec![[0, 2], [0, 0]]);
    assert_eq!(rec.steps[0].calls[1].status, CallStatus::Dropped);
    let judge = &s.requests_for("judge")[0];
    let prompt = judge.body["messages"][0]["content"].as_str().unwrap();
    assert!(prompt.contains("Query: Q") && prompt.contains("\n1. alpha\n2. bravo\n3. charlie"));
    let agg = &s.requests_for("agg")[0];
    assert!(
        agg.body["messages"][0]["content"]
            .as_str()
            .unwrap()
            .ends_with("\n1. charlie\n2. alpha")
    );
}

#[tokio::test]
async fn vote_picks_a_proposers_answer() {
    let s = Server::start().await;
    for (m, t) in [("a", "alpha"), ("b", "bravo"), ("c", "charlie")] {
        s.script(m, vec![Reply::text(&[t], 1, 1)]);
    }
    s.script(
        "judge",
        vec![Reply::text(&["Most agree with the second. [[2]]"], 1, 1)],
    );
    let e = engine(&s, "");
    let text = "[[step]]\nop = \"propose\"\nagents = [{ model = \"fake/a\" }, { model = \"fake/b\" }, { model = \"fake/c\" }]\n[[step]]\nop = \"vote\"\nmodel = \"fake/judge\"\n";
    let (rec, _) = run(&e, preset(text), ask("Q")).await;
    let f = rec.final_answer.unwrap();
    assert_eq!(f.text, "bravo");
    assert_eq!(f.source, "propose:1");
}

#[tokio::test]
async fn refine_improves_each_response() {
    let s = Server::start().await;
    s.script("a", vec![Reply::text(&["draft A"], 1, 1)]);
    s.script("b", vec![Reply::text(&["draft B"], 1, 1)]);
    s.script(
        "editor",
        vec![
            Reply::text(&["better A"], 1, 1),
            Reply::text(&["better B"], 1, 1),
        ],
    );
    let e = engine(&s, "");
    let text = "[[step]]\nop = \"propose\"\nagents = [{ model = \"fake/a\" }, { model = \"fake/b\" }]\n[[step]]\nop = \"refine\"\nagents = [{ model = \"fake/editor\" }]\n[[step]]\nop = \"aggregate\"\nmodel = \"fake/agg\"\n";
    let (rec, _) = run(&e, preset(text), ask("Q")).await;
    let reqs = s.requests_for("editor");
    assert_eq!(reqs.len(), 2);
    let prompts: Vec<String> = reqs
        .iter()
        .map(|r| {
            r.body["messages"][0]["content"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(
        prompts.iter().any(|p| p.contains("draft A"))
            && prompts.iter().any(|p| p.contains("draft B"))
    );
    assert_eq!(rec.steps[1].calls.len(), 2);
    let agg = s.requests_for("agg")[0].body["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(agg.contains("better A") && agg.contains("better B") && !agg.contains("draft"));
}

#[tokio::test]
async fn self_moa_seq_keeps_the_running_answer_in_every_window() {
    let s = Server::start().await;
    s.script(
        "m",
        vec![
            Reply::text(&["s1"], 1, 1),
            Reply::text(&["s2"], 1, 1),
            Reply::text(&["s3"], 1, 1),
            Reply::text(&["s4"], 1, 1),
            Reply::text(&["s5"], 1, 1),
        ],
    );
    s.script(
        "agg",
        vec![Reply::text(&["best1"], 1, 1), Reply::text(&["best2"], 1, 1)],
    );
    let e = engine(&s, "");
    // Samples come from the propose step (one model, five samples); windows of 3.
    let text = "[[step]]\nop = \"propose\"\nagents = [{ model = \"fake/m\", n = 5, temperature = 0.9 }]\n[[step]]\nop = \"self_moa_seq\"\nmodel = \"fake/agg\"\nwindow = 3\n";
    let (rec, _) = run(&e, preset(text), ask("Q")).await;
    let aggs = s.requests_for("agg");
    assert_eq!(aggs.len(), 2);
    let w1 = aggs[0].body["messages"][0]["content"].as_str().unwrap();
    let w2 = aggs[1].body["messages"][0]["content"].as_str().unwrap();
    let (s1, s2, s3) = ("s1", "s2", "s3");
    assert!(
        w1.ends_with(&format!("\n1. {s1}\n2. {s2}\n3. {s3}")),
        "{w1}"
    );
    assert!(w2.ends_with("\n1. best1\n2. s4\n3. s5"), "{w2}");
    let f = rec.final_answer.unwrap();
    assert_eq!(f.text, "best2");
    assert_eq!(f.source, "self_moa_seq:1");
}

#[tokio::test]
async fn self_moa_seq_can_sample_by_itself() {
    let s = Server::start().await;
    s.script("m", vec![Reply::text(&["sample"], 1, 1)]);
    let e = engine(&s, "");
    let text = "[[step]]\nop = \"self_moa_seq\"\nmodel = \"fake/m\"\nsamples = 4\nsample_temperature = 0.8\nwindow = 2\ntemperature = 0.0\n";
    let (rec, _) = run(&e, preset(text), ask("Q")).await;
    let reqs = s.requests_for("m");
    assert_eq!(reqs.len(), 4 + 3, "4 samples, then 3 windows of 2");
    assert_eq!(reqs[0].body["temperature"].to_string(), "0.8");
    assert_eq!(reqs[6].body["temperature"].to_string(), "0.0");
    assert_eq!(rec.steps[0].calls.len(), 7);
    assert!(rec.final_answer.is_some());
}

#[tokio::test]
async fn aggregator_input_is_shortened_to_fit_its_context() {
    let s = Server::start().await;
    let long = "word ".repeat(2_000);
    s.script("a", vec![Reply::text(&[&long], 1, 1)]);
    s.script("b", vec![Reply::text(&[&long], 1, 1)]);
    s.script("c", vec![Reply::text(&["short answer"], 1, 1)]);
    let e = engine(&s, "[models.\"fake/agg\"]\ncontext_window = 2048\n");
    let text = "[[step]]\nop = \"propose\"\nagents = [{ model = \"fake/a\" }, { model = \"fake/b\" }, { model = \"fake/c\" }]\n[[step]]\nop = \"aggregate\"\nmodel = \"fake/agg\"\nmax_tokens = 256\n";
    let (rec, events) = run(&e, preset(text), ask("Q")).await;
    let sh = rec.steps[1]
        .shortened
        .as_ref()
        .expect("shortening recorded");
    assert_eq!(sh.context_window, 2048);
    assert_eq!(sh.responses_shortened, 2);
    let sent = s.requests_for("agg")[0].body["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        sent.chars().count() / 4 + 256 < 2048,
        "fits: {} chars",
        sent.chars().count()
    );
    assert!(sent.contains("short answer"), "short responses stay whole");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, RunEvent::Notice { message, .. } if message.contains("overflow")))
    );
}

#[tokio::test]
async fn runaway_answers_are_capped() {
    let s = Server::start().await;
    let big = "x".repeat(10_000);
    let parts: Vec<&str> = std::iter::repeat_n(big.as_str(), 100).collect();
    s.script("runaway", vec![Reply::text(&parts, 1, 0)]);
    let e = engine(&s, "");
    let text = "[[step]]\nop = \"propose\"\nagents = [{ model = \"fake/runaway\", max_tokens = 100 }]\n[[step]]\nop = \"aggregate\"\nmodel = \"fake/agg\"\n";
    let (rec, _) = run(&e, preset(text), ask("Q")).await;
    let c = &rec.steps[0].calls[0];
    assert!(c.text.len() <= 100 * 64, "{}", c.text.len());
    assert_eq!(c.finish_reason.as_deref(), Some("capped"));
}

#[tokio::test]
async fn baseline_runs_alongside() {
    let s = Server::start().await;
    s.script("base", vec![Reply::text(&["baseline answer"], 200, 1)]);
    let e = engine(
        &s,
        "[prices.\"fake/base\"]\ninput_per_mtok = 1.0\noutput_per_mtok = 2.0\n",
    );
    let text = format!(
        "{}\n[baseline]\nmodel = \"fake/base\"\ntemperature = 0.7\n",
        basic(&["a", "b"], "agg")
    );
    let (rec, _) = run(&e, preset(&text), ask("Q")).await;
    let b = rec.baseline.as_ref().unwrap();
    assert_eq!(b.text, "baseline answer");
    assert!(b.cost_usd.unwrap() > 0.0);
    assert!(rec.usage.cost_incomplete, "fake/a has no price");
    // It started with the proposers, not after them.
    assert!(b.start_ms < rec.steps[1].calls[0].start_ms);
}

#[tokio::test]
async fn anthropic_streams_from_recorded_events() {
    let s = Server::start().await;
    let recorded = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-x\",\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\ndata: {\"type\": \"ping\"}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\", world\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    let overloaded = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Par\"}}\n\n",
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
    );
    s.script(
        "claude-x",
        vec![Reply::raw(vec![Piece::Bytes(
            1,
            recorded.as_bytes().to_vec(),
        )])],
    );
    s.script(
        "claude-o",
        vec![Reply::raw(vec![Piece::Bytes(
            1,
            overloaded.as_bytes().to_vec(),
        )])],
    );
    s.script("claude-401", vec![Reply::status(401, r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#)]);
    let e = engine(
        &s,
        &format!(
            "[providers.anth]\nkind = \"anthropic\"\nbase_url = \"{}\"\napi_key_env = \"ANTH_TEST_KEY\"\n",
            s.base_url()
        ),
    );
    unsafe { std::env::set_var("ANTH_TEST_KEY", "anth-key-1") };
    let text = "[[step]]\nop = \"propose\"\nagents = [{ model = \"anth/claude-x\", temperature = 0.7 }, { model = \"anth/claude-o\" }, { model = \"anth/claude-401\" }]\n[[step]]\nop = \"aggregate\"\nmodel = \"anth/claude-x\"\n";
    let (rec, _) = run(
        &e,
        preset(text),
        vec![Message::system("sys"), Message::user("Hi")],
    )
    .await;
    let c = &rec.steps[0].calls;
    assert_eq!(c[0].text, "Hello, world");
    assert_eq!(
        (c[0].tokens_in, c[0].tokens_out, c[0].usage_estimated),
        (25, 15, false)
    );
    assert_eq!(c[0].finish_reason.as_deref(), Some("end_turn"));
    assert_eq!(c[1].status, CallStatus::Failed);
    assert_eq!(c[1].text, "Par");
    assert!(c[1].error.as_ref().unwrap().contains("overloaded_error"));
    assert!(c[2].error.as_ref().unwrap().contains("ANTH_TEST_KEY"));
    let req = &s.requests_for("claude-x")[0];
    assert_eq!(req.path, "/v1/messages");
    assert_eq!(req.api_key.as_deref(), Some("anth-key-1"));
    assert_eq!(req.body["system"], "sys");
    assert_eq!(req.body["messages"][0]["role"], "user");
    assert_eq!(req.body["temperature"].to_string(), "0.7");
}

#[tokio::test]
async fn reaggregation_runs_only_the_aggregator_with_a_new_prompt() {
    let s = Server::start().await;
    s.script("agg", vec![Reply::text(&["again"], 1, 1)]);
    let e = engine(&s, "");
    let p = preset(&basic(&["p1", "p2"], "agg"));
    let mut h = e
        .reaggregate(
            &p,
            Some("Pick the best of {n}:{responses}".into()),
            ask("Q"),
            vec!["first".into(), "second".into()],
        )
        .unwrap();
    while h.events.recv().await.is_some() {}
    let rec = h.done.await.unwrap();
    assert!(
        s.requests_for("p1").is_empty() && s.requests_for("p2").is_empty(),
        "proposers not called"
    );
    let sent = s.requests_for("agg")[0].body["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(sent, "Pick the best of 2:\n1. first\n2. second");
    assert_eq!(rec.final_answer.unwrap().text, "again");
    assert_eq!(rec.steps.len(), 1);
    assert_eq!(
        e.reaggregate(&p, None, ask("Q"), vec![]).err(),
        Some(ReaggregateError::NoAnswers),
        "nothing to aggregate"
    );
    let solo = Preset::single("solo", AgentSpec::model("fake/p1"));
    let err = e
        .reaggregate(&solo, None, ask("Q"), vec!["first".into()])
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "preset \"solo\" has no aggregate step to re-run"
    );
}

#[tokio::test]
async fn context_windows_reported_at_v1_models_are_used() {
    let s = Server::start().await;
    let long = "word ".repeat(6_000);
    s.script("a", vec![Reply::text(&[&long], 1, 1)]);
    s.script("b", vec![Reply::text(&[&long], 1, 1)]);
    // Scripted models are listed at /v1/models with a context window of 4,096 tokens.
    s.script("agg", vec![Reply::text(&["ok"], 1, 1)]);
    let e = engine(&s, "");
    let (rec, _) = run(&e, preset(&basic(&["a", "b"], "agg")), ask("Q")).await;
    let sh = rec.steps[1]
        .shortened
        .as_ref()
        .expect("the listed window was used");
    assert_eq!(sh.context_window, 4096);
    assert_eq!(sh.responses_shortened, 2);
    let sent = s.requests_for("agg")[0].body["messages"][0]["content"]
        .as_str()
        .unwrap()
        .chars()
        .count();
    assert!(sent / 4 < 4096, "{sent} characters");
    // A model the provider does not list goes unshortened, as before.
    let (rec, _) = run(&e, preset(&basic(&["a", "b"], "unlisted")), ask("Q")).await;
    assert!(rec.steps[1].shortened.is_none());
}

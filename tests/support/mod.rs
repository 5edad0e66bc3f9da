//! A scripted OpenAI-compatible (and Anthropic) server for tests and benchmarks: it streams replies
//! with set timings, injects faults, and logs every request it receives.
#![allow(dead_code)]

pub mod browser;
pub mod redis;
pub mod tiny_gguf;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

/// One piece of a streamed body: wait, then send these bytes; or break the connection.
#[derive(Clone, Debug)]
pub enum Piece {
    Bytes(u64, Vec<u8>),
    Disconnect(u64),
}

/// What the server does for one request.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Wait this long before sending the status line (a server that never answers: a long wait).
    pub delay_headers_ms: u64,
    /// Body of a non-2xx reply.
    pub body: String,
    pub pieces: Vec<Piece>,
}

pub fn sse_chunk(text: &str) -> String {
    format!(
        "data: {}\n\n",
        json!({"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":text},"finish_reason":null}]})
    )
}

pub fn sse_finish() -> String {
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
        .into()
}

pub fn sse_usage(i: u64, o: u64) -> String {
    format!(
        "data: {}\n\n",
        json!({"id":"c","choices":[],"usage":{"prompt_tokens":i,"completion_tokens":o,"total_tokens":i+o}})
    )
}

impl Reply {
    /// A normal streamed answer: first chunk after `ttft_ms`, then one every `gap_ms`, usage, [DONE].
    pub fn text(parts: &[&str], ttft_ms: u64, gap_ms: u64) -> Reply {
        let mut pieces = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let wait = if i == 0 { ttft_ms } else { gap_ms };
            pieces.push(Piece::Bytes(wait, sse_chunk(p).into_bytes()));
        }
        pieces.push(Piece::Bytes(0, sse_finish().into_bytes()));
        pieces.push(Piece::Bytes(
            0,
            sse_usage(10, parts.len() as u64).into_bytes(),
        ));
        pieces.push(Piece::Bytes(0, b"data: [DONE]\n\n".to_vec()));
        Reply::raw(pieces)
    }

    pub fn raw(pieces: Vec<Piece>) -> Reply {
        Reply {
            status: 200,
            headers: vec![],
            delay_headers_ms: 0,
            body: String::new(),
            pieces,
        }
    }

    pub fn status(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: vec![],
            delay_headers_ms: 0,
            body: body.to_string(),
            pieces: vec![],
        }
    }

    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }

    pub fn hang() -> Reply {
        Reply {
            delay_headers_ms: 3_600_000,
            ..Reply::status(200, "")
        }
    }
}

#[derive(Clone, Debug)]
pub struct Logged {
    pub at: Instant,
    /// When the server finished sending (or the client went away).
    pub ended: Option<Instant>,
    pub path: String,
    pub model: String,
    pub body: Value,
    pub authorization: Option<String>,
    pub api_key: Option<String>,
}

#[derive(Default)]
struct Inner {
    /// Replies per model, used in order; the last one repeats.
    scripts: HashMap<String, VecDeque<Reply>>,
    log: Vec<Logged>,
    in_flight: usize,
    max_in_flight: usize,
}

#[derive(Clone)]
pub struct Server {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl Server {
    pub async fn start() -> Server {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/messages", post(chat))
            .route("/v1/models", get(models))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Server { addr, inner }
    }

    /// A server on a thread and single-threaded runtime of its own (benchmarks): fewer
    /// cross-thread wake-ups on the server's side of each hand-off, which the measured process
    /// would otherwise be charged for.
    pub fn start_on_own_thread() -> Server {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                tx.send(Server::start().await).unwrap();
                std::future::pending::<()>().await
            });
        });
        rx.recv().unwrap()
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Script the replies for a model (the part after `PROVIDER/`).
    pub fn script(&self, model: &str, replies: Vec<Reply>) {
        self.inner
            .lock()
            .unwrap()
            .scripts
            .insert(model.to_string(), replies.into());
    }

    pub fn log(&self) -> Vec<Logged> {
        self.inner.lock().unwrap().log.clone()
    }

    pub fn requests_for(&self, model: &str) -> Vec<Logged> {
        self.log()
            .into_iter()
            .filter(|l| l.model == model)
            .collect()
    }

    pub fn in_flight(&self) -> usize {
        self.inner.lock().unwrap().in_flight
    }

    pub fn max_in_flight(&self) -> usize {
        self.inner.lock().unwrap().max_in_flight
    }

    /// A config.toml text with provider `fake` pointing here (plus `extra`).
    pub fn config(&self, extra: &str) -> String {
        format!(
            "[providers.fake]\nkind = \"openai\"\nbase_url = \"{}\"\napi_key_env = \"FAKE_API_KEY\"\nmax_retries = 2\n{extra}",
            self.base_url()
        )
    }
}

struct InFlight(Arc<Mutex<Inner>>, usize);
impl Drop for InFlight {
    fn drop(&mut self) {
        let mut g = self.0.lock().unwrap();
        g.in_flight -= 1;
        g.log[self.1].ended = Some(Instant::now());
    }
}

async fn chat(
    State(inner): State<Arc<Mutex<Inner>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let model = body["model"].as_str().unwrap_or("").to_string();
    let (reply, index) = {
        let mut g = inner.lock().unwrap();
        let index = g.log.len();
        g.log.push(Logged {
            at: Instant::now(),
            ended: None,
            path: uri.path().to_string(),
            model: model.clone(),
            body: body.clone(),
            authorization: headers
                .get("authorization")
                .map(|v| v.to_str().unwrap_or("").to_string()),
            api_key: headers
                .get("x-api-key")
                .map(|v| v.to_str().unwrap_or("").to_string()),
        });
        g.in_flight += 1;
        g.max_in_flight = g.max_in_flight.max(g.in_flight);
        let reply = match g.scripts.get_mut(&model) {
            Some(q) if q.len() > 1 => q.pop_front().unwrap(),
            Some(q) if q.len() == 1 => q.front().unwrap().clone(),
            _ => Reply::text(&["Answer ", "from ", &model, "."], 5, 5),
        };
        (reply, index)
    };
    let guard = InFlight(inner.clone(), index);
    if reply.delay_headers_ms > 0 {
        tokio::time::sleep(Duration::from_millis(reply.delay_headers_ms)).await;
    }
    let status = StatusCode::from_u16(reply.status).unwrap();
    if reply.status != 200 {
        drop(guard);
        let mut r = (status, reply.body.clone()).into_response();
        for (k, v) in &reply.headers {
            r.headers_mut().insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        return r;
    }
    let pieces = reply.pieces.clone();
    let stream = futures::stream::unfold(
        (pieces.into_iter(), Some(guard)),
        |(mut it, guard)| async move {
            match it.next() {
                None => None,
                Some(Piece::Bytes(wait, b)) => {
                    if wait > 0 {
                        tokio::time::sleep(Duration::from_millis(wait)).await;
                    }
                    Some((Ok::<Bytes, std::io::Error>(Bytes::from(b)), (it, guard)))
                }
                Some(Piece::Disconnect(wait)) => {
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                    Some((
                        Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            "scripted disconnect",
                        )),
                        (it, guard),
                    ))
                }
            }
        },
    );
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    for (k, v) in &reply.headers {
        r.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    r
}

async fn models(State(inner): State<Arc<Mutex<Inner>>>) -> Json<Value> {
    let g = inner.lock().unwrap();
    let mut ids: Vec<&String> = g.scripts.keys().collect();
    ids.sort();
    Json(
        json!({"object": "list", "data": ids.iter().map(|id| json!({"id": id, "context_window": 4096})).collect::<Vec<_>>()}),
    )
}

/// A fetched model file, when it is there. Outside CI a missing one skips the test with a message;
/// in CI (CI=true) it fails it, since `.ci/run` fetches the models first.
pub fn fetched(path: std::path::PathBuf) -> Option<std::path::PathBuf> {
    if path.exists() {
        return Some(path);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "{} is missing: CI must run `moa pull` first",
            path.display()
        );
    }
    eprintln!("skipping: {} is missing (run `moa pull`)", path.display());
    None
}

/// A file of reference vectors from `../shared/testdata`, beside the repository.
pub fn shared_testdata(name: &str) -> Value {
    let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/testdata")
        .join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

/// Run the `moa` binary with `MOA_HOME=home` and `FAKE_API_KEY=key`, feeding `stdin`; fails the test
/// if the key shows up in its output.
#[allow(dead_code)]
pub async fn moa(
    home: &std::path::Path,
    args: &[&str],
    stdin: Option<&[u8]>,
    key: &str,
) -> std::process::Output {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_moa"));
    cmd.args(args)
        .env("MOA_HOME", home)
        .env("FAKE_API_KEY", key)
        .env_remove("MOA_MODELS_DIR")
        .env_remove("GROQ_API_KEY")
        .env_remove("TOGETHER_API_KEY")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(input) = stdin {
        pipe.write_all(input).await.unwrap();
    }
    drop(pipe);
    let out = child.wait_with_output().await.unwrap();
    for stream in [&out.stdout, &out.stderr] {
        assert!(
            !String::from_utf8_lossy(stream).contains(key),
            "the key leaked into the output"
        );
    }
    out
}

//! A served run as OpenAI's server-sent events: the final aggregator's tokens go out as
//! `chat.completion.chunk`s as they arrive, then a chunk with `finish_reason` and the `moa`
//! summary, the usage chunk when `stream_options.include_usage` asked for it, and `[DONE]`.
//!
//! The status line waits for the first frame (the aggregator's first token, or the first
//! progress event when `"moa": {"progress": true}` asked for them), as OpenAI's own time to first
//! byte does: until then a failure can still be an HTTP status (502 no answer, 504 deadline).
//! After it, a failure is an SSE `data: {"error": ...}` frame, which the official SDKs raise as
//! an `APIError`, and the stream ends without `[DONE]`.
//!
//! When the aggregator fails before its first token and the run falls back to a proposer
//! (`final.source = "fallback:<slot>"`), the proposer's answer goes out as one content chunk and
//! the final chunk's `moa.final.source` says so. When it fails after streaming part of its answer,
//! the part already sent cannot be taken back: the stream ends with an error frame (code
//! `aggregator_interrupted`) whose `moa` object carries the run summary and the fallback answer
//! (`moa.final_text`). Pipelines that do not end with an aggregation (vote, rank) send their final
//! answer as one chunk when the run ends.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::Response;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::run::{Out, ServedRun};
use super::wire::{self, ApiError};
use crate::engine::record::{CallStatus, RunRecord};

pub struct SseState {
    run: ServedRun,
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    deadline: Instant,
    timeout: Duration,
    /// A frame was produced: the status line has gone (or is going) out.
    started: bool,
    role_sent: bool,
    /// The content sent so far.
    streamed: String,
    pending: VecDeque<Bytes>,
    ended: bool,
}

impl SseState {
    pub fn new(
        run: ServedRun,
        model: String,
        include_usage: bool,
        deadline: Instant,
        timeout: Duration,
    ) -> SseState {
        SseState {
            id: wire::completion_id(&run.id),
            run,
            model,
            created: wire::unix_now(),
            include_usage,
            deadline,
            timeout,
            started: false,
            role_sent: false,
            streamed: String::new(),
            pending: VecDeque::new(),
            ended: false,
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>, extra: &[(&str, Value)]) -> Bytes {
        wire::chunk_frame(
            &self.id,
            &self.model,
            self.created,
            Some((delta, finish)),
            extra,
        )
    }

    fn content(&mut self, text: &str) {
        if !self.role_sent {
            self.role_sent = true;
            let role = self.chunk(json!({"role": "assistant", "content": ""}), None, &[]);
            self.pending.push_back(role);
        }
        if !text.is_empty() {
            let c = self.chunk(json!({"content": text}), None, &[]);
            self.pending.push_back(c);
            self.streamed.push_str(text);
        }
    }

    /// An error: an HTTP status while nothing was sent, else the SSE error frame that ends the
    /// stream.
    fn fail(&mut self, e: ApiError, moa: Option<Value>) -> Result<(), ApiError> {
        self.run.status = e.status.as_u16();
        self.ended = true;
        if !self.started && self.pending.is_empty() {
            return Err(e);
        }
        let mut body = e.body();
        if let Some(m) = moa {
            body["moa"] = m;
        }
        self.pending.push_back(wire::data_frame(&body));
        Ok(())
    }

    fn finish(&mut self, r: &RunRecord) -> Result<(), ApiError> {
        let answer = r
            .final_answer
            .as_ref()
            .filter(|f| f.status == CallStatus::Ok);
        let Some(f) = answer else {
            return self.fail(
                ApiError::no_answer(no_answer_reason(r)),
                Some(wire::extension(r)),
            );
        };
        if self.streamed.is_empty() {
            self.content(&f.text);
        } else if self.streamed != f.text {
            let mut moa = wire::extension(r);
            moa["final_text"] = Value::String(f.text.clone());
            let mut e = ApiError::no_answer(format!(
                "the aggregator failed after streaming part of its answer; the run fell back to {} (its answer is in moa.final_text)",
                f.source
            ));
            e.code = Some("aggregator_interrupted");
            return self.fail(e, Some(moa));
        }
        let last = self.chunk(
            json!({}),
            Some(wire::finish_reason(r)),
            &[("moa", wire::extension(r))],
        );
        self.pending.push_back(last);
        if self.include_usage {
            let u = wire::chunk_frame(
                &self.id,
                &self.model,
                self.created,
                None,
                &[("usage", wire::usage(r))],
            );
            self.pending.push_back(u);
        }
        self.pending.push_back(Bytes::from_static(wire::DONE_FRAME));
        self.run.status = 200;
        self.ended = true;
        Ok(())
    }

    /// The next frame to send; an error only while nothing has been sent.
    pub async fn next_frame(&mut self) -> Result<Option<Bytes>, ApiError> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                self.started = true;
                return Ok(Some(b));
            }
            if self.ended {
                return Ok(None);
            }
            match tokio::time::timeout_at(self.deadline, self.run.next()).await {
                Err(_) => {
                    self.run.cancel();
                    self.fail(ApiError::deadline(self.timeout), None)?;
                }
                Ok(None) => {
                    self.fail(
                        ApiError::no_answer("internal error: the run ended without its record"),
                        None,
                    )?;
                }
                Ok(Some(Out::Content(t))) => self.content(&t),
                Ok(Some(Out::Progress(v))) => {
                    self.pending
                        .push_back(wire::named_frame("moa.progress", &v));
                }
                Ok(Some(Out::Done(r))) => self.finish(&r)?,
            }
        }
    }

    /// The response: waits for the first frame (see the module's notes), then streams the rest.
    pub async fn respond(mut self) -> Response {
        let first = match self.next_frame().await {
            Ok(Some(b)) => b,
            Ok(None) => Bytes::new(),
            Err(e) => return axum::response::IntoResponse::into_response(e),
        };
        let rest = futures::stream::unfold(Some(self), |st| async move {
            let mut st = st?;
            match st.next_frame().await {
                Ok(Some(b)) => Some((Ok::<Bytes, Infallible>(b), Some(st))),
                _ => None,
            }
        });
        let body = futures::stream::once(async move { Ok::<Bytes, Infallible>(first) }).chain(rest);
        let mut r = Response::new(Body::from_stream(body));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        h.insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-cache"),
        );
        // nginx and similar proxies buffer responses unless told not to.
        h.insert("x-accel-buffering", header::HeaderValue::from_static("no"));
        r
    }
}

/// Why the pipeline has no answer, from its steps' notes and its calls' errors.
pub fn no_answer_reason(r: &RunRecord) -> String {
    let mut why: Vec<String> = r.steps.iter().flat_map(|s| s.notes.clone()).collect();
    for c in r.steps.iter().flat_map(|s| &s.calls) {
        if let Some(e) = &c.error {
            why.push(format!("{}: {e}", c.model));
        }
        if why.len() >= 8 {
            break;
        }
    }
    if why.is_empty() {
        "the pipeline produced no answer".into()
    } else {
        format!("the pipeline produced no answer: {}", why.join("; "))
    }
}

/// A non-streaming request: the run to its end, then one `chat.completion`.
pub async fn complete(
    mut run: ServedRun,
    model: &str,
    deadline: Instant,
    timeout: Duration,
) -> Result<Value, ApiError> {
    let created = wire::unix_now();
    loop {
        match tokio::time::timeout_at(deadline, run.next()).await {
            Err(_) => {
                run.cancel();
                run.status = 504;
                return Err(ApiError::deadline(timeout));
            }
            Ok(None) => {
                run.status = 502;
                return Err(ApiError::no_answer(
                    "internal error: the run ended without its record",
                ));
            }
            Ok(Some(Out::Done(r))) => {
                return match r
                    .final_answer
                    .as_ref()
                    .filter(|f| f.status == CallStatus::Ok)
                {
                    Some(f) => {
                        run.status = 200;
                        Ok(wire::completion(model, &r, &f.text, created))
                    }
                    None => {
                        run.status = 502;
                        let mut e = ApiError::no_answer(no_answer_reason(&r));
                        e.param = None;
                        Err(e)
                    }
                };
            }
            Ok(Some(_)) => {}
        }
    }
}

//! What goes over the wire in OpenAI's shapes: the chat completion request (read and checked field
//! by field, so that a wrong type is a 400 naming the field, and unknown fields are ignored as
//! OpenAI does), the `chat.completion` and `chat.completion.chunk` bodies, the `moa` extension
//! object, and the error body with its status.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::engine::record::{CallStatus, RunRecord};
use crate::provider::{Message, Role};

/// An error as OpenAI sends it: `{"error": {"message", "type", "param", "code"}}` with its status.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Seconds, for 429.
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// 400, naming the field at fault.
    pub fn invalid(param: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            param: Some(param.to_string()),
            code: Some("invalid_value"),
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError {
            code: Some("invalid_api_key"),
            ..ApiError::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message)
        }
    }

    pub fn unknown_model(model: &str, known: &[String]) -> ApiError {
        ApiError {
            param: Some("model".into()),
            code: Some("model_not_found"),
            ..ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!(
                    "the model {model:?} does not exist here; served models: {} (GET /v1/models)",
                    known.join(", ")
                ),
            )
        }
    }

    pub fn not_found(path: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!(
                "no route {path}: this server has GET /v1/models, POST /v1/chat/completions, GET /metrics, GET /health"
            ),
        )
    }

    pub fn too_large(limit: usize) -> ApiError {
        ApiError {
            code: Some("request_too_large"),
            ..ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                format!(
                    "the request body is larger than {limit} bytes (serve.max_body_bytes in config.toml)"
                ),
            )
        }
    }

    pub fn saturated(limit: usize) -> ApiError {
        ApiError {
            code: Some("server_busy"),
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                format!(
                    "the server is running its limit of {limit} requests (serve.max_concurrent_requests); retry after 1 s"
                ),
            )
        }
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError {
            code: Some("preset_unavailable"),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
        }
    }

    pub fn no_answer(message: impl Into<String>) -> ApiError {
        ApiError {
            code: Some("no_answer"),
            ..ApiError::new(StatusCode::BAD_GATEWAY, "server_error", message)
        }
    }

    pub fn deadline(timeout: std::time::Duration) -> ApiError {
        ApiError {
            code: Some("deadline_exceeded"),
            ..ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "server_error",
                format!(
                    "the pipeline did not finish within the request deadline of {:.1} s (serve.request_timeout_ms); it was cancelled",
                    timeout.as_secs_f64()
                ),
            )
        }
    }

    pub fn shutting_down() -> ApiError {
        ApiError {
            code: Some("shutting_down"),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "the server is shutting down; retry on another replica",
            )
        }
    }

    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert("retry-after", HeaderValue::from(s as u32));
        }
        r
    }
}

/// What the request asks for that moa uses; everything else in it is ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    pub stream: bool,
    pub include_usage: bool,
    /// For the aggregator step (the preset's final one).
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_tokens: Option<u32>,
    /// `"moa": {"progress": true}`: the proposers' progress as `event: moa.progress` SSE events.
    pub progress: bool,
}

fn number(v: &Map<String, Value>, field: &str, lo: f64, hi: f64) -> Result<Option<f64>, ApiError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(x) if (lo..=hi).contains(&x) => Ok(Some(x)),
            _ => Err(ApiError::invalid(
                field,
                format!("{field} must be a number from {lo} to {hi}"),
            )),
        },
        Some(_) => Err(ApiError::invalid(
            field,
            format!("{field} must be a number"),
        )),
    }
}

fn boolean(v: &Map<String, Value>, field: &str, name: &str) -> Result<bool, ApiError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::invalid(
            name,
            format!("{name} must be true or false"),
        )),
    }
}

fn object<'a>(
    v: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<&'a Map<String, Value>>, ApiError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(ApiError::invalid(
            field,
            format!("{field} must be an object"),
        )),
    }
}

/// A message's content: a string, or an array of text parts (other part types are refused).
fn content(v: &Value, at: &str) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => {
            let mut text = String::new();
            for (j, p) in parts.iter().enumerate() {
                let field = format!("{at}[{j}]");
                match (p.get("type").and_then(Value::as_str), p.get("text")) {
                    (Some("text"), Some(Value::String(t))) => text.push_str(t),
                    (Some("text"), _) => {
                        return Err(ApiError::invalid(
                            &format!("{field}.text"),
                            format!("{field}.text must be a string"),
                        ));
                    }
                    (Some(other), _) => {
                        return Err(ApiError::invalid(
                            &format!("{field}.type"),
                            format!(
                                "{field}.type is {other:?}: moa serves text only (parts of type \"text\")"
                            ),
                        ));
                    }
                    (None, _) => {
                        return Err(ApiError::invalid(
                            &format!("{field}.type"),
                            format!("{field} needs a \"type\""),
                        ));
                    }
                }
            }
            Ok(text)
        }
        _ => Err(ApiError::invalid(
            at,
            format!("{at} must be a string or an array of text parts"),
        )),
    }
}

impl ChatRequest {
    /// Read a request body: JSON errors and wrong types are 400s that name what is wrong.
    pub fn parse(body: &[u8]) -> Result<ChatRequest, ApiError> {
        let v: Value = serde_json::from_slice(body).map_err(|e| {
            let mut err = ApiError::invalid(
                "",
                format!(
                    "the request body is not valid JSON (line {}, column {}: {e})",
                    e.line(),
                    e.column()
                ),
            );
            err.param = None;
            err.code = Some("invalid_json");
            err
        })?;
        let Value::Object(v) = v else {
            let mut err = ApiError::invalid("", "the request body must be a JSON object");
            err.param = None;
            return Err(err);
        };
        let model = match v.get("model") {
            Some(Value::String(m)) => m.clone(),
            None | Some(Value::Null) => {
                return Err(ApiError::invalid(
                    "model",
                    "model is missing: name a served model, e.g. \"moa/<preset>\" (GET /v1/models)",
                ));
            }
            Some(_) => return Err(ApiError::invalid("model", "model must be a string")),
        };
        let raw = match v.get("messages") {
            Some(Value::Array(a)) => a,
            None | Some(Value::Null) => {
                return Err(ApiError::invalid("messages", "messages is missing"));
            }
            Some(_) => return Err(ApiError::invalid("messages", "messages must be an array")),
        };
        let mut messages = Vec::with_capacity(raw.len());
        for (i, m) in raw.iter().enumerate() {
            let at = format!("messages[{i}]");
            let Value::Object(m) = m else {
                return Err(ApiError::invalid(&at, format!("{at} must be an object")));
            };
            let role = match m.get("role").and_then(Value::as_str) {
                Some("system") | Some("developer") => Role::System,
                Some("user") => Role::User,
                Some("assistant") => Role::Assistant,
                Some(other) => {
                    return Err(ApiError::invalid(
                        &format!("{at}.role"),
                        format!(
                            "{at}.role is {other:?}: moa serves system, developer, user and assistant messages (no tools)"
                        ),
                    ));
                }
                None => {
                    return Err(ApiError::invalid(
                        &format!("{at}.role"),
                        format!("{at}.role must be a string"),
                    ));
                }
            };
            let text = content(
                m.get("content").unwrap_or(&Value::Null),
                &format!("{at}.content"),
            )?;
            messages.push(Message::new(role, text));
        }
        if messages.last().is_none_or(|m| m.role != Role::User) {
            return Err(ApiError::invalid(
                "messages",
                "messages must end with a user message (the turn to answer)",
            ));
        }
        let stream = boolean(&v, "stream", "stream")?;
        let include_usage = match object(&v, "stream_options")? {
            Some(o) => boolean(o, "include_usage", "stream_options.include_usage")?,
            None => false,
        };
        let progress = match object(&v, "moa")? {
            Some(o) => boolean(o, "progress", "moa.progress")?,
            None => false,
        };
        let max_tokens = match v
            .get("max_completion_tokens")
            .filter(|x| !x.is_null())
            .map(|x| ("max_completion_tokens", x))
            .or_else(|| v.get("max_tokens").map(|x| ("max_tokens", x)))
        {
            None | Some((_, Value::Null)) => None,
            Some((field, x)) => match x.as_u64() {
                Some(n) if (1..=u64::from(u32::MAX)).contains(&n) => Some(n as u32),
                _ => {
                    return Err(ApiError::invalid(
                        field,
                        format!("{field} must be a positive integer"),
                    ));
                }
            },
        };
        Ok(ChatRequest {
            model,
            messages,
            stream,
            include_usage,
            temperature: number(&v, "temperature", 0.0, 2.0)?,
            top_p: number(&v, "top_p", 0.0, 1.0)?,
            max_tokens,
            progress,
        })
    }
}

/// `chatcmpl-<run id>`: the run's id, so that a recorded session can be found from a response.
pub fn completion_id(run: &str) -> String {
    format!("chatcmpl-{run}")
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The run summary every response carries as `moa`: each step's agreement and calls (model,
/// status, latency), the final answer's source, and the pipeline's usage and cost.
pub fn extension(r: &RunRecord) -> Value {
    let steps: Vec<Value> = r
        .steps
        .iter()
        .map(|s| {
            json!({
                "op": s.op,
                "agreement": s.agreement,
                "agreement_method": s.agreement_method,
                "wall_ms": s.wall_ms,
                "calls": s.calls.iter().map(|c| json!({
                    "slot": c.slot,
                    "model": c.model,
                    "status": c.status,
                    "latency_ms": c.latency_ms,
                    "ttft_ms": c.ttft_ms,
                    "tokens_in": c.tokens_in,
                    "tokens_out": c.tokens_out,
                    "cached": c.cached,
                    "error_kind": c.error_kind,
                })).collect::<Vec<_>>(),
                "notes": s.notes,
            })
        })
        .collect();
    json!({
        "run_id": r.id,
        "preset": r.preset,
        "final": r.final_answer.as_ref().map(|f| json!({"source": f.source, "status": f.status})),
        "steps": steps,
        "wall_ms": r.wall_ms,
        "usage": r.usage,
    })
}

/// OpenAI's usage object for the whole pipeline (every call of every step).
pub fn usage(r: &RunRecord) -> Value {
    json!({
        "prompt_tokens": r.usage.tokens_in,
        "completion_tokens": r.usage.tokens_out,
        "total_tokens": r.usage.tokens(),
    })
}

/// The one `chat.completion` of a non-streaming request.
pub fn completion(model: &str, r: &RunRecord, text: &str, created: u64) -> Value {
    json!({
        "id": completion_id(&r.id),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": null,
            "finish_reason": finish_reason(r),
        }],
        "usage": usage(r),
        "moa": extension(r),
    })
}

/// `length` when the call that gave the final answer stopped at its token limit, else `stop`.
pub fn finish_reason(r: &RunRecord) -> &'static str {
    let by_length = r
        .steps
        .iter()
        .flat_map(|s| &s.calls)
        .filter(|c| c.status == CallStatus::Ok)
        .any(|c| {
            c.finish_reason.as_deref() == Some("length")
                && r.final_answer.as_ref().is_some_and(|f| f.text == c.text)
        });
    if by_length { "length" } else { "stop" }
}

/// One `chat.completion.chunk` as an SSE frame. `delta` and `finish_reason` as OpenAI sends them;
/// `extra` adds top-level fields (`usage`, `moa`).
pub fn chunk_frame(
    id: &str,
    model: &str,
    created: u64,
    choice: Option<(Value, Option<&str>)>,
    extra: &[(&str, Value)],
) -> bytes::Bytes {
    let mut o = Map::new();
    o.insert("id".into(), Value::String(id.to_string()));
    o.insert("object".into(), "chat.completion.chunk".into());
    o.insert("created".into(), created.into());
    o.insert("model".into(), Value::String(model.to_string()));
    let choices = match choice {
        Some((delta, finish)) => {
            vec![json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})]
        }
        None => vec![],
    };
    o.insert("choices".into(), Value::Array(choices));
    for (k, v) in extra {
        o.insert((*k).to_string(), v.clone());
    }
    data_frame(&Value::Object(o))
}

pub fn data_frame(v: &Value) -> bytes::Bytes {
    let mut s = String::with_capacity(128);
    s.push_str("data: ");
    s.push_str(&v.to_string());
    s.push_str("\n\n");
    bytes::Bytes::from(s)
}

/// A named SSE event (`event: moa.progress`): OpenAI clients skip events with a name they do not
/// know, and the official SDKs only read unnamed ones.
pub fn named_frame(event: &str, v: &Value) -> bytes::Bytes {
    bytes::Bytes::from(format!("event: {event}\ndata: {v}\n\n"))
}

pub const DONE_FRAME: &[u8] = b"data: [DONE]\n\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> ApiError {
        ChatRequest::parse(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn a_request_is_read_with_unknown_fields_ignored() {
        let r = ChatRequest::parse(
            br#"{"model":"moa/x","messages":[{"role":"developer","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi "},{"type":"text","text":"there"}]}],
               "stream":true,"stream_options":{"include_usage":true},"temperature":0.2,"max_tokens":50,"top_p":0.9,
               "frequency_penalty":0.1,"user":"u1","moa":{"progress":true}}"#,
        )
        .unwrap();
        assert_eq!(r.model, "moa/x");
        assert_eq!(
            r.messages,
            vec![Message::system("be brief"), Message::user("hi there")]
        );
        assert!(r.stream && r.include_usage && r.progress);
        assert_eq!(
            (r.temperature, r.top_p, r.max_tokens),
            (Some(0.2), Some(0.9), Some(50))
        );
    }

    #[test]
    fn wrong_types_name_the_field() {
        let base = r#""model":"moa/x","messages":[{"role":"user","content":"q"}]"#;
        for (extra, param) in [
            (r#","temperature":"hot""#, "temperature"),
            (r#","temperature":3"#, "temperature"),
            (r#","max_tokens":-1"#, "max_tokens"),
            (r#","max_tokens":1.5"#, "max_tokens"),
            (r#","stream":"yes""#, "stream"),
            (
                r#","stream_options":{"include_usage":1}"#,
                "stream_options.include_usage",
            ),
            (r#","top_p":[1]"#, "top_p"),
            (r#","moa":{"progress":"y"}"#, "moa.progress"),
        ] {
            let e = err(&format!("{{{base}{extra}}}"));
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert_eq!(e.param.as_deref(), Some(param), "{extra}: {}", e.message);
            assert!(e.message.contains(param), "{}", e.message);
        }
        let e = err(r#"{"model":5,"messages":[]}"#);
        assert_eq!(e.param.as_deref(), Some("model"));
        let e = err(r#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#);
        assert_eq!(e.param.as_deref(), Some("messages[0].role"));
        let e =
            err(r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#);
        assert_eq!(e.param.as_deref(), Some("messages[0].content[0].type"));
        let e = err(r#"{"model":"m","messages":[{"role":"assistant","content":"x"}]}"#);
        assert_eq!(e.param.as_deref(), Some("messages"));
    }

    #[test]
    fn malformed_json_says_where() {
        let e = err("{\"model\": \n oops}");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("line 2"), "{}", e.message);
        assert_eq!(e.body()["error"]["type"], "invalid_request_error");
        assert_eq!(e.body()["error"]["code"], "invalid_json");
    }
}

//! Providers: one streamed chat completion at a time, nothing more.
//!
//! A provider turns a [`ChatRequest`] into a stream of [`Chunk`]s and knows its wire protocol. Retries,
//! rate limits, timeouts and concurrency are *not* here: they live in [`limits`] and the engine's call
//! driver, so that every provider gets the same policy.

pub mod anthropic;
pub mod limits;
pub mod local;
pub mod openai;
pub mod registry;
pub mod sse;

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use serde::{Deserialize, Serialize};

/// Who said a message in a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: content.into(),
        }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }
}

/// One chat completion as the user configured it. Sampling parameters are passed through untouched
/// (a temperature of 0.7 reaches the provider as 0.7); `None` means "the provider's default".
#[derive(Clone, Debug, Default)]
pub struct ChatRequest {
    /// The model name as the provider knows it (the part after `PROVIDER/`).
    pub model: String,
    pub messages: Vec<Message>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_tokens: Option<u32>,
    pub seed: Option<u64>,
    /// Sent only when set (OpenAI itself does not take these; vLLM, Together, llama.cpp do).
    pub top_k: Option<u32>,
    pub repeat_penalty: Option<f64>,
}

/// What a provider stream yields.
#[derive(Clone, Debug, PartialEq)]
pub enum Chunk {
    /// Generated text, in order. Never empty.
    Text(String),
    /// Token counts as the provider reported them.
    Usage { tokens_in: u64, tokens_out: u64 },
    /// Why generation stopped (`stop`, `length`, `end_turn`, ...).
    Finish(String),
}

pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Chunk, ProviderError>> + Send>>;

/// What went wrong with a provider call. The message is meant for a person and never contains a key.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("{message}")]
    Http {
        status: u16,
        message: String,
        /// From `Retry-After` / `retry-after-ms`, when the server said how long to wait.
        retry_after: Option<Duration>,
    },
    #[error("{0}")]
    Connect(String),
    /// The stream broke after it started (disconnect, reset).
    #[error("{0}")]
    Stream(String),
    /// The provider sent something we could not understand.
    #[error("{0}")]
    Protocol(String),
    /// The provider reported an error inside an otherwise healthy stream (Anthropic's `error` event).
    #[error("{0}")]
    Remote(String),
    /// Bad configuration discovered when calling (missing key, unknown provider kind...).
    #[error("{0}")]
    Config(String),
}

impl ProviderError {
    /// 429, 5xx and connect errors may be retried (before the first token only; the driver checks that).
    pub fn is_retryable(&self) -> bool {
        match self {
            // OpenAI's "insufficient_quota" is a 429 that no amount of waiting fixes.
            ProviderError::Http {
                status, message, ..
            } => (*status == 429 && !message.contains("insufficient_quota")) || *status >= 500,
            ProviderError::Connect(_) => true,
            // An overloaded_error event arrives before any text on Anthropic; treat it like a 529.
            ProviderError::Remote(m) => m.contains("overloaded"),
            _ => false,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A short machine-readable kind for run records and events.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::Http { status: 401, .. } | ProviderError::Http { status: 403, .. } => {
                "auth"
            }
            ProviderError::Http { status: 429, .. } => "rate_limited",
            ProviderError::Http { status, .. } if *status >= 500 => "server_error",
            ProviderError::Http { .. } => "http_error",
            ProviderError::Connect(_) => "connect",
            ProviderError::Stream(_) => "disconnect",
            ProviderError::Protocol(_) => "protocol",
            ProviderError::Remote(_) => "remote_error",
            ProviderError::Config(_) => "config",
        }
    }
}

/// A model listed by a provider's `/v1/models`.
#[derive(Clone, Debug, PartialEq)]
pub struct ListedModel {
    pub id: String,
    /// Context window in tokens, when the provider reports one (OpenRouter, Groq, ...).
    pub context_window: Option<u64>,
}

type BoxFuture<'a, T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// A chat backend. `open` resolves once the provider accepted the request (status line and headers
/// read), so that errors before any token are distinguishable from errors mid-stream.
pub trait Provider: Send + Sync {
    fn open(&self, req: ChatRequest) -> BoxFuture<'_, Result<ChunkStream, ProviderError>>;
    fn list_models(&self) -> BoxFuture<'_, Result<Vec<ListedModel>, ProviderError>>;
}

/// Reads a key from the environment at request time; the key never leaves this function's caller
/// except as a header value.
pub(crate) fn read_key(var: Option<&str>) -> Option<String> {
    let var = var?;
    std::env::var(var).ok().filter(|k| !k.trim().is_empty())
}

/// Parse `Retry-After` (seconds or HTTP date; we only honour seconds) and `retry-after-ms`.
pub(crate) fn parse_retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
    {
        return Some(Duration::from_secs_f64(ms.max(0.0) / 1000.0));
    }
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .map(|s| Duration::from_secs_f64(s.clamp(0.0, 3600.0)))
}

/// Turn a non-2xx response into an error carrying the server's own message (read from the body) and,
/// for auth failures, the name of the key variable to check.
pub(crate) async fn http_error(
    resp: reqwest::Response,
    provider: &str,
    key_var: Option<&str>,
) -> ProviderError {
    let status = resp.status().as_u16();
    let retry_after = parse_retry_after(resp.headers());
    let body = resp.text().await.unwrap_or_default();
    let detail = extract_error_message(&body);
    let mut message = format!("{provider} answered HTTP {status}");
    if !detail.is_empty() {
        message.push_str(": ");
        message.push_str(&detail);
    }
    if status == 401 || status == 403 {
        match key_var {
            Some(var) => {
                message.push_str(&format!(" (check the key in {var}, or pick another model)"))
            }
            None => message.push_str(" (this provider has no api_key_env configured)"),
        }
    }
    // OpenAI says "out of money" in the error's type or code, not its message: keep the word, since
    // it is what stops retries (waiting does not refill an account).
    if status == 429
        && body.contains("insufficient_quota")
        && !message.contains("insufficient_quota")
    {
        message.push_str(
            " (insufficient_quota: add credit or pick another provider; retrying will not help)",
        );
    }
    if status == 404 {
        message.push_str(" (is the model name right? `moa models` lists what the provider serves)");
    }
    ProviderError::Http {
        status,
        message,
        retry_after,
    }
}

/// Pull the human part out of an OpenAI- or Anthropic-style error body; fall back to the raw text.
fn extract_error_message(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        let candidates = [
            v.pointer("/error/message"),
            v.pointer("/message"),
            v.pointer("/error"),
            v.pointer("/detail"),
        ];
        for c in candidates.into_iter().flatten() {
            if let Some(s) = c.as_str() {
                return s.trim().to_string();
            }
        }
    }
    let t = body.trim();
    let mut s: String = t.chars().take(300).collect();
    if t.chars().count() > 300 {
        s.push('…');
    }
    s
}

/// Classify a reqwest error from sending a request.
pub(crate) fn send_error(provider: &str, base_url: &str, e: reqwest::Error) -> ProviderError {
    let mut source: &dyn std::error::Error = &e;
    let mut detail = e.to_string();
    while let Some(s) = source.source() {
        detail = s.to_string();
        source = s;
    }
    if e.is_connect() || e.is_timeout() {
        ProviderError::Connect(format!(
            "cannot reach {provider} at {base_url}: {detail} (is the server running and the base_url right?)"
        ))
    } else {
        ProviderError::Connect(format!("request to {provider} failed: {detail}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_message_is_extracted_from_json_bodies() {
        assert_eq!(
            extract_error_message(r#"{"error":{"message":"Invalid API key","type":"x"}}"#),
            "Invalid API key"
        );
        assert_eq!(
            extract_error_message(
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            ),
            "Overloaded"
        );
        assert_eq!(extract_error_message("Bad Gateway\n"), "Bad Gateway");
    }

    #[test]
    fn retryable_kinds() {
        let h = |status| ProviderError::Http {
            status,
            message: String::new(),
            retry_after: None,
        };
        assert!(h(429).is_retryable());
        assert!(h(503).is_retryable());
        assert!(!h(400).is_retryable());
        assert!(!h(401).is_retryable());
        assert!(ProviderError::Connect("x".into()).is_retryable());
        assert!(!ProviderError::Stream("x".into()).is_retryable());
        assert_eq!(h(403).kind(), "auth");
    }
}

//! Providers: one streamed chat completion at a time, nothing more.
//!
//! A provider turns a [`ChatRequest`] into a stream of [`Chunk`]s and knows its wire protocol. Retries,
//! rate limits, timeouts and concurrency are *not* here: they live in [`limits`] and the engine's call
//! driver, so that every provider gets the same policy.

pub mod anthropic;
pub mod cache;
pub mod limits;
pub mod local;
pub mod openai;
pub mod registry;
pub mod sse;

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use reqwest::header::HeaderValue;
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
    /// The base URL answered with a redirect. moa never follows one: reqwest would carry custom
    /// key headers (Anthropic's `x-api-key`) to the new host, and 307/308 resend the prompt.
    #[error(
        "{provider}: {from} redirects to {to}: set base_url to it (moa does not follow redirects, which could carry the key and the prompt to another host)"
    )]
    Redirect {
        provider: String,
        /// The configured base URL, shortened, without credentials.
        from: String,
        /// Where it points (as a base URL when it keeps the request's path), shortened, without
        /// credentials.
        to: String,
    },
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
            ProviderError::Redirect { .. } => "redirect",
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

/// The auth header value for the key in `var` (`scheme` is "Bearer" for `Authorization`, None for a
/// bare key header), read at request time: None when the variable is unset or blank. Whitespace at
/// both ends is trimmed (a key pasted with its newline works); a key that still cannot be a header
/// value fails here, once, naming the variable and never the value: reqwest would report it as a
/// send error, which is retried and says nothing useful.
pub(crate) fn auth_header(
    var: Option<&str>,
    scheme: Option<&str>,
) -> Result<Option<HeaderValue>, ProviderError> {
    let Some(var) = var else {
        return Ok(None);
    };
    let Some(raw) = std::env::var_os(var) else {
        return Ok(None);
    };
    let bad = || {
        ProviderError::Config(format!(
            "{var} holds a character that cannot be sent in an HTTP header (a control character or a non-ASCII letter, often from a copy-paste): export the key again"
        ))
    };
    let key = raw.to_str().ok_or_else(bad)?.trim();
    if key.is_empty() {
        return Ok(None);
    }
    let value = match scheme {
        Some(s) => format!("{s} {key}"),
        None => key.to_string(),
    };
    let mut v = HeaderValue::from_str(&value).map_err(|_| bad())?;
    v.set_sensitive(true);
    Ok(Some(v))
}

/// The most of a non-2xx body that is read: enough for any real error message, and a server that
/// answers an error with gigabytes cannot fill memory or the session file.
pub const ERROR_BODY_CAP: usize = 64 << 10;
/// The most of a `/v1/models` answer that is read (OpenRouter's full list is ~1 MB).
pub const MODEL_LIST_CAP: usize = 16 << 20;
/// Messages from a provider are cut to this many characters wherever moa shows or stores them.
pub const MESSAGE_CAP: usize = 2000;

/// `s` cut to `max` characters, saying how much was left out.
pub fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((at, _)) => format!("{}… ({} bytes more)", &s[..at], s.len() - at),
    }
}

/// A URL fit to show: without user name and password, and shortened.
pub fn redact_url(url: &str) -> String {
    let shown = match reqwest::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            // Both fail only for URLs that cannot have credentials, which these have.
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Ok(_) => url.to_string(),
        // Not a URL reqwest could send to; still never show what looks like userinfo.
        Err(_) => match url.split_once("://") {
            Some((scheme, rest)) => {
                let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                match rest[..end].rfind('@') {
                    Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
                    None => url.to_string(),
                }
            }
            None => url.to_string(),
        },
    };
    shorten(&shown, 200)
}

/// Read at most `cap` bytes of a body, chunk by chunk (never the whole body first). The flag says
/// whether there was more.
pub(crate) async fn read_capped(
    resp: &mut reqwest::Response,
    cap: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = cap - out.len();
        if chunk.len() > room {
            out.extend_from_slice(&chunk[..room]);
            return Ok((out, true));
        }
        out.extend_from_slice(&chunk);
    }
    Ok((out, false))
}

/// Send a request to a provider and return the response once it is a success: connect errors,
/// redirects and non-2xx answers become errors. `path` is what was appended to the base URL.
pub(crate) async fn send(
    rb: reqwest::RequestBuilder,
    provider: &str,
    base_url: &str,
    path: &str,
    key_var: Option<&str>,
) -> Result<reqwest::Response, ProviderError> {
    let resp = rb
        .send()
        .await
        .map_err(|e| send_error(provider, base_url, e))?;
    let status = resp.status();
    if status.is_redirection() {
        return Err(redirect_error(&resp, provider, base_url, path));
    }
    if !status.is_success() {
        return Err(http_error(resp, provider, key_var).await);
    }
    Ok(resp)
}

fn redirect_error(
    resp: &reqwest::Response,
    provider: &str,
    base_url: &str,
    path: &str,
) -> ProviderError {
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok());
    let to = match location.map(|l| resp.url().join(l)) {
        Some(Ok(u)) => {
            // A base URL that moved keeps the request's path: suggest the new base, not the
            // endpoint, since that is what goes in base_url.
            let full = u.to_string();
            let base = u
                .query()
                .is_none()
                .then(|| full.strip_suffix(&format!("/{path}")))
                .flatten()
                .unwrap_or(&full);
            redact_url(base)
        }
        Some(Err(_)) => redact_url(location.unwrap_or_default()),
        None => format!(
            "an unnamed place (HTTP {} without Location)",
            resp.status().as_u16()
        ),
    };
    ProviderError::Redirect {
        provider: provider.to_string(),
        from: redact_url(base_url),
        to,
    }
}

/// Parse `Retry-After` (seconds or HTTP date; we only honour seconds) and `retry-after-ms`.
/// Only finite, non-negative numbers count (`nan`, `inf` or `-1` are ignored: the usual backoff
/// applies); large ones are capped at an hour.
pub(crate) fn parse_retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    let secs = number("retry-after-ms")
        .map(|ms| ms / 1000.0)
        .or_else(|| number(reqwest::header::RETRY_AFTER.as_str()))?;
    Some(Duration::from_secs_f64(secs.min(RETRY_AFTER_CAP_SECS)))
}

const RETRY_AFTER_CAP_SECS: f64 = 3600.0;

/// Turn a non-2xx response into an error carrying the server's own message (read from the body) and,
/// for auth failures, the name of the key variable to check.
pub(crate) async fn http_error(
    mut resp: reqwest::Response,
    provider: &str,
    key_var: Option<&str>,
) -> ProviderError {
    let status = resp.status().as_u16();
    let retry_after = parse_retry_after(resp.headers());
    let (bytes, cut) = read_capped(&mut resp, ERROR_BODY_CAP)
        .await
        .unwrap_or_default();
    let body = String::from_utf8_lossy(&bytes);
    let mut detail = extract_error_message(&body);
    if cut {
        detail.push_str(" (the error body was longer than 64 KiB; the rest was not read)");
    }
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
/// Either way at most [`MESSAGE_CAP`] characters.
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
                return shorten(s.trim(), MESSAGE_CAP);
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

/// A stream that ended without its end marker (`[DONE]`, a finish_reason, `message_stop`): the
/// answer may be cut anywhere, so it is not an answer (CONTRACT: such a call is `failed`).
pub(crate) fn closed_early(provider: &str) -> ProviderError {
    ProviderError::Stream(format!(
        "{provider}: the provider closed the stream before finishing (no [DONE], finish_reason or message_stop)"
    ))
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
            "cannot reach {provider} at {}: {detail} (is the server running and the base_url right?)",
            redact_url(base_url)
        ))
    } else {
        ProviderError::Connect(format!(
            "request to {provider} failed: {}",
            shorten(&detail, MESSAGE_CAP)
        ))
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

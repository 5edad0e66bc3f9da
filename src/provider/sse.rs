//! Server-sent events framing for provider responses.
//!
//! `eventsource-stream` does the framing (comments such as `: keep-alive`, lines and UTF-8 characters
//! split across reads, CRLF); this module only adapts its errors. We deliberately do not use
//! `reqwest-eventsource`: it re-sends POSTs on its own, and a prompt must never be re-sent behind the
//! user's back once output was seen.

use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};

use super::ProviderError;

/// One SSE event: its `event:` name (empty when absent) and its `data:` payload.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

/// Frame a response body into events. A body that breaks off mid-stream yields a `Stream` error.
pub fn events(
    resp: reqwest::Response,
    provider: String,
) -> impl Stream<Item = Result<SseEvent, ProviderError>> + Send {
    frame(resp.bytes_stream(), provider)
}

/// Frame any stream of byte chunks (a response body; the fuzzer's arbitrary splits) into events.
pub fn frame<S, B, E>(
    bytes: S,
    provider: String,
) -> impl Stream<Item = Result<SseEvent, ProviderError>> + Send
where
    S: Stream<Item = Result<B, E>> + Send,
    B: AsRef<[u8]> + Send,
    E: std::error::Error + Send + 'static,
{
    bytes.eventsource().map(move |r| match r {
        Ok(ev) => Ok(SseEvent {
            event: ev.event,
            data: ev.data,
        }),
        Err(eventsource_stream::EventStreamError::Transport(e)) => {
            Err(ProviderError::Stream(format!(
                "the connection to {provider} broke mid-answer: {}",
                root_cause(&e)
            )))
        }
        Err(e) => Err(ProviderError::Protocol(format!(
            "{provider} sent a malformed event stream: {e}"
        ))),
    })
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(s) = cur.source() {
        cur = s;
    }
    cur.to_string()
}

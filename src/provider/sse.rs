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
    without_leading_bom(bytes)
        .eventsource()
        .map(move |r| match r {
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

const BOM: &[u8] = "\u{feff}".as_bytes();

/// The body without the byte-order marks it may start with. eventsource-stream 0.2.3 strips a
/// leading BOM by slicing off one *byte* of a three-byte character, which panics (found by fuzzing);
/// a server that sends a BOM must not crash the run. Bytes after the start pass through untouched.
fn without_leading_bom<S, B, E>(bytes: S) -> impl Stream<Item = Result<Vec<u8>, E>> + Send
where
    S: Stream<Item = Result<B, E>> + Send,
    B: AsRef<[u8]> + Send,
    E: Send,
{
    // Some(head) until the start of the body is known not to be (part of) a BOM.
    let mut head: Option<Vec<u8>> = Some(Vec::new());
    bytes.filter_map(move |r| {
        let out = match r {
            Err(e) => Some(Err(e)),
            Ok(b) => match head.as_mut() {
                None => Some(Ok(b.as_ref().to_vec())),
                Some(buf) => {
                    buf.extend_from_slice(b.as_ref());
                    while buf.starts_with(BOM) {
                        buf.drain(..BOM.len());
                    }
                    if BOM.starts_with(buf) {
                        None // empty, or a BOM cut short: wait for more
                    } else {
                        head.take().map(Ok)
                    }
                }
            },
        };
        futures::future::ready(out)
    })
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(s) = cur.source() {
        cur = s;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_all(chunks: &[&[u8]]) -> Vec<String> {
        let stream = futures::stream::iter(
            chunks
                .iter()
                .map(|c| Ok::<Vec<u8>, std::io::Error>(c.to_vec()))
                .collect::<Vec<_>>(),
        );
        futures::executor::block_on(frame(stream, "p".into()).collect::<Vec<_>>())
            .into_iter()
            .map(|r| r.map(|e| e.data).unwrap_or_else(|e| format!("error: {e}")))
            .collect()
    }

    #[test]
    fn a_byte_order_mark_at_the_start_is_dropped_whole_or_split() {
        let body = "\u{feff}data: one\n\ndata: two\n\n".as_bytes();
        assert_eq!(frame_all(&[body]), ["one", "two"]);
        // Split inside the BOM, and two of them.
        assert_eq!(
            frame_all(&[&body[..1], &body[1..2], &body[2..]]),
            ["one", "two"]
        );
        let twice = [BOM, body].concat();
        assert_eq!(frame_all(&[&twice[..4], &twice[4..]]), ["one", "two"]);
        // A body that is only a BOM, or part of one, is empty.
        assert!(frame_all(&[&BOM[..2]]).is_empty());
        assert!(frame_all(&[b"", BOM]).is_empty());
        // A BOM later in the body is data.
        assert_eq!(
            frame_all(&["data: a\u{feff}b\n\n".as_bytes()]),
            ["a\u{feff}b"]
        );
    }
}

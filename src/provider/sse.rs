//! Server-sent events framing for provider responses: comments such as `: keep-alive`, lines and
//! UTF-8 characters split across reads, CR, LF and CRLF, a byte-order mark at the start.
//!
//! Our own framing, in time linear in the body: eventsource-stream 0.2.3 re-scans its whole buffer on
//! every read, so one long line costs O(n²) (a 1 MiB line in 16-byte reads took 80 s). One event is
//! capped at [`EVENT_CAP`]: a server that streams bytes without ever ending an event is stopped with
//! an error that says so, instead of by a timeout that names nothing. We deliberately do not use
//! `reqwest-eventsource`: it re-sends POSTs on its own, and a prompt must never be re-sent behind the
//! user's back once output was seen.

use std::borrow::Cow;
use std::collections::VecDeque;

use futures::{Stream, StreamExt};

use super::ProviderError;

/// One SSE event: its `event:` name (`message` when absent) and its `data:` payload.
#[derive(Debug, Clone)]
pub struct SseEvent {
    /// Borrowed for the usual `message`: no allocation for it per streamed token.
    pub event: Cow<'static, str>,
    pub data: String,
}

/// The most one event (its lines together) may hold.
pub const EVENT_CAP: usize = 1 << 20;

/// Frame a response body into events. A body that breaks off mid-stream yields a `Stream` error.
pub fn events(
    resp: reqwest::Response,
    provider: String,
) -> std::pin::Pin<Box<dyn Stream<Item = Result<SseEvent, ProviderError>> + Send>> {
    Box::pin(frame(resp.bytes_stream(), provider))
}

/// Frame any stream of byte chunks (a response body; the fuzzer's arbitrary splits) into events.
/// After an error nothing more is yielded.
pub fn frame<S, B, E>(
    bytes: S,
    provider: String,
) -> impl Stream<Item = Result<SseEvent, ProviderError>> + Send
where
    S: Stream<Item = Result<B, E>> + Send,
    B: AsRef<[u8]> + Send,
    E: std::error::Error + Send + 'static,
{
    let state = (Box::pin(bytes), Framer::default(), provider, false);
    futures::stream::unfold(
        state,
        |(mut bytes, mut f, provider, mut ended)| async move {
            loop {
                if let Some(item) = f.out.pop_front() {
                    if item.is_err() {
                        f.failed = true;
                    }
                    return Some((
                        item.map_err(|e| e.into_error(&provider)),
                        (bytes, f, provider, ended),
                    ));
                }
                if ended || f.failed {
                    return None;
                }
                match bytes.next().await {
                    Some(Ok(b)) => f.push(b.as_ref()),
                    Some(Err(e)) => {
                        ended = true;
                        f.out.push_back(Err(FrameError::Transport(root_cause(&e))));
                    }
                    None => {
                        ended = true;
                        f.finish();
                    }
                }
            }
        },
    )
}

enum FrameError {
    Transport(String),
    Utf8,
    TooLong,
}

impl FrameError {
    fn into_error(self, provider: &str) -> ProviderError {
        match self {
            FrameError::Transport(e) => ProviderError::Stream(format!(
                "the connection to {provider} broke mid-answer: {e}"
            )),
            FrameError::Utf8 => ProviderError::Protocol(format!(
                "{provider} sent a malformed event stream: a line is not UTF-8"
            )),
            FrameError::TooLong => ProviderError::Protocol(format!(
                "{provider}: the provider sent an event over 1 MiB without ending it"
            )),
        }
    }
}

const BOM: &[u8] = "\u{feff}".as_bytes();

#[derive(Default)]
struct Framer {
    /// Bytes not yet framed; `buf[..scanned]` holds no line end.
    buf: Vec<u8>,
    scanned: usize,
    /// The start of the body is known not to be (part of) a byte-order mark.
    started: bool,
    event: String,
    data: String,
    has_data: bool,
    out: VecDeque<Result<SseEvent, FrameError>>,
    failed: bool,
}

impl Framer {
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        if !self.started {
            // eventsource-stream sliced one byte of the three-byte BOM and panicked (found by
            // fuzzing): strip them whole, even when split across reads.
            let mut skip = 0;
            while self.buf[skip..].starts_with(BOM) {
                skip += BOM.len();
            }
            self.buf.drain(..skip);
            if BOM.starts_with(&self.buf) {
                return; // empty, or a BOM cut short: wait for more
            }
            self.started = true;
        }
        self.frame_lines(false);
    }

    fn finish(&mut self) {
        // A line cut by the end of the body is dropped, and so is an event without its blank line
        // (as the SSE spec and eventsource-stream do); a final CR still ends its line.
        self.frame_lines(true);
    }

    fn frame_lines(&mut self, at_end: bool) {
        let mut start = 0;
        loop {
            let from = self.scanned.max(start);
            let Some(rel) = memchr::memchr2(b'\n', b'\r', &self.buf[from..]) else {
                self.scanned = self.buf.len();
                break;
            };
            let end = from + rel;
            let term = if self.buf[end] == b'\n' {
                1
            } else if end + 1 < self.buf.len() {
                if self.buf[end + 1] == b'\n' { 2 } else { 1 }
            } else if at_end {
                1
            } else {
                // A CR at the end of what arrived: the LF of a CRLF may be in the next read.
                self.scanned = end;
                break;
            };
            let line = std::mem::take(&mut self.buf);
            let ok = self.line(&line[start..end]);
            self.buf = line;
            start = end + term;
            self.scanned = start;
            if !ok {
                self.out.push_back(Err(FrameError::Utf8));
                self.failed = true;
                break;
            }
            if self.data.len() > EVENT_CAP {
                break;
            }
        }
        // Dropping framed bytes once per read (not per line) keeps the work linear.
        self.buf.drain(..start.min(self.buf.len()));
        self.scanned -= start.min(self.scanned);
        if !self.failed && self.data.len() + self.buf.len() > EVENT_CAP {
            self.out.push_back(Err(FrameError::TooLong));
            self.failed = true;
            self.buf = Vec::new();
        }
    }

    /// One line; false when it is not UTF-8.
    fn line(&mut self, line: &[u8]) -> bool {
        let Ok(line) = std::str::from_utf8(line) else {
            return false;
        };
        if line.is_empty() {
            if self.has_data {
                let mut data = std::mem::take(&mut self.data);
                data.pop(); // the LF after the last data line
                let event = match std::mem::take(&mut self.event) {
                    e if e.is_empty() => Cow::Borrowed("message"),
                    e => Cow::Owned(e),
                };
                self.out.push_back(Ok(SseEvent { event, data }));
            }
            self.event.clear();
            self.data.clear();
            self.has_data = false;
            return true;
        }
        if line.starts_with(':') {
            return true; // a comment
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            // id and retry matter only for reconnecting, which moa never does.
            _ => {}
        }
        true
    }
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

    #[test]
    fn crlf_cr_comments_and_names_split_anywhere() {
        let body =
            b": keep-alive\r\n\r\nevent: ping\rdata: a\r\ndata: b\r\n\r\ndata:c\n\nid: 1\n\n";
        for cut in 0..body.len() {
            assert_eq!(
                frame_all(&[&body[..cut], &body[cut..]]),
                ["a\nb", "c"],
                "cut at {cut}"
            );
        }
        // An event not ended by a blank line before the body ends is dropped.
        assert!(frame_all(&[b"data: x\n"]).is_empty());
        // A UTF-8 character split across reads.
        let e = "data: é\n\n".as_bytes();
        assert_eq!(frame_all(&[&e[..7], &e[7..]]), ["é"]);
    }

    #[test]
    fn an_event_that_never_ends_is_stopped_at_one_mib_in_linear_time() {
        // 2 MiB of one line in 16-byte reads: eventsource-stream took 80 s for 1 MiB of it.
        let mut body = b"data: ".to_vec();
        body.extend(std::iter::repeat_n(b'x', 2 << 20));
        let pieces: Vec<&[u8]> = body.chunks(16).collect();
        let t = std::time::Instant::now();
        let out = frame_all(&pieces);
        assert!(
            t.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(out.len(), 1);
        assert!(
            out[0].contains("an event over 1 MiB without ending it"),
            "{out:?}"
        );
        // Many data lines that add up past the cap, too.
        let line = format!("data: {}\n", "y".repeat(1000));
        let many = line.repeat(1100);
        let out = frame_all(&[many.as_bytes()]);
        assert!(out[0].contains("over 1 MiB"), "{out:?}");
        // Just under the cap is an event (a 1 MiB line in 1-byte reads, linear).
        let mut ok = b"data: ".to_vec();
        ok.extend(std::iter::repeat_n(b'z', (1 << 20) - 10));
        ok.extend_from_slice(b"\n\n");
        let pieces: Vec<&[u8]> = ok.chunks(1).collect();
        let t = std::time::Instant::now();
        let out = frame_all(&pieces);
        eprintln!("1 MiB line in 1-byte reads: {:?}", t.elapsed());
        assert_eq!(out[0].len(), (1 << 20) - 10);
    }
}

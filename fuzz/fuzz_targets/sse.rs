//! SSE framing (`provider::sse::frame`) and both providers' chunk parsers on an arbitrary body that
//! arrives in arbitrary pieces: lines and UTF-8 characters get split across reads, and the body may
//! end with a transport error. Nothing here may panic.
//!
//! Input layout: byte 0 = flags (bits 0..=2: number of split points, bit 3: the body ends with a
//! transport error, bit 4: split points count from the end); then one byte per split point (the
//! gap to the next split, 0 = empty chunk); the rest is the body.
#![no_main]

use futures::StreamExt;
use futures::executor::block_on;
use libfuzzer_sys::fuzz_target;
use moa_workbench::provider::{anthropic, openai, sse};

#[derive(Clone, Debug)]
struct BrokenPipe;

impl std::fmt::Display for BrokenPipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset (fuzz)")
    }
}

impl std::error::Error for BrokenPipe {}

type Piece = Result<Vec<u8>, BrokenPipe>;

fn pieces(data: &[u8]) -> Vec<Piece> {
    let Some((&flags, rest)) = data.split_first() else {
        return Vec::new();
    };
    let splits = usize::from(flags & 0b111);
    let fail = flags & 0b1000 != 0;
    let (gaps, body) = rest.split_at(splits.min(rest.len()));
    let mut cuts: Vec<usize> = Vec::with_capacity(gaps.len() + 2);
    let mut at = 0usize;
    for &g in gaps {
        at = (at + usize::from(g)).min(body.len());
        cuts.push(if flags & 0b1_0000 != 0 {
            body.len() - at
        } else {
            at
        });
    }
    cuts.push(0);
    cuts.push(body.len());
    cuts.sort_unstable();
    let mut out: Vec<Piece> = cuts
        .windows(2)
        .map(|w| Ok(body[w[0]..w[1]].to_vec()))
        .collect();
    if fail {
        out.push(Err(BrokenPipe));
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let body = pieces(data);

    // The framer on its own: every event and error, and their messages.
    let events = sse::frame(futures::stream::iter(body.clone()), "fuzz".to_string());
    for ev in block_on(Box::pin(events).collect::<Vec<_>>()) {
        match ev {
            Ok(e) => {
                let _ = (e.event.len(), e.data.len());
            }
            Err(e) => {
                let _ = (e.to_string(), e.kind(), e.is_retryable(), e.retry_after());
            }
        }
    }

    // The OpenAI-compatible parser.
    let events = Box::pin(sse::frame(
        futures::stream::iter(body.clone()),
        "fuzz".to_string(),
    ));
    let chunks = openai::chunk_stream(events, "fuzz".to_string());
    for c in block_on(chunks.collect::<Vec<_>>()) {
        if let Err(e) = c {
            let _ = e.to_string();
        }
    }

    // The Anthropic parser.
    let events = Box::pin(sse::frame(futures::stream::iter(body), "fuzz".to_string()));
    let chunks = anthropic::chunk_stream(events, "fuzz".to_string());
    for c in block_on(chunks.collect::<Vec<_>>()) {
        if let Err(e) = c {
            let _ = e.to_string();
        }
    }
});

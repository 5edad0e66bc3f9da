//! Semantic matching for the call cache: the text a conversation is embedded as, the index entry
//! format (shared by the disk and Redis stores) and the nearest-entry search.
//!
//! An index holds, per family (see `CallCache::family`), the most recent `PER_FAMILY` answered
//! conversations as (embedding, key). An entry is `[u32 LE dims][64 bytes key][dims × f32 LE]`.

use crate::provider::Message;

/// Entries kept per family: a miss reads them all (about 1.6 KB each with MiniLM's 384 dims).
pub const PER_FAMILY: usize = 512;

/// Turns a conversation's text into a unit vector. Implemented in `app` over MiniLM: the provider
/// layer may not import metrics, so the embedder comes in from above.
pub trait Embedder: Send + Sync {
    /// A unit vector for `text`, or None when it cannot be embedded whole (the model is missing,
    /// or the text is longer than the model reads: two conversations that differ only past its
    /// window would look identical, so such a call is matched exactly or not at all).
    fn embed(&self, text: &str) -> Option<Vec<f32>>;
}

/// The conversation as embedded: each message as `role: content`, one after the other.
pub fn conversation_text(messages: &[Message]) -> String {
    let mut out = String::new();
    for m in messages {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!("{:?}: ", m.role).to_lowercase());
        out.push_str(&m.content);
    }
    out
}

const KEY_LEN: usize = 64;

/// One index entry for the answer under `key` (64 hex characters) to a conversation embedded as
/// `embedding`.
pub fn entry(key: &str, embedding: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + KEY_LEN + 4 * embedding.len());
    out.extend_from_slice(&(embedding.len() as u32).to_le_bytes());
    let mut k = key.as_bytes().to_vec();
    k.resize(KEY_LEN, b'0');
    out.extend_from_slice(&k);
    for v in embedding {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// The entries in `bytes` as (start offset, key, embedding), stopping at the first damaged one.
fn parse(bytes: &[u8]) -> Vec<(usize, &str, Vec<f32>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(head) = bytes.get(at..at + 4) {
        let dims = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let end = at + 4 + KEY_LEN + 4 * dims;
        let (Some(key), Some(vals)) = (
            bytes.get(at + 4..at + 4 + KEY_LEN),
            bytes.get(at + 4 + KEY_LEN..end),
        ) else {
            break;
        };
        let Ok(key) = std::str::from_utf8(key) else {
            break;
        };
        let v = vals
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        out.push((at, key, v));
        at = end;
    }
    out
}

/// The newest `n` entries of an index (its tail).
pub fn newest(bytes: &[u8], n: usize) -> &[u8] {
    let all = parse(bytes);
    match all.len().checked_sub(n).and_then(|skip| all.get(skip)) {
        Some((start, _, _)) => &bytes[*start..],
        None => bytes,
    }
}

/// The keys of up to `n` entries whose embedding has cosine >= `threshold` with `query`, best
/// first; among equals the newest. Embeddings are unit vectors, so the cosine is the dot product.
pub fn closest(index: &[u8], query: &[f32], threshold: f32, n: usize) -> Vec<String> {
    let mut scored: Vec<(f32, usize, &str)> = parse(index)
        .into_iter()
        .enumerate()
        .filter(|(_, (_, _, v))| v.len() == query.len())
        .map(|(i, (_, k, v))| (v.iter().zip(query).map(|(a, b)| a * b).sum::<f32>(), i, k))
        .filter(|(c, _, _)| *c >= threshold)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
    let mut out: Vec<String> = Vec::new();
    for (_, _, k) in scored {
        if !out.iter().any(|o| o == k) {
            out.push(k.to_string());
        }
        if out.len() == n {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn finds_the_closest_above_the_threshold_only() {
        let key = |c: char| c.to_string().repeat(64);
        let mut idx = entry(&key('a'), &unit(&[1.0, 0.0, 0.0]));
        idx.extend(entry(&key('b'), &unit(&[1.0, 0.1, 0.0])));
        idx.extend(entry(&key('c'), &unit(&[0.0, 1.0, 0.0])));
        let q = unit(&[1.0, 0.12, 0.0]);
        assert_eq!(closest(&idx, &q, 0.99, 3), vec![key('b'), key('a')]);
        assert_eq!(closest(&idx, &q, 0.999, 3), vec![key('b')]);
        assert!(closest(&idx, &unit(&[0.0, 0.0, 1.0]), 0.5, 3).is_empty());
        // Another embedder's entries (other dims) are never compared.
        assert!(closest(&idx, &unit(&[1.0, 0.0]), 0.1, 3).is_empty());
        assert_eq!(parse(newest(&idx, 1))[0].1, key('c'));
        assert_eq!(newest(&idx, 5), &idx[..]);
        // A cut last entry is ignored, the others still count.
        let cut = &idx[..idx.len() - 3];
        assert_eq!(parse(cut).len(), 2);
    }

    #[test]
    fn the_text_names_each_role() {
        let text = conversation_text(&[
            Message::new(crate::provider::Role::System, "be brief"),
            Message::user("hi"),
        ]);
        assert_eq!(text, "system: be brief\nuser: hi");
    }
}

//! The call cache: complete, successful answers, keyed by everything that decides an answer (the
//! provider's name and address, the model, the messages, every sampling parameter and the sample's
//! position among identical calls), optionally also found by a near-identical conversation.
//!
//! Who uses it: `moa eval` and `moa tune` by default (`--no-cache` bypasses it), so that re-running
//! an evaluation, or tuning on prompts an evaluation already ran, pays nothing for calls already
//! made; `moa run` and `moa serve` when `[cache] enabled = true` or the preset says `cache = true`.
//! The workbench never: a re-run there is asked for to get new samples.
//!
//! Where answers live (one implementation, two stores): on disk under the data folder
//! (`disk.rs`, bounded in size, least recently used out first), or in Redis when `cache_url` is set
//! (`shared.rs`), so several moa processes on several machines share their answers. Either way
//! the value is the same JSON, the key inside it is checked on read (a damaged or foreign entry is
//! a miss), and an entry older than the TTL is a miss.
//!
//! Semantic matching (`semantic.rs`), when a threshold is configured: an exact miss looks for an
//! answer to a conversation whose embedding is at least that close, among the calls with the same
//! provider, model, sampling parameters, sample position and message roles. The embedder is
//! injected (`Embedder`) by `app`: provider and metrics are siblings, and the MiniLM model lives
//! in metrics.
//!
//! A cache that fails (Redis gone, a disk that refuses writes) never fails a call: the call goes
//! to its provider, the failure is counted (`CacheStats::errors`) and a warning is printed at most
//! every 30 s.

mod disk;
pub mod semantic;
mod shared;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ChatRequest;
use crate::config::{CacheSettings, ProviderSettings};
pub use semantic::Embedder;

/// 256 MiB: some tens of thousands of answers.
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;

/// How often a failing cache may say so on stderr.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// What a cached call gives back (and the JSON it is stored as).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CachedAnswer {
    pub key: String,
    pub text: String,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub usage_estimated: bool,
    pub finish_reason: Option<String>,
    /// Seconds since the Unix epoch when it was stored: the TTL counts from here. Entries written
    /// before the TTL existed have 0 and are misses once a TTL is configured.
    #[serde(default)]
    pub stored_at: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Hits and misses of one command's calls, for its report (`moa eval`/`moa tune` summaries) and
/// the server's metrics.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Of the hits, those found by a near-identical conversation rather than an identical one.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub semantic_hits: u64,
    /// Look-ups and stores the store could not serve (Redis unreachable or slow, a disk that
    /// refuses writes): those calls went to their provider uncached.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub errors: u64,
}

/// Why a store could not serve a request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// A miss, carrying what storing its answer needs (the key, and the conversation's embedding so
/// that it is computed once).
#[derive(Debug, Clone)]
pub struct Pending {
    key: String,
    family: String,
    embedding: Option<Vec<f32>>,
}

impl Pending {
    pub fn key(&self) -> &str {
        &self.key
    }
}

enum Store {
    Disk(disk::DiskStore),
    // Boxed: the client and connection state dwarf the disk store.
    Redis(Box<shared::RedisStore>),
}

struct Semantic {
    threshold: f32,
    embedder: Arc<dyn Embedder>,
}

pub struct CallCache {
    store: Store,
    ttl: Option<Duration>,
    semantic: Option<Semantic>,
    hits: AtomicU64,
    semantic_hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
    last_warning: Mutex<Option<Instant>>,
}

impl CallCache {
    /// Answers on disk under `dir`, at most `max_bytes` of them, each valid for `ttl`.
    pub fn on_disk(dir: PathBuf, max_bytes: u64, ttl: Option<Duration>) -> CallCache {
        CallCache::with_store(Store::Disk(disk::DiskStore::new(dir, max_bytes)), ttl)
    }

    /// Answers in the Redis at `url` (`redis://host:port[/db]`; a password comes from
    /// `MOA_REDIS_PASSWORD`). Nothing is connected yet: the first call does, and a Redis that is
    /// not there only makes calls uncached.
    pub fn in_redis(url: &str, ttl: Option<Duration>) -> Result<CallCache, StoreError> {
        Ok(CallCache::with_store(
            Store::Redis(Box::new(shared::RedisStore::new(url)?)),
            ttl,
        ))
    }

    /// The cache `[cache]` describes: in Redis when `cache_url` is set, else on disk under
    /// `disk_dir`. Semantic matching is added by the caller (`with_semantic`), which owns the
    /// embedder.
    pub fn from_settings(s: &CacheSettings, disk_dir: PathBuf) -> Result<CallCache, StoreError> {
        match &s.url {
            Some(url) => CallCache::in_redis(url, s.ttl),
            None => Ok(CallCache::on_disk(disk_dir, s.max_bytes, s.ttl)),
        }
    }

    fn with_store(store: Store, ttl: Option<Duration>) -> CallCache {
        CallCache {
            store,
            ttl,
            semantic: None,
            hits: AtomicU64::new(0),
            semantic_hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            last_warning: Mutex::new(None),
        }
    }

    /// Also answer a miss from a conversation whose embedding has cosine >= `threshold` with
    /// this one (same provider, model, parameters, sample and roles).
    pub fn with_semantic(mut self, threshold: f32, embedder: Arc<dyn Embedder>) -> CallCache {
        self.semantic = Some(Semantic {
            threshold,
            embedder,
        });
        self
    }

    /// Where the answers are, for messages: a folder or a Redis address (without credentials).
    pub fn location(&self) -> String {
        match &self.store {
            Store::Disk(d) => d.dir().display().to_string(),
            Store::Redis(r) => r.shown().to_string(),
        }
    }

    /// The key of a request to `provider`, for the `sample`-th of identical calls in one step
    /// (Self-MoA samples one model several times with the same messages: each sample keeps its own
    /// answer instead of all becoming the first).
    pub fn key(provider: &ProviderSettings, req: &ChatRequest, sample: usize) -> String {
        hashed(&[
            "moa.call-cache/1",
            &provider.name,
            &provider.base_url,
            &req.model,
            &serde_json::to_string(&req.messages).unwrap_or_default(),
            &params(req, sample),
        ])
    }

    /// What must be equal for two calls to share an answer by semantic matching: everything in
    /// the key but the messages' text, of which only the roles count.
    pub fn family(provider: &ProviderSettings, req: &ChatRequest, sample: usize) -> String {
        let roles: Vec<String> = req
            .messages
            .iter()
            .map(|m| format!("{:?}", m.role))
            .collect();
        hashed(&[
            "moa.call-family/1",
            &provider.name,
            &provider.base_url,
            &req.model,
            &roles.join(","),
            &params(req, sample),
        ])
    }

    /// The answer of an earlier identical call (or, with semantic matching, of a near-identical
    /// one), counted as a hit; else a miss, to pass to `store` with the call's answer.
    pub async fn lookup(
        &self,
        provider: &ProviderSettings,
        req: &ChatRequest,
        sample: usize,
    ) -> Result<CachedAnswer, Pending> {
        let key = CallCache::key(provider, req, sample);
        let mut pending = Pending {
            family: CallCache::family(provider, req, sample),
            key,
            embedding: None,
        };
        match self.read(&pending.key).await {
            Ok(Some(a)) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(a);
            }
            Ok(None) => {}
            Err(e) => {
                // The store is failing: no point asking it again for near matches.
                self.failed(&e);
                self.misses.fetch_add(1, Ordering::Relaxed);
                return Err(pending);
            }
        }
        if let Some(sem) = &self.semantic {
            let embedder = sem.embedder.clone();
            let text = semantic::conversation_text(&req.messages);
            pending.embedding = tokio::task::spawn_blocking(move || embedder.embed(&text))
                .await
                .ok()
                .flatten();
            if let Some(found) = self.nearest(sem.threshold, &pending).await {
                self.hits.fetch_add(1, Ordering::Relaxed);
                self.semantic_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(found);
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        Err(pending)
    }

    /// The best stored answer for a near-identical conversation, if any reaches `threshold`.
    async fn nearest(&self, threshold: f32, pending: &Pending) -> Option<CachedAnswer> {
        let embedding = pending.embedding.as_ref()?;
        let index = match self.index(&pending.family).await {
            Ok(i) => i,
            Err(e) => {
                self.failed(&e);
                return None;
            }
        };
        // A few candidates: the best one's answer may have expired or been evicted meanwhile.
        for key in semantic::closest(&index, embedding, threshold, 3) {
            if key == pending.key {
                continue;
            }
            match self.read(&key).await {
                Ok(Some(a)) => return Some(a),
                Ok(None) => {}
                Err(e) => {
                    self.failed(&e);
                    return None;
                }
            }
        }
        None
    }

    /// Keep a complete, successful answer for `pending`'s call. A failure costs only the cache:
    /// the call's answer is already in hand.
    pub async fn store(&self, pending: Pending, mut answer: CachedAnswer) {
        if answer.text.is_empty() {
            return;
        }
        answer.key = pending.key.clone();
        answer.stored_at = unix_now();
        let Ok(bytes) = serde_json::to_vec(&answer) else {
            return;
        };
        let put = match &self.store {
            Store::Disk(d) => d.put(&pending.key, &bytes),
            Store::Redis(r) => r.put(&pending.key, &bytes, self.ttl).await,
        };
        if let Err(e) = put {
            self.failed(&e);
            return;
        }
        if let Some(embedding) = &pending.embedding {
            let entry = semantic::entry(&pending.key, embedding);
            let added = match &self.store {
                Store::Disk(d) => d.index_add(&pending.family, &entry),
                Store::Redis(r) => r.index_add(&pending.family, &entry, self.ttl).await,
            };
            if let Err(e) = added {
                self.failed(&e);
            }
        }
    }

    /// The valid answer under `key`: present, its own key inside, not empty, not expired.
    async fn read(&self, key: &str) -> Result<Option<CachedAnswer>, StoreError> {
        let bytes = match &self.store {
            Store::Disk(d) => d.get(key),
            Store::Redis(r) => r.get(key).await?,
        };
        let Some(bytes) = bytes else {
            return Ok(None);
        };
        let Some(a) = serde_json::from_slice::<CachedAnswer>(&bytes)
            .ok()
            .filter(|a| a.key == key && !a.text.is_empty())
        else {
            return Ok(None);
        };
        // Whole seconds: an answer lives from `ttl` to `ttl` + 1 s (never less, so one stored
        // just before a second turns is not expired at once).
        if let Some(ttl) = self.ttl
            && unix_now().saturating_sub(a.stored_at) > ttl.as_secs()
        {
            // Redis expires entries itself; files must be removed here.
            if let Store::Disk(d) = &self.store {
                d.remove(key);
            }
            return Ok(None);
        }
        if let Store::Disk(d) = &self.store {
            d.touch(key);
        }
        Ok(Some(a))
    }

    async fn index(&self, family: &str) -> Result<Vec<u8>, StoreError> {
        match &self.store {
            Store::Disk(d) => Ok(d.index(family)),
            Store::Redis(r) => r.index(family).await,
        }
    }

    /// Count a failure and say so, at most every `WARN_EVERY`.
    fn failed(&self, e: &StoreError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut last = self
            .last_warning
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            *last = Some(Instant::now());
            crate::safe_eprintln!(
                "moa: call cache: {e}; calls go on uncached (this warning repeats at most every {} s)",
                WARN_EVERY.as_secs()
            );
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits(),
            misses: self.misses(),
            semantic_hits: self.semantic_hits.load(Ordering::Relaxed),
            errors: self.errors(),
        }
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// Look-ups and stores that failed (see `CacheStats::errors`).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

/// Every sampling parameter and the sample's position, as keyed.
fn params(req: &ChatRequest, sample: usize) -> String {
    format!(
        "t={:?} p={:?} max={:?} seed={:?} k={:?} rep={:?} sample={sample}",
        req.temperature, req.top_p, req.max_tokens, req.seed, req.top_k, req.repeat_penalty
    )
}

/// SHA-256 over length-prefixed parts, in hex.
fn hashed(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for s in parts {
        h.update((s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Message;
    use std::path::Path;

    fn req(content: &str) -> ChatRequest {
        ChatRequest {
            model: "m".into(),
            messages: vec![Message::user(content)],
            temperature: Some(0.7),
            top_p: None,
            max_tokens: Some(10),
            seed: None,
            top_k: None,
            repeat_penalty: None,
        }
    }

    fn provider(base: &str) -> ProviderSettings {
        let folders = crate::config::Folders {
            config_dir: "/tmp/x".into(),
            data_dir: "/tmp/x".into(),
            models_dir: "/tmp/x/models".into(),
        };
        let c = crate::config::Config::from_toml(
            folders,
            Path::new("c.toml"),
            &format!("[providers.x]\nkind = \"openai\"\nbase_url = \"{base}\"\n"),
        )
        .unwrap();
        c.providers["x"].clone()
    }

    fn answer(text: &str) -> CachedAnswer {
        CachedAnswer {
            key: String::new(),
            text: text.into(),
            tokens_in: 1,
            tokens_out: 2,
            usage_estimated: false,
            finish_reason: Some("stop".into()),
            stored_at: 0,
        }
    }

    #[test]
    fn keys_tell_every_setting_apart() {
        let p = provider("http://127.0.0.1:1/v1");
        let k = CallCache::key(&p, &req("hi"), 0);
        assert_eq!(k, CallCache::key(&p, &req("hi"), 0));
        assert_ne!(k, CallCache::key(&p, &req("hi!"), 0));
        assert_ne!(
            k,
            CallCache::key(&p, &req("hi"), 1),
            "samples keep their own answers"
        );
        assert_ne!(
            k,
            CallCache::key(&provider("http://127.0.0.1:2/v1"), &req("hi"), 0)
        );
        let mut r = req("hi");
        r.temperature = Some(0.8);
        assert_ne!(k, CallCache::key(&p, &r, 0));
        let mut r = req("hi");
        r.seed = Some(1);
        assert_ne!(k, CallCache::key(&p, &r, 0));
        // Families ignore the text, not the parameters.
        let fam = CallCache::family(&p, &req("hi"), 0);
        assert_eq!(fam, CallCache::family(&p, &req("hello there"), 0));
        assert_ne!(fam, CallCache::family(&p, &r, 0));
        assert_ne!(fam, CallCache::family(&p, &req("hi"), 1));
        let mut two = req("hi");
        two.messages
            .insert(0, Message::new(crate::provider::Role::System, "x"));
        assert_ne!(fam, CallCache::family(&p, &two, 0), "roles count");
    }

    #[tokio::test]
    async fn stores_counts_and_stays_within_its_size() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("calls");
        let c = CallCache::on_disk(dir.clone(), 4000, None);
        let p = provider("http://127.0.0.1:1/v1");
        let pending = c.lookup(&p, &req("q1"), 0).await.unwrap_err();
        let key = pending.key().to_string();
        c.store(pending, answer(&"x".repeat(500))).await;
        let hit = c.lookup(&p, &req("q1"), 0).await.unwrap();
        assert_eq!((hit.key.as_str(), hit.text.len()), (key.as_str(), 500));
        assert_eq!(
            c.stats(),
            CacheStats {
                hits: 1,
                misses: 1,
                ..Default::default()
            }
        );
        // A file under another key's name is a miss, not a wrong answer.
        let other = c.lookup(&p, &req("q2"), 0).await.unwrap_err();
        let Store::Disk(store) = &c.store else {
            unreachable!()
        };
        let wrong = store.path(other.key());
        std::fs::create_dir_all(wrong.parent().unwrap()).unwrap();
        std::fs::copy(store.path(&key), &wrong).unwrap();
        assert!(c.lookup(&p, &req("q2"), 0).await.is_err());
        // Empty answers are not kept.
        c.store(other, answer("")).await;
        assert!(c.lookup(&p, &req("q2"), 0).await.is_err());
        for i in 10..30 {
            let m = c.lookup(&p, &req(&format!("q{i}")), 0).await.unwrap_err();
            c.store(m, answer(&"x".repeat(500))).await;
        }
        assert!(disk::folder_bytes(&dir) <= 4000);
        // The newest stay.
        assert!(c.lookup(&p, &req("q29"), 0).await.is_ok());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let k = CallCache::key(&p, &req("q29"), 0);
            let mode = std::fs::metadata(store.path(&k))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[tokio::test]
    async fn entries_past_their_ttl_are_misses_and_go() {
        let d = tempfile::tempdir().unwrap();
        let c = CallCache::on_disk(
            d.path().join("calls"),
            1 << 20,
            Some(Duration::from_secs(60)),
        );
        let p = provider("http://127.0.0.1:1/v1");
        let m = c.lookup(&p, &req("q"), 0).await.unwrap_err();
        let key = m.key().to_string();
        c.store(m, answer("fresh")).await;
        assert_eq!(c.lookup(&p, &req("q"), 0).await.unwrap().text, "fresh");
        // Age the entry past the TTL by rewriting its time of storing.
        let Store::Disk(store) = &c.store else {
            unreachable!()
        };
        let mut old: CachedAnswer =
            serde_json::from_slice(&std::fs::read(store.path(&key)).unwrap()).unwrap();
        old.stored_at = unix_now() - 61;
        std::fs::write(store.path(&key), serde_json::to_vec(&old).unwrap()).unwrap();
        assert!(c.lookup(&p, &req("q"), 0).await.is_err());
        assert!(!store.path(&key).exists(), "an expired entry is removed");
        // Without a TTL the same entry would have been an answer.
        std::fs::write(store.path(&key), serde_json::to_vec(&old).unwrap()).unwrap();
        let keep = CallCache::on_disk(d.path().join("calls"), 1 << 20, None);
        assert!(keep.lookup(&p, &req("q"), 0).await.is_ok());
    }

    /// Letters counted, as a unit vector: texts with the same letters are identical to it, which
    /// makes near and far easy to write down. Refuses texts over 40 bytes, as MiniLM refuses
    /// texts past its window.
    struct Letters;
    impl Embedder for Letters {
        fn embed(&self, text: &str) -> Option<Vec<f32>> {
            if text.len() > 40 {
                return None;
            }
            let mut v = vec![0f32; 26];
            for b in text.bytes().filter(u8::is_ascii_lowercase) {
                v[(b - b'a') as usize] += 1.0;
            }
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
            Some(v.into_iter().map(|x| x / n).collect())
        }
    }

    #[tokio::test]
    async fn near_conversations_share_an_answer_only_above_the_threshold() {
        let d = tempfile::tempdir().unwrap();
        let p = provider("http://127.0.0.1:1/v1");
        let c = CallCache::on_disk(d.path().join("calls"), 1 << 20, None)
            .with_semantic(0.99, Arc::new(Letters));
        let m = c.lookup(&p, &req("what is rust"), 0).await.unwrap_err();
        c.store(m, answer("a language")).await;
        // Same letters, other order: cosine 1.
        let hit = c.lookup(&p, &req("what is rust?"), 0).await.unwrap();
        assert_eq!(hit.text, "a language");
        assert_eq!(c.stats().semantic_hits, 1);
        // Far below the threshold.
        assert!(c.lookup(&p, &req("zzz"), 0).await.is_err());
        // Exactly the same parameters only.
        let mut hot = req("what is rust?");
        hot.temperature = Some(0.9);
        assert!(c.lookup(&p, &hot, 0).await.is_err());
        assert!(c.lookup(&p, &req("what is rust?"), 1).await.is_err());
        // Too long to embed: exact matches only.
        let long = format!("what is rust {}", "x".repeat(40));
        let m = c.lookup(&p, &req(&long), 0).await.unwrap_err();
        c.store(m, answer("long")).await;
        assert!(c.lookup(&p, &req(&format!("{long}!")), 0).await.is_err());
        assert_eq!(c.lookup(&p, &req(&long), 0).await.unwrap().text, "long");
        // A lower threshold lets a looser match through, from the index on disk (another process).
        let loose = CallCache::on_disk(d.path().join("calls"), 1 << 20, None)
            .with_semantic(0.8, Arc::new(Letters));
        assert_eq!(
            loose
                .lookup(&p, &req("what is trust"), 0)
                .await
                .unwrap()
                .text,
            "a language"
        );
        let strict = CallCache::on_disk(d.path().join("calls"), 1 << 20, None)
            .with_semantic(0.999, Arc::new(Letters));
        assert!(strict.lookup(&p, &req("what is trust"), 0).await.is_err());
    }

    #[tokio::test]
    async fn a_dead_redis_costs_little_and_fails_nothing() {
        // Port 9 (discard) is closed here: connections are refused at once.
        let c = CallCache::in_redis("redis://127.0.0.1:9/", None).unwrap();
        let p = provider("http://127.0.0.1:1/v1");
        let t = Instant::now();
        for _ in 0..20 {
            let m = c.lookup(&p, &req("q"), 0).await.unwrap_err();
            c.store(m, answer("a")).await;
        }
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        let s = c.stats();
        assert_eq!((s.hits, s.misses), (0, 20));
        assert_eq!(
            s.errors, 40,
            "every look-up and store that could not use Redis"
        );
        assert!(c.location().starts_with("redis://127.0.0.1:9"));
    }

    #[test]
    fn addresses_are_shown_without_credentials() {
        let c = CallCache::in_redis("redis://:secret@127.0.0.1:6379/0", None).unwrap();
        assert_eq!(c.location(), "redis://127.0.0.1:6379/0");
        assert!(CallCache::in_redis("redis://127.0.0.1:notaport", None).is_err());
    }
}

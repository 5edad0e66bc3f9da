//! The call cache: complete, successful answers on disk, keyed by everything that decides an
//! answer (the provider's name and address, the model, the messages, every sampling parameter and
//! the sample's position among identical calls). `moa eval` and `moa tune` use it (`--no-cache`
//! bypasses it), so that re-running an evaluation into a new folder, or tuning on prompts an
//! evaluation already ran, pays nothing for calls already made. The workbench and `moa run` do not:
//! there a re-run is asked for to get new samples.
//!
//! One JSON file per answer under `<data>/cache/calls/<2 hex>/<key>.json`, written privately and
//! atomically (`files`); the key is stored in the file and checked, so a damaged or foreign file is
//! a miss. The folder is bounded: past its size limit the least recently used answers go (a hit
//! touches its file).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ChatRequest;
use crate::config::ProviderSettings;

/// 256 MiB: some tens of thousands of answers.
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;

/// What a cached call gives back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CachedAnswer {
    pub key: String,
    pub text: String,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub usage_estimated: bool,
    pub finish_reason: Option<String>,
}

/// Hits and misses of one command's calls, for its report.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
}

pub struct CallCache {
    dir: PathBuf,
    max_bytes: u64,
    /// Bytes in the folder, counted at open and kept up to date by this process (another process
    /// writing beside it is caught at the next open).
    bytes: Mutex<Option<u64>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl CallCache {
    pub fn new(dir: PathBuf, max_bytes: u64) -> CallCache {
        CallCache {
            dir,
            max_bytes,
            bytes: Mutex::new(None),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The key of a request to `provider`, for the `sample`-th of identical calls in one step
    /// (Self-MoA samples one model several times with the same messages: each sample keeps its own
    /// answer instead of all becoming the first).
    pub fn key(provider: &ProviderSettings, req: &ChatRequest, sample: usize) -> String {
        let mut h = Sha256::new();
        let mut part = |s: &str| {
            h.update((s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        };
        part("moa.call-cache/1");
        part(&provider.name);
        part(&provider.base_url);
        part(&req.model);
        part(&serde_json::to_string(&req.messages).unwrap_or_default());
        part(&format!(
            "t={:?} p={:?} max={:?} seed={:?} k={:?} rep={:?} sample={sample}",
            req.temperature, req.top_p, req.max_tokens, req.seed, req.top_k, req.repeat_penalty
        ));
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir
            .join(&key[..2.min(key.len())])
            .join(format!("{key}.json"))
    }

    /// The answer stored under `key`, counted as a hit or a miss.
    pub fn get(&self, key: &str) -> Option<CachedAnswer> {
        let p = self.path(key);
        let found = std::fs::read(&p)
            .ok()
            .and_then(|b| serde_json::from_slice::<CachedAnswer>(&b).ok())
            .filter(|a| a.key == key && !a.text.is_empty());
        match &found {
            Some(_) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                // Recently used: eviction goes by modification time.
                if let Ok(f) = std::fs::File::options().append(true).open(&p) {
                    let _ = f.set_modified(std::time::SystemTime::now());
                }
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
            }
        }
        found
    }

    /// Store a complete, successful answer. A failure to write costs only the cache: the call's
    /// answer is already in hand.
    pub fn put(&self, answer: &CachedAnswer) {
        let Ok(bytes) = serde_json::to_vec(answer) else {
            return;
        };
        let p = self.path(&answer.key);
        let old = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        if crate::files::write_replacing(&p, &bytes, false).is_err() {
            return;
        }
        let mut total = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        let now = total.unwrap_or_else(|| folder_bytes(&self.dir)) + bytes.len() as u64
            - old.min(bytes.len() as u64);
        *total = Some(if now > self.max_bytes {
            evict(&self.dir, self.max_bytes * 9 / 10)
        } else {
            now
        });
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits(),
            misses: self.misses(),
        }
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
}

fn entries(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let Ok(top) = std::fs::read_dir(dir) else {
        return out;
    };
    for sub in top.flatten() {
        let Ok(files) = std::fs::read_dir(sub.path()) else {
            continue;
        };
        for f in files.flatten() {
            if let Ok(m) = f.metadata()
                && m.is_file()
            {
                out.push((
                    f.path(),
                    m.len(),
                    m.modified().unwrap_or(std::time::UNIX_EPOCH),
                ));
            }
        }
    }
    out
}

fn folder_bytes(dir: &Path) -> u64 {
    entries(dir).iter().map(|e| e.1).sum()
}

/// Remove the least recently used files until at most `keep` bytes remain; the bytes left.
fn evict(dir: &Path, keep: u64) -> u64 {
    let mut files = entries(dir);
    files.sort_by_key(|e| e.2);
    let mut total: u64 = files.iter().map(|e| e.1).sum();
    for (p, len, _) in files {
        if total <= keep {
            break;
        }
        if std::fs::remove_file(&p).is_ok() {
            total -= len;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Message;

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
    }

    #[test]
    fn stores_counts_and_stays_within_its_size() {
        let d = tempfile::tempdir().unwrap();
        let c = CallCache::new(d.path().join("calls"), 4000);
        let answer = |i: usize| CachedAnswer {
            key: format!("{i:064x}"),
            text: "x".repeat(500),
            tokens_in: 1,
            tokens_out: 2,
            usage_estimated: false,
            finish_reason: Some("stop".into()),
        };
        assert_eq!(c.get(&answer(1).key), None);
        c.put(&answer(1));
        assert_eq!(c.get(&answer(1).key), Some(answer(1)));
        assert_eq!((c.hits(), c.misses()), (1, 1));
        // A file under another key's name is a miss, not a wrong answer.
        let wrong = c.path(&answer(2).key);
        std::fs::create_dir_all(wrong.parent().unwrap()).unwrap();
        std::fs::write(&wrong, serde_json::to_vec(&answer(3)).unwrap()).unwrap();
        assert_eq!(c.get(&answer(2).key), None);
        for i in 10..30 {
            c.put(&answer(i));
        }
        assert!(folder_bytes(&d.path().join("calls")) <= 4000);
        // The newest stay.
        assert!(c.get(&answer(29).key).is_some());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(c.path(&answer(29).key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}

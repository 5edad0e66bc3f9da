//! The call cache end to end: the real `moa` binary against the scripted server, sharing answers
//! through a real `redis-server` (Debian's package; started here on a free loopback port, without
//! persistence, killed at the end), expiring them, going on uncached when Redis goes away, and
//! matching near-identical prompts with the real MiniLM model. Skipped with a message when
//! redis-server or the model is missing, except under CI=true.

// Test code may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use moa_workbench::config::Folders;
use moa_workbench::fetch;
use moa_workbench::metrics::embed::MiniLm;
use moa_workbench::provider::cache::semantic::conversation_text;
use moa_workbench::provider::cache::{CachedAnswer, CallCache};
use moa_workbench::provider::{ChatRequest, Message};
use serde_json::Value;
use support::Server;
use support::redis::Redis;

const KEY: &str = "sk-cache-test-0123456789";

const MINI: &str = r#"name = "mini"
[[step]]
op = "propose"
agents = [{ model = "fake/p1", temperature = 0.7 }, { model = "fake/p2" }]
[[step]]
op = "aggregate"
model = "fake/agg"
"#;

/// One proposer on its own: its conversation is the user's prompt, short enough to embed.
const ONE: &str = r#"name = "one"
[[step]]
op = "propose"
agents = [{ model = "fake/p1", temperature = 0.7 }]
"#;

fn home_with(server: &Server, config: &str, presets: &[(&str, &str)]) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("config.toml"), server.config(config)).unwrap();
    std::fs::create_dir_all(home.path().join("presets")).unwrap();
    for (name, text) in presets {
        std::fs::write(home.path().join(format!("presets/{name}.toml")), text).unwrap();
    }
    home
}

/// `moa run --json -q` of `prompt`: the run record, and stderr.
async fn run(home: &Path, preset: &str, prompt: &str) -> (Value, String) {
    let out: Output = support::moa(
        home,
        &["run", "--preset", preset, "--json", "-q", prompt],
        None,
        KEY,
    )
    .await;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{err}");
    (serde_json::from_slice(&out.stdout).unwrap(), err)
}

/// Whether each call of the run was answered from the cache.
fn cached(record: &Value) -> Vec<bool> {
    record["steps"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["calls"].as_array().unwrap().iter())
        .map(|c| c["cached"].as_bool().unwrap_or(false))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_config_or_the_preset_turns_the_cache_on_for_moa_run() {
    let s = Server::start().await;
    // Top-level keys come before the first table.
    let no_cache = format!(
        "cache = false\n{}",
        MINI.replace("\"mini\"", "\"mini-fresh\"")
    );
    let cache = format!(
        "cache = true\n{}",
        MINI.replace("\"mini\"", "\"mini-cached\"")
    );
    let presets = [
        ("mini", MINI),
        ("mini-fresh", no_cache.as_str()),
        ("mini-cached", cache.as_str()),
    ];
    // Off by default: a second identical run asks again.
    let off = home_with(&s, "", &presets);
    run(off.path(), "mini", "Q").await;
    let (again, _) = run(off.path(), "mini", "Q").await;
    assert_eq!(s.log().len(), 6);
    assert_eq!(cached(&again), vec![false; 3]);
    // A preset's own `cache = true` wins over the config.
    run(off.path(), "mini-cached", "Q").await;
    let before = s.log().len();
    let (again, _) = run(off.path(), "mini-cached", "Q").await;
    assert_eq!(s.log().len(), before, "nothing sent");
    assert_eq!(cached(&again), vec![true; 3]);
    assert_eq!(again["final"]["text"], "Answer from agg.");
    // `[cache] enabled = true` turns it on; the preset's `cache = false` wins again.
    let on = home_with(&s, "[cache]\nenabled = true\n", &presets);
    run(on.path(), "mini", "Q2").await;
    let before = s.log().len();
    run(on.path(), "mini", "Q2").await;
    assert_eq!(s.log().len(), before);
    run(on.path(), "mini-fresh", "Q2").await;
    assert_eq!(s.log().len(), before + 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_homes_share_answers_through_redis_which_expire_and_may_go_away() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let s = Server::start().await;
    let config = |extra: &str| {
        format!(
            "[cache]\nenabled = true\ncache_url = \"{}\"\n{extra}",
            redis.url()
        )
    };
    // Two installations (two replicas, two machines): nothing on disk in common.
    let a = home_with(&s, &config(""), &[("mini", MINI)]);
    let b = home_with(&s, &config(""), &[("mini", MINI)]);
    let (first, _) = run(a.path(), "mini", "What is Redis?").await;
    assert_eq!(s.log().len(), 3);
    assert_eq!(cached(&first), vec![false; 3]);
    let (second, _) = run(b.path(), "mini", "What is Redis?").await;
    assert_eq!(s.log().len(), 3, "the second home sent no provider request");
    assert_eq!(cached(&second), vec![true; 3]);
    assert_eq!(second["final"]["text"], first["final"]["text"]);
    assert!(!b.path().join("cache/calls").exists(), "nothing on disk");

    // A TTL: answers stored with a 2 s expiry are there at once, and gone 3 s later.
    let ttl = home_with(&s, &config("ttl_s = 2\n"), &[("mini", MINI)]);
    run(ttl.path(), "mini", "Short-lived?").await;
    let stored = s.log().len();
    run(ttl.path(), "mini", "Short-lived?").await;
    assert_eq!(s.log().len(), stored);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    run(ttl.path(), "mini", "Short-lived?").await;
    assert_eq!(
        s.log().len(),
        stored + 3,
        "expired answers are asked for again"
    );

    // Redis goes away: runs still succeed, uncached, with one warning, and no slower for it.
    redis.stop();
    let before = s.log().len();
    let t = Instant::now();
    let (record, err) = run(b.path(), "mini", "What is Redis?").await;
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(s.log().len(), before + 3);
    assert_eq!(cached(&record), vec![false; 3]);
    let warning = format!("call cache: Redis at redis://127.0.0.1:{}/", redis.port);
    assert_eq!(err.matches(&warning).count(), 1, "{err}");
    assert!(err.contains("calls go on uncached"), "{err}");
    assert_eq!(record["final"]["status"], "ok");
}

fn request(prompt: &str) -> ChatRequest {
    ChatRequest {
        model: "m".into(),
        messages: vec![Message::user(prompt)],
        temperature: Some(0.7),
        top_p: None,
        max_tokens: None,
        seed: None,
        top_k: None,
        repeat_penalty: None,
    }
}

fn answer(text: &str) -> CachedAnswer {
    CachedAnswer {
        key: String::new(),
        text: text.into(),
        tokens_in: 3,
        tokens_out: 4,
        usage_estimated: false,
        finish_reason: Some("stop".into()),
        stored_at: 0,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_process_uses_redis_again_once_it_is_back() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let s = Server::start().await;
    let config = moa_workbench::config::Config::from_toml(
        Folders::from_env(),
        Path::new("c.toml"),
        &s.config(""),
    )
    .unwrap();
    let p = &config.providers["fake"];
    let c = CallCache::in_redis(&redis.url(), None).unwrap();
    let miss = c.lookup(p, &request("a"), 0).await.unwrap_err();
    c.store(miss, answer("A")).await;
    assert_eq!(c.lookup(p, &request("a"), 0).await.unwrap().text, "A");
    // What a hit costs (printed, not checked: timings are for benchmarks).
    let t = Instant::now();
    for _ in 0..200 {
        assert!(c.lookup(p, &request("a"), 0).await.is_ok());
    }
    eprintln!(
        "a Redis hit: {:?} per look-up (200 in a row)",
        t.elapsed() / 200
    );
    redis.stop();
    let t = Instant::now();
    assert!(c.lookup(p, &request("a"), 0).await.is_err());
    assert!(c.lookup(p, &request("a"), 0).await.is_err());
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    let errors = c.errors();
    assert!(errors >= 2, "{errors}");
    redis.resume();
    // Back off for a second after a failure, then connect anew.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let miss = c.lookup(p, &request("a"), 0).await.unwrap_err();
    assert_eq!(
        c.errors(),
        errors,
        "Redis answered (empty: it kept nothing)"
    );
    c.store(miss, answer("A again")).await;
    assert_eq!(c.lookup(p, &request("a"), 0).await.unwrap().text, "A again");
    assert_eq!(c.errors(), errors);
}

fn minilm_dir() -> Option<std::path::PathBuf> {
    let file = support::fetched(fetch::MINILM[0].path(&Folders::from_env().models_dir))?;
    file.parent().map(|d| d.to_path_buf())
}

/// A home whose models folder holds MiniLM (the binary runs with MOA_HOME only).
fn home_with_minilm(server: &Server, config: &str, dir: &Path) -> tempfile::TempDir {
    let one_hot = ONE.replace("\"one\"", "\"one-hot\"").replace("0.7", "0.9");
    let home = home_with(server, config, &[("one", ONE), ("one-hot", &one_hot)]);
    std::fs::create_dir_all(home.path().join("models")).unwrap();
    std::os::unix::fs::symlink(
        dir,
        home.path().join("models").join(dir.file_name().unwrap()),
    )
    .unwrap();
    home
}

#[tokio::test(flavor = "multi_thread")]
async fn a_near_identical_prompt_hits_only_as_close_as_the_threshold_allows() {
    let Some(dir) = minilm_dir() else { return };
    let (q1, q2) = (
        "What is the capital city of France?",
        "What's the capital city of France?",
    );
    // How close the two conversations are, as the cache embeds them.
    let m = MiniLm::load(&dir).unwrap();
    let texts = [q1, q2].map(|q| conversation_text(&[Message::user(q)]));
    let v = m.embed(&texts).unwrap();
    let cos: f32 = v[0].iter().zip(&v[1]).map(|(a, b)| a * b).sum();
    // What semantic matching adds to a miss: one embedding (printed, not checked).
    let t = Instant::now();
    for _ in 0..10 {
        m.embed(&texts[..1]).unwrap();
    }
    eprintln!("one conversation embedded: {:?}", t.elapsed() / 10);
    assert!(cos > 0.8 && cos < 0.999, "{cos}");

    let s = Server::start().await;
    let loose = format!(
        "[cache]\nenabled = true\nsemantic_threshold = {}\n",
        cos - 0.01
    );
    let home = home_with_minilm(&s, &loose, &dir);
    run(home.path(), "one", q1).await;
    assert_eq!(s.log().len(), 1);
    let (near, err) = run(home.path(), "one", q2).await;
    assert_eq!(s.log().len(), 1, "the near prompt sent nothing: {err}");
    assert_eq!(cached(&near), vec![true]);
    // Other sampling parameters never share an answer, not even for the very same prompt.
    let (hot, _) = run(home.path(), "one-hot", q1).await;
    assert_eq!(s.log().len(), 2);
    assert_eq!(cached(&hot), vec![false]);

    // Just above the pair's cosine: the near prompt is asked for.
    let strict = format!(
        "[cache]\nenabled = true\nsemantic_threshold = {}\n",
        (cos + 0.002).min(1.0)
    );
    let home = home_with_minilm(&s, &strict, &dir);
    run(home.path(), "one", q1).await;
    assert_eq!(s.log().len(), 3);
    let (far, _) = run(home.path(), "one", q2).await;
    assert_eq!(s.log().len(), 4);
    assert_eq!(cached(&far), vec![false]);
}

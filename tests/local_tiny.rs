//! The local provider on a tiny GGUF the test writes itself: sampling, seeds, limits, cancellation,
//! shared prefill, and a whole MoA run through the engine. No download needed.

// Test code may unwrap: a panic there is the failure report.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use moa_workbench::config::{Config, Folders};
use moa_workbench::engine::preset;
use moa_workbench::engine::prompts::Templates;
use moa_workbench::engine::record::CallStatus;
use moa_workbench::engine::{Engine, RunOptions};
use moa_workbench::metrics::agreement::TfIdf;
use moa_workbench::provider::local::{self, LocalProvider};
use moa_workbench::provider::registry::Registry;
use moa_workbench::provider::{ChatRequest, Chunk, Message, Provider};

fn tiny() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("moa-tiny-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("tiny.gguf");
        support::tiny_gguf::write(&p);
        p
    })
}

fn provider() -> LocalProvider {
    LocalProvider {
        name: "tiny".into(),
        model_path: Some(tiny().clone()),
        models_dir: std::env::temp_dir(),
    }
}

fn req(seed: Option<u64>, temperature: f64, max_tokens: u32) -> ChatRequest {
    ChatRequest {
        model: "tiny".into(),
        messages: vec![Message::user("Say something.")],
        temperature: Some(temperature),
        max_tokens: Some(max_tokens),
        seed,
        ..Default::default()
    }
}

/// Tests here that run models take turns: one of them counts the tokens generated process-wide, and
/// the others would add theirs.
static MODELS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn collect(
    p: &LocalProvider,
    r: ChatRequest,
) -> (String, Option<(u64, u64)>, Option<String>) {
    let mut s = p.open(r).await.unwrap();
    let (mut text, mut usage, mut finish) = (String::new(), None, None);
    while let Some(c) = s.next().await {
        match c.unwrap() {
            Chunk::Text(t) => text.push_str(&t),
            Chunk::Usage {
                tokens_in,
                tokens_out,
            } => usage = Some((tokens_in, tokens_out)),
            Chunk::Finish(f) => finish = Some(f),
        }
    }
    (text, usage, finish)
}

#[tokio::test]
async fn same_seed_same_text_and_limits_hold() {
    let _turn = MODELS.lock().await;
    let p = provider();
    let a = collect(&p, req(Some(7), 1.0, 40)).await;
    let b = collect(&p, req(Some(7), 1.0, 40)).await;
    assert_eq!(a.0, b.0, "same seed and settings give the same text");
    let mut distinct = std::collections::HashSet::new();
    for seed in 8..14 {
        distinct.insert(collect(&p, req(Some(seed), 1.0, 40)).await.0);
    }
    assert!(distinct.len() >= 2, "other seeds give other text");
    let (tokens_in, tokens_out) = a.1.unwrap();
    assert!(tokens_in > 5 && tokens_out <= 40);
    let f = a.2.unwrap();
    assert!(f == "length" || f == "stop", "{f}");
    if f == "length" {
        assert_eq!(tokens_out, 40);
    }
    // Greedy is deterministic without a seed.
    assert_eq!(
        collect(&p, req(None, 0.0, 20)).await.0,
        collect(&p, req(None, 0.0, 20)).await.0
    );
}

#[tokio::test]
async fn a_dropped_stream_stops_generating() {
    let _turn = MODELS.lock().await;
    let p = provider();
    // A random model may stop early by chance: take the first seed whose answer gets going.
    let mut started = None;
    for seed in 1..50 {
        let mut s = p.open(req(Some(seed), 1.0, 1_500)).await.unwrap();
        let mut got = 0;
        while got < 3 {
            match s.next().await {
                Some(Ok(Chunk::Text(_))) => got += 1,
                Some(Ok(Chunk::Finish(_))) | None => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("{e}"),
            }
        }
        if got == 3 {
            started = Some(s);
            break;
        }
    }
    drop(started.expect("some seed streams at least 3 pieces"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, t1) = local::stats();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, t2) = local::stats();
    // Other tests in this binary may generate meanwhile; the cancelled call alone would add
    // hundreds of tokens in 300 ms on this model.
    assert!(
        t2 - t1 < 200,
        "generation went on after the stream was dropped: {}",
        t2 - t1
    );
}

#[tokio::test]
async fn unknown_local_models_are_explained() {
    let p = LocalProvider {
        name: "local".into(),
        model_path: None,
        models_dir: PathBuf::from("/nonexistent-models"),
    };
    let e = p.resolve("nosuch").unwrap_err().to_string();
    assert!(e.contains("nosuch") && e.contains("model_path"), "{e}");
    let e = p.resolve(local::EMBEDDED_MODEL).unwrap_err().to_string();
    assert!(e.contains("moa pull"), "{e}");
}

#[tokio::test]
async fn moa_on_the_local_provider_shares_the_prefill() {
    let _turn = MODELS.lock().await;
    let config = Config::from_toml(
        Folders {
            config_dir: std::env::temp_dir(),
            data_dir: std::env::temp_dir(),
            models_dir: std::env::temp_dir(),
        },
        Path::new("t.toml"),
        &format!(
            "[providers.tiny]\nkind = \"local\"\nmodel_path = \"{}\"\n",
            tiny().display()
        ),
    )
    .unwrap();
    let engine = Engine {
        registry: Arc::new(Registry::new(Arc::new(config))),
        scorer: Arc::new(TfIdf),
    };
    let p = preset::parse(
        Path::new("p.toml"),
        "[[step]]\nop = \"propose\"\nagents = [{ model = \"tiny/m\", temperature = 0.9, max_tokens = 24, n = 3 }]\n[[step]]\nop = \"aggregate\"\nmodel = \"tiny/m\"\nmax_tokens = 16\n[baseline]\nmodel = \"tiny/m\"\ntemperature = 0.0\nmax_tokens = 16\n",
        &Templates::builtin(),
    )
    .unwrap();
    let (before, _) = local::stats();
    let rec = engine
        .run_to_end(
            Arc::new(p),
            vec![Message::user("Hello")],
            RunOptions::default(),
            |_| {},
        )
        .await;
    let (after, _) = local::stats();
    for c in rec
        .steps
        .iter()
        .flat_map(|s| &s.calls)
        .chain(rec.baseline.as_ref())
    {
        // A random model may stop at once (empty answer); anything else is a real failure.
        assert!(
            c.status == CallStatus::Ok || c.error_kind.as_deref() == Some("empty"),
            "{:?}: {:?}",
            c.status,
            c.error
        );
        if c.status == CallStatus::Ok {
            assert!(!c.usage_estimated, "the local provider reports its usage");
            assert!(c.tokens_out >= 1 && c.tokens_out <= 24);
        }
    }
    assert!(rec.final_answer.is_some());
    // 3 proposers + baseline share one prompt: at most 2 prefills for them (the baseline may
    // arrive apart), plus the aggregator's.
    assert!(after - before <= 3, "{} prefills", after - before);
    assert_eq!(rec.steps[0].calls[0].cost_usd, Some(0.0));
}

/// Every weight type a llama GGUF may use (the legacy quants and the K-quants candle supports)
/// loads and computes the same model: the logits of a prompt stay close to the F32 file's.
#[test]
fn every_quantization_computes_the_same_model() {
    let _turn = MODELS.blocking_lock();
    use candle_core::quantized::GgmlDType;
    let dir = tempfile::tempdir().unwrap();
    // (type, minimum cosine of the logits against F32): coarser types drift more. Measured on
    // this (seeded) random model: Q8_0 0.9991, Q6K 0.9956, Q5 0.987-0.991, Q4 0.937-0.968, Q3K
    // 0.709, Q2K 0.494 (another model's logits: about 0).
    let kinds = [
        (GgmlDType::F32, 0.99999),
        (GgmlDType::F16, 0.9999),
        (GgmlDType::Q8_0, 0.998),
        (GgmlDType::Q6K, 0.99),
        (GgmlDType::Q5_0, 0.96),
        (GgmlDType::Q5_1, 0.96),
        (GgmlDType::Q5K, 0.96),
        (GgmlDType::Q4_0, 0.9),
        (GgmlDType::Q4_1, 0.9),
        (GgmlDType::Q4K, 0.9),
        (GgmlDType::Q3K, 0.6),
        (GgmlDType::Q2K, 0.3),
    ];
    let paths: Vec<(PathBuf, GgmlDType)> = kinds
        .iter()
        .map(|(t, _)| (dir.path().join(format!("m-{t:?}.gguf")), *t))
        .collect();
    let refs: Vec<(&std::path::Path, GgmlDType)> =
        paths.iter().map(|(p, t)| (p.as_path(), *t)).collect();
    support::tiny_gguf::write_variants(&refs, support::tiny_gguf::Shape::K_QUANT);
    let logits = |path: &std::path::Path| -> Vec<f32> {
        let loaded = local::Loaded::load(path).unwrap_or_else(|e| panic!("{e}"));
        let ids = loaded
            .prompt_ids(&[Message::user("Tell me about quantization.")])
            .unwrap();
        let mut cache = loaded.model.new_cache();
        let out = loaded.model.forward(&[ids], &mut cache).unwrap();
        out.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    let reference = logits(&paths[0].0);
    let cosine = |a: &[f32], b: &[f32]| {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
        let n = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        dot / (n(a) * n(b))
    };
    for ((path, ty), (_, min)) in paths.iter().zip(kinds) {
        let got = logits(path);
        assert_eq!(got.len(), reference.len(), "{ty:?}");
        let c = cosine(&got, &reference);
        assert!(
            c >= min,
            "{ty:?}: cosine {c:.5} with the F32 logits (want >= {min})"
        );
        eprintln!("{ty:?}: cosine {c:.5}");
    }
}

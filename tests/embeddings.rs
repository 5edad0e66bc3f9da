//! MiniLM embeddings against the shared reference vectors (an independent numpy implementation).
//! Needs `moa pull` (CI fetches it); skipped with a message outside CI when missing.

// Test code may unwrap: a panic there is the failure report.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;

use moa_workbench::config::Folders;
use moa_workbench::fetch;
use moa_workbench::metrics::agreement::{self, AgreementScorer};
use moa_workbench::metrics::embed::{Backend, MiniLm, MiniLmScorer, cosine_matrix};

fn model_dir() -> Option<PathBuf> {
    let file = support::fetched(fetch::MINILM[0].path(&Folders::from_env().models_dir))?;
    file.parent().map(|d| d.to_path_buf())
}

/// The backends this build runs here: candle everywhere, AMX with `--features amx` where the CPU
/// and OS allow it.
fn backends() -> Vec<Backend> {
    if Backend::best() == Backend::Amx {
        vec![Backend::Candle, Backend::Amx]
    } else {
        eprintln!(
            "no AMX encoder (build without `--features amx`, or no AMX on this CPU): only candle is checked"
        );
        vec![Backend::Candle]
    }
}

#[test]
fn minilm_matches_the_reference_cosines() {
    let Some(dir) = model_dir() else { return };
    for backend in backends() {
        reference_cosines(&MiniLm::load_on(&dir, backend).unwrap());
    }
}

fn reference_cosines(m: &MiniLm) {
    let v = support::shared_testdata("minilm-cosine-vectors.json");
    let tol = v["tolerance"].as_f64().unwrap();
    for pair in v["pairs"].as_array().unwrap() {
        let a = pair["a"].as_str().unwrap().to_string();
        let b = pair["b"].as_str().unwrap().to_string();
        let e = m.embed(&[a.clone(), b.clone()]).unwrap();
        let cos: f64 = e[0]
            .iter()
            .zip(&e[1])
            .map(|(x, y)| (*x as f64) * (*y as f64))
            .sum();
        let want = pair["cosine"].as_f64().unwrap();
        assert!(
            (cos - want).abs() <= tol,
            "{:?}: {a:?} / {b:?}: {cos} vs {want}",
            m.backend()
        );
    }
    let first = &v["first_dims"];
    let e = m
        .embed(&[first["text"].as_str().unwrap().to_string()])
        .unwrap();
    for (i, want) in first["values"].as_array().unwrap().iter().enumerate() {
        assert!(
            (e[0][i] as f64 - want.as_f64().unwrap()).abs() <= tol,
            "{:?}: dim {i}",
            m.backend()
        );
    }
}

#[test]
fn scorer_reports_its_method_and_a_real_matrix() {
    let Some(dir) = model_dir() else { return };
    let s = MiniLmScorer::new(dir);
    assert_eq!(s.method(), "minilm");
    let texts = vec![
        "Paris is the capital of France.".to_string(),
        "The capital city of France is Paris.".to_string(),
        "Quarterly revenue grew by eight percent.".to_string(),
    ];
    let a = agreement::score(&s, &texts).unwrap();
    assert_eq!(a.method, "minilm");
    assert!(
        a.matrix[0][1] > 0.8 && a.matrix[0][2] < 0.2,
        "{:?}",
        a.matrix
    );
    assert_ne!(
        agreement::most_central(&a.matrix),
        2,
        "the outlier is not the most central"
    );
}

/// The scorer's cache (answers that finished are not embedded again) gives the same vectors as
/// embedding afresh, also across the point where it fills up and starts over.
#[test]
fn cached_scores_equal_fresh_ones_across_cache_clears() {
    let Some(dir) = model_dir() else { return };
    let cached = MiniLmScorer::new(dir.clone());
    let texts: Vec<String> = (0..100)
        .map(|i| format!("Answer number {i} about storage engines."))
        .collect();
    let fresh = MiniLm::load(&dir).unwrap();
    for window in [
        &texts[0..40],
        &texts[30..70],
        &texts[0..10],
        &texts[60..100],
    ] {
        let got = cached.matrix(window);
        assert_eq!(cached.method(), "minilm");
        let want = moa_workbench::metrics::embed::cosine_matrix(&fresh.embed(window).unwrap());
        for (r, w) in got.iter().zip(&want) {
            for (x, y) in r.iter().zip(w) {
                assert!((x - y).abs() < 1e-5, "{x} vs {y}");
            }
        }
    }
}

/// The AMX encoder computes in bf16 parts; on answers as long as proposers give (up to the 256
/// tokens kept, of different lengths so that padding and masking are exercised) it must give
/// candle's f32 vectors and cosines, far inside the reference tolerance.
#[test]
fn amx_and_candle_agree_on_long_answers() {
    let Some(dir) = model_dir() else { return };
    if Backend::best() != Backend::Amx {
        eprintln!(
            "no AMX encoder (build without `--features amx`, or no AMX on this CPU): nothing to compare"
        );
        return;
    }
    let amx = MiniLm::load_on(&dir, Backend::Amx).unwrap();
    let candle = MiniLm::load_on(&dir, Backend::Candle).unwrap();
    let sentences = [
        "B-trees update pages in place and keep reads cheap.",
        "LSM-trees buffer writes in memory and flush sorted runs, trading read amplification for write throughput.",
        "Compaction merges runs in the background; bloom filters skip runs that cannot hold a key.",
        "For read-heavy workloads with point lookups, prefer a B-tree; for ingest-heavy ones, an LSM-tree.",
        "Quarterly revenue grew by eight percent, driven by subscriptions in Europe.",
    ];
    let texts: Vec<String> = [0usize, 1, 3, 7, 20, 60]
        .iter()
        .enumerate()
        .map(|(i, reps)| {
            let mut t = String::from("Hi.");
            for r in 0..*reps {
                t.push(' ');
                t.push_str(sentences[(i + r) % sentences.len()]);
            }
            t
        })
        .collect();
    let (a, c) = (amx.embed(&texts).unwrap(), candle.embed(&texts).unwrap());
    let worst = a
        .iter()
        .zip(&c)
        .flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
        .fold(0f32, f32::max);
    eprintln!("largest difference in a dimension: {worst}");
    assert!(worst < 2e-5, "largest difference in a dimension: {worst}");
    let (ma, mc) = (cosine_matrix(&a), cosine_matrix(&c));
    for (ra, rc) in ma.iter().zip(&mc) {
        for (x, y) in ra.iter().zip(rc) {
            assert!((x - y).abs() < 1e-5, "cosine {x} vs {y}");
        }
    }
}

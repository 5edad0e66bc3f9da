//! MiniLM embeddings against the shared reference vectors (an independent numpy implementation).
//! Needs `moa pull` (CI fetches it); skipped with a message outside CI when missing.

mod support;

use std::path::PathBuf;

use moa_workbench::config::Folders;
use moa_workbench::fetch;
use moa_workbench::metrics::agreement::{self, AgreementScorer};
use moa_workbench::metrics::embed::{MiniLm, MiniLmScorer};

fn model_dir() -> Option<PathBuf> {
    let file = support::fetched(fetch::MINILM[0].path(&Folders::from_env().models_dir))?;
    file.parent().map(|d| d.to_path_buf())
}

#[test]
fn minilm_matches_the_reference_cosines() {
    let Some(dir) = model_dir() else { return };
    let m = MiniLm::load(&dir).unwrap();
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
        assert!((cos - want).abs() <= tol, "{a:?} / {b:?}: {cos} vs {want}");
    }
    let first = &v["first_dims"];
    let e = m
        .embed(&[first["text"].as_str().unwrap().to_string()])
        .unwrap();
    for (i, want) in first["values"].as_array().unwrap().iter().enumerate() {
        assert!(
            (e[0][i] as f64 - want.as_f64().unwrap()).abs() <= tol,
            "dim {i}"
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

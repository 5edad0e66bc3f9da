//! Proposer agreement: the mean pairwise cosine similarity of the responses, and the full matrix.
//!
//! The scorer is pluggable: sentence embeddings when a model is available, and this module's lexical
//! TF-IDF cosine otherwise. The method's name always travels with the number.

use std::borrow::Cow;
use std::collections::HashMap;

pub trait AgreementScorer: Send + Sync {
    /// The method this scorer means to use (`tfidf`, `minilm`, ...). A scorer that can fall back
    /// says what one call really used in `scored`, not here.
    fn method(&self) -> &str;
    /// Symmetric matrix of pairwise similarities, 1.0 on the diagonal.
    fn matrix(&self, texts: &[String]) -> Vec<Vec<f64>>;
    /// The matrix and the method that made it, from one call. Scorers run concurrently (live
    /// agreement, evaluations scoring many runs): a method read after the matrix, from state the
    /// scorer shares, could be another call's.
    fn scored(&self, texts: &[String]) -> Scored {
        Scored {
            matrix: self.matrix(texts),
            method: self.method().to_string(),
        }
    }
}

/// A matrix with the method that computed it.
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    pub matrix: Vec<Vec<f64>>,
    pub method: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Agreement {
    pub mean: f64,
    pub method: String,
    pub matrix: Vec<Vec<f64>>,
}

/// Agreement of two or more texts; None for fewer.
pub fn score(scorer: &dyn AgreementScorer, texts: &[String]) -> Option<Agreement> {
    if texts.len() < 2 {
        return None;
    }
    let Scored { matrix, method } = scorer.scored(texts);
    Some(Agreement {
        mean: mean_off_diagonal(&matrix),
        method,
        matrix,
    })
}

pub fn mean_off_diagonal(m: &[Vec<f64>]) -> f64 {
    let n = m.len();
    if n < 2 {
        return 1.0;
    }
    let mut sum = 0.0;
    for (i, row) in m.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            if i != j {
                sum += v;
            }
        }
    }
    sum / (n * (n - 1)) as f64
}

/// The index of the text that agrees most with the others (the medoid): the fairest single pick
/// when an aggregator fails or a judge's verdict cannot be read.
pub fn most_central(m: &[Vec<f64>]) -> usize {
    (0..m.len())
        .max_by(|&a, &b| {
            let sa: f64 = m[a].iter().sum();
            let sb: f64 = m[b].iter().sum();
            sa.partial_cmp(&sb)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(b.cmp(&a))
        })
        .unwrap_or(0)
}

/// Lexical similarity: TF-IDF vectors over lower-cased words (smoothed idf, as scikit-learn), cosine.
pub struct TfIdf;

/// The lower-cased words of a text. Borrowed when already lower case: live agreement scores the
/// answers again every 500 ms while they stream, and an allocation per word was most of that.
fn words(text: &str) -> impl Iterator<Item = Cow<'_, str>> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            if !w.is_ascii() {
                Cow::Owned(w.to_lowercase())
            } else if w.bytes().any(|b| b.is_ascii_uppercase()) {
                Cow::Owned(w.to_ascii_lowercase())
            } else {
                Cow::Borrowed(w)
            }
        })
}

/// `a . b` of two sparse vectors sorted by word number.
fn dot(a: &[(usize, f64)], b: &[(usize, f64)]) -> f64 {
    let (mut i, mut j, mut sum) = (0, 0, 0.0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                sum += a[i].1 * b[j].1;
                i += 1;
                j += 1;
            }
        }
    }
    sum
}

impl AgreementScorer for TfIdf {
    fn method(&self) -> &str {
        "tfidf"
    }

    fn matrix(&self, texts: &[String]) -> Vec<Vec<f64>> {
        let n = texts.len();
        // Each distinct word gets a number; a text is its sorted (word, count) pairs.
        let mut ids: HashMap<Cow<'_, str>, usize> = HashMap::new();
        let tfs: Vec<Vec<(usize, f64)>> = texts
            .iter()
            .map(|t| {
                let mut seen: Vec<usize> = words(t)
                    .map(|w| {
                        let next = ids.len();
                        *ids.entry(w).or_insert(next)
                    })
                    .collect();
                seen.sort_unstable();
                let mut tf: Vec<(usize, f64)> = Vec::new();
                for id in seen {
                    match tf.last_mut() {
                        Some((last, c)) if *last == id => *c += 1.0,
                        _ => tf.push((id, 1.0)),
                    }
                }
                tf
            })
            .collect();
        let mut df = vec![0.0f64; ids.len()];
        for tf in &tfs {
            for (id, _) in tf {
                df[*id] += 1.0;
            }
        }
        let vecs: Vec<Vec<(usize, f64)>> = tfs
            .into_iter()
            .map(|tf| {
                let mut v: Vec<(usize, f64)> = tf
                    .into_iter()
                    .map(|(id, c)| {
                        let idf = ((1.0 + n as f64) / (1.0 + df[id])).ln() + 1.0;
                        (id, c * idf)
                    })
                    .collect();
                let norm = v.iter().map(|(_, x)| x * x).sum::<f64>().sqrt();
                if norm > 0.0 {
                    v.iter_mut().for_each(|(_, x)| *x /= norm);
                }
                v
            })
            .collect();
        let mut m = vec![vec![0.0; n]; n];
        for i in 0..n {
            m[i][i] = 1.0;
            for j in (i + 1)..n {
                let d = dot(&vecs[i], &vecs[j]);
                m[i][j] = d;
                m[j][i] = d;
            }
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tfidf_orders_similarity() {
        let texts = vec![
            "Paris is the capital of France.".to_string(),
            "The capital of France is Paris.".to_string(),
            "Quarterly revenue grew by eight percent.".to_string(),
        ];
        let m = TfIdf.matrix(&texts);
        assert!((m[0][1] - 1.0).abs() < 1e-9, "same words: {}", m[0][1]);
        assert!(m[0][2] < 0.01);
        assert_eq!(m[1][2], m[2][1]);
        let a = score(&TfIdf, &texts).unwrap();
        assert_eq!(a.method, "tfidf");
        assert!(a.mean > 0.3 && a.mean < 0.4, "{}", a.mean);
        assert_eq!(most_central(&m), 0);
        assert!(score(&TfIdf, &texts[..1]).is_none());
    }

    #[test]
    fn tfidf_values_fold_case_and_repeat_counts() {
        // idf(a) = ln(3/3) + 1 = 1, idf(b) = idf(c) = ln(3/2) + 1: cos = 1 / (1 + idf(b)^2).
        let idf = (1.5f64).ln() + 1.0;
        let want = 1.0 / (1.0 + idf * idf);
        for pair in [["a b", "a c"], ["A, B!", "a  C"], ["É b", "é c"]] {
            let m = TfIdf.matrix(&pair.map(String::from));
            assert!((m[0][1] - want).abs() < 1e-12, "{pair:?}: {}", m[0][1]);
        }
        // Counts: "a a b" is (2, idf) against "a c"'s (1, idf).
        let m = TfIdf.matrix(&["a a b".to_string(), "a c".to_string()]);
        let want = 2.0 / ((4.0 + idf * idf).sqrt() * (1.0 + idf * idf).sqrt());
        assert!((m[0][1] - want).abs() < 1e-12, "{}", m[0][1]);
        // Nothing in common, and an empty text.
        let m = TfIdf.matrix(&["x".to_string(), "y".to_string(), String::new()]);
        assert_eq!(m[0][1], 0.0);
        assert_eq!(m[0][2], 0.0);
        assert_eq!(m[2][2], 1.0);
    }

    /// Falls back for texts that say so, and (as a shared flag would) reports from `method` what
    /// the latest call did, whichever thread made it.
    struct Flaky {
        last_fell_back: std::sync::atomic::AtomicBool,
        barrier: std::sync::Barrier,
    }

    impl AgreementScorer for Flaky {
        fn method(&self) -> &str {
            if self
                .last_fell_back
                .load(std::sync::atomic::Ordering::SeqCst)
            {
                "tfidf"
            } else {
                "minilm"
            }
        }
        fn matrix(&self, texts: &[String]) -> Vec<Vec<f64>> {
            self.scored(texts).matrix
        }
        fn scored(&self, texts: &[String]) -> Scored {
            let fell_back = texts.iter().any(|t| t.contains("fallback"));
            self.last_fell_back
                .store(fell_back, std::sync::atomic::Ordering::SeqCst);
            // Both calls have stored their flag before either reads a method.
            self.barrier.wait();
            let method = if fell_back { "tfidf" } else { "minilm" };
            Scored {
                matrix: TfIdf.matrix(texts),
                method: method.into(),
            }
        }
    }

    #[test]
    fn concurrent_scores_each_keep_their_own_method() {
        let s = std::sync::Arc::new(Flaky {
            last_fell_back: false.into(),
            barrier: std::sync::Barrier::new(2),
        });
        let run = |texts: Vec<String>| {
            let s = s.clone();
            std::thread::spawn(move || score(s.as_ref(), &texts).unwrap().method)
        };
        let a = run(vec!["fallback one".into(), "fallback two".into()]);
        let b = run(vec!["embedded one".into(), "embedded two".into()]);
        assert_eq!(a.join().unwrap(), "tfidf");
        assert_eq!(b.join().unwrap(), "minilm");
    }
}

//! Proposer agreement: the mean pairwise cosine similarity of the responses, and the full matrix.
//!
//! The scorer is pluggable: sentence embeddings when a model is available, and this module's lexical
//! TF-IDF cosine otherwise. The method's name always travels with the number.

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

fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
}

impl AgreementScorer for TfIdf {
    fn method(&self) -> &str {
        "tfidf"
    }

    fn matrix(&self, texts: &[String]) -> Vec<Vec<f64>> {
        let n = texts.len();
        let tfs: Vec<HashMap<String, f64>> = texts
            .iter()
            .map(|t| {
                let mut m = HashMap::new();
                for w in words(t) {
                    *m.entry(w).or_insert(0.0) += 1.0;
                }
                m
            })
            .collect();
        let mut df: HashMap<&str, f64> = HashMap::new();
        for tf in &tfs {
            for w in tf.keys() {
                *df.entry(w.as_str()).or_insert(0.0) += 1.0;
            }
        }
        let vecs: Vec<HashMap<&str, f64>> = tfs
            .iter()
            .map(|tf| {
                let mut v: HashMap<&str, f64> = tf
                    .iter()
                    .map(|(w, c)| {
                        let idf = ((1.0 + n as f64) / (1.0 + df[w.as_str()])).ln() + 1.0;
                        (w.as_str(), c * idf)
                    })
                    .collect();
                let norm = v.values().map(|x| x * x).sum::<f64>().sqrt();
                if norm > 0.0 {
                    v.values_mut().for_each(|x| *x /= norm);
                }
                v
            })
            .collect();
        let mut m = vec![vec![0.0; n]; n];
        for i in 0..n {
            m[i][i] = 1.0;
            for j in (i + 1)..n {
                let (a, b) = if vecs[i].len() < vecs[j].len() {
                    (&vecs[i], &vecs[j])
                } else {
                    (&vecs[j], &vecs[i])
                };
                let dot: f64 = a
                    .iter()
                    .map(|(w, x)| x * b.get(w).copied().unwrap_or(0.0))
                    .sum();
                m[i][j] = dot;
                m[j][i] = dot;
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

//! Small statistics for evaluation reports: confidence intervals, percentiles, distributions.

/// The 95 % Wilson score interval of a proportion `p` over `n` trials. Used for win rates with ties
/// counted as half a win: a tie's variance is below a Bernoulli trial's, so the interval is
/// conservative. Unlike the normal approximation it stays within [0, 1] and is sensible for small n.
pub fn wilson95(p: f64, n: usize) -> Option<(f64, f64)> {
    if n == 0 {
        return None;
    }
    let z = 1.959_963_984_540_054_f64;
    let n = n as f64;
    let z2n = z * z / n;
    let centre = (p + z2n / 2.0) / (1.0 + z2n);
    let half = z * (p * (1.0 - p) / n + z2n / (4.0 * n)).sqrt() / (1.0 + z2n);
    Some(((centre - half).max(0.0), (centre + half).min(1.0)))
}

/// The `q`-quantile (0..=1) of `values` by the nearest-rank method; None when empty.
pub fn percentile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = (q * v.len() as f64).ceil().max(1.0) as usize;
    Some(v[rank.min(v.len()) - 1])
}

pub fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// Five numbers that describe a distribution: min, p25, median, p75, max.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Spread {
    pub n: usize,
    pub min: f64,
    pub p25: f64,
    pub median: f64,
    pub p75: f64,
    pub max: f64,
}

pub fn spread(values: &[f64]) -> Option<Spread> {
    Some(Spread {
        n: values.len(),
        min: percentile(values, 0.0)?,
        p25: percentile(values, 0.25)?,
        median: percentile(values, 0.5)?,
        p75: percentile(values, 0.75)?,
        max: percentile(values, 1.0)?,
    })
}

/// A horizontal bar of `width` cells for `value` out of `max`, with eighth-cell resolution.
pub fn bar(value: f64, max: f64, width: usize) -> String {
    if max <= 0.0 || !value.is_finite() || value <= 0.0 {
        return String::new();
    }
    let eighths = ((value / max).min(1.0) * width as f64 * 8.0).round() as usize;
    let mut s = "█".repeat(eighths / 8);
    if !eighths.is_multiple_of(8) {
        s.push(['▏', '▎', '▍', '▌', '▋', '▊', '▉'][eighths % 8 - 1]);
    }
    s
}

/// The 95 % percentile-bootstrap interval of a mean over paired units (prompts): each unit holds
/// the scores it contributed (1 win, 0.5 tie, 0 loss; several when a variant met several others on
/// it), units are resampled with replacement `resamples` times, and the mean of the scores of each
/// resample is taken. Resampling prompts, not verdicts, keeps a prompt's verdicts together: they are
/// not independent. Seeded, so a report reads the same each time it is made.
pub fn paired_bootstrap95(units: &[Vec<f64>], resamples: usize, seed: u64) -> Option<(f64, f64)> {
    use rand::{RngExt, SeedableRng};
    if units.iter().all(|u| u.is_empty()) {
        return None;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut means = Vec::with_capacity(resamples);
    for _ in 0..resamples.max(1) {
        let (mut sum, mut n) = (0.0, 0usize);
        for _ in 0..units.len() {
            let u = &units[rng.random_range(0..units.len())];
            sum += u.iter().sum::<f64>();
            n += u.len();
        }
        if n > 0 {
            means.push(sum / n as f64);
        }
    }
    Some((percentile(&means, 0.025)?, percentile(&means, 0.975)?))
}

/// One judged pair for a ranking: players `a` and `b` (indices), and `a`'s score (1, 0.5 or 0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bout {
    pub a: usize,
    pub b: usize,
    pub score_a: f64,
}

/// Bradley–Terry strengths of `players` from `bouts`, as log-strengths centred on 0 (a difference
/// of 1 means e:1 odds of winning). Ties count half a win to each side. Fitted by Hunter's MM
/// iteration with half a pseudo-win each way on every pair that met, so a player who won every
/// bout gets a large finite score instead of infinity.
pub fn bradley_terry(players: usize, bouts: &[Bout]) -> Vec<f64> {
    if players == 0 {
        return Vec::new();
    }
    let mut wins = vec![vec![0.0f64; players]; players];
    for b in bouts
        .iter()
        .filter(|b| b.a < players && b.b < players && b.a != b.b)
    {
        wins[b.a][b.b] += b.score_a;
        wins[b.b][b.a] += 1.0 - b.score_a;
    }
    let met: Vec<Vec<bool>> = (0..players)
        .map(|i| {
            (0..players)
                .map(|j| wins[i][j] + wins[j][i] > 0.0)
                .collect()
        })
        .collect();
    for i in 0..players {
        for j in 0..players {
            if met[i][j] {
                wins[i][j] += 0.5;
            }
        }
    }
    let mut p = vec![1.0f64; players];
    for _ in 0..500 {
        let mut next = p.clone();
        let mut change = 0.0f64;
        for i in 0..players {
            let w: f64 = wins[i].iter().sum();
            let d: f64 = (0..players)
                .filter(|&j| met[i][j])
                .map(|j| (wins[i][j] + wins[j][i]) / (p[i] + p[j]))
                .sum();
            if d > 0.0 {
                next[i] = w / d;
            }
        }
        let g = next.iter().map(|x| x.ln()).sum::<f64>() / players as f64;
        for (i, x) in next.iter_mut().enumerate() {
            *x /= g.exp();
            change = change.max((*x - p[i]).abs());
        }
        p = next;
        if change < 1e-10 {
            break;
        }
    }
    p.iter().map(|x| x.ln()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_published_values() {
        // 9 of 20: 0.45, Wilson 95 % (0.258, 0.658).
        let (lo, hi) = wilson95(0.45, 20).unwrap();
        assert!(
            (lo - 0.2582).abs() < 1e-3 && (hi - 0.6579).abs() < 1e-3,
            "{lo} {hi}"
        );
        let (lo, hi) = wilson95(0.0, 10).unwrap();
        assert_eq!(lo, 0.0);
        assert!((hi - 0.2775).abs() < 1e-3, "{hi}");
        assert_eq!(wilson95(0.5, 0), None);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=20).map(|x| x as f64).collect();
        assert_eq!(percentile(&v, 0.5), Some(10.0));
        assert_eq!(percentile(&v, 0.95), Some(19.0));
        assert_eq!(percentile(&v, 1.0), Some(20.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(spread(&[3.0]).unwrap().median, 3.0);
    }

    #[test]
    fn bars_scale() {
        assert_eq!(bar(1.0, 1.0, 4), "████");
        assert_eq!(bar(0.5, 1.0, 4), "██");
        assert_eq!(bar(1.0, 16.0, 2), "▏");
        assert_eq!(bar(0.0, 1.0, 4), "");
    }

    #[test]
    fn bootstrap_interval_brackets_the_mean_and_narrows_with_more_prompts() {
        let few: Vec<Vec<f64>> = [1.0, 0.0, 1.0, 0.5].iter().map(|x| vec![*x]).collect();
        let many: Vec<Vec<f64>> = few.iter().cycle().take(200).cloned().collect();
        let (lo, hi) = paired_bootstrap95(&few, 2000, 7).unwrap();
        let (lo2, hi2) = paired_bootstrap95(&many, 2000, 7).unwrap();
        assert!(lo < 0.625 && 0.625 < hi, "{lo} {hi}");
        assert!(lo2 < 0.625 && 0.625 < hi2, "{lo2} {hi2}");
        assert!(hi2 - lo2 < (hi - lo) / 3.0, "{lo} {hi} / {lo2} {hi2}");
        // All ties: no spread at all.
        assert_eq!(
            paired_bootstrap95(&[vec![0.5], vec![0.5]], 100, 1),
            Some((0.5, 0.5))
        );
        assert_eq!(paired_bootstrap95(&[vec![], vec![]], 100, 1), None);
        // Seeded: the same report twice.
        assert_eq!(
            paired_bootstrap95(&few, 500, 3),
            paired_bootstrap95(&few, 500, 3)
        );
    }

    #[test]
    fn bradley_terry_orders_players_and_matches_the_two_player_odds() {
        // Two players, a beats b 3 times of 4: with half a pseudo-win each way, odds 3.5:1.5.
        let bouts: Vec<Bout> = [1.0, 1.0, 1.0, 0.0]
            .iter()
            .map(|s| Bout {
                a: 0,
                b: 1,
                score_a: *s,
            })
            .collect();
        let s = bradley_terry(2, &bouts);
        assert!(((s[0] - s[1]) - (3.5f64 / 1.5).ln()).abs() < 1e-6, "{s:?}");
        assert!((s[0] + s[1]).abs() < 1e-9);
        // A chain: 0 beats 1, 1 beats 2, always; 0 never met 2.
        let mut chain = Vec::new();
        for _ in 0..5 {
            chain.push(Bout {
                a: 0,
                b: 1,
                score_a: 1.0,
            });
            chain.push(Bout {
                a: 1,
                b: 2,
                score_a: 1.0,
            });
        }
        let s = bradley_terry(3, &chain);
        assert!(s[0] > s[1] && s[1] > s[2], "{s:?}");
        assert!(s.iter().all(|x| x.is_finite()));
        // Only ties: everyone equal.
        let s = bradley_terry(
            2,
            &[Bout {
                a: 0,
                b: 1,
                score_a: 0.5,
            }],
        );
        assert!(s[0].abs() < 1e-9 && s[1].abs() < 1e-9, "{s:?}");
    }
}

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
}

//! The element-wise parts of the encoder, written so that LLVM vectorises them: no branches in the
//! inner loops, reductions over 16 independent lanes. They are inlined into the encoder's forward
//! pass, which is compiled for AVX-512.

const LANES: usize = 16;

/// Σ f(x) over a slice, in 16 lanes (a strict left-to-right f32 sum cannot be vectorised).
#[inline(always)]
fn sum_by(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += f(*x);
        }
    }
    acc.iter().sum::<f32>() + rest.iter().map(|x| f(*x)).sum::<f32>()
}

#[inline(always)]
fn max_of(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a = a.max(*x);
        }
    }
    acc.iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |m, x| m.max(*x))
}

/// eˣ, within ~2 ulp for x in [-87, 88] (Cephes' polynomial after reducing by ln 2).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5·2²³ rounds to the nearest integer without a branch.
    const ROUND: f32 = 12_582_912.0;
    // With 1.5·2²³ added, the low bits of the float hold n itself: reading them back is integer
    // arithmetic that vectorises (a float-to-int cast does not, quite).
    const ROUND_BITS: u32 = 0x4b40_0000;
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    let n_int = t.to_bits().wrapping_sub(ROUND_BITS);
    y * f32::from_bits(n_int.wrapping_add(127) << 23)
}

/// erf(x) within 1.5e-7 (Abramowitz and Stegun 7.1.26).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152) * t + 1.421_413_8) * t - 0.284_496_74) * t
        + 0.254_829_6)
        * t;
    (1.0 - poly * exp(-a * a)).copysign(x)
}

/// BERT's GELU, the exact (erf) form, in place.
#[inline(always)]
pub fn gelu(xs: &mut [f32]) {
    for x in xs {
        *x = 0.5 * *x * (1.0 + erf(*x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// x = LayerNorm(x + add) per row of `width`, over the first `rows` rows.
#[inline(always)]
pub fn add_layer_norm(
    x: &mut [f32],
    add: Option<&[f32]>,
    rows: usize,
    width: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) {
    for r in 0..rows {
        let row = &mut x[r * width..(r + 1) * width];
        if let Some(add) = add {
            for (a, b) in row.iter_mut().zip(&add[r * width..(r + 1) * width]) {
                *a += *b;
            }
        }
        let mean = sum_by(row, |v| v) / width as f32;
        let var = sum_by(row, |v| (v - mean) * (v - mean)) / width as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
            *v = (*v - mean) * inv * g + b;
        }
    }
}

/// Softmax of `scale`·row over its first `valid` entries; the rest (padding) become 0.
#[inline(always)]
pub fn softmax(row: &mut [f32], valid: usize, scale: f32) {
    let (live, pad) = row.split_at_mut(valid);
    let max = max_of(live);
    for v in live.iter_mut() {
        *v = exp((*v - max) * scale);
    }
    let inv = 1.0 / sum_by(live, |v| v);
    for v in live.iter_mut() {
        *v *= inv;
    }
    pad.fill(0.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_erf_are_accurate() {
        for i in -8700..=8800 {
            let x = i as f32 / 100.0;
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            assert!(
                ((got - want) / want).abs() < 5e-7,
                "exp({x}) = {got}, not {want}"
            );
        }
        // erf from its Taylor series where it converges fast, and known values beyond.
        for (x, want) in [
            (0.5f32, 0.520_499_877_8),
            (1.0, 0.842_700_792_9),
            (2.0, 0.995_322_265),
        ] {
            assert!((erf(x) as f64 - want).abs() < 3e-7, "erf({x})");
            assert!((erf(-x) as f64 + want).abs() < 3e-7, "erf(-{x})");
        }
        assert_eq!(erf(0.0), 0.0);
    }

    #[test]
    fn softmax_masks_padding_and_sums_to_one() {
        let mut row: Vec<f32> = (0..40).map(|i| i as f32 * 0.37).collect();
        softmax(&mut row, 33, 0.5);
        assert!((row[..33].iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(row[33..].iter().all(|v| *v == 0.0));
        assert!(row[32] > row[31]);
    }

    #[test]
    fn layer_norm_centres_and_scales() {
        let mut x: Vec<f32> = (0..2 * 20).map(|i| (i * i % 17) as f32).collect();
        let (g, b) = (vec![2.0; 20], vec![1.0; 20]);
        add_layer_norm(&mut x, None, 2, 20, &g, &b, 1e-12);
        for row in x.chunks(20) {
            let mean: f32 = row.iter().sum::<f32>() / 20.0;
            let var: f32 = row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 20.0;
            assert!((mean - 1.0).abs() < 1e-5 && (var - 4.0).abs() < 1e-4);
        }
    }
}

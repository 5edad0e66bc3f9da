//! Matrix products on AMX tiles: bf16 inputs, f32 accumulation, each input split into a high and a
//! low bf16 part so that the product keeps nearly f32 accuracy (see the crate docs).
//!
//! Every tile is 16 rows × 64 bytes: 16×32 bf16 for A, 16 pairs-of-rows × 16 columns for B (AMX
//! wants B's consecutive k values interleaved in pairs), 16×16 f32 for C. The kernel keeps a
//! 32×32 block of C in four tiles and streams A and B through the other four.

use std::marker::PhantomData;

use crate::aligned::Aligned;

/// u16 values in one tile.
const TILE: usize = 512;

/// Round to the nearest bf16, ties to even (finite values only; these are activations and weights).
#[inline(always)]
fn bf16(x: f32) -> u16 {
    let b = x.to_bits();
    (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

#[inline(always)]
fn widen(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// x as hi + lo, both bf16.
#[inline(always)]
fn split(x: f32) -> (u16, u16) {
    let hi = bf16(x);
    (hi, bf16(x - widen(hi)))
}

/// An operand is stored by pairs of tiles (a kernel's 32 rows of A or 32 columns of B), each pair
/// as four runs of `kt` tiles along k: high part of tile 0, of tile 1, low part of tile 0, of
/// tile 1. A kernel then reads eight sequential streams, which the prefetchers follow (one 4 KB
/// group per k-step was 15 % slower: prefetchers stop at page boundaries).
#[inline(always)]
fn tile_at(pair: usize, slot: usize, k: usize, kt: usize) -> usize {
    ((pair * 4 + slot) * kt + k) * TILE
}

/// The left operand A (m × k), by pairs of 16-row tiles and steps of 32 columns, zero-padded to
/// whole pairs and steps. Buffers are reused from call to call.
#[derive(Default)]
pub(crate) struct PackedA {
    tiles: Aligned<u16>,
    /// Pairs of row tiles (32 rows each).
    pairs: usize,
    kt: usize,
}

impl PackedA {
    /// Pack `rows`×`cols` of `src`, whose rows are `ld` apart.
    #[inline(always)]
    pub fn pack(&mut self, src: &[f32], rows: usize, cols: usize, ld: usize) {
        self.pairs = rows.div_ceil(32);
        self.kt = cols.div_ceil(32);
        let kt = self.kt;
        self.tiles.ensure_len(self.pairs * 4 * kt * TILE);
        let tiles: &mut [u16] = &mut self.tiles;
        for row in 0..self.pairs * 32 {
            let (pair, slot, r) = (row / 32, (row / 16) % 2, row % 16);
            for k in 0..kt {
                let g = tile_at(pair, slot, k, kt) + r * 32;
                let (hi, lo) = tiles[g..].split_at_mut(2 * kt * TILE);
                let (hi, lo) = (&mut hi[..32], &mut lo[..32]);
                let c0 = k * 32;
                if row < rows && c0 + 32 <= cols {
                    let from = &src[row * ld + c0..row * ld + c0 + 32];
                    for ((x, h), l) in from.iter().zip(hi.iter_mut()).zip(lo.iter_mut()) {
                        (*h, *l) = split(*x);
                    }
                } else {
                    for c in 0..32 {
                        let x = if row < rows && c0 + c < cols {
                            src[row * ld + c0 + c]
                        } else {
                            0.0
                        };
                        (hi[c], lo[c]) = split(x);
                    }
                }
            }
        }
    }

    /// Rows the product will have (padded).
    pub fn rows(&self) -> usize {
        self.pairs * 32
    }
}

/// The right operand B (k × n), by pairs of 16-column tiles and steps of 32 rows, in AMX's layout
/// (row r of a tile holds B's rows 2r and 2r+1 interleaved), zero-padded.
#[derive(Default)]
pub(crate) struct PackedB {
    tiles: Aligned<u16>,
    /// Pairs of column tiles (32 columns each).
    pairs: usize,
    kt: usize,
}

impl PackedB {
    fn shape(&mut self, k: usize, n: usize) {
        self.kt = k.div_ceil(32);
        self.pairs = n.div_ceil(32);
        self.tiles.ensure_len(self.pairs * 4 * self.kt * TILE);
    }

    fn lo(&self) -> usize {
        2 * self.kt * TILE
    }

    /// B = Sᵀ for `src` S holding `n` rows of `k` values, `ld` apart: a linear layer's weight
    /// (out × in, as PyTorch stores it), or attention's keys (tokens × head size).
    #[inline(always)]
    pub fn pack_transposed(&mut self, src: &[f32], n: usize, k: usize, ld: usize) {
        self.shape(k, n);
        let (lo, kt) = (self.lo(), self.kt);
        let tiles: &mut [u16] = &mut self.tiles;
        for nn in 0..self.pairs * 32 {
            let (pair, slot, j) = (nn / 32, (nn / 16) % 2, nn % 16);
            for step in 0..kt {
                // S's row nn, values step*32.. go down column j of the tile, two to a row.
                let mut x = [0f32; 32];
                let k0 = step * 32;
                if nn < n && k0 < k {
                    let len = (k - k0).min(32);
                    x[..len].copy_from_slice(&src[nn * ld + k0..nn * ld + k0 + len]);
                }
                let base = tile_at(pair, slot, step, kt) + 2 * j;
                for r in 0..16 {
                    let o = base + r * 32;
                    (tiles[o], tiles[o + lo]) = split(x[2 * r]);
                    (tiles[o + 1], tiles[o + 1 + lo]) = split(x[2 * r + 1]);
                }
            }
        }
    }

    /// B = S for `src` S holding `k` rows of `n` values, `ld` apart: attention's values.
    #[inline(always)]
    pub fn pack(&mut self, src: &[f32], k: usize, n: usize, ld: usize) {
        self.shape(k, n);
        let (lo, kt, pairs) = (self.lo(), self.kt, self.pairs);
        let tiles: &mut [u16] = &mut self.tiles;
        let row = |kk: usize, n0: usize| -> [f32; 16] {
            let mut x = [0f32; 16];
            if kk < k && n0 < n {
                let len = (n - n0).min(16);
                x[..len].copy_from_slice(&src[kk * ld + n0..kk * ld + n0 + len]);
            }
            x
        };
        for step in 0..kt {
            for r in 0..16 {
                let kk = step * 32 + 2 * r;
                for t in 0..pairs * 2 {
                    // Rows kk and kk+1 of S, interleaved, make row r of the tile.
                    let (even, odd) = (row(kk, t * 16), row(kk + 1, t * 16));
                    let o = tile_at(t / 2, t % 2, step, kt) + r * 32;
                    let (hi, low) = tiles[o..].split_at_mut(lo);
                    for j in 0..16 {
                        (hi[2 * j], low[2 * j]) = split(even[j]);
                        (hi[2 * j + 1], low[2 * j + 1]) = split(odd[j]);
                    }
                }
            }
        }
    }

    /// B = Wᵀ for a linear layer's weight W (`out` × `inp`).
    pub fn linear(w: &[f32], out: usize, inp: usize) -> PackedB {
        assert_eq!(w.len(), out * inp);
        let mut b = PackedB::default();
        b.pack_transposed(w, out, inp, inp);
        b
    }

    /// Columns the product will have (padded).
    pub fn cols(&self) -> usize {
        self.pairs * 32
    }
}

/// Proof that this thread has configured its tiles; released when dropped. Not `Send`: tile
/// state belongs to a thread.
pub(crate) struct Tiles(PhantomData<*const ()>);

#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

impl Tiles {
    /// Configure all eight tiles as 16 rows × 64 bytes.
    ///
    /// # Safety
    /// The CPU and OS must support AMX and this process must hold the tile permission
    /// ([`crate::amx_available`] checks both).
    pub unsafe fn claim() -> Tiles {
        let mut cfg = TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            colsb: [0; 16],
            rows: [0; 16],
        };
        for t in 0..8 {
            cfg.colsb[t] = 64;
            cfg.rows[t] = 16;
        }
        // SAFETY: AMX is available (the caller's contract); the config is a valid palette-1 block.
        unsafe { ops::load_config(&cfg as *const TileConfig as *const u8) };
        Tiles(PhantomData)
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: tiles were configured by `claim`; releasing returns them to the init state.
        unsafe { ops::release() };
    }
}

/// c[i][j] = bias[j] (or 0) + Σₖ a[i][k]·b[k][j] for every padded row i < `a.rows()` and column
/// j < `b.cols()`; c's rows are `ldc` apart.
pub(crate) fn gemm(
    _tiles: &Tiles,
    a: &PackedA,
    b: &PackedB,
    bias: Option<&[f32]>,
    c: &mut [f32],
    ldc: usize,
) {
    assert_eq!(a.kt, b.kt, "inner dimensions differ");
    assert!(ldc >= b.cols());
    assert!(
        c.len() >= (a.rows() - 1) * ldc + b.cols(),
        "output too small"
    );
    if let Some(bias) = bias {
        assert!(bias.len() >= b.cols());
    }
    let kt = a.kt;
    for nb in 0..b.pairs {
        for mb in 0..a.pairs {
            let out = &mut c[mb * 32 * ldc + nb * 32..];
            // SAFETY: `_tiles` proves this thread configured the tiles. Every tile read lies in
            // the packed buffers (kt groups from each pair's start), every store in `c`
            // (asserted above: the 32×32 block at row mb*32, column nb*32 fits).
            unsafe {
                ops::kernel(
                    a.tiles[tile_at(mb, 0, 0, kt)..].as_ptr(),
                    b.tiles[tile_at(nb, 0, 0, kt)..].as_ptr(),
                    kt,
                    bias.map(|x| x[nb * 32..].as_ptr()),
                    out.as_mut_ptr(),
                    ldc,
                )
            };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod ops {
    use std::arch::asm;

    const TILE: usize = super::TILE;

    pub unsafe fn load_config(cfg: *const u8) {
        unsafe { asm!("ldtilecfg [{}]", in(reg) cfg, options(nostack, readonly)) };
    }

    pub unsafe fn release() {
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }

    /// A 32×32 block of C in four tiles, over `kt` steps of 32, three products per step. Four
    /// independent accumulators keep the tile unit busy (a product takes ~3x longer to finish
    /// than to issue).
    /// tmm0-3: C (rows 0-15 × cols 0-15, 0-15 × 16-31, 16-31 × 0-15, 16-31 × 16-31);
    /// tmm4/5: A rows 0-15/16-31; tmm6/7: B cols 0-15/16-31. `a` and `b` point at the first
    /// tile of their pair (see `tile_at`).
    #[inline(always)]
    pub unsafe fn kernel(
        a: *const u16,
        b: *const u16,
        kt: usize,
        bias: Option<*const f32>,
        c: *mut f32,
        ldc: usize,
    ) {
        unsafe {
            match bias {
                // A stride of 0 repeats the 16 bias values on every row.
                Some(p) => asm!(
                    "tileloadd tmm0, [{p0} + {z}*1]",
                    "tileloadd tmm1, [{p1} + {z}*1]",
                    "tileloadd tmm2, [{p0} + {z}*1]",
                    "tileloadd tmm3, [{p1} + {z}*1]",
                    p0 = in(reg) p, p1 = in(reg) p.add(16), z = in(reg) 0usize,
                    options(nostack, readonly)
                ),
                None => asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nostack, nomem)
                ),
            }
            // Per step of 32: A high × B low, A high × B high (A stays), A low × B high (B
            // stays): eight tile loads for twelve products, each tile loaded once.
            for k in 0..kt {
                let o = k * TILE;
                let run = |p: *const u16, slot: usize| p.add(slot * kt * TILE + o);
                asm!(
                    "tileloadd tmm4, [{ah0} + {s}*1]",
                    "tileloadd tmm6, [{bl0} + {s}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tileloadd tmm7, [{bl1} + {s}*1]",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tileloadd tmm5, [{ah1} + {s}*1]",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    "tileloadd tmm6, [{bh0} + {s}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tileloadd tmm7, [{bh1} + {s}*1]",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    "tileloadd tmm4, [{al0} + {s}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tileloadd tmm5, [{al1} + {s}*1]",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    ah0 = in(reg) run(a, 0),
                    ah1 = in(reg) run(a, 1),
                    al0 = in(reg) run(a, 2),
                    al1 = in(reg) run(a, 3),
                    bh0 = in(reg) run(b, 0),
                    bh1 = in(reg) run(b, 1),
                    bl0 = in(reg) run(b, 2),
                    bl1 = in(reg) run(b, 3),
                    s = in(reg) 64usize,
                    options(nostack, readonly)
                );
            }
            asm!(
                "tilestored [{c0} + {s}*1], tmm0",
                "tilestored [{c0} + {s}*1 + 64], tmm1",
                "tilestored [{c1} + {s}*1], tmm2",
                "tilestored [{c1} + {s}*1 + 64], tmm3",
                c0 = in(reg) c,
                c1 = in(reg) c.add(16 * ldc),
                s = in(reg) ldc * 4,
                options(nostack)
            );
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod ops {
    pub unsafe fn load_config(_: *const u8) {
        unreachable!("AMX is x86-64 only")
    }
    pub unsafe fn release() {}
    pub unsafe fn kernel(
        _: *const u16,
        _: *const u16,
        _: usize,
        _: Option<*const f32>,
        _: *mut f32,
        _: usize,
    ) {
        unreachable!("AMX is x86-64 only")
    }
}

/// A product checked against f64 arithmetic, run once before AMX is trusted.
pub(crate) fn self_test() -> bool {
    let (m, k, n) = (40, 70, 20);
    let a: Vec<f32> = (0..m * k)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 37.0)
        .collect();
    let w: Vec<f32> = (0..n * k)
        .map(|i| ((i * 53 % 97) as f32 - 48.0) / 41.0)
        .collect();
    let bias: Vec<f32> = (0..32).map(|i| i as f32 * 0.25).collect();
    let (mut pa, pb) = (PackedA::default(), PackedB::linear(&w, n, k));
    pa.pack(&a, m, k, k);
    let ldc = pb.cols();
    let mut c = vec![f32::NAN; pa.rows() * ldc];
    {
        // SAFETY: only called after the CPU, XCR0 and permission checks in `cpu::detect`.
        let tiles = unsafe { Tiles::claim() };
        gemm(&tiles, &pa, &pb, Some(&bias), &mut c, ldc);
    }
    (0..m).all(|i| {
        (0..n).all(|j| {
            let want: f64 = bias[j] as f64
                + (0..k)
                    .map(|x| a[i * k + x] as f64 * w[j * k + x] as f64)
                    .sum::<f64>();
            (c[i * ldc + j] as f64 - want).abs() < 1e-4 * (1.0 + want.abs())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_about_sixteen_bits() {
        for x in [1.0f32, -2.718_281_7, 1e-3, 123_456.79, 0.1] {
            let (h, l) = split(x);
            let back = widen(h) + widen(l);
            assert!(((back - x) / x).abs() < 2e-5, "{x} -> {back}");
            // The high part alone is bf16: about three digits.
            assert!(((widen(h) - x) / x).abs() < 4e-3);
        }
    }

    #[test]
    fn products_match_f64_when_amx_is_here() {
        if !crate::amx_available() {
            eprintln!("no AMX here: skipped");
            return;
        }
        assert!(self_test());
    }

    /// Both ways of packing B, on shapes that are not whole tiles (as attention's are), give the
    /// product f64 arithmetic gives, and padding never leaks into it.
    #[test]
    fn both_packings_give_the_same_padded_product() {
        if !crate::amx_available() {
            eprintln!("no AMX here: skipped");
            return;
        }
        for (m, k, n) in [(1, 1, 1), (7, 33, 17), (33, 45, 31), (64, 64, 64)] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 31 % 89) as f32 - 44.0) / 29.0)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 17 % 83) as f32 - 41.0) / 23.0)
                .collect();
            let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
            let mut pa = PackedA::default();
            // Stale values first: a reused buffer must not leak them into the padding.
            pa.pack(&vec![9.0; 64 * 64], 64, 64, 64);
            pa.pack(&a, m, k, k);
            let (mut rows, mut cols) = (PackedB::default(), PackedB::default());
            rows.pack(&vec![9.0; 64 * 64], 64, 64, 64);
            rows.pack(&b, k, n, n);
            cols.pack_transposed(&bt, n, k, k);
            // SAFETY: AMX is available (checked above).
            let tiles = unsafe { Tiles::claim() };
            for pb in [&rows, &cols] {
                let ldc = pb.cols();
                let mut c = vec![f32::NAN; pa.rows() * ldc];
                gemm(&tiles, &pa, pb, None, &mut c, ldc);
                for i in 0..pa.rows() {
                    for j in 0..ldc {
                        let want: f64 = if i < m && j < n {
                            (0..k)
                                .map(|x| a[i * k + x] as f64 * b[x * n + j] as f64)
                                .sum()
                        } else {
                            0.0
                        };
                        let got = c[i * ldc + j] as f64;
                        assert!(
                            (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                            "{m}x{k}x{n} [{i}][{j}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

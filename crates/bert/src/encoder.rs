//! The BERT encoder (post-LayerNorm, as all-MiniLM-L6-v2 is) and mean pooling. One sequence at a
//! time and unpadded, so no work is spent on padding tokens; sequences are spread over the cores.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::aligned::Aligned;
use crate::amx::{PackedA, PackedB, Tiles, gemm};
use crate::math;

/// The shape of a BERT model (from its config.json).
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub vocab: usize,
    pub hidden: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub max_positions: usize,
    pub eps: f32,
}

/// Where the weights come from: `(name, len)` gives the first `len` values of a tensor.
type Tensors<'a> = dyn FnMut(&str, usize) -> Result<Vec<f32>, String> + 'a;

/// A linear layer, its weight packed for the tiles.
struct Linear {
    w: PackedB,
    bias: Vec<f32>,
}

impl Linear {
    /// One layer from one or more (stacked: query, key and value make one) `prefix.weight` and
    /// `prefix.bias`, each `out` × `inp`.
    fn load(
        t: &mut Tensors,
        prefixes: &[String],
        out: usize,
        inp: usize,
    ) -> Result<Linear, String> {
        let (mut w, mut bias) = (Vec::new(), Vec::new());
        for prefix in prefixes {
            w.extend(t(&format!("{prefix}.weight"), out * inp)?);
            bias.extend(t(&format!("{prefix}.bias"), out)?);
        }
        Ok(Linear {
            w: PackedB::linear(&w, out * prefixes.len(), inp),
            bias,
        })
    }

    /// out = a·Wᵀ + bias, `out`'s rows `ldc` apart.
    fn apply(&self, tiles: &Tiles, a: &PackedA, out: &mut [f32], ldc: usize) {
        gemm(tiles, a, &self.w, Some(&self.bias), out, ldc);
    }
}

struct LayerNorm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

impl LayerNorm {
    fn load(t: &mut Tensors, prefix: &str, width: usize) -> Result<LayerNorm, String> {
        Ok(LayerNorm {
            gamma: t(&format!("{prefix}.weight"), width)?,
            beta: t(&format!("{prefix}.bias"), width)?,
        })
    }

    /// x = LayerNorm(x + add) over the first `rows` rows.
    #[inline(always)]
    fn apply(&self, x: &mut [f32], add: Option<&[f32]>, rows: usize, eps: f32) {
        let width = self.gamma.len();
        math::add_layer_norm(x, add, rows, width, &self.gamma, &self.beta, eps);
    }
}

struct Layer {
    /// Query, key and value in one product: 3·hidden outputs.
    qkv: Linear,
    out: Linear,
    ln1: LayerNorm,
    up: Linear,
    down: Linear,
    ln2: LayerNorm,
}

pub struct Encoder {
    dims: Dims,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    ln: LayerNorm,
    layers: Vec<Layer>,
}

/// Buffers one worker reuses from sequence to sequence.
#[derive(Default)]
struct Scratch {
    x: Aligned<f32>,
    qkv: Aligned<f32>,
    scores: Aligned<f32>,
    context: Aligned<f32>,
    sum: Aligned<f32>,
    up: Aligned<f32>,
    a: PackedA,
    b: PackedB,
}

impl Encoder {
    /// Whether this machine can run it (AMX and AVX-512, permitted by the OS).
    pub fn available() -> bool {
        crate::amx_available()
    }

    /// Build from a model's tensors, named as Hugging Face's BertModel names them; `tensor(name,
    /// len)` returns the first `len` values of one as f32, and fails when it is missing or
    /// shorter.
    pub fn load(
        dims: Dims,
        mut tensor: impl FnMut(&str, usize) -> Result<Vec<f32>, String>,
    ) -> Result<Encoder, String> {
        let (h, i) = (dims.hidden, dims.intermediate);
        // A head's context is written as whole 32-column blocks.
        if !h.is_multiple_of(dims.heads) || !(h / dims.heads).is_multiple_of(32) {
            return Err(format!(
                "{h} hidden over {} heads: this encoder needs heads of a multiple of 32",
                dims.heads
            ));
        }
        let t: &mut Tensors = &mut tensor;
        let mut layers = Vec::with_capacity(dims.layers);
        for l in 0..dims.layers {
            let p = format!("encoder.layer.{l}");
            let qkv = ["query", "key", "value"].map(|part| format!("{p}.attention.self.{part}"));
            layers.push(Layer {
                qkv: Linear::load(t, &qkv, h, h)?,
                out: Linear::load(t, &[format!("{p}.attention.output.dense")], h, h)?,
                ln1: LayerNorm::load(t, &format!("{p}.attention.output.LayerNorm"), h)?,
                up: Linear::load(t, &[format!("{p}.intermediate.dense")], i, h)?,
                down: Linear::load(t, &[format!("{p}.output.dense")], h, i)?,
                ln2: LayerNorm::load(t, &format!("{p}.output.LayerNorm"), h)?,
            });
        }
        Ok(Encoder {
            word: t("embeddings.word_embeddings.weight", dims.vocab * h)?,
            position: t(
                "embeddings.position_embeddings.weight",
                dims.max_positions * h,
            )?,
            // Row 0: every token is of type 0.
            token_type: t("embeddings.token_type_embeddings.weight", h)?,
            ln: LayerNorm::load(t, "embeddings.LayerNorm", h)?,
            layers,
            dims,
        })
    }

    /// One L2-normalised mean-pooled embedding per sequence of token ids (all of token type 0).
    pub fn embed(&self, sequences: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, String> {
        if !Encoder::available() {
            return Err("this CPU or OS cannot run AMX".into());
        }
        for (n, s) in sequences.iter().enumerate() {
            if s.is_empty() || s.len() > self.dims.max_positions {
                return Err(format!(
                    "sequence {n} has {} tokens; 1 to {} fit",
                    s.len(),
                    self.dims.max_positions
                ));
            }
            if let Some(t) = s.iter().find(|t| **t as usize >= self.dims.vocab) {
                return Err(format!("token {t} is outside the vocabulary"));
            }
        }
        let out: Vec<Mutex<Vec<f32>>> = sequences.iter().map(|_| Mutex::default()).collect();
        let next = AtomicUsize::new(0);
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(sequences.len());
        let work = || {
            // SAFETY: `available()` was checked above.
            let tiles = unsafe { Tiles::claim() };
            let mut scratch = Scratch::default();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(ids) = sequences.get(n) else { break };
                // SAFETY: AVX-512 and FMA are part of `available()`.
                let v = unsafe { self.forward(&tiles, ids, &mut scratch) };
                *out[n].lock().expect("no worker panics holding it") = v;
            }
        };
        std::thread::scope(|s| {
            // The calling thread works too: one spawn fewer.
            for _ in 1..workers {
                s.spawn(work);
            }
            work();
        });
        Ok(out
            .into_iter()
            .map(|m| m.into_inner().expect("no worker panics holding it"))
            .collect())
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    fn forward(&self, tiles: &Tiles, ids: &[u32], s: &mut Scratch) -> Vec<f32> {
        let Dims {
            hidden: h,
            heads,
            intermediate: inter,
            eps,
            ..
        } = self.dims;
        let head = h / heads;
        let n = ids.len();
        // Products are computed for rows padded to 32; the padded rows are zero on the way in and
        // their results are ignored, except as attention keys, which the softmax masks out.
        let m = n.div_ceil(32) * 32;
        // Not cleared: every value read is written first (packing pads with zeros itself).
        s.x.ensure_len(m * h);
        s.qkv.ensure_len(m * 3 * h);
        s.scores.ensure_len(m * m);
        s.context.ensure_len(m * h);
        s.sum.ensure_len(m * h);
        s.up.ensure_len(m * inter);

        for (t, id) in ids.iter().enumerate() {
            let row = &mut s.x[t * h..(t + 1) * h];
            let word = &self.word[*id as usize * h..][..h];
            let pos = &self.position[t * h..][..h];
            for (((x, w), p), ty) in row.iter_mut().zip(word).zip(pos).zip(&self.token_type) {
                *x = w + p + ty;
            }
        }
        self.ln.apply(&mut s.x, None, n, eps);

        let scale = 1.0 / (head as f32).sqrt();
        for layer in &self.layers {
            s.a.pack(&s.x, n, h, h);
            layer.qkv.apply(tiles, &s.a, &mut s.qkv, 3 * h);
            for hd in 0..heads {
                let (q, k, v) = (hd * head, h + hd * head, 2 * h + hd * head);
                let qkv = &s.qkv;
                // scores = Q Kᵀ, so B[k][j] = K[j][k].
                s.a.pack(&qkv[q..], n, head, 3 * h);
                s.b.pack_transposed(&qkv[k..], n, head, 3 * h);
                gemm(tiles, &s.a, &s.b, None, &mut s.scores, m);
                for r in 0..n {
                    math::softmax(&mut s.scores[r * m..(r + 1) * m], n, scale);
                }
                // context = P V, written into this head's columns.
                s.a.pack(&s.scores, n, m, m);
                s.b.pack(&qkv[v..], n, head, 3 * h);
                gemm(tiles, &s.a, &s.b, None, &mut s.context[hd * head..], h);
            }
            s.a.pack(&s.context, n, h, h);
            layer.out.apply(tiles, &s.a, &mut s.sum, h);
            layer.ln1.apply(&mut s.x, Some(&s.sum), n, eps);

            s.a.pack(&s.x, n, h, h);
            layer.up.apply(tiles, &s.a, &mut s.up, inter);
            math::gelu(&mut s.up[..n * inter]);
            s.a.pack(&s.up, n, inter, inter);
            layer.down.apply(tiles, &s.a, &mut s.sum, h);
            layer.ln2.apply(&mut s.x, Some(&s.sum), n, eps);
        }

        // Mean over the tokens, in f64 (one pass, cheap), then unit length.
        let mut mean = vec![0f64; h];
        for row in s.x[..n * h].chunks_exact(h) {
            for (m, x) in mean.iter_mut().zip(row) {
                *m += *x as f64;
            }
        }
        let norm = mean.iter().map(|v| v * v).sum::<f64>().sqrt();
        mean.iter().map(|v| (v / norm) as f32).collect()
    }
}

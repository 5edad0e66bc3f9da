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

struct Layer {
    /// Query, key and value in one product: 3·hidden outputs.
    qkv: PackedB,
    qkv_bias: Vec<f32>,
    out: PackedB,
    out_bias: Vec<f32>,
    ln1: (Vec<f32>, Vec<f32>),
    up: PackedB,
    up_bias: Vec<f32>,
    down: PackedB,
    down_bias: Vec<f32>,
    ln2: (Vec<f32>, Vec<f32>),
}

pub struct Encoder {
    dims: Dims,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    ln: (Vec<f32>, Vec<f32>),
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
    /// len)` returns one as f32 and must fail when it is missing or does not hold `len` values.
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
        let mut ln = |prefix: &str| -> Result<(Vec<f32>, Vec<f32>), String> {
            Ok((
                tensor(&format!("{prefix}.weight"), h)?,
                tensor(&format!("{prefix}.bias"), h)?,
            ))
        };
        let embeddings_ln = ln("embeddings.LayerNorm")?;
        let mut layers = Vec::with_capacity(dims.layers);
        for l in 0..dims.layers {
            let p = format!("encoder.layer.{l}");
            let mut qkv_w = Vec::with_capacity(3 * h * h);
            let mut qkv_bias = Vec::with_capacity(3 * h);
            for part in ["query", "key", "value"] {
                qkv_w.extend(tensor(&format!("{p}.attention.self.{part}.weight"), h * h)?);
                qkv_bias.extend(tensor(&format!("{p}.attention.self.{part}.bias"), h)?);
            }
            let out_w = tensor(&format!("{p}.attention.output.dense.weight"), h * h)?;
            let out_bias = tensor(&format!("{p}.attention.output.dense.bias"), h)?;
            let ln1 = (
                tensor(&format!("{p}.attention.output.LayerNorm.weight"), h)?,
                tensor(&format!("{p}.attention.output.LayerNorm.bias"), h)?,
            );
            let up_w = tensor(&format!("{p}.intermediate.dense.weight"), i * h)?;
            let up_bias = tensor(&format!("{p}.intermediate.dense.bias"), i)?;
            let down_w = tensor(&format!("{p}.output.dense.weight"), h * i)?;
            let down_bias = tensor(&format!("{p}.output.dense.bias"), h)?;
            let ln2 = (
                tensor(&format!("{p}.output.LayerNorm.weight"), h)?,
                tensor(&format!("{p}.output.LayerNorm.bias"), h)?,
            );
            layers.push(Layer {
                qkv: PackedB::linear(&qkv_w, 3 * h, h),
                qkv_bias,
                out: PackedB::linear(&out_w, h, h),
                out_bias,
                ln1,
                up: PackedB::linear(&up_w, i, h),
                up_bias,
                down: PackedB::linear(&down_w, h, i),
                down_bias,
                ln2,
            });
        }
        Ok(Encoder {
            word: tensor("embeddings.word_embeddings.weight", dims.vocab * h)?,
            position: tensor(
                "embeddings.position_embeddings.weight",
                dims.max_positions * h,
            )?,
            token_type: tensor("embeddings.token_type_embeddings.weight", h)
                .or_else(|_| tensor("embeddings.token_type_embeddings.weight", 2 * h))?,
            ln: embeddings_ln,
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
        math::add_layer_norm(&mut s.x, None, n, h, &self.ln.0, &self.ln.1, eps);

        let scale = 1.0 / (head as f32).sqrt();
        for layer in &self.layers {
            s.a.pack(&s.x, n, h, h);
            gemm(
                tiles,
                &s.a,
                &layer.qkv,
                Some(&layer.qkv_bias),
                &mut s.qkv,
                3 * h,
            );
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
            gemm(
                tiles,
                &s.a,
                &layer.out,
                Some(&layer.out_bias),
                &mut s.sum,
                h,
            );
            math::add_layer_norm(
                &mut s.x,
                Some(&s.sum),
                n,
                h,
                &layer.ln1.0,
                &layer.ln1.1,
                eps,
            );

            s.a.pack(&s.x, n, h, h);
            gemm(
                tiles,
                &s.a,
                &layer.up,
                Some(&layer.up_bias),
                &mut s.up,
                inter,
            );
            math::gelu(&mut s.up[..n * inter]);
            s.a.pack(&s.up, n, inter, inter);
            gemm(
                tiles,
                &s.a,
                &layer.down,
                Some(&layer.down_bias),
                &mut s.sum,
                h,
            );
            math::add_layer_norm(
                &mut s.x,
                Some(&s.sum),
                n,
                h,
                &layer.ln2.0,
                &layer.ln2.1,
                eps,
            );
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

//! A llama-architecture transformer over GGUF weights, on candle's CPU ops.
//!
//! Written for this workbench rather than taken from `candle_transformers::quantized_llama` because
//! the weights must be shared by many concurrent calls while each sequence owns its KV cache, a
//! cache must be cloneable (Self-MoA prefills a shared prompt once), decoding must batch several
//! sequences, and the RoPE tables must follow the file's context length. The maths follows candle's
//! implementation (interleaved RoPE, as llama.cpp stores llama weights).

use std::path::Path;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor, gguf_file};
use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{Embedding, RmsNorm};

use super::LocalModelError;

/// What a decode step needs to know about the model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub n_layer: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub embedding: usize,
    pub context: usize,
    pub vocab: usize,
    /// Weight types as stored, and what they were turned into at load.
    pub stored_type: String,
    pub compute_type: String,
}

/// A quantized weight matrix `(out, in)`. Its input dimension may be zero-padded up to a multiple
/// of 256: candle's repacked VNNI kernels (several times faster than its generic Q8_0 dot product)
/// only take such widths, and SmolLM2's 576 is not one. The activations get the same zero padding.
struct Linear {
    weight: std::sync::Arc<QTensor>,
    matmul: QMatMul,
    /// Input width the weights expect (>= the model's own).
    k: usize,
}

impl Linear {
    fn new(t: QTensor, pad: bool) -> Res<Linear> {
        let device = Device::Cpu;
        let (n, k) = t.shape().dims2()?;
        let t = if needs_requant(t.dtype()) || (pad && !k.is_multiple_of(256)) {
            let mut f = t.dequantize(&device)?;
            if pad && !k.is_multiple_of(256) {
                let k_pad = k.div_ceil(256) * 256;
                f = Tensor::cat(
                    &[&f, &Tensor::zeros((n, k_pad - k), DType::F32, &device)?],
                    1,
                )?;
            }
            QTensor::quantize(&f, GgmlDType::Q8_0)?
        } else {
            t
        };
        let k = t.shape().dims2()?.1;
        let weight = std::sync::Arc::new(t);
        Ok(Linear {
            matmul: QMatMul::from_arc(weight.clone())?,
            weight,
            k,
        })
    }

    fn forward(&self, x: &Tensor) -> Res<Tensor> {
        self.matmul.forward(&pad_to(x, self.k)?)
    }
}

/// Zero-pad the last dimension of `x` to `k`.
fn pad_to(x: &Tensor, k: usize) -> Res<Tensor> {
    let have = x.dim(D::Minus1)?;
    if have == k {
        return Ok(x.clone());
    }
    let mut dims = x.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = k - have;
    }
    Tensor::cat(
        &[x, &Tensor::zeros(dims, x.dtype(), x.device())?],
        D::Minus1,
    )
}

/// Several matrices over the same input (q/k/v, gate/up): one fused call when candle has a kernel
/// for it (one activation quantization, one parallel region), else one matmul each.
fn fused(ws: &[&Linear], x: &Tensor) -> Res<Vec<Tensor>> {
    let k = ws[0].k;
    if ws.iter().all(|w| w.k == k) {
        let xp = pad_to(x, k)?.contiguous()?;
        let ts: Vec<&QTensor> = ws.iter().map(|w| w.weight.as_ref()).collect();
        if let Some(out) = QTensor::gemv_fused_shared_lhs(&ts, &xp)? {
            return Ok(out);
        }
        return ws.iter().map(|w| w.matmul.forward(&xp)).collect();
    }
    ws.iter().map(|w| w.forward(x)).collect()
}

/// Whether padding pays: candle's repacked Q8_0 kernels need AVX-512 VNNI or AVX-VNNI.
fn vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        (is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni"))
            || is_x86_feature_detected!("avxvnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

struct Layer {
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    gate: Linear,
    up: Linear,
    down: Linear,
    attn_norm: RmsNorm,
    ffn_norm: RmsNorm,
}

pub struct Llama {
    embed: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: Linear,
    cos: Tensor,
    sin: Tensor,
    pub info: ModelInfo,
    device: Device,
}

/// One batch of sequences' keys and values, per layer: `(batch, kv_heads, positions, head_dim)`.
#[derive(Clone, Default)]
pub struct Cache {
    kv: Vec<Option<(Tensor, Tensor)>>,
    /// Positions already in the cache.
    pub len: usize,
}

type Res<T> = candle_core::Result<T>;

impl Cache {
    pub fn batch(&self) -> usize {
        self.kv
            .iter()
            .flatten()
            .next()
            .map_or(1, |(k, _)| k.dims()[0])
    }

    /// The same cache repeated `n` times along the batch (a shared prefill fanned out to n samples).
    pub fn repeat(&self, n: usize) -> Res<Cache> {
        let kv = self
            .kv
            .iter()
            .map(|e| {
                e.as_ref()
                    .map(|(k, v)| Ok((k.repeat((n, 1, 1, 1))?, v.repeat((n, 1, 1, 1))?)))
                    .transpose()
            })
            .collect::<Res<_>>()?;
        Ok(Cache { kv, len: self.len })
    }

    /// Keep only these batch rows (sequences that are still generating).
    pub fn select(&self, rows: &[usize]) -> Res<Cache> {
        let device = self
            .kv
            .iter()
            .flatten()
            .next()
            .map(|(k, _)| k.device().clone());
        let Some(device) = device else {
            return Ok(self.clone());
        };
        let idx = Tensor::new(rows.iter().map(|&r| r as u32).collect::<Vec<_>>(), &device)?;
        let kv = self
            .kv
            .iter()
            .map(|e| {
                e.as_ref()
                    .map(|(k, v)| Ok((k.index_select(&idx, 0)?, v.index_select(&idx, 0)?)))
                    .transpose()
            })
            .collect::<Res<_>>()?;
        Ok(Cache { kv, len: self.len })
    }

    /// Split a batch into one cache per row.
    pub fn split(&self) -> Res<Vec<Cache>> {
        (0..self.batch()).map(|r| self.select(&[r])).collect()
    }

    /// Stack single-row caches of equal length into one batch.
    pub fn stack(caches: &[&Cache]) -> Res<Cache> {
        let layers = caches[0].kv.len();
        let mut kv = Vec::with_capacity(layers);
        for l in 0..layers {
            let ks: Vec<&Tensor> = caches
                .iter()
                .filter_map(|c| c.kv[l].as_ref().map(|x| &x.0))
                .collect();
            let vs: Vec<&Tensor> = caches
                .iter()
                .filter_map(|c| c.kv[l].as_ref().map(|x| &x.1))
                .collect();
            kv.push(if ks.len() == caches.len() {
                Some((Tensor::cat(&ks, 0)?, Tensor::cat(&vs, 0)?))
            } else {
                None
            });
        }
        Ok(Cache {
            kv,
            len: caches[0].len,
        })
    }
}

fn read_u(ct: &gguf_file::Content, key: &str) -> Result<usize, LocalModelError> {
    ct.metadata
        .get(key)
        .and_then(|v| {
            v.to_u32()
                .ok()
                .map(|x| x as usize)
                .or_else(|| v.to_u64().ok().map(|x| x as usize))
        })
        .ok_or_else(|| LocalModelError::MissingKey {
            key: key.to_string(),
        })
}

fn read_f(ct: &gguf_file::Content, key: &str) -> Option<f32> {
    ct.metadata.get(key).and_then(|v| v.to_f32().ok())
}

/// Weight types without a SIMD dot product in candle's CPU kernels are converted to Q8_0 at load:
/// Q4_1 decodes at ~13 tok/s as stored and ~47 tok/s as Q8_0 on these machines (DESIGN.md).
fn needs_requant(t: GgmlDType) -> bool {
    matches!(t, GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1)
}

impl Llama {
    /// Load a llama-architecture GGUF file (the file's metadata must say `general.architecture = llama`).
    pub fn load(
        ct: &gguf_file::Content,
        file: &mut std::fs::File,
        path: &Path,
    ) -> Result<Llama, LocalModelError> {
        let device = Device::Cpu;
        let err = |source: candle_core::Error| LocalModelError::Weights {
            path: path.to_path_buf(),
            source,
        };
        let arch = ct
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok().cloned())
            .unwrap_or_default();
        if arch != "llama" {
            return Err(LocalModelError::UnsupportedArchitecture {
                path: path.to_path_buf(),
                arch,
            });
        }
        let n_head = read_u(ct, "llama.attention.head_count")?;
        let n_kv_head = read_u(ct, "llama.attention.head_count_kv").unwrap_or(n_head);
        let n_layer = read_u(ct, "llama.block_count")?;
        let embedding = read_u(ct, "llama.embedding_length")?;
        let head_dim = read_u(ct, "llama.rope.dimension_count").unwrap_or(embedding / n_head);
        let context = read_u(ct, "llama.context_length")
            .unwrap_or(4096)
            .min(32_768);
        let eps = read_f(ct, "llama.attention.layer_norm_rms_epsilon").unwrap_or(1e-5) as f64;
        let freq_base = read_f(ct, "llama.rope.freq_base").unwrap_or(10_000.0);

        let mut stored = None;
        let mut compute = None;
        let pad = vnni() && std::env::var("MOA_LOCAL_PAD").map_or(true, |v| v != "0");
        let mut qmat = |name: &str, file: &mut std::fs::File| -> Result<Linear, LocalModelError> {
            let t = ct.tensor(file, name, &device).map_err(err)?;
            stored.get_or_insert(format!("{:?}", t.dtype()));
            let l = Linear::new(t, pad).map_err(err)?;
            compute.get_or_insert(format!(
                "{:?}{}",
                l.weight.dtype(),
                if pad { ", padded for VNNI kernels" } else { "" }
            ));
            Ok(l)
        };
        let norm = |name: &str, file: &mut std::fs::File| -> Result<RmsNorm, LocalModelError> {
            let t = ct.tensor(file, name, &device).map_err(err)?;
            Ok(RmsNorm::new(t.dequantize(&device).map_err(err)?, eps))
        };
        let mut layers = Vec::with_capacity(n_layer);
        for i in 0..n_layer {
            let p = format!("blk.{i}");
            layers.push(Layer {
                wq: qmat(&format!("{p}.attn_q.weight"), file)?,
                wk: qmat(&format!("{p}.attn_k.weight"), file)?,
                wv: qmat(&format!("{p}.attn_v.weight"), file)?,
                wo: qmat(&format!("{p}.attn_output.weight"), file)?,
                gate: qmat(&format!("{p}.ffn_gate.weight"), file)?,
                up: qmat(&format!("{p}.ffn_up.weight"), file)?,
                down: qmat(&format!("{p}.ffn_down.weight"), file)?,
                attn_norm: norm(&format!("{p}.attn_norm.weight"), file)?,
                ffn_norm: norm(&format!("{p}.ffn_norm.weight"), file)?,
            });
        }
        let embed_q = ct.tensor(file, "token_embd.weight", &device).map_err(err)?;
        let vocab = embed_q.shape().dims()[0];
        let embed = Embedding::new(embed_q.dequantize(&device).map_err(err)?, embedding);
        // Tied output weights (SmolLM2): the LM head is the embedding matrix.
        let output = if ct.tensor_infos.contains_key("output.weight") {
            qmat("output.weight", file)?
        } else {
            Linear::new(embed_q, pad).map_err(err)?
        };
        let norm = norm("output_norm.weight", file)?;
        let (cos, sin) = rope_tables(head_dim, freq_base, context, &device).map_err(err)?;
        Ok(Llama {
            embed,
            layers,
            norm,
            output,
            cos,
            sin,
            info: ModelInfo {
                n_layer,
                n_head,
                n_kv_head,
                head_dim,
                embedding,
                context,
                vocab,
                stored_type: stored.unwrap_or_default(),
                compute_type: compute.unwrap_or_default(),
            },
            device,
        })
    }

    pub fn new_cache(&self) -> Cache {
        Cache {
            kv: vec![None; self.layers.len()],
            len: 0,
        }
    }

    /// Run `tokens` (batch, seq) through the model after what `cache` holds; returns the logits of
    /// the last position, `(batch, vocab)`, and extends the cache.
    pub fn forward(&self, tokens: &[Vec<u32>], cache: &mut Cache) -> Res<Tensor> {
        let b = tokens.len();
        let t = tokens[0].len();
        let pos = cache.len;
        let flat: Vec<u32> = tokens.iter().flatten().copied().collect();
        let ids = Tensor::from_vec(flat, (b, t), &self.device)?;
        let mut x = self.embed.forward(&ids)?;
        let mask = if t > 1 {
            Some(self.mask(t, pos)?)
        } else {
            None
        };
        let cos = self.cos.narrow(0, pos, t)?;
        let sin = self.sin.narrow(0, pos, t)?;
        let (nh, nkv, hd) = (self.info.n_head, self.info.n_kv_head, self.info.head_dim);
        for (layer, slot) in self.layers.iter().zip(cache.kv.iter_mut()) {
            let residual = &x;
            let h = layer.attn_norm.forward(&x)?;
            let qkv = fused(&[&layer.wq, &layer.wk, &layer.wv], &h)?;
            let q = qkv[0]
                .reshape((b, t, nh, hd))?
                .transpose(1, 2)?
                .contiguous()?;
            let k = qkv[1]
                .reshape((b, t, nkv, hd))?
                .transpose(1, 2)?
                .contiguous()?;
            let v = qkv[2]
                .reshape((b, t, nkv, hd))?
                .transpose(1, 2)?
                .contiguous()?;
            let q = candle_nn::rotary_emb::rope_i(&q, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope_i(&k, &cos, &sin)?;
            let (k, v) = match slot.take() {
                Some((kc, vc)) => (Tensor::cat(&[&kc, &k], 2)?, Tensor::cat(&[&vc, &v], 2)?),
                None => (k, v),
            };
            *slot = Some((k.clone(), v.clone()));
            let k = candle_transformers::utils::repeat_kv(k, nh / nkv)?;
            let v = candle_transformers::utils::repeat_kv(v, nh / nkv)?;
            let att = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
            let att = match &mask {
                Some(m) => att.broadcast_add(m)?,
                None => att,
            };
            let att = candle_nn::ops::softmax_last_dim(&att)?;
            let y = att.matmul(&v.contiguous()?)?;
            let y = y.transpose(1, 2)?.reshape((b, t, nh * hd))?;
            let x1 = (layer.wo.forward(&y)? + residual)?;
            let h = layer.ffn_norm.forward(&x1)?;
            let gu = fused(&[&layer.gate, &layer.up], &h)?;
            let gated = (candle_nn::ops::silu(&gu[0])? * &gu[1])?;
            x = (layer.down.forward(&gated)? + x1)?;
        }
        cache.len += t;
        let last = x.narrow(1, t - 1, 1)?.squeeze(1)?;
        let last = self.norm.forward(&last)?;
        self.output.forward(&last)?.to_dtype(DType::F32)
    }

    /// Additive causal mask for `t` new positions after `pos` cached ones: `(t, pos + t)`.
    fn mask(&self, t: usize, pos: usize) -> Res<Tensor> {
        let total = pos + t;
        let m: Vec<f32> = (0..t)
            .flat_map(|i| {
                (0..total).map(move |j| if j > pos + i { f32::NEG_INFINITY } else { 0.0 })
            })
            .collect();
        Tensor::from_vec(m, (t, total), &self.device)
    }

    pub fn context(&self) -> usize {
        self.info.context
    }
}

fn rope_tables(
    head_dim: usize,
    base: f32,
    positions: usize,
    dev: &Device,
) -> Res<(Tensor, Tensor)> {
    let theta: Vec<f32> = (0..head_dim)
        .step_by(2)
        .map(|i| 1f32 / base.powf(i as f32 / head_dim as f32))
        .collect();
    let n = theta.len();
    let theta = Tensor::from_vec(theta, (1, n), dev)?;
    let idx = Tensor::arange(0, positions as u32, dev)?
        .to_dtype(DType::F32)?
        .reshape((positions, 1))?
        .matmul(&theta)?;
    Ok((idx.cos()?, idx.sin()?))
}

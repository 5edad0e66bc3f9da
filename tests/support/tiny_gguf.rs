//! A tiny llama-architecture GGUF with random weights and a byte-level vocabulary, written by the
//! tests themselves: fast tests of the local provider need no download.
#![allow(dead_code)]

use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use moa_workbench::provider::local::tokenizer::gpt2_byte_chars;

const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

pub fn write(path: &Path) {
    write_variants(&[(path, GgmlDType::Q8_0)], Shape::TINY);
}

/// Dimensions of the model. K-quants need every input width to be a multiple of 256.
#[derive(Clone, Copy)]
pub struct Shape {
    pub emb: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub layers: usize,
}

impl Shape {
    pub const TINY: Shape = Shape {
        emb: 64,
        heads: 2,
        kv_heads: 1,
        head_dim: 32,
        ffn: 128,
        layers: 2,
    };
    pub const K_QUANT: Shape = Shape {
        emb: 256,
        heads: 4,
        kv_heads: 2,
        head_dim: 64,
        ffn: 512,
        layers: 2,
    };
}

/// The same random weights written once per (path, weight type): files that differ only in how
/// their matrices are stored, to compare a quantized model's outputs with the F32 one's.
pub fn write_variants(files: &[(&Path, GgmlDType)], shape: Shape) {
    let dev = Device::Cpu;
    let Shape {
        emb,
        heads,
        kv_heads,
        head_dim,
        ffn,
        layers,
    } = shape;
    let mut tokens: Vec<String> = vec![
        "<|endoftext|>".into(),
        "<|im_start|>".into(),
        "<|im_end|>".into(),
    ];
    tokens.extend(gpt2_byte_chars().into_iter().map(String::from));
    tokens.push("ab".into()); // the one merge below
    let vocab = tokens.len();
    let mut types = vec![3i32; 3];
    types.extend(std::iter::repeat_n(1, 257));

    // Variance-preserving scale (1/sqrt(fan-in)): with larger weights a random model is chaotic and
    // a quantization's tiny errors would change its outputs completely.
    // Deterministic weights (a seeded generator, not candle's thread RNG): the quantization test's
    // thresholds hold for these exact weights, run after run.
    let seed = std::cell::Cell::new(0x9E37_79B9_7F4A_7C15u64);
    let q8 = |shape: (usize, usize)| {
        let scale = 1.0 / (shape.1 as f64).sqrt();
        let n = shape.0 * shape.1;
        let next = || {
            // xorshift64*, then a uniform in (0, 1).
            let mut x = seed.get();
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            seed.set(x);
            ((x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let v: Vec<f32> = (0..n)
            .map(|_| {
                // Box-Muller: a standard normal from two uniforms.
                let (u1, u2) = (next(), next());
                ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * scale) as f32
            })
            .collect();
        Tensor::from_vec(v, shape, &dev).unwrap()
    };
    let ones = |n: usize| Tensor::ones(n, candle_core::DType::F32, &dev).unwrap();
    let mut tensors: Vec<(String, Tensor)> = vec![
        ("token_embd.weight".into(), q8((vocab, emb))),
        ("output_norm.weight".into(), ones(emb)),
    ];
    for i in 0..layers {
        let p = format!("blk.{i}");
        tensors.push((format!("{p}.attn_q.weight"), q8((heads * head_dim, emb))));
        tensors.push((format!("{p}.attn_k.weight"), q8((kv_heads * head_dim, emb))));
        tensors.push((format!("{p}.attn_v.weight"), q8((kv_heads * head_dim, emb))));
        tensors.push((
            format!("{p}.attn_output.weight"),
            q8((emb, heads * head_dim)),
        ));
        tensors.push((format!("{p}.ffn_gate.weight"), q8((ffn, emb))));
        tensors.push((format!("{p}.ffn_up.weight"), q8((ffn, emb))));
        tensors.push((format!("{p}.ffn_down.weight"), q8((emb, ffn))));
        tensors.push((format!("{p}.attn_norm.weight"), ones(emb)));
        tensors.push((format!("{p}.ffn_norm.weight"), ones(emb)));
    }
    let md: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.block_count", Value::U32(layers as u32)),
        ("llama.context_length", Value::U32(2048)),
        ("llama.embedding_length", Value::U32(emb as u32)),
        ("llama.feed_forward_length", Value::U32(ffn as u32)),
        ("llama.attention.head_count", Value::U32(heads as u32)),
        ("llama.attention.head_count_kv", Value::U32(kv_heads as u32)),
        ("llama.rope.dimension_count", Value::U32(head_dim as u32)),
        ("llama.rope.freq_base", Value::F32(10000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        (
            "tokenizer.ggml.tokens",
            Value::Array(tokens.iter().map(|t| Value::String(t.clone())).collect()),
        ),
        (
            "tokenizer.ggml.token_type",
            Value::Array(types.iter().map(|t| Value::I32(*t)).collect()),
        ),
        (
            "tokenizer.ggml.merges",
            Value::Array(vec![Value::String(format!(
                "{} {}",
                gpt2_byte_chars()[b'a' as usize],
                gpt2_byte_chars()[b'b' as usize]
            ))]),
        ),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.chat_template", Value::String(CHATML.into())),
    ];
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
    for (path, dtype) in files {
        // Norm weights (vectors) stay F32, as in real files.
        let q: Vec<(String, QTensor)> = tensors
            .iter()
            .map(|(k, t)| {
                let ty = if t.rank() == 1 {
                    GgmlDType::F32
                } else {
                    *dtype
                };
                (k.clone(), QTensor::quantize(t, ty).unwrap())
            })
            .collect();
        let t_refs: Vec<(&str, &QTensor)> = q.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut f = std::fs::File::create(path).unwrap();
        gguf_file::write(&mut f, &md_refs, &t_refs).unwrap();
    }
}

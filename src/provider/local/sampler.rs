//! Sampling: temperature, top-k, top-p, repeat penalty and seed (same seed and settings, same text).

use candle_core::Tensor;
use candle_transformers::generation::{LogitsProcessor, Sampling};

use crate::provider::ChatRequest;

#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    pub temperature: f64,
    pub top_p: Option<f64>,
    pub top_k: Option<usize>,
    pub repeat_penalty: f32,
    /// How many recent tokens the repeat penalty looks at.
    pub repeat_last_n: usize,
    pub seed: u64,
}

impl SamplingParams {
    pub fn from_request(req: &ChatRequest) -> Self {
        SamplingParams {
            temperature: req.temperature.unwrap_or(0.7),
            top_p: req.top_p.filter(|p| *p > 0.0 && *p < 1.0),
            top_k: req.top_k.map(|k| k as usize).filter(|k| *k > 0),
            // Small models loop without one; llama.cpp's common value.
            repeat_penalty: req.repeat_penalty.unwrap_or(1.1) as f32,
            repeat_last_n: 64,
            seed: req.seed.unwrap_or_else(rand::random),
        }
    }
}

pub struct Sampler {
    processor: LogitsProcessor,
    repeat_penalty: f32,
    repeat_last_n: usize,
}

impl Sampler {
    pub fn new(p: &SamplingParams) -> Self {
        let sampling = if p.temperature <= 0.0 {
            Sampling::ArgMax
        } else {
            let temperature = p.temperature;
            match (p.top_k, p.top_p) {
                (Some(k), Some(p)) => Sampling::TopKThenTopP { k, p, temperature },
                (Some(k), None) => Sampling::TopK { k, temperature },
                (None, Some(p)) => Sampling::TopP { p, temperature },
                (None, None) => Sampling::All { temperature },
            }
        };
        Sampler {
            processor: LogitsProcessor::from_sampling(p.seed, sampling),
            repeat_penalty: p.repeat_penalty,
            repeat_last_n: p.repeat_last_n,
        }
    }

    /// The next token, given this row's logits and what was generated so far.
    pub fn sample(&mut self, logits: &Tensor, generated: &[u32]) -> candle_core::Result<u32> {
        if (self.repeat_penalty - 1.0).abs() > f32::EPSILON && !generated.is_empty() {
            let start = generated.len().saturating_sub(self.repeat_last_n);
            let penalized = candle_transformers::utils::apply_repeat_penalty(
                logits,
                self.repeat_penalty,
                &generated[start..],
            )?;
            self.processor.sample(&penalized)
        } else {
            self.processor.sample(logits)
        }
    }
}

//! Sentence embeddings for agreement: all-MiniLM-L6-v2 in-process (candle BERT), as the MoA
//! monitoring literature uses for proposer agreement; mean pooling over the tokens, L2-normalised,
//! cosine = dot product. Loaded lazily on first use (~0.2 s) and kept.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
#[cfg(feature = "amx")]
use candle_transformers::models::bert::HiddenAct;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

use super::agreement::{AgreementScorer, Scored, TfIdf};

/// sentence-transformers' max_seq_length for this model.
const MAX_TOKENS: usize = 256;

/// Which implementation computes the embeddings. Both are the same model and agree to ~1e-5.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Intel AMX tiles (crate `moa-bert`, cargo feature `amx`): ~6x faster, used where the CPU
    /// and OS allow it in builds with the feature.
    Amx,
    /// candle's BERT in f32: runs anywhere; the only one of default builds.
    Candle,
}

impl Backend {
    /// The fastest one this build runs on this machine (`MOA_NO_AMX=1` forces candle).
    pub fn best() -> Backend {
        #[cfg(feature = "amx")]
        if moa_bert::Encoder::available() {
            return Backend::Amx;
        }
        Backend::Candle
    }
}

enum Forward {
    #[cfg(feature = "amx")]
    Amx(moa_bert::Encoder),
    Candle(BertModel),
}

/// Why MiniLM could not be loaded or could not embed. Agreement falls back to TF-IDF on any of
/// them (and says so in the method); the tests and benchmarks show the message.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// A model file is missing or unreadable (not fetched yet, usually).
    #[error("cannot read {}: {source} (run `moa pull`)", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Config {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: {source}", path.display())]
    Tokenizer {
        path: PathBuf,
        #[source]
        source: tokenizers::Error,
    },
    #[error("{0}")]
    Truncation(#[source] tokenizers::Error),
    /// The safetensors file does not fit the AMX encoder (the reason comes from the encoder
    /// crate, which reports text).
    #[error("{}: {reason}", path.display())]
    AmxWeights { path: PathBuf, reason: String },
    #[error("{}: {source}", path.display())]
    Weights {
        path: PathBuf,
        #[source]
        source: candle_core::Error,
    },
    /// candle's BERT does not build from the weights.
    #[error("{0}")]
    Model(#[source] candle_core::Error),
    #[error("{0}")]
    Tokenize(#[source] tokenizers::Error),
    /// The AMX encoder failed on a batch (the encoder crate reports text).
    #[error("{0}")]
    Amx(String),
    /// candle failed on a batch.
    #[error("{0}")]
    Inference(#[source] candle_core::Error),
}

pub struct MiniLm {
    forward: Forward,
    tokenizer: Tokenizer,
    device: Device,
}

impl MiniLm {
    /// Load from a folder with `model.safetensors`, `tokenizer.json` and `config.json`, on the
    /// fastest backend this machine runs.
    pub fn load(dir: &Path) -> Result<MiniLm, EmbedError> {
        MiniLm::load_on(dir, Backend::best())
    }

    pub fn load_on(dir: &Path, backend: Backend) -> Result<MiniLm, EmbedError> {
        let device = Device::Cpu;
        let read = |name: &str| {
            std::fs::read(dir.join(name)).map_err(|source| EmbedError::Read {
                path: dir.join(name),
                source,
            })
        };
        let config: Config =
            serde_json::from_slice(&read("config.json")?).map_err(|source| EmbedError::Config {
                path: dir.join("config.json"),
                source,
            })?;
        let mut tokenizer = Tokenizer::from_bytes(read("tokenizer.json")?).map_err(|source| {
            EmbedError::Tokenizer {
                path: dir.join("tokenizer.json"),
                source,
            }
        })?;
        // The shipped tokenizer pads everything to 128. candle takes a batch as one tensor, so pad
        // to the batch's longest; the AMX encoder takes each text as it is, so do not pad.
        // Truncate at 256 either way.
        tokenizer.with_padding(match backend {
            Backend::Candle => Some(PaddingParams::default()),
            Backend::Amx => None,
        });
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(EmbedError::Truncation)?;
        let weights = read("model.safetensors")?;
        let path = || dir.join("model.safetensors");
        let forward = match backend {
            #[cfg(feature = "amx")]
            Backend::Amx => Forward::Amx(amx_encoder(&config, &weights).map_err(|reason| {
                EmbedError::AmxWeights {
                    path: path(),
                    reason,
                }
            })?),
            #[cfg(not(feature = "amx"))]
            Backend::Amx => {
                return Err(EmbedError::AmxWeights {
                    path: path(),
                    reason: "this build has no AMX encoder (cargo feature `amx`)".into(),
                });
            }
            Backend::Candle => {
                let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device)
                    .map_err(|source| EmbedError::Weights {
                        path: path(),
                        source,
                    })?;
                Forward::Candle(BertModel::load(vb, &config).map_err(EmbedError::Model)?)
            }
        };
        Ok(MiniLm {
            forward,
            tokenizer,
            device,
        })
    }

    pub fn backend(&self) -> Backend {
        match self.forward {
            #[cfg(feature = "amx")]
            Forward::Amx(_) => Backend::Amx,
            Forward::Candle(_) => Backend::Candle,
        }
    }

    /// Whether `text` fits in the model's window (256 tokens): past it, the rest is not read,
    /// and texts differing only there embed the same.
    pub fn fits(&self, text: &str) -> Result<bool, EmbedError> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(EmbedError::Tokenize)?;
        Ok(enc.get_overflowing().is_empty())
    }

    /// One unit vector per text.
    pub fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(EmbedError::Tokenize)?;
        // Without the `amx` feature candle is the only arm.
        #[cfg_attr(not(feature = "amx"), allow(clippy::infallible_destructuring_match))]
        let model = match &self.forward {
            #[cfg(feature = "amx")]
            Forward::Amx(encoder) => {
                let ids: Vec<Vec<u32>> = enc.iter().map(|e| e.get_ids().to_vec()).collect();
                return encoder.embed(&ids).map_err(EmbedError::Amx);
            }
            Forward::Candle(model) => model,
        };
        let rows = |f: &dyn Fn(&tokenizers::Encoding) -> Vec<u32>| -> candle_core::Result<Tensor> {
            let v: Vec<Tensor> = enc
                .iter()
                .map(|e| Tensor::new(f(e).as_slice(), &self.device))
                .collect::<candle_core::Result<_>>()?;
            Tensor::stack(&v, 0)
        };
        let ids = rows(&|e| e.get_ids().to_vec()).map_err(EmbedError::Inference)?;
        let types = rows(&|e| e.get_type_ids().to_vec()).map_err(EmbedError::Inference)?;
        let mask = rows(&|e| e.get_attention_mask().to_vec()).map_err(EmbedError::Inference)?;
        let out = (|| -> candle_core::Result<Vec<Vec<f32>>> {
            let hidden = model.forward(&ids, &types, Some(&mask))?;
            let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
            let summed = hidden.broadcast_mul(&m)?.sum(1)?;
            let counts = m.sum(1)?;
            let mean = summed.broadcast_div(&counts)?;
            let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?;
            mean.broadcast_div(&norm)?.to_vec2::<f32>()
        })();
        out.map_err(EmbedError::Inference)
    }
}

/// The AMX encoder from the same safetensors file and config candle reads. (Text errors: the
/// encoder crate's own are text, and `load_on` wraps them with the file's path.)
#[cfg(feature = "amx")]
fn amx_encoder(config: &Config, weights: &[u8]) -> Result<moa_bert::Encoder, String> {
    let tensors = safetensors::SafeTensors::deserialize(weights).map_err(|e| e.to_string())?;
    // The AMX encoder implements BERT as this model has it: erf GELU, absolute positions.
    if !matches!(config.hidden_act, HiddenAct::Gelu) {
        return Err(format!(
            "hidden_act {:?}: the AMX encoder only has gelu",
            config.hidden_act
        ));
    }
    let dims = moa_bert::Dims {
        vocab: config.vocab_size,
        hidden: config.hidden_size,
        heads: config.num_attention_heads,
        intermediate: config.intermediate_size,
        layers: config.num_hidden_layers,
        max_positions: config.max_position_embeddings,
        eps: config.layer_norm_eps as f32,
    };
    moa_bert::Encoder::load(dims, |name, len| {
        let t = tensors
            .tensor(name)
            .map_err(|_| format!("tensor {name} is missing"))?;
        if t.dtype() != safetensors::Dtype::F32 {
            return Err(format!("tensor {name} is {:?}, not F32", t.dtype()));
        }
        if t.data().len() < 4 * len {
            return Err(format!(
                "tensor {name} holds {} values, not {len}",
                t.data().len() / 4
            ));
        }
        Ok(t.data()[..4 * len]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    })
}

/// Agreement by MiniLM cosine, loading the model on first use; falls back to TF-IDF (and says so
/// in the method) when the model files are not there.
pub struct MiniLmScorer {
    dir: PathBuf,
    model: OnceLock<Result<MiniLm, EmbedError>>,
    /// Embeddings of texts seen before. Live agreement re-scores a step every 500 ms while answers
    /// stream; an answer that has finished keeps its text, so from then on (and in the final score
    /// at the step's end) it costs nothing: the end-of-step score only embeds what finished last.
    cache: Mutex<HashMap<u64, Vec<f32>>>,
}

/// Enough for a few steps of a few proposers; cleared when full (old steps are not scored again).
const CACHE_ENTRIES: usize = 64;

fn text_key(t: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    t.hash(&mut h);
    h.finish()
}

impl MiniLmScorer {
    pub fn new(dir: PathBuf) -> Self {
        MiniLmScorer {
            dir,
            model: OnceLock::new(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn available(&self) -> bool {
        self.dir.join("model.safetensors").exists()
    }

    fn model(&self) -> Result<&MiniLm, &EmbedError> {
        self.model.get_or_init(|| MiniLm::load(&self.dir)).as_ref()
    }
}

impl AgreementScorer for MiniLmScorer {
    fn method(&self) -> &str {
        let loaded_ok = self.model.get().is_none_or(|m| m.is_ok());
        if self.available() && loaded_ok {
            "minilm"
        } else {
            "tfidf"
        }
    }

    fn matrix(&self, texts: &[String]) -> Vec<Vec<f64>> {
        self.scored(texts).matrix
    }

    fn scored(&self, texts: &[String]) -> Scored {
        let embedded = match self.model() {
            Ok(m) => self.embed_cached(m, texts).ok(),
            Err(_) => None,
        };
        match embedded {
            Some(vs) => Scored {
                matrix: cosine_matrix(&vs),
                method: "minilm".into(),
            },
            None => Scored {
                matrix: TfIdf.matrix(texts),
                method: "tfidf".into(),
            },
        }
    }
}

impl MiniLmScorer {
    /// Embed only the texts not seen before. Hits are copied out under the lock, so a cache cleared
    /// meanwhile by another run's scoring (evaluations score many runs at once) loses nothing.
    fn embed_cached(&self, m: &MiniLm, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let keys: Vec<u64> = texts.iter().map(|t| text_key(t)).collect();
        let mut mine: HashMap<u64, Vec<f32>> = HashMap::new();
        let mut missing: Vec<String> = Vec::new();
        {
            let cache = self
                .cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (t, k) in texts.iter().zip(&keys) {
                if mine.contains_key(k) || missing.iter().any(|x| text_key(x) == *k) {
                    continue;
                }
                match cache.get(k) {
                    Some(v) => {
                        mine.insert(*k, v.clone());
                    }
                    None => missing.push(t.clone()),
                }
            }
        }
        if !missing.is_empty() {
            let fresh = m.embed(&missing)?;
            let mut cache = self
                .cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if cache.len() + missing.len() > CACHE_ENTRIES {
                cache.clear();
            }
            for (t, v) in missing.iter().zip(fresh) {
                let k = text_key(t);
                cache.insert(k, v.clone());
                mine.insert(k, v);
            }
        }
        Ok(keys.iter().map(|k| mine[k].clone()).collect())
    }
}

pub fn cosine_matrix(vs: &[Vec<f32>]) -> Vec<Vec<f64>> {
    vs.iter()
        .map(|a| {
            vs.iter()
                .map(|b| {
                    a.iter()
                        .zip(b)
                        .map(|(x, y)| (*x as f64) * (*y as f64))
                        .sum()
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_model_files_name_the_file_and_the_fix() {
        let d = tempfile::tempdir().unwrap();
        let e = MiniLm::load_on(d.path(), Backend::Candle).err().unwrap();
        let config = d.path().join("config.json");
        assert!(
            matches!(&e, EmbedError::Read { path, .. } if *path == config),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            format!(
                "cannot read {}: No such file or directory (os error 2) (run `moa pull`)",
                config.display()
            )
        );
        std::fs::write(&config, "{").unwrap();
        let e = MiniLm::load_on(d.path(), Backend::Candle).err().unwrap();
        assert!(matches!(e, EmbedError::Config { .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with(&format!("{}: ", config.display())),
            "{e}"
        );
        // The scorer falls back to TF-IDF and says so.
        let scorer = MiniLmScorer::new(d.path().to_path_buf());
        let s = scorer.scored(&["a b".into(), "a c".into()]);
        assert_eq!(s.method, "tfidf");
    }
}

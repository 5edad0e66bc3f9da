//! The in-process local provider (`kind = "local"`): llama-architecture GGUF models on candle.
//!
//! Each model file gets one inference thread (off the async runtime, so no UI or network task ever
//! waits on a matmul) that owns the weights; every call to that model shares them. Calls arriving
//! together with the same prompt (Self-MoA: N samples of one prompt) are prefilled once and decoded
//! as one batch; other calls decode round-robin, so every pane streams at once. Dropping a call's
//! stream stops its generation within one token.

pub mod llama;
pub mod sampler;
pub mod tokenizer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use candle_core::Tensor;
use tokio::sync::mpsc;

use self::llama::{Cache, Llama};
use self::sampler::{Sampler, SamplingParams};
use self::tokenizer::{ChatTemplate, GgufTokenizer, Utf8Stream};
use super::{BoxFuture, ChatRequest, Chunk, ChunkStream, ListedModel, Provider, ProviderError};
use crate::config::ProviderSettings;
use crate::fetch;

/// The embedded default model's name under the `local` provider.
pub const EMBEDDED_MODEL: &str = "smollm2-135m";

pub struct LocalProvider {
    pub name: String,
    /// A GGUF file configured with `model_path`; otherwise models are looked up by name.
    pub model_path: Option<PathBuf>,
    pub models_dir: PathBuf,
}

impl LocalProvider {
    pub fn new(settings: &ProviderSettings, models_dir: &Path) -> Self {
        LocalProvider {
            name: settings.name.clone(),
            model_path: settings.model_path.clone(),
            models_dir: models_dir.to_path_buf(),
        }
    }

    /// Which file a model name means: the configured `model_path`, the embedded model, or
    /// `NAME.gguf` in the models folder.
    pub fn resolve(&self, model: &str) -> Result<PathBuf, ProviderError> {
        if let Some(p) = &self.model_path {
            return Ok(p.clone());
        }
        if model == EMBEDDED_MODEL {
            let p = fetch::SMOLLM2.path(&self.models_dir);
            if !p.exists() {
                return Err(ProviderError::Config(format!(
                    "the embedded model is not fetched yet ({} is missing): run `moa pull`",
                    p.display()
                )));
            }
            return Ok(p);
        }
        let p = self.models_dir.join(format!("{model}.gguf"));
        if p.exists() {
            Ok(p)
        } else {
            Err(ProviderError::Config(format!(
                "no local model {model:?}: use {EMBEDDED_MODEL}, put {model}.gguf in {}, or set model_path under [providers.{}]",
                self.models_dir.display(),
                self.name
            )))
        }
    }
}

impl Provider for LocalProvider {
    fn open(&self, req: ChatRequest) -> BoxFuture<'_, Result<ChunkStream, ProviderError>> {
        Box::pin(async move {
            let path = self.resolve(&req.model)?;
            let worker = worker_for(&path);
            let (tx, rx) = mpsc::unbounded_channel();
            let job = Job {
                messages: req.messages.clone(),
                params: SamplingParams::from_request(&req),
                max_tokens: req.max_tokens.map(|m| m as usize),
                out: tx,
            };
            worker.send(job).map_err(|_| {
                ProviderError::Stream("the local model's thread has stopped".into())
            })?;
            let stream = futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            });
            Ok(Box::pin(stream) as ChunkStream)
        })
    }

    fn list_models(&self) -> BoxFuture<'_, Result<Vec<ListedModel>, ProviderError>> {
        Box::pin(async move {
            let mut out = vec![ListedModel {
                id: EMBEDDED_MODEL.into(),
                context_window: Some(8192),
            }];
            if let Ok(rd) = std::fs::read_dir(&self.models_dir) {
                for e in rd.flatten() {
                    let p = e.path();
                    if p.extension().is_some_and(|x| x == "gguf")
                        && p != fetch::SMOLLM2.path(&self.models_dir)
                        && let Some(stem) = p.file_stem()
                    {
                        out.push(ListedModel {
                            id: stem.to_string_lossy().into_owned(),
                            context_window: None,
                        });
                    }
                }
            }
            Ok(out)
        })
    }
}

struct Job {
    messages: Vec<crate::provider::Message>,
    params: SamplingParams,
    max_tokens: Option<usize>,
    out: mpsc::UnboundedSender<Result<Chunk, ProviderError>>,
}

/// One inference thread per model file, shared by every provider instance in the process.
fn worker_for(path: &Path) -> std_mpsc::Sender<Job> {
    static WORKERS: OnceLock<Mutex<HashMap<PathBuf, std_mpsc::Sender<Job>>>> = OnceLock::new();
    let mut map = WORKERS
        .get_or_init(Default::default)
        .lock()
        .expect("workers lock");
    map.entry(path.to_path_buf())
        .or_insert_with(|| {
            let (tx, rx) = std_mpsc::channel();
            let p = path.to_path_buf();
            std::thread::Builder::new()
                .name("moa-local-model".into())
                .spawn(move || Worker::new(p).run(rx))
                .expect("spawn the model thread");
            tx
        })
        .clone()
}

/// A loaded model: weights, tokenizer, chat template.
pub struct Loaded {
    pub model: Llama,
    pub tokenizer: GgufTokenizer,
    pub template: ChatTemplate,
    pub load_time: Duration,
}

impl Loaded {
    pub fn load(path: &Path) -> Result<Loaded, String> {
        let started = Instant::now();
        let mut file = std::fs::File::open(path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let ct = candle_core::quantized::gguf_file::Content::read(&mut file)
            .map_err(|e| format!("{} is not a readable GGUF file: {e}", path.display()))?;
        let tokenizer = GgufTokenizer::from_gguf(&ct)?;
        let template = ChatTemplate::from_gguf(&ct)?;
        let model = Llama::load(&ct, &mut file, path)?;
        Ok(Loaded {
            model,
            tokenizer,
            template,
            load_time: started.elapsed(),
        })
    }

    /// The prompt's token ids, as the model's chat template writes the conversation.
    pub fn prompt_ids(&self, messages: &[crate::provider::Message]) -> Result<Vec<u32>, String> {
        let text = self.template.render(
            messages,
            self.tokenizer.bos.as_deref(),
            self.tokenizer.eos.as_deref(),
        )?;
        self.tokenizer.encode(&text)
    }
}

/// A sequence being generated.
struct Seq {
    out: mpsc::UnboundedSender<Result<Chunk, ProviderError>>,
    sampler: Sampler,
    utf8: Utf8Stream,
    generated: Vec<u32>,
    prompt_len: usize,
    max_tokens: usize,
}

/// Sequences decoded together: one batched KV cache, one row per sequence.
struct Group {
    cache: Cache,
    logits: Tensor,
    seqs: Vec<Seq>,
}

struct Worker {
    path: PathBuf,
    loaded: Option<Loaded>,
    groups: Vec<Group>,
    /// Decode same-prompt sequences as one batch (measured faster; MOA_LOCAL_BATCH=0 turns it off
    /// for the benchmark's side-by-side comparison).
    batch: bool,
}

impl Worker {
    fn new(path: PathBuf) -> Self {
        Worker {
            path,
            loaded: None,
            groups: Vec::new(),
            batch: std::env::var("MOA_LOCAL_BATCH").map_or(true, |v| v != "0"),
        }
    }

    fn run(mut self, rx: std_mpsc::Receiver<Job>) {
        loop {
            let mut jobs = Vec::new();
            if self.groups.is_empty() {
                match rx.recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => return,
                }
                // Calls of one step arrive within microseconds of each other: gather them so that
                // same-prompt samples share one prefill.
                while let Ok(j) = rx.recv_timeout(Duration::from_millis(3)) {
                    jobs.push(j);
                }
            }
            while let Ok(j) = rx.try_recv() {
                jobs.push(j);
            }
            if !jobs.is_empty() {
                self.start(jobs);
            }
            self.step_all();
        }
    }

    fn start(&mut self, jobs: Vec<Job>) {
        if self.loaded.is_none() {
            match Loaded::load(&self.path) {
                Ok(l) => self.loaded = Some(l),
                Err(e) => {
                    for j in jobs {
                        let _ = j.out.send(Err(ProviderError::Config(e.clone())));
                    }
                    return;
                }
            }
        }
        let loaded = self.loaded.as_ref().expect("loaded above");
        // Group by prompt.
        let mut by_prompt: Vec<(Vec<u32>, Vec<Job>)> = Vec::new();
        for j in jobs {
            let ids = match loaded.prompt_ids(&j.messages) {
                Ok(ids) => ids,
                Err(e) => {
                    let _ = j.out.send(Err(ProviderError::Protocol(e)));
                    continue;
                }
            };
            let ctx = loaded.model.context();
            if ids.len() + 1 >= ctx {
                let _ = j.out.send(Err(ProviderError::Http {
                    status: 400,
                    message: format!(
                        "the prompt has {} tokens, more than the model's context of {ctx}: shorten it",
                        ids.len()
                    ),
                    retry_after: None,
                }));
                continue;
            }
            match by_prompt.iter_mut().find(|(p, _)| *p == ids) {
                Some((_, js)) if self.batch => js.push(j),
                _ => by_prompt.push((ids, vec![j])),
            }
        }
        for (ids, jobs) in by_prompt {
            let mut cache = loaded.model.new_cache();
            let logits = match loaded.model.forward(std::slice::from_ref(&ids), &mut cache) {
                Ok(l) => l,
                Err(e) => {
                    for j in jobs {
                        let _ = j.out.send(Err(ProviderError::Protocol(format!(
                            "inference failed: {e}"
                        ))));
                    }
                    continue;
                }
            };
            let n = jobs.len();
            let (cache, logits) = if n > 1 {
                match (cache.repeat(n), logits.repeat((n, 1))) {
                    (Ok(c), Ok(l)) => (c, l),
                    _ => continue,
                }
            } else {
                (cache, logits)
            };
            let ctx = loaded.model.context();
            let seqs = jobs
                .into_iter()
                .map(|j| Seq {
                    out: j.out,
                    sampler: Sampler::new(&j.params),
                    utf8: Utf8Stream::default(),
                    generated: Vec::new(),
                    prompt_len: ids.len(),
                    max_tokens: j.max_tokens.unwrap_or(1024).min(ctx - ids.len() - 1),
                })
                .collect();
            self.groups.push(Group {
                cache,
                logits,
                seqs,
            });
        }
    }

    /// One token for every sequence.
    fn step_all(&mut self) {
        let Some(loaded) = self.loaded.as_ref() else {
            self.groups.clear();
            return;
        };
        let mut groups = std::mem::take(&mut self.groups);
        for mut g in groups.drain(..) {
            match step(loaded, &mut g) {
                Ok(true) => self.groups.push(g),
                Ok(false) => {}
                Err(e) => {
                    for s in g.seqs {
                        let _ = s.out.send(Err(ProviderError::Protocol(format!(
                            "inference failed: {e}"
                        ))));
                    }
                }
            }
        }
    }
}

/// Sample the next token of every sequence in the group, stream it, and run the model once on
/// the batch. Returns whether any sequence is still going.
fn step(loaded: &Loaded, g: &mut Group) -> candle_core::Result<bool> {
    let mut next_tokens = Vec::with_capacity(g.seqs.len());
    let mut keep = Vec::with_capacity(g.seqs.len());
    for (row, seq) in g.seqs.iter_mut().enumerate() {
        if seq.out.is_closed() {
            continue; // cancelled: the caller dropped the stream
        }
        let logits = g.logits.get(row)?;
        let token = seq.sampler.sample(&logits, &seq.generated)?;
        let stop = loaded.tokenizer.stop_ids.contains(&token);
        if !stop {
            seq.generated.push(token);
            let piece = seq.utf8.push(loaded.tokenizer.token_bytes(token));
            if !piece.is_empty() {
                let _ = seq.out.send(Ok(Chunk::Text(piece)));
            }
        }
        let length = seq.generated.len() >= seq.max_tokens;
        if stop || length {
            let rest = seq.utf8.finish();
            if !rest.is_empty() {
                let _ = seq.out.send(Ok(Chunk::Text(rest)));
            }
            let _ = seq.out.send(Ok(Chunk::Usage {
                tokens_in: seq.prompt_len as u64,
                tokens_out: seq.generated.len() as u64,
            }));
            let _ = seq.out.send(Ok(Chunk::Finish(
                if stop { "stop" } else { "length" }.into(),
            )));
            continue;
        }
        keep.push(row);
        next_tokens.push(vec![token]);
    }
    if keep.is_empty() {
        return Ok(false);
    }
    if keep.len() < g.seqs.len() {
        g.cache = g.cache.select(&keep)?;
        let mut seqs = std::mem::take(&mut g.seqs);
        let mut kept = Vec::with_capacity(keep.len());
        for (row, s) in seqs.drain(..).enumerate() {
            if keep.contains(&row) {
                kept.push(s);
            }
        }
        g.seqs = kept;
    }
    g.logits = loaded.model.forward(&next_tokens, &mut g.cache)?;
    Ok(true)
}

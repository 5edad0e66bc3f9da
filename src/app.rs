//! What both front ends (the workbench and the headless commands) need before and around a run:
//! configuration, templates and the engine (`setup`), the check that a preset can run at all
//! (`preflight`), the session store, and model discovery for the model picker and `moa models`.
//! Layers: `tui`, `cli` → `app` → `engine`/`session` → `provider`/`metrics` → `config`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::config::{Config, ConfigError, ProviderKind};
use crate::engine::Engine;
use crate::engine::preset::{self, Preset, catalogue};
use crate::engine::prompts::Templates;
use crate::metrics::embed::{EmbedError, MiniLm, MiniLmScorer};
use crate::provider::ProviderError;
use crate::provider::cache::{CallCache, Embedder};
use crate::provider::local::{EMBEDDED_MODEL, LocalProvider};
use crate::provider::registry::Registry;
use crate::session::store::Store;

/// An error for the user and the exit status that goes with it (CONTRACT.md: 1 no answer, 2 bad
/// usage or configuration).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct AppError {
    pub code: u8,
    pub message: String,
}

impl AppError {
    /// Bad usage or configuration: exit status 2.
    pub fn usage(message: impl Into<String>) -> Self {
        AppError {
            code: 2,
            message: message.into(),
        }
    }
    /// The run produced no answer (or could not go on): exit status 1.
    pub fn failed(message: impl Into<String>) -> Self {
        AppError {
            code: 1,
            message: message.into(),
        }
    }
}

impl From<ConfigError> for AppError {
    fn from(e: ConfigError) -> Self {
        AppError::usage(e.to_string())
    }
}

/// Configuration, templates and an engine, as every command needs them.
pub struct Setup {
    pub config: Arc<Config>,
    pub templates: Templates,
    /// Uncached (the workbench's): use `engine_for` or `engine_with_cache` for a command's runs.
    pub engine: Engine,
    /// The call cache `[cache]` describes, made on first use and shared by every engine of this
    /// process (`call_cache`).
    calls: OnceLock<Option<Arc<CallCache>>>,
}

impl Setup {
    /// The session store under the data folder.
    pub fn store(&self) -> Store {
        Store::new(self.config.folders.sessions_dir())
    }

    /// A preset by name or path, from the shipped ones and the user's.
    pub fn preset(&self, name: &str) -> Result<Preset, AppError> {
        Ok(preset::load(
            name,
            &self.config.folders.presets_dir(),
            &self.templates,
        )?)
    }

    /// The call cache as configured (`[cache]`): in Redis when `cache_url` is set, else on disk
    /// under the data folder; with semantic matching when `semantic_threshold` is set. One per
    /// process, whatever asks for it, so its counters (`CallCache::stats`) cover every run. None
    /// only when the store cannot be made at all (said once on stderr; the config's checks make
    /// that rare): runs then go uncached rather than fail.
    pub fn call_cache(&self) -> Option<Arc<CallCache>> {
        self.calls
            .get_or_init(|| {
                let c = &self.config.cache;
                let dir = self.config.folders.data_dir.join("cache").join("calls");
                let cache = match CallCache::from_settings(c, dir) {
                    Ok(cache) => cache,
                    Err(e) => {
                        crate::safe_eprintln!("moa: call cache: {e}; runs go on uncached");
                        return None;
                    }
                };
                Some(Arc::new(match c.semantic_threshold {
                    Some(t) => cache
                        .with_semantic(t, Arc::new(ConversationEmbedder::new(self.minilm_dir()))),
                    None => cache,
                }))
            })
            .clone()
    }

    /// Whether `preset`'s runs use the call cache: its own `cache = true|false`, else `[cache]
    /// enabled` (off by default).
    pub fn caches(&self, preset: &Preset) -> bool {
        preset.cache.unwrap_or(self.config.cache.enabled)
    }

    /// The engine for `preset`'s runs (`moa run`, `moa serve`): with the call cache when the
    /// preset or the config turns it on. Every engine made here shares its providers' limits with
    /// `self.engine`.
    pub fn engine_for(&self, preset: &Preset) -> Engine {
        self.engine_with_cache(self.caches(preset))
    }

    /// The engine with the configured call cache (`moa eval`, `moa tune`, which cache by
    /// default), or the plain one when `cache` is false (`--no-cache`).
    pub fn engine_with_cache(&self, cache: bool) -> Engine {
        match self.call_cache().filter(|_| cache) {
            None => self.engine.clone(),
            Some(calls) => Engine {
                registry: Arc::new(self.engine.registry.sharing_providers(Some(calls))),
                scorer: self.engine.scorer.clone(),
            },
        }
    }

    fn minilm_dir(&self) -> PathBuf {
        crate::fetch::MINILM[0]
            .path(&self.config.folders.models_dir)
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_default()
    }

    /// Every preset's name, shipped and the user's.
    pub fn preset_names(&self) -> Vec<String> {
        catalogue(&self.config.folders.presets_dir())
            .into_iter()
            .map(|e| e.name)
            .collect()
    }
}

pub fn setup(config_path: Option<&Path>) -> Result<Setup, AppError> {
    let config = Arc::new(Config::load(config_path)?);
    let templates = Templates::load(&config.folders.config_dir.join("prompts"));
    let registry = Arc::new(Registry::new(config.clone()));
    let mut s = Setup {
        config,
        templates,
        engine: Engine {
            registry,
            scorer: Arc::new(crate::metrics::agreement::TfIdf),
        },
        calls: OnceLock::new(),
    };
    // MiniLM when fetched (`moa pull`), else TF-IDF; the method is reported either way.
    s.engine.scorer = Arc::new(MiniLmScorer::new(s.minilm_dir()));
    Ok(s)
}

/// The call cache's semantic matching over MiniLM. Here rather than in `provider` or `metrics`:
/// those are siblings, so the cache takes the embedder as a trait object from this layer above
/// both. Loads the model on first use; a conversation longer than the model's window is not
/// embedded (it is matched exactly only: see `Embedder::embed`).
struct ConversationEmbedder {
    dir: PathBuf,
    model: OnceLock<Result<MiniLm, EmbedError>>,
    warned: std::sync::atomic::AtomicBool,
}

impl ConversationEmbedder {
    fn new(dir: PathBuf) -> Self {
        ConversationEmbedder {
            dir,
            model: OnceLock::new(),
            warned: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Embedder for ConversationEmbedder {
    fn embed(&self, text: &str) -> Option<Vec<f32>> {
        let model = match self.model.get_or_init(|| MiniLm::load(&self.dir)) {
            Ok(m) => m,
            Err(e) => {
                if !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    crate::safe_eprintln!(
                        "moa: call cache: semantic matching is off ({e}); run `moa pull` to fetch MiniLM. Exact matches still count."
                    );
                }
                return None;
            }
        };
        if !model.fits(text).ok()? {
            return None;
        }
        model.embed(&[text.to_string()]).ok()?.pop()
    }
}

/// Check before spending anything that every model resolves and every needed key is set.
pub fn preflight(config: &Config, preset: &Preset, baseline: bool) -> Result<(), AppError> {
    let mut problems = Vec::new();
    let mut missing_vars: Vec<String> = Vec::new();
    for model in preset.models(baseline) {
        match config.resolve(&model) {
            Err(e) => problems.push(e.to_string()),
            Ok((p, _)) => {
                if p.key_required && !p.key_available() {
                    let var = p.api_key_env.clone().unwrap_or_default();
                    if !missing_vars.contains(&var) {
                        missing_vars.push(var);
                    }
                }
                if p.kind == ProviderKind::Local
                    && let Some(name) = model.split_once('/').map(|(_, m)| m)
                    && name != EMBEDDED_MODEL
                    && let Err(e) = LocalProvider::new(p, &config.folders.models_dir).resolve(name)
                {
                    problems.push(format!("{model}: {e}"));
                }
            }
        }
    }
    for var in &missing_vars {
        problems.push(format!(
            "{var} is not set: export it, or pick another preset (moa presets list) or --config with other providers"
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        problems.dedup();
        Err(AppError::usage(format!(
            "preset {:?} cannot run:\n  {}",
            preset.name,
            problems.join("\n  ")
        )))
    }
}

/// Models named in config.toml (`[prices]`, `[models]`) or in a preset.
pub fn configured_models(s: &Setup) -> BTreeSet<String> {
    let mut configured: BTreeSet<String> = s.config.prices.keys().cloned().collect();
    configured.extend(s.config.models.keys().cloned());
    for e in catalogue(&s.config.folders.presets_dir()) {
        if let Ok(p) = preset::parse(Path::new(&e.name), &e.text, &s.templates) {
            configured.extend(p.models(true));
        }
    }
    configured
}

/// Providers worth asking for their models without being told to: configured by the user, or
/// built in with their key set (asking the others would only fail).
pub fn reachable_providers(s: &Setup) -> Vec<String> {
    s.config
        .providers
        .iter()
        .filter(|(name, p)| {
            p.kind != ProviderKind::Local
                && (s.config.user_providers.contains(name) || (p.key_required && p.key_available()))
                && (!p.key_required || p.key_available())
        })
        .map(|(n, _)| n.clone())
        .collect()
}

/// Why a provider's models could not be listed (`listed_models`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ListModelsError {
    /// The provider could not be set up for a call (the registry's message names what is wrong).
    #[error("{source}")]
    Setup {
        provider: String,
        #[source]
        source: ProviderError,
    },
    /// The provider answered with an error.
    #[error("{provider}: {source}")]
    Provider {
        provider: String,
        #[source]
        source: ProviderError,
    },
    #[error("{provider}: no answer within 15 s")]
    Timeout { provider: String },
}

impl ListModelsError {
    pub fn provider(&self) -> &str {
        match self {
            ListModelsError::Setup { provider, .. }
            | ListModelsError::Provider { provider, .. }
            | ListModelsError::Timeout { provider } => provider,
        }
    }
}

/// What a provider lists at /v1/models, as `PROVIDER/MODEL`, within 15 s.
pub async fn listed_models(
    engine: &Engine,
    provider: &str,
) -> Result<Vec<String>, ListModelsError> {
    let (handle, _) = engine
        .registry
        .get(&format!("{provider}/-"))
        .map_err(|source| ListModelsError::Setup {
            provider: provider.to_string(),
            source,
        })?;
    match tokio::time::timeout(Duration::from_secs(15), handle.provider.list_models()).await {
        Ok(Ok(models)) => Ok(models
            .into_iter()
            .map(|m| format!("{provider}/{}", m.id))
            .collect()),
        Ok(Err(source)) => Err(ListModelsError::Provider {
            provider: provider.to_string(),
            source,
        }),
        Err(_) => Err(ListModelsError::Timeout {
            provider: provider.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Folders;
    use crate::metrics::agreement::TfIdf;

    fn engine() -> Engine {
        let folders = Folders {
            config_dir: "/nonexistent/moa".into(),
            data_dir: "/nonexistent/moa".into(),
            models_dir: "/nonexistent/moa/models".into(),
        };
        // Port 9 (discard) is closed here: the connection is refused at once.
        let config = Config::from_toml(
            folders,
            Path::new("c.toml"),
            "[providers.closed]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n",
        )
        .unwrap();
        Engine {
            registry: Arc::new(Registry::new(Arc::new(config))),
            scorer: Arc::new(TfIdf),
        }
    }

    #[tokio::test]
    async fn a_provider_that_fails_is_named_with_its_error_as_the_source() {
        let e = listed_models(&engine(), "closed").await.unwrap_err();
        assert!(matches!(e, ListModelsError::Provider { .. }), "{e:?}");
        assert_eq!(e.provider(), "closed");
        let source = std::error::Error::source(&e).unwrap().to_string();
        assert_eq!(e.to_string(), format!("closed: {source}"));
    }

    #[tokio::test]
    async fn a_provider_that_cannot_be_set_up_says_why_as_before() {
        let e = listed_models(&engine(), "nosuch").await.unwrap_err();
        assert!(matches!(e, ListModelsError::Setup { .. }), "{e:?}");
        assert_eq!(e.provider(), "nosuch");
        assert!(
            e.to_string()
                .starts_with("unknown provider \"nosuch\" in \"nosuch/-\""),
            "{e}"
        );
    }

    #[test]
    fn a_silent_provider_is_named() {
        let e = ListModelsError::Timeout {
            provider: "groq".into(),
        };
        assert_eq!(e.to_string(), "groq: no answer within 15 s");
    }
}

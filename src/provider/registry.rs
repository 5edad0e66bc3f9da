//! Builds provider clients from the configuration, lazily: a run only pays for the providers it uses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::anthropic::AnthropicProvider;
use super::cache::CallCache;
use super::limits::ProviderLimits;
use super::local::LocalProvider;
use super::openai::OpenAiProvider;
use super::{Provider, ProviderError};
use crate::config::{Config, ProviderKind, ProviderSettings};

/// A provider ready to call, with the limits shared by all its calls.
#[derive(Clone)]
pub struct ProviderHandle {
    pub settings: ProviderSettings,
    pub provider: Arc<dyn Provider>,
    pub limits: Arc<ProviderLimits>,
}

pub struct Registry {
    config: Arc<Config>,
    /// Shared with the registries made by `sharing_providers`: one set of limits per provider.
    handles: Arc<Mutex<HashMap<String, ProviderHandle>>>,
    /// Context windows the providers reported at /v1/models, per provider (asked once each).
    listed_windows: Arc<Mutex<HashMap<String, HashMap<String, u64>>>>,
    /// Complete answers of earlier identical calls (`moa eval`, `moa tune`, and `moa run`/`moa
    /// serve` when the config or preset turns it on); None: every call goes to its provider.
    cache: Option<Arc<CallCache>>,
}

/// How long a run waits for a provider's model list before going on without it.
const LIST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

impl Registry {
    pub fn new(config: Arc<Config>) -> Self {
        Registry {
            config,
            handles: Arc::new(Mutex::new(HashMap::new())),
            listed_windows: Arc::new(Mutex::new(HashMap::new())),
            cache: None,
        }
    }

    /// A registry with the same providers (so the same concurrency and rate limits, shared by
    /// both) and `cache` instead of this one's: how one process runs cached and uncached presets
    /// side by side (`moa serve`) without doubling its providers' limits.
    pub fn sharing_providers(&self, cache: Option<Arc<CallCache>>) -> Registry {
        Registry {
            config: self.config.clone(),
            handles: self.handles.clone(),
            listed_windows: self.listed_windows.clone(),
            cache,
        }
    }

    /// Answer identical calls from `cache` (see `cache.rs` for what counts as identical).
    pub fn with_cache(mut self, cache: Arc<CallCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    pub fn cache(&self) -> Option<&CallCache> {
        self.cache.as_deref()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The provider for `PROVIDER/MODEL` and the model's own name.
    pub fn get(&self, model: &str) -> Result<(ProviderHandle, String), ProviderError> {
        let (settings, name) = self
            .config
            .resolve(model)
            .map_err(|e| ProviderError::Config(e.to_string()))?;
        let mut handles = self
            .handles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(h) = handles.get(&settings.name) {
            return Ok((h.clone(), name.to_string()));
        }
        let provider = self.build(settings)?;
        let h = ProviderHandle {
            settings: settings.clone(),
            provider,
            limits: Arc::new(ProviderLimits::new(
                settings.max_concurrency,
                settings.requests_per_minute,
            )),
        };
        handles.insert(settings.name.clone(), h.clone());
        Ok((h, name.to_string()))
    }

    /// A model's context window: from the config (`[models]`, then the built-in table), else as its
    /// provider reported it at /v1/models (see `learn_context_windows`).
    pub fn context_window(&self, model: &str) -> Option<u64> {
        if let Some(w) = self.config.context_window(model) {
            return Some(w);
        }
        let (settings, name) = self.config.resolve(model).ok()?;
        self.listed_windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&settings.name)?
            .get(name)
            .copied()
    }

    /// Ask the providers of `models` whose context window the config does not know for their model
    /// list, once per provider and process, waiting at most 3 s: vLLM, llama.cpp, Ollama, OpenRouter
    /// and others report each model's window there. A provider that does not answer is not asked
    /// again; its models are then sent unshortened, as before.
    pub async fn learn_context_windows(&self, models: &[&str]) {
        for m in models {
            if self.config.context_window(m).is_some() {
                continue;
            }
            let Ok((handle, _)) = self.get(m) else {
                continue;
            };
            let provider = handle.settings.name.clone();
            if self
                .listed_windows
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains_key(&provider)
            {
                continue;
            }
            let listed = tokio::time::timeout(LIST_TIMEOUT, handle.provider.list_models()).await;
            let windows: HashMap<String, u64> = match listed {
                Ok(Ok(list)) => list
                    .into_iter()
                    .filter_map(|l| Some((l.id, l.context_window?)))
                    .collect(),
                _ => HashMap::new(),
            };
            self.listed_windows
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(provider, windows);
        }
    }

    fn build(&self, s: &ProviderSettings) -> Result<Arc<dyn Provider>, ProviderError> {
        let client = || {
            reqwest::Client::builder()
                .connect_timeout(s.timeouts.connect)
                // A redirect is an error (see ProviderError::Redirect): followed, it would send the
                // key (custom headers survive a change of host) and, on 307/308, the prompt again.
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("moa-workbench/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| ProviderError::Config(format!("cannot build an HTTP client: {e}")))
        };
        Ok(match s.kind {
            ProviderKind::Openai => Arc::new(OpenAiProvider {
                name: s.name.clone(),
                base_url: s.base_url.clone(),
                key_var: s.api_key_env.clone(),
                client: client()?,
            }),
            ProviderKind::Anthropic => Arc::new(AnthropicProvider {
                name: s.name.clone(),
                base_url: s.base_url.clone(),
                key_var: s.api_key_env.clone(),
                client: client()?,
            }),
            ProviderKind::Local => Arc::new(LocalProvider::new(s, &self.config.folders.models_dir)),
        })
    }
}

//! Builds provider clients from the configuration, lazily: a run only pays for the providers it uses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::anthropic::AnthropicProvider;
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
    handles: Mutex<HashMap<String, ProviderHandle>>,
}

impl Registry {
    pub fn new(config: Arc<Config>) -> Self {
        Registry {
            config,
            handles: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The provider for `PROVIDER/MODEL` and the model's own name.
    pub fn get(&self, model: &str) -> Result<(ProviderHandle, String), ProviderError> {
        let (settings, name) = self.config.resolve(model).map_err(ProviderError::Config)?;
        let mut handles = self.handles.lock().expect("registry lock");
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

    fn build(&self, s: &ProviderSettings) -> Result<Arc<dyn Provider>, ProviderError> {
        let client = || {
            reqwest::Client::builder()
                .connect_timeout(s.timeouts.connect)
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

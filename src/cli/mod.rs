//! Headless front ends: `moa run`, `moa eval`, `moa sessions`, `moa presets`, `moa models`.

pub mod eval;
pub mod models;
pub mod presets;
pub mod run;
pub mod sessions;

use std::path::Path;
use std::sync::Arc;

use crate::config::{Config, ConfigError};
use crate::engine::Engine;
use crate::engine::prompts::Templates;
use crate::metrics::embed::MiniLmScorer;
use crate::provider::registry::Registry;

/// An error for the user and the exit status that goes with it.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl CliError {
    /// Bad usage or configuration: exit status 2.
    pub fn usage(message: impl Into<String>) -> Self {
        CliError {
            code: 2,
            message: message.into(),
        }
    }
    /// The run produced no answer: exit status 1.
    pub fn failed(message: impl Into<String>) -> Self {
        CliError {
            code: 1,
            message: message.into(),
        }
    }
}

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> Self {
        CliError::usage(e.to_string())
    }
}

/// `moa pull`: fetch every embedded model that is not there yet.
pub fn pull(config_path: Option<&Path>) -> Result<u8, CliError> {
    let config = Config::load(config_path)?;
    let dir = &config.folders.models_dir;
    crate::fetch::ensure(
        dir,
        &crate::fetch::all_assets(),
        &mut crate::fetch::terminal_progress(),
    )
    .map_err(|e| CliError::failed(e.to_string()))?;
    for a in crate::fetch::all_assets() {
        println!("{}  {}", a.path(dir).display(), a.title);
    }
    Ok(0)
}

/// Configuration, templates and an engine, as every command needs them.
pub struct Setup {
    pub config: Arc<Config>,
    pub templates: Templates,
    pub engine: Engine,
}

pub fn setup(config_path: Option<&Path>) -> Result<Setup, CliError> {
    let config = Arc::new(Config::load(config_path)?);
    let templates = Templates::load(&config.folders.config_dir.join("prompts"));
    let registry = Arc::new(Registry::new(config.clone()));
    let minilm_dir = crate::fetch::MINILM[0]
        .path(&config.folders.models_dir)
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    Ok(Setup {
        config,
        templates,
        engine: Engine {
            registry,
            // MiniLM when fetched (`moa pull`), else TF-IDF; the method is reported either way.
            scorer: Arc::new(MiniLmScorer::new(minilm_dir)),
        },
    })
}

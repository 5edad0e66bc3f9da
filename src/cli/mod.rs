//! Headless front ends: `moa run`, `moa eval`, `moa tune`, `moa sessions`, `moa presets`, `moa models`.

pub mod eval;
pub mod models;
pub mod presets;
pub mod run;
pub mod sessions;
pub mod tune;

use std::path::Path;

use crate::config::Config;

pub use crate::app::{AppError as CliError, Setup, setup};

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
        crate::safe_println!("{}  {}", a.path(dir).display(), a.title);
    }
    Ok(0)
}

//! Headless front ends: `moa run`, `moa eval`, `moa tune`, `moa sessions`, `moa presets`, `moa models`,
//! `moa serve`.

pub mod eval;
pub mod models;
pub mod presets;
pub mod run;
pub mod serve;
pub mod sessions;
pub mod tune;

use std::path::Path;

use crate::config::Config;

pub use crate::app::{AppError as CliError, Setup, setup};

/// `moa pull`: fetch every embedded model that is not there yet; `moa pull hf:…`: one GGUF file
/// from the Hugging Face hub.
pub fn pull(config_path: Option<&Path>, what: Option<&str>) -> Result<u8, CliError> {
    let config = Config::load(config_path)?;
    let dir = &config.folders.models_dir;
    if let Some(spec) = what {
        let f =
            crate::fetch::hub::HubFile::parse(spec).map_err(|e| CliError::usage(e.to_string()))?;
        let path = crate::fetch::hub::pull(&f, dir, &mut crate::fetch::terminal_progress())
            .map_err(|e| CliError::failed(e.to_string()))?;
        let name = f.local_name().trim_end_matches(".gguf");
        crate::safe_println!("{}", path.display());
        crate::safe_eprintln!("moa: use it as the model local/{name}");
        return Ok(0);
    }
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

/// What a batch command (`moa eval`, `moa tune`) runs on: a runtime, a progress bar over `n`
/// prompts, and a token that Ctrl-C cancels (what is done is kept; the same command goes on).
pub(crate) struct Batch {
    pub rt: tokio::runtime::Runtime,
    pub bar: indicatif::ProgressBar,
    pub cancel: tokio_util::sync::CancellationToken,
}

impl Batch {
    pub(crate) fn new(n: usize) -> Result<Batch, CliError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| CliError::failed(format!("cannot start the async runtime: {e}")))?;
        let bar = indicatif::ProgressBar::new(n as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {bar:30} {pos}/{len} prompts · {elapsed} elapsed · ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(250));
        let cancel = tokio_util::sync::CancellationToken::new();
        let c = cancel.clone();
        rt.spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                c.cancel();
            }
        });
        Ok(Batch { rt, bar, cancel })
    }

    /// The bar goes; runs that Ctrl-C cancelled are dropped without waiting for them.
    pub(crate) fn finish(self) -> tokio_util::sync::CancellationToken {
        self.bar.finish_and_clear();
        self.rt.shutdown_background();
        self.cancel
    }
}

/// The reports of a batch command: for the terminal, `report.md` and `report.html`.
pub(crate) struct Reports {
    pub text: String,
    pub markdown: String,
    pub html: String,
}

/// The end of a batch command: `summary.json`, `report.md` and `report.html` in the results folder,
/// the summary printed (JSON or the text report), and the exit status: 130 interrupted (the same
/// command goes on), 1 when some prompt has errors, else 0.
pub(crate) fn conclude<S: serde::Serialize>(
    summary: &S,
    out: &Path,
    reports: Reports,
    json: bool,
    cancelled: bool,
    (done, prompts, errors): (usize, usize, usize),
) -> Result<u8, CliError> {
    let body = serde_json::to_vec_pretty(summary).unwrap_or_default();
    let Reports {
        text,
        markdown,
        html,
    } = reports;
    for (name, bytes) in [
        ("summary.json", body),
        ("report.md", markdown.into_bytes()),
        ("report.html", html.into_bytes()),
    ] {
        crate::session::store::write_atomic(&out.join(name), &bytes).map_err(|e| {
            CliError::failed(format!("cannot write {}: {e}", out.join(name).display()))
        })?;
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(summary).unwrap_or_default()
        );
    } else {
        crate::safe_print!("{text}");
    }
    if cancelled {
        crate::safe_eprintln!(
            "moa: interrupted: {done} of {prompts} prompts done; run the same command again to go on"
        );
        return Ok(130);
    }
    Ok(if errors == 0 { 0 } else { 1 })
}

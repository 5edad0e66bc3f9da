//! `moa serve`: an OpenAI-compatible HTTP server that runs presets with the workbench's engine.
//! This module sets it up (presets as models, their preflight, the listener and its exposure
//! check) and shuts it down (SIGTERM/SIGINT: stop accepting, let requests in flight finish within
//! the drain timeout). One `Engine` (one provider registry) serves every request, so the
//! providers' `max_concurrency` and `requests_per_minute` hold for the whole process.
//! Layers: `cli::serve` → `serve` → `app` → `engine`/`session`.

pub mod auth;
pub mod metrics;
pub mod routes;
pub mod run;
pub mod stream;
pub mod wire;

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Semaphore;

use crate::app::{AppError, Setup, preflight, setup};
use crate::config::{Config, ProviderKind};
use crate::engine::preset::Preset;
use crate::provider::local::EMBEDDED_MODEL;
use routes::{AppState, Served};

#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Address to listen on; `[serve] listen` from config.toml, else 127.0.0.1:8080.
    pub listen: Option<String>,
    /// Only these presets (else every shipped and user preset).
    pub presets: Vec<String>,
    pub record: bool,
    pub insecure: bool,
}

/// Why a preset cannot run here, or None: its models resolve, its keys are set, its model
/// files are there. Served presets never run their baseline.
fn problem(config: &Config, preset: &Preset) -> Option<String> {
    if let Err(e) = preflight(config, preset, false) {
        let text = e.message;
        // preflight's first line names the preset; the model list says that already.
        let detail = text.split_once('\n').map_or(text.as_str(), |(_, d)| d);
        return Some(detail.lines().map(str::trim).collect::<Vec<_>>().join("; "));
    }
    let embedded = preset.models(false).iter().any(|m| {
        config.resolve(m).is_ok_and(|(p, name)| {
            p.kind == ProviderKind::Local && p.model_path.is_none() && name == EMBEDDED_MODEL
        })
    });
    let dir = &config.folders.models_dir;
    if embedded && !crate::fetch::missing(dir, &crate::fetch::all_assets()).is_empty() {
        return Some(format!(
            "the embedded model is not in {} yet: run `moa pull` once, then restart moa serve",
            dir.display()
        ));
    }
    None
}

/// The presets to serve, by model id, each with its problem if it cannot run.
fn served_presets(s: &Setup, names: &[String]) -> Result<BTreeMap<String, Served>, AppError> {
    let explicit = !names.is_empty();
    let names: Vec<String> = if explicit {
        names.to_vec()
    } else {
        s.preset_names()
    };
    let mut out = BTreeMap::new();
    for name in &names {
        let preset = match s.preset(name) {
            Ok(p) => p,
            // A preset asked for by name must load; a broken one in the folder only is skipped.
            Err(e) if explicit => return Err(e),
            Err(e) => {
                crate::safe_eprintln!("moa serve: not serving preset {name:?}: {e}");
                continue;
            }
        };
        let problem = problem(&s.config, &preset);
        let id = format!("moa/{}", preset.name);
        if let Some(p) = &problem {
            crate::safe_eprintln!("moa serve: {id} is unavailable (503 on use): {p}");
        }
        // The call cache where the preset or the config turns it on (`cache = true`, `[cache]
        // enabled`); every engine shares the providers' limits.
        let engine = s.engine_for(&preset);
        out.insert(
            id,
            Served {
                preset: Arc::new(preset),
                problem,
                engine,
            },
        );
    }
    if out.is_empty() {
        return Err(AppError::usage("no preset to serve"));
    }
    Ok(out)
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Runs the server until SIGTERM/SIGINT; exit status 0 after the drain.
pub fn main(config_path: Option<&Path>, opts: ServeOptions) -> Result<u8, AppError> {
    let s = setup(config_path)?;
    let settings = s.config.serve.clone();
    let listen = opts
        .listen
        .clone()
        .unwrap_or_else(|| settings.listen.clone());
    let addr: SocketAddr = listen.parse().map_err(|e| {
        AppError::usage(format!(
            "--listen {listen:?} is not an address ({e}); write IP:PORT, e.g. 127.0.0.1:8080"
        ))
    })?;
    let keys = auth::Keys::from_env();
    auth::check_exposure(addr, &keys, opts.insecure).map_err(AppError::usage)?;
    let presets = served_presets(&s, &opts.presets)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| AppError::failed(format!("cannot start the async runtime: {e}")))?;
    let state = Arc::new(AppState {
        presets,
        keys,
        metrics: Arc::new(metrics::Metrics::new()),
        limit: Arc::new(Semaphore::new(settings.max_concurrent_requests)),
        settings: settings.clone(),
        store: opts.record.then(|| s.store()),
        draining: AtomicBool::new(false),
    });
    let code = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            AppError::usage(format!(
                "cannot listen on {addr}: {e} (another server on that port? pick one with --listen)"
            ))
        })?;
        let bound = listener.local_addr().unwrap_or(addr);
        let ready = state
            .presets
            .iter()
            .filter(|(_, p)| p.problem.is_none())
            .map(|(id, _)| id.as_str())
            .collect::<Vec<_>>();
        crate::safe_eprintln!(
            "moa serve: listening on http://{bound} ({} of {} presets ready: {}){}{}",
            ready.len(),
            state.presets.len(),
            ready.join(", "),
            if state.keys.required() {
                ", bearer key required"
            } else {
                ""
            },
            if opts.record {
                ", recording sessions"
            } else {
                ""
            }
        );
        let stop = tokio_util::sync::CancellationToken::new();
        let app = routes::router(state.clone());
        let server = axum::serve(listener, app)
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future();
        let mut server = tokio::spawn(server);
        tokio::select! {
            _ = shutdown_signal() => {}
            r = &mut server => {
                return Err(AppError::failed(format!("the server stopped: {}", match r {
                    Ok(Ok(())) => "no reason given".to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                })));
            }
        }
        state.draining.store(true, Ordering::Relaxed);
        stop.cancel();
        let in_flight = state.metrics.in_flight().get();
        crate::safe_eprintln!(
            "moa serve: stopping: no new connections; {in_flight} request(s) in flight get up to {:.0} s to finish",
            settings.drain_timeout.as_secs_f64()
        );
        match tokio::time::timeout(settings.drain_timeout, &mut server).await {
            Ok(_) => crate::safe_eprintln!("moa serve: every request finished; stopped"),
            Err(_) => {
                server.abort();
                crate::safe_eprintln!(
                    "moa serve: the drain timeout passed with {} request(s) still running; they were cancelled",
                    state.metrics.in_flight().get()
                );
            }
        }
        Ok::<u8, AppError>(0)
    })?;
    // Cancelled runs and recorders' last writes get a moment to end.
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    Ok(code)
}

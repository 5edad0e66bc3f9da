//! `moa models [PROVIDER]`: what is configured, and what each provider serves.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use super::{CliError, Setup, setup};
use crate::config::ProviderKind;
use crate::engine::preset::{self, catalogue};

/// Models named in config.toml (`[prices]`, `[models]`) or in a preset.
pub fn configured(s: &Setup) -> BTreeSet<String> {
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

/// What a provider lists at /v1/models, as `PROVIDER/MODEL`, within 15 s.
pub async fn listed(engine: &crate::engine::Engine, provider: &str) -> Result<Vec<String>, String> {
    let (handle, _) = engine
        .registry
        .get(&format!("{provider}/-"))
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(15), handle.provider.list_models()).await {
        Ok(Ok(models)) => Ok(models
            .into_iter()
            .map(|m| format!("{provider}/{}", m.id))
            .collect()),
        Ok(Err(e)) => Err(format!("{provider}: {e}")),
        Err(_) => Err(format!("{provider}: no answer within 15 s")),
    }
}

pub fn main(config: Option<&Path>, only: Option<String>) -> Result<u8, CliError> {
    let s = setup(config)?;
    if let Some(p) = &only
        && !s.config.providers.contains_key(p)
    {
        return Err(CliError::usage(format!(
            "unknown provider {p:?}; known: {}",
            s.config
                .providers
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let configured = configured(&s);
    let wanted = |prov: &str| only.as_deref().is_none_or(|o| o == prov);
    println!("configured:");
    for m in configured
        .iter()
        .filter(|m| wanted(m.split('/').next().unwrap_or("")))
    {
        let ctx = s
            .config
            .context_window(m)
            .map(|c| format!("  context {c}"))
            .unwrap_or_default();
        println!("  {m}{ctx}");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failed(format!("cannot start the async runtime: {e}")))?;
    let mut status = 0;
    for (name, p) in &s.config.providers {
        if !wanted(name) || p.kind == ProviderKind::Local {
            continue;
        }
        // Without a provider named, ask only those the user can reach: configured or keyed.
        let asked_for = only.is_some() || s.config.user_providers.contains(name);
        let keyed = p.key_required && p.key_available();
        if !(asked_for || keyed) {
            continue;
        }
        if p.key_required && !p.key_available() {
            eprintln!(
                "{name}: {} is not set: export it to list this provider's models",
                p.api_key_env.as_deref().unwrap_or("its key variable")
            );
            status = 1;
            continue;
        }
        let (handle, _) = s
            .engine
            .registry
            .get(&format!("{name}/-"))
            .map_err(|e| CliError::usage(e.to_string()))?;
        let listed = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(15), handle.provider.list_models()).await
        });
        match listed {
            Ok(Ok(models)) => {
                println!("{name} ({}):", p.base_url);
                for m in models {
                    let ctx = m
                        .context_window
                        .map(|c| format!("  context {c}"))
                        .unwrap_or_default();
                    println!("  {name}/{}{ctx}", m.id);
                }
            }
            Ok(Err(e)) => {
                eprintln!("{name}: {e}");
                status = 1;
            }
            Err(_) => {
                eprintln!("{name}: no answer from {} within 15 s", p.base_url);
                status = 1;
            }
        }
    }
    Ok(status)
}

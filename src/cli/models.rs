//! `moa models [PROVIDER]`: what is configured, and what each provider serves.

use std::path::Path;
use std::time::Duration;

use super::{CliError, setup};
use crate::config::ProviderKind;

pub use crate::app::{
    configured_models as configured, listed_models as listed, reachable_providers,
};

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
    crate::safe_println!("configured:");
    for m in configured
        .iter()
        .filter(|m| wanted(m.split('/').next().unwrap_or("")))
    {
        let ctx = s
            .config
            .context_window(m)
            .map(|c| format!("  context {c}"))
            .unwrap_or_default();
        crate::safe_println!("  {m}{ctx}");
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
            crate::safe_eprintln!(
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
                crate::safe_println!("{name} ({}):", p.base_url);
                for m in models {
                    let ctx = m
                        .context_window
                        .map(|c| format!("  context {c}"))
                        .unwrap_or_default();
                    crate::safe_println!("  {name}/{}{ctx}", m.id);
                }
            }
            Ok(Err(e)) => {
                crate::safe_eprintln!("{name}: {e}");
                status = 1;
            }
            Err(_) => {
                crate::safe_eprintln!("{name}: no answer from {} within 15 s", p.base_url);
                status = 1;
            }
        }
    }
    Ok(status)
}

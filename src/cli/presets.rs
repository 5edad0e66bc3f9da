//! `moa presets list|show`.

use std::path::Path;

use super::{CliError, setup};
use crate::engine::preset::{self, Step, catalogue};

pub fn list(config: Option<&Path>) -> Result<u8, CliError> {
    let s = setup(config)?;
    let dir = s.config.folders.presets_dir();
    for e in catalogue(&dir) {
        let path = e
            .path
            .clone()
            .unwrap_or_else(|| format!("{}.toml", e.name).into());
        match preset::parse(&path, &e.text, &s.templates) {
            Ok(p) => {
                let ops: Vec<&str> = p.steps.iter().map(Step::op).collect();
                crate::safe_println!(
                    "{:<16} {:<9} {}",
                    p.name,
                    short_origin(&e.origin),
                    p.description
                );
                crate::safe_println!("{:<16} {:<9} steps: {}", "", "", ops.join(" → "));
            }
            Err(err) => crate::safe_println!(
                "{:<16} {:<9} BROKEN: {err}",
                e.name,
                short_origin(&e.origin)
            ),
        }
    }
    Ok(0)
}

fn short_origin(o: &str) -> &str {
    if o == "builtin" { "shipped" } else { "yours" }
}

pub fn show(config: Option<&Path>, name: &str) -> Result<u8, CliError> {
    let s = setup(config)?;
    let p = preset::load(name, &s.config.folders.presets_dir(), &s.templates)?;
    crate::safe_println!("# {} ({})", p.name, p.origin);
    crate::safe_println!("# models: {}", p.models(true).join(", "));
    crate::safe_print!("{}", p.text);
    if !p.text.ends_with('\n') {
        crate::safe_println!();
    }
    Ok(0)
}

//! `config.toml` (`Config::from_toml`) and preset (`engine::preset::parse`) parsing on arbitrary text.
//! Errors are expected; panics are bugs. Error messages are formatted too: they compute the line and
//! column of a byte offset, which must hold on any text (multi-byte characters, CRLF, the end).
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use moa_workbench::config::{self, Config, Folders};
use moa_workbench::engine::preset;
use moa_workbench::engine::prompts::Templates;

static TEMPLATES: LazyLock<Templates> = LazyLock::new(Templates::builtin);

fn folders() -> Folders {
    // Built by hand rather than with `Folders::from_env()`: no environment or platform lookups per
    // input, and the same result on every machine.
    Folders {
        config_dir: PathBuf::from("/nonexistent/moa-fuzz"),
        data_dir: PathBuf::from("/nonexistent/moa-fuzz"),
        models_dir: PathBuf::from("/nonexistent/moa-fuzz/models"),
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();

    match Config::from_toml(folders(), Path::new("config.toml"), text) {
        Ok(c) => {
            for name in c.user_providers.iter() {
                let _ = c.resolve(&format!("{name}/m"));
            }
            let _ = c.resolve(&c.default_preset);
            let _ = c.context_window("local/smollm2-135m");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }

    match preset::parse(Path::new("fuzz.toml"), text, &TEMPLATES) {
        Ok(p) => {
            let _ = p.models(true);
            for s in &p.steps {
                let _ = (s.op(), s.models());
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }

    // Offsets anywhere, including inside multi-byte characters and past the end.
    if let Some(&b) = data.first() {
        let _ = config::line_col(text, usize::from(b) * text.len() / 255);
        let _ = config::line_col(text, text.len() + usize::from(b));
    }
});

//! Eval prompt files (`session::eval::parse_prompts`): any text, hand-edited JSONL in every format
//! the loader reads (prompt, AlpacaEval's instruction/input, MT-Bench's turns, references), gives
//! items and warnings or an error, never a panic; every warning can be formatted.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use moa_workbench::session::eval;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match eval::parse_prompts(Path::new("/nonexistent/prompts.jsonl"), &text) {
        Ok((items, warnings)) => {
            let _ = warnings.join("\n");
            let _ = items.len();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});

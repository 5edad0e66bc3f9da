//! Session files (`session::store::parse`): any bytes, damaged ones included, give a session or an
//! error, never a panic. A session that parses is exported (Markdown and JSON), and the exported JSON
//! must read back.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use moa_workbench::session::{export, store};

fuzz_target!(|data: &[u8]| {
    let path = Path::new("/nonexistent/sessions/fuzz.json");
    match store::parse(path, data) {
        Ok(session) => {
            let _ = export::markdown(&session);
            let json = export::json(&session);
            if let Err(e) = store::parse(path, json.as_bytes()) {
                panic!("a session's own JSON export does not read back: {e}");
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});

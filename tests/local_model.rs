//! The embedded model for real: tokenizer ids against llama.cpp's, generation, sampling, streaming.
//! Needs the fetched model (`moa pull`; CI fetches it). Outside CI a missing model skips these tests
//! with a message; in CI (CI=true) it fails them.

use std::path::PathBuf;

use moa_workbench::config::Folders;
use moa_workbench::fetch;
use moa_workbench::provider::local::Loaded;

pub fn model_path() -> Option<PathBuf> {
    let p = fetch::SMOLLM2.path(&Folders::from_env().models_dir);
    if p.exists() {
        return Some(p);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{} is missing: CI must run `moa pull` first", p.display());
    }
    eprintln!("skipping: {} is missing (run `moa pull`)", p.display());
    None
}

#[test]
fn tokenizer_matches_llama_cpp_on_the_shared_vectors() {
    let Some(path) = model_path() else { return };
    let loaded = Loaded::load(&path).unwrap();
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/testdata/smollm2-tokenizer-vectors.json"),
    )
    .expect("../shared/testdata beside the repository");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 6);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            loaded.tokenizer.encode(text).unwrap(),
            want,
            "ids of {text:?}"
        );
    }
}

#[test]
fn chat_template_comes_from_the_file() {
    let Some(path) = model_path() else { return };
    let loaded = Loaded::load(&path).unwrap();
    let ids = loaded
        .prompt_ids(&[moa_workbench::provider::Message::user(
            "What is the capital of France? Answer in one sentence.",
        )])
        .unwrap();
    // The shared vectors' last case is exactly this rendered prompt.
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/testdata/smollm2-tokenizer-vectors.json"),
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let case = v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["text"]
                .as_str()
                .unwrap()
                .starts_with("<|im_start|>system")
        })
        .unwrap();
    let want: Vec<u32> = case["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(ids, want);
}

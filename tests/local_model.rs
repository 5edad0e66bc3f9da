//! The embedded model for real: tokenizer ids against llama.cpp's, generation, sampling, streaming.
//! Needs the fetched model (`moa pull`; CI fetches it). Outside CI a missing model skips these tests
//! with a message; in CI (CI=true) it fails them.

// Test code may unwrap: a panic there is the failure report.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;

use moa_workbench::config::Folders;
use moa_workbench::fetch;
use moa_workbench::provider::local::Loaded;

fn model_path() -> Option<PathBuf> {
    support::fetched(fetch::SMOLLM2.path(&Folders::from_env().models_dir))
}

#[test]
fn tokenizer_matches_llama_cpp_on_the_shared_vectors() {
    let Some(path) = model_path() else { return };
    let loaded = Loaded::load(&path).unwrap();
    let v = support::shared_testdata("smollm2-tokenizer-vectors.json");
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
    let v = support::shared_testdata("smollm2-tokenizer-vectors.json");
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

/// The default experience, end to end: no config, no key; `moa run` on the embedded model with
/// the local-self-moa preset answers a factual question.
#[test]
fn the_default_preset_answers_a_factual_question() {
    let Some(path) = model_path() else { return };
    let models = path.parent().unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_moa"))
        .args([
            "run",
            "--json",
            "--no-save",
            "What is the capital of France? Answer in one sentence.",
        ])
        .env("MOA_HOME", home.path())
        .env("MOA_MODELS_DIR", models)
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let rec: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rec["preset"], "local-self-moa");
    assert_eq!(rec["steps"][0]["calls"].as_array().unwrap().len(), 3);
    assert_eq!(rec["steps"][0]["agreement_method"], "minilm");
    let answer = rec["final"]["text"].as_str().unwrap();
    assert!(answer.contains("Paris"), "final answer: {answer}");
    assert_eq!(rec["final"]["source"], "aggregate");
    assert!(
        rec["baseline"]["text"].as_str().unwrap().contains("Paris"),
        "baseline at temperature 0"
    );
    assert_eq!(rec["baseline"]["temperature"], 0.0);
}

/// `moa eval` on the embedded model, as the README suggests trying it: the shipped prompt set's
/// first prompts, the local model as judge. (The judge's paths are tested in depth against the
/// scripted server; this is the real thing, kept short: the 135M model writes slowly in CI.)
#[test]
fn eval_and_judge_run_on_the_embedded_model() {
    let Some(path) = model_path() else { return };
    let models = path.parent().unwrap();
    let home = tempfile::tempdir().unwrap();
    let moa = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_moa"))
            .args(args)
            .env("MOA_HOME", home.path())
            .env("MOA_MODELS_DIR", models)
            .output()
            .unwrap()
    };
    let prompts = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/eval/starter.jsonl");
    let out = moa(&[
        "eval",
        "--preset",
        "local-self-moa",
        "--prompts",
        prompts,
        "--limit",
        "2",
        "--concurrency",
        "2",
        "--judge",
        "local/smollm2-135m",
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let sum: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sum["done"], 2);
    assert_eq!(sum["baseline_model"], "local/smollm2-135m");
    // Every pair was put to the judge in both orders; a 135M model may not give a verdict.
    let j = &sum["judge"];
    let decided = ["wins", "ties", "losses", "errors"]
        .iter()
        .map(|k| j[k].as_u64().unwrap())
        .sum::<u64>();
    assert_eq!(decided, 2, "{j}");
    assert_eq!(
        sum["accuracy"]["n"], 2,
        "the first two prompts have references"
    );
    assert_eq!(sum["agreement"][0]["method"], "minilm");
    let out_dir = sum["out"].as_str().unwrap();
    assert!(std::path::Path::new(out_dir).join("report.md").exists());
}

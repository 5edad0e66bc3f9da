//! `moa tune` through the binary against the scripted server: proposers frozen once per prompt
//! whatever the number of variants, each variant and each leave-one-out aggregation once, judges
//! twice per pair; a second run sends nothing; a new variant runs only what is new; bad files are
//! reported with their line.
// Test code: a panic is the failure report (the scripted server's support module is shared).
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Output;

use serde_json::Value;
use support::{Reply, Server};

const KEY: &str = "sk-tune-test-key";

async fn moa(home: &Path, args: &[&str]) -> Output {
    support::moa(home, args, None, KEY).await
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const PRESET: &str = r#"name = "mini"
[[step]]
op = "propose"
agents = [{ model = "fake/p1", temperature = 0.7 }, { model = "fake/p2" }]
[[step]]
op = "aggregate"
model = "fake/agg"
temperature = 0.3
[baseline]
model = "fake/base"
"#;

const PROMPTS: &str = r#"{"prompt": "Which model aggregates?", "reference": "agg2"}
{"prompt": "Say anything"}
{"turns": ["First turn", "Second turn"]}
"#;

const VARIANTS: &str = r#"[[variant]]
name = "paper"

[[variant]]
name = "terse"
prompt = "terse"

[[variant]]
name = "other"
model = "fake/agg2"
temperature = 0.0
"#;

fn home_with(s: &Server) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("config.toml"), s.config("")).unwrap();
    std::fs::create_dir_all(home.path().join("presets")).unwrap();
    std::fs::write(home.path().join("presets/mini.toml"), PRESET).unwrap();
    std::fs::write(home.path().join("prompts.jsonl"), PROMPTS).unwrap();
    std::fs::write(home.path().join("variants.toml"), VARIANTS).unwrap();
    home
}

fn system_of(r: &support::Logged) -> String {
    r.body["messages"][0]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn variants_aggregate_frozen_answers_and_are_judged_in_both_orders() {
    let s = Server::start().await;
    // A judge with position bias: every pair is a tie, and inconsistent.
    s.script(
        "judge",
        vec![Reply::text(&["Assistant A is better. ", "[[A]]"], 2, 2)],
    );
    let home = home_with(&s);
    let h = home.path();
    let out_dir = h.join("tuned");
    let (prompts, variants) = (h.join("prompts.jsonl"), h.join("variants.toml"));
    let args = [
        "tune",
        "--preset",
        "mini",
        "--prompts",
        prompts.to_str().unwrap(),
        "--variants",
        variants.to_str().unwrap(),
        "--judge",
        "fake/judge",
        "--leave-one-out",
        "--concurrency",
        "2",
        "--out",
        out_dir.to_str().unwrap(),
    ];
    let out = moa(h, &[&args[..], &["--json"]].concat()).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // Proposers: once per prompt (the multi-turn prompt's first turn runs the whole preset once
    // more, to answer it), whatever the number of variants. The baseline never runs.
    assert_eq!(s.requests_for("p1").len(), 4);
    assert_eq!(s.requests_for("p2").len(), 4);
    assert_eq!(s.requests_for("base").len(), 0);
    // Aggregations: paper and terse on agg, other on agg2; each once per prompt, plus once per
    // proposer left out (2) per prompt. The multi-turn prompt's first turn adds one agg call.
    assert_eq!(s.requests_for("agg").len(), 2 * 3 + 2 * 2 * 3 + 1);
    assert_eq!(s.requests_for("agg2").len(), 3 + 2 * 3);
    // Judges: (terse, paper) and (other, paper) per prompt, plus each variant against itself
    // without each proposer, every pair in both orders.
    assert_eq!(s.requests_for("judge").len(), (2 * 3 + 3 * 2 * 3) * 2);

    // Every variant aggregated the same frozen answers, with its own prompt.
    let aggs = s.requests_for("agg");
    let terse = assets_prompt("terse");
    let words = terse.split(". ").nth(1).unwrap();
    assert!(words.starts_with("Write the single best answer"), "{words}");
    assert_eq!(
        aggs.iter().filter(|r| system_of(r).contains(words)).count(),
        3 + 2 * 3,
        "terse: once per prompt and once per proposer left out"
    );
    for r in aggs.iter().chain(s.requests_for("agg2").iter()) {
        let sys = system_of(r);
        let has1 = sys.contains("Answer from p1.");
        let has2 = sys.contains("Answer from p2.");
        assert!(has1 || has2, "{sys}");
    }
    // Leave-one-out aggregations saw exactly one of the two answers.
    let alone = s
        .requests_for("agg2")
        .iter()
        .filter(|r| {
            let sys = system_of(r);
            sys.contains("Answer from p1.") != sys.contains("Answer from p2.")
        })
        .count();
    assert_eq!(alone, 2 * 3);
    // Temperature comes from the variant, else from the preset's aggregation.
    assert!(
        s.requests_for("agg2")
            .iter()
            .all(|r| r.body["temperature"] == 0.0)
    );

    let sum: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sum["schema"], "moa.tune/1");
    assert_eq!(sum["prompts"], 3);
    assert_eq!(sum["done"], 3);
    assert_eq!(sum["errors"], 0);
    assert_eq!(sum["skipped_done"], 0);
    let v = sum["variants"].as_array().unwrap();
    assert_eq!(v.len(), 3);
    assert!(v[0]["judged"].is_null(), "the anchor is not judged");
    for x in &v[1..] {
        let j = &x["judged"];
        assert_eq!((j["wins"].as_u64(), j["ties"].as_u64()), (Some(0), Some(3)));
        assert_eq!(j["losses"], 0);
        assert_eq!(j["inconsistent"], 3);
        assert_eq!(j["win_rate"], 0.5);
        assert_eq!(j["ci95"][0], 0.5);
        assert!(x["avg_length"].as_f64().unwrap() > 0.0);
        assert!(x["latency_ms"]["p50"].as_u64().is_some());
    }
    // Exact match on the one prompt with a reference: only agg2 says "agg2".
    assert_eq!(v[0]["accuracy"], 0.0);
    assert_eq!(v[2]["accuracy"], 1.0);
    assert_eq!(sum["ranking"].as_array().unwrap().len(), 3);
    let loo = sum["leave_one_out"].as_array().unwrap();
    assert_eq!(loo.len(), 3 * 2);
    for e in loo {
        assert_eq!(e["ties"], 3, "{e}");
        assert_eq!(e["win_rate"], 0.5);
    }
    assert_eq!(loo[0]["model"], "fake/p1");
    assert_eq!(loo[1]["slot"], 1);
    for f in [
        "meta.json",
        "frozen.jsonl",
        "results.jsonl",
        "summary.json",
        "report.md",
    ] {
        assert!(out_dir.join(f).exists(), "{f}");
    }
    let md = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(
        md.contains("| terse | prompt terse, fake/agg t=0.3 | 0.500 |"),
        "{md}"
    );
    assert!(md.contains("## Leave-one-out"), "{md}");

    // The same command again: nothing is sent, the report is the same.
    let before = s.log().len();
    let again = moa(h, &args).await;
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert_eq!(s.log().len(), before, "a finished tuning sent requests");
    let report = text(&again.stdout);
    assert!(
        report.contains("3 done, 0 errors (3 needed no request)"),
        "{report}"
    );
    assert!(report.contains("Ranking (Bradley–Terry"), "{report}");
    assert!(report.contains("Leave-one-out"), "{report}");
    assert!(!report.contains(KEY));

    // A variant added later: only its aggregations and its judgements run.
    std::fs::write(
        h.join("variants.toml"),
        format!("{VARIANTS}\n[[variant]]\nname = \"fresh\"\nmodel = \"fake/agg3\"\n"),
    )
    .unwrap();
    let judge_before = s.requests_for("judge").len();
    let (p1, agg) = (s.requests_for("p1").len(), s.requests_for("agg").len());
    let more = moa(h, &[&args[..], &["--json"]].concat()).await;
    assert_eq!(more.status.code(), Some(0), "{}", text(&more.stderr));
    assert_eq!(s.requests_for("p1").len(), p1);
    assert_eq!(s.requests_for("agg").len(), agg);
    assert_eq!(s.requests_for("agg3").len(), 3 + 2 * 3);
    assert_eq!(
        s.requests_for("judge").len() - judge_before,
        (3 + 2 * 3) * 2
    );
    let sum: Value = serde_json::from_slice(&more.stdout).unwrap();
    assert_eq!(sum["variants"].as_array().unwrap().len(), 4);
    assert_eq!(sum["variants"][3]["judged"]["ties"], 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn round_robin_judges_every_pair_and_the_variants_file_is_checked() {
    let s = Server::start().await;
    s.script("judge", vec![Reply::text(&["Equal. [[C]]"], 2, 2)]);
    let home = home_with(&s);
    let h = home.path();
    let out_dir = h.join("rr");
    let prompts = h.join("prompts.jsonl");
    let variants = h.join("variants.toml");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "tune",
            "--preset",
            "mini",
            "--prompts",
            prompts.to_str().unwrap(),
            "--variants",
            variants.to_str().unwrap(),
            "--judge",
            "fake/judge",
            "--out",
            out_dir.to_str().unwrap(),
            "--limit",
            "2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |a: Vec<String>| async move {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        moa(h, &a).await
    };
    let out = run(args(&["--against", "round-robin", "--json"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Three pairs, two prompts, both orders.
    assert_eq!(s.requests_for("judge").len(), 3 * 2 * 2);
    let sum: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sum["against"], "round-robin");
    for v in sum["variants"].as_array().unwrap() {
        // Each variant met two others on two prompts: four consistent ties.
        assert_eq!(v["judged"]["ties"], 4, "{v}");
        assert_eq!(v["judged"]["inconsistent"], 0);
    }
    for r in sum["ranking"].as_array().unwrap() {
        assert_eq!(r["score"], 0.0, "{r}");
    }

    // An unknown --against names the variants.
    let out = run(args(&["--against", "nobody"])).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("paper, terse, other"),
        "{}",
        text(&out.stderr)
    );

    // A damaged variants file: its line, and nothing sent.
    let before = s.log().len();
    std::fs::write(
        &variants,
        "[[variant]]\nname = \"a\"\n\n[[variant]]\nname = \"a\"\n",
    )
    .unwrap();
    let out = run(args(&[])).await;
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("variants.toml:5:"), "{err}");
    assert!(err.contains("named twice"), "{err}");
    std::fs::write(&variants, "[[variant]]\nname = \"a\"\ncolour = 1\n").unwrap();
    let out = run(args(&[])).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("variants.toml:3:"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(s.log().len(), before);

    // A preset that does not end with an aggregation cannot be tuned.
    std::fs::write(
        h.join("presets/flat.toml"),
        "name = \"flat\"\n[[step]]\nop = \"propose\"\nagents = [{ model = \"fake/p1\" }]\n",
    )
    .unwrap();
    std::fs::write(&variants, VARIANTS).unwrap();
    let mut a = args(&[]);
    a[2] = "flat".into();
    let out = run(a).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("does not end with an aggregate step"),
        "{}",
        text(&out.stderr)
    );
}

fn assets_prompt(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("assets/prompts")
            .join(format!("{name}.md")),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn identical_calls_are_answered_from_the_call_cache_across_commands() {
    let s = Server::start().await;
    s.script("judge", vec![Reply::text(&["Equal. [[C]]"], 2, 2)]);
    // A reply cut before its end is failed, and must not be cached: agg2's first answer is cut.
    s.script(
        "agg2",
        vec![
            Reply::raw(vec![support::Piece::Bytes(
                2,
                support::sse_chunk("half an answer").into_bytes(),
            )]),
            Reply::text(&["Answer ", "from ", "agg2."], 2, 2),
        ],
    );
    let home = home_with(&s);
    let h = home.path();
    let (prompts, variants) = (h.join("prompts.jsonl"), h.join("variants.toml"));
    let tune = |out: &str, extra: &[&str]| {
        let mut a: Vec<String> = [
            "tune",
            "--preset",
            "mini",
            "--prompts",
            prompts.to_str().unwrap(),
            "--variants",
            variants.to_str().unwrap(),
            "--judge",
            "fake/judge",
            "--json",
            "--concurrency",
            "1",
            "--out",
            h.join(out).to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        async move {
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            moa(h, &a).await
        }
    };
    let first = tune("a", &[]).await;
    // One prompt's "other" variant failed (the cut reply): exit 1, and it is not cached.
    assert_eq!(first.status.code(), Some(1), "{}", text(&first.stderr));
    let sent = s.log().len();
    let sum: Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(sum["cache"]["hits"], 0);
    assert_eq!(sum["cache"]["misses"].as_u64().unwrap() as usize, sent);

    // Another folder, the same calls: only the one that failed is sent again.
    let agg2 = s.requests_for("agg2").len();
    let second = tune("b", &[]).await;
    assert_eq!(second.status.code(), Some(0), "{}", text(&second.stderr));
    assert_eq!(s.requests_for("agg2").len(), agg2 + 1);
    // ...and the judge, on the pair it could not judge before (both orders).
    assert_eq!(s.log().len(), sent + 3, "only what was missing is sent");
    let sum: Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(sum["cache"]["misses"], 3);
    assert!(
        sum["cache"]["hits"].as_u64().unwrap() > 10,
        "{}",
        sum["cache"]
    );
    // The answers are the ones first given, and the records say they were cached.
    let results = std::fs::read_to_string(h.join("b/results.jsonl")).unwrap();
    assert!(results.contains("\"cached\":true"), "{results}");

    // moa eval on the same prompts reuses the proposers' and the aggregator's answers.
    let before = s.log().len();
    let eval = moa(
        h,
        &[
            "eval",
            "--preset",
            "mini",
            "--prompts",
            prompts.to_str().unwrap(),
            "--no-baseline",
            "--json",
            "--out",
            h.join("ev").to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(eval.status.code(), Some(0), "{}", text(&eval.stderr));
    assert_eq!(s.log().len(), before, "eval sent calls tune had made");
    let sum: Value = serde_json::from_slice(&eval.stdout).unwrap();
    assert!(sum["cache"]["hits"].as_u64().unwrap() >= 3 * 3);

    // --no-cache sends every call.
    let before = s.log().len();
    let fresh = tune("c", &["--no-cache"]).await;
    assert_eq!(fresh.status.code(), Some(0), "{}", text(&fresh.stderr));
    // (All of the first run's calls, and the pair the cut reply kept from the judge then.)
    assert_eq!(s.log().len() - before, sent + 2);
    let sum: Value = serde_json::from_slice(&fresh.stdout).unwrap();
    assert_eq!(sum["cache"]["hits"], 0);
}

/// `moa eval` against the same budget spent on one model (arXiv:2502.00674): self-moa samples one
/// model N times and aggregates with it; best-of samples it N times and the judge picks one.
#[tokio::test(flavor = "multi_thread")]
async fn eval_against_matched_budget_baselines() {
    let s = Server::start().await;
    s.script(
        "judge",
        vec![Reply::text(
            &["Second is best.\nRanking: 2 > 1\n[[A]]"],
            2,
            2,
        )],
    );
    let home = home_with(&s);
    let h = home.path();
    let prompts = h.join("two.jsonl");
    std::fs::write(&prompts, "{\"prompt\": \"One?\"}\n{\"prompt\": \"Two?\"}\n").unwrap();
    let eval = |baseline: &str, out: &str| {
        let args: Vec<String> = [
            "eval",
            "--preset",
            "mini",
            "--prompts",
            prompts.to_str().unwrap(),
            "--baseline",
            baseline,
            "--judge",
            "fake/judge",
            "--no-cache",
            "--json",
            "--out",
            h.join(out).to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        async move {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            moa(h, &a).await
        }
    };

    let out = eval("self-moa:fake/solo:3", "self").await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let solo = s.requests_for("solo");
    // Per prompt: three samples and one aggregation by the same model.
    assert_eq!(solo.len(), 2 * (3 + 1));
    let aggregations: Vec<_> = solo
        .iter()
        .filter(|r| system_of(r).contains("Answer from solo."))
        .collect();
    assert_eq!(aggregations.len(), 2);
    let sum: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sum["baseline_model"], "self-moa:fake/solo:3");
    assert_eq!(sum["done"], 2);
    let j = &sum["judge"];
    assert_eq!(j["ties"], 2, "an always-[[A]] judge: ties");
    assert!(j["ci95_bootstrap"].is_array(), "{j}");
    assert!(sum["avg_length"]["moa"].as_f64().unwrap() > 0.0);
    assert!(sum["avg_length"]["baseline"].as_f64().unwrap() > 0.0);
    // The baseline's cost and tokens are the whole pipeline's (four calls).
    assert!(sum["tokens_per_prompt"]["baseline"].as_f64().unwrap() > 0.0);

    let before = s.requests_for("solo").len();
    let judged_before = s.requests_for("judge").len();
    let out = eval("best-of:fake/solo", "best").await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // N defaults to the preset's proposer calls (two), and the judge picks one per prompt, then
    // judges MoA against it in both orders.
    assert_eq!(s.requests_for("solo").len() - before, 2 * 2);
    assert_eq!(s.requests_for("judge").len() - judged_before, 2 * (1 + 2));
    let sum: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sum["baseline_model"], "best-of:fake/solo:2");

    // A bad spec says what is wrong, and sends nothing.
    let before = s.log().len();
    let out = eval("self-moa:solo:3", "bad").await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("PROVIDER/MODEL"),
        "{}",
        text(&out.stderr)
    );
    let out = eval("best-of:fake/solo:1", "bad").await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("N must be 2 to 64"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(s.log().len(), before);
}

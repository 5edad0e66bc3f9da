//! `moa eval` and `moa tune` write `report.html` beside `report.md`, through the binary against the
//! scripted server: one self-contained page (no script, nothing loaded from elsewhere) with the
//! figures of `summary.json`, every prompt, and a hostile answer (`<script>`, `</pre>`, control
//! characters, a `javascript:` link) shown as text. Headless Chromium (Debian's `chromium`; CI
//! installs it) parses each page and takes a screenshot; without it (outside CI) that part is
//! skipped. MOA_KEEP_SCREENSHOT=DIR keeps the pages and screenshots there.

// Test code may unwrap: a panic there is the failure report.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;

use serde_json::Value;
use support::browser::{HOSTILE, assert_dom_inert, assert_inert, chromium, dom, screenshot};
use support::{Reply, Server};

const KEY: &str = "sk-html-report-key";

const PRESET: &str = r#"name = "mini"
[[step]]
op = "propose"
agents = [{ model = "fake/p1", temperature = 0.7 }, { model = "fake/p2" }]
[[step]]
op = "aggregate"
model = "fake/agg"
[baseline]
model = "fake/base"
"#;

const WORDS: [&str; 12] = [
    "trees",
    "balance",
    "pages",
    "disk",
    "merge",
    "levels",
    "writes",
    "reads",
    "cache",
    "compaction",
    "keys",
    "nodes",
];

/// `n` replies whose first token comes after a delay that varies (so latency has a spread) and
/// whose words vary (so the proposers agree more on some prompts than on others).
fn replies(n: usize, seed: usize, prefix: &str) -> Vec<Reply> {
    (0..n)
        .map(|i| {
            // The first `shared` words are the same for every seed, the rest differ by seed.
            let shared = i % 7;
            let words: Vec<&str> = (0..6)
                .map(|j| {
                    let at = if j < shared { i + j } else { i + j + 5 * seed };
                    WORDS[at % WORDS.len()]
                })
                .collect();
            let text = format!(
                "{prefix} {i}: {} with `code` and **bold**.",
                words.join(" ")
            );
            Reply::text(&[&text], 5 + ((i * 37 + seed * 11) % 90) as u64, 3)
        })
        .collect()
}

/// `moa ARGS` with `FAKE_API_KEY` set, which must exit 0.
async fn moa_ok(home: &Path, args: &[&str]) -> std::process::Output {
    let out = support::moa(home, args, None, KEY).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// What the command wrote: its summary, and its report page (path and text), which its text
/// report names.
fn written(out: &std::process::Output, dir: &Path) -> (Value, std::path::PathBuf, String) {
    assert!(String::from_utf8_lossy(&out.stdout).contains("report.html"));
    let sum = serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    let page = dir.join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    (sum, page, html)
}

/// Chromium parses the page without a script element, shows `texts`, and takes a screenshot.
fn in_the_browser(page: &Path, texts: &[String], name: &str) {
    let Some(browser) = chromium() else { return };
    let dom = dom(browser, page);
    assert!(
        dom.contains("</table>"),
        "chromium did not render the page: {dom:.400}"
    );
    assert_dom_inert(&dom);
    for t in texts {
        assert!(dom.contains(t.as_str()), "the page does not show {t:?}");
    }
    let png = page.with_extension("png");
    let bytes = screenshot(browser, page, &png, (1400, 3000));
    assert!(
        bytes.len() > 30_000,
        "an empty-looking screenshot: {} bytes",
        bytes.len()
    );
    if let Ok(dir) = std::env::var("MOA_KEEP_SCREENSHOT") {
        std::fs::copy(&png, Path::new(&dir).join(format!("{name}.png"))).unwrap();
        std::fs::copy(page, Path::new(&dir).join(format!("{name}.html"))).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn eval_writes_a_report_page_a_browser_renders() {
    const N: usize = 20;
    let s = Server::start().await;
    s.script("p1", replies(N, 1, "First proposer on"));
    s.script("p2", replies(N, 2, "Second proposer on"));
    let mut agg = vec![Reply::text(&["Final:\n\n", HOSTILE], 20, 5)];
    agg.extend(replies(N - 1, 3, "The aggregate of"));
    s.script("agg", agg);
    s.script("base", replies(N, 4, "The baseline on"));
    // A judge that says A, A, B, C, ... in turn: wins, losses, ties and orders that disagree.
    let verdicts = [
        "[[A]]", "[[A]]", "[[B]]", "[[A]]", "[[C]]", "[[B]]", "[[B]]",
    ];
    s.script(
        "judge",
        (0..2 * N)
            .map(|i| Reply::text(&["Reasons. ", verdicts[i % verdicts.len()]], 2, 2))
            .collect(),
    );
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    std::fs::write(h.join("config.toml"), s.config("")).unwrap();
    std::fs::create_dir_all(h.join("presets")).unwrap();
    std::fs::write(h.join("presets/mini.toml"), PRESET).unwrap();
    let prompts: String = (1..=N)
        .map(|i| {
            if i % 4 == 0 {
                format!(
                    "{{\"prompt\": \"Question {i}: what is {i} + 1?\", \"reference\": \"{}\"}}\n",
                    i + 1
                )
            } else {
                format!("{{\"prompt\": \"Question {i}: explain B-trees & LSM trees, part {i}\"}}\n")
            }
        })
        .collect();
    std::fs::write(h.join("prompts.jsonl"), prompts).unwrap();
    let out_dir = h.join("ev");
    let out = moa_ok(
        h,
        &[
            "eval",
            "--preset",
            "mini",
            "--prompts",
            h.join("prompts.jsonl").to_str().unwrap(),
            "--judge",
            "fake/judge",
            "--out",
            out_dir.to_str().unwrap(),
        ],
    )
    .await;
    let (sum, page, html) = written(&out, &out_dir);
    assert_eq!(sum["done"], N);
    eprintln!(
        "a {N}-prompt evaluation (MoA of 2 proposers vs a baseline, judged) writes a report.html of {} bytes",
        html.len()
    );
    assert_inert(&html);
    // Every prompt, with MoA's and the baseline's answers folded and the judge's reasons.
    assert_eq!(html.matches("<tr class=\"fold\">").count(), N);
    assert!(html.matches("<details>").count() >= 3 * N);
    for want in [
        "<svg",
        "MoA win rate",
        "95 % paired bootstrap over prompts",
        "Latency per prompt",
        "Agreement of the proposers",
        "Exact match",
        "Cost and tokens",
        "<span style=",
        "@media print",
    ] {
        assert!(html.contains(want), "the page lacks {want:?}");
    }
    let j = &sum["judge"];
    let f3 = |v: &Value| format!("{:.3}", v.as_f64().unwrap());
    let mut texts = vec![
        "Evaluation: mini vs fake/base".to_string(),
        f3(&j["win_rate"]),
        format!(
            "{} wins, {} ties, {} losses",
            j["wins"], j["ties"], j["losses"]
        ),
        format!(
            "bootstrap {:.2}–{:.2}",
            j["ci95_bootstrap"][0].as_f64().unwrap(),
            j["ci95_bootstrap"][1].as_f64().unwrap()
        ),
        f3(&sum["accuracy"]["moa"]),
        format!(
            "p50 {:.2} s",
            sum["latency_ms"]["moa_p50"].as_u64().unwrap() as f64 / 1000.0
        ),
    ];
    texts.extend((1..=N).map(|i| format!("Question {i}:")));
    texts.push("explain B-trees &amp; LSM trees, part 3".into());
    in_the_browser(&page, &texts, "eval-report");
}

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

#[tokio::test(flavor = "multi_thread")]
async fn tune_writes_a_report_page_a_browser_renders() {
    const N: usize = 6;
    let s = Server::start().await;
    // The hostile answer is a proposer's: every proposer answer is on the page (folded).
    let mut p1 = vec![Reply::text(&["First:\n\n", HOSTILE], 10, 5)];
    p1.extend(replies(N - 1, 1, "First proposer on"));
    s.script("p1", p1);
    s.script("p2", replies(N, 2, "Second proposer on"));
    s.script("agg", replies(40, 3, "An aggregate of"));
    s.script("agg2", replies(30, 5, "Another aggregate of"));
    let verdicts = [
        "[[A]]", "[[A]]", "[[B]]", "[[C]]", "[[B]]", "[[B]]", "[[A]]",
    ];
    s.script(
        "judge",
        (0..200)
            .map(|i| Reply::text(&["Reasons. ", verdicts[i % verdicts.len()]], 2, 2))
            .collect(),
    );
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    std::fs::write(h.join("config.toml"), s.config("")).unwrap();
    std::fs::create_dir_all(h.join("presets")).unwrap();
    std::fs::write(h.join("presets/mini.toml"), PRESET).unwrap();
    let prompts: String = (1..=N)
        .map(|i| format!("{{\"prompt\": \"Tune question {i}: which index suits writes?\"}}\n"))
        .collect();
    std::fs::write(h.join("prompts.jsonl"), prompts).unwrap();
    std::fs::write(h.join("variants.toml"), VARIANTS).unwrap();
    let out_dir = h.join("tuned");
    let out = moa_ok(
        h,
        &[
            "tune",
            "--preset",
            "mini",
            "--prompts",
            h.join("prompts.jsonl").to_str().unwrap(),
            "--variants",
            h.join("variants.toml").to_str().unwrap(),
            "--judge",
            "fake/judge",
            "--leave-one-out",
            "--out",
            out_dir.to_str().unwrap(),
        ],
    )
    .await;
    let (sum, page, html) = written(&out, &out_dir);
    assert_eq!(sum["done"], N);
    eprintln!(
        "a {N}-prompt tuning of 3 variants with leave-one-out writes a report.html of {} bytes",
        html.len()
    );
    assert_inert(&html);
    assert_eq!(html.matches("<tr class=\"fold\">").count(), N);
    for want in [
        "Ranking",
        "Leave-one-out",
        "Latency per prompt",
        "anchor",
        "the proposers' answers (2)",
    ] {
        assert!(html.contains(want), "the page lacks {want:?}");
    }
    let mut texts: Vec<String> = vec!["Tuning the aggregator: mini".into()];
    for v in sum["variants"].as_array().unwrap() {
        texts.push(v["name"].as_str().unwrap().to_string());
        if let Some(w) = v["judged"]["win_rate"].as_f64() {
            let c = &v["judged"]["ci95"];
            texts.push(format!(
                "{w:.3} [{:.2}–{:.2}]",
                c[0].as_f64().unwrap(),
                c[1].as_f64().unwrap()
            ));
        }
    }
    for (i, r) in sum["ranking"].as_array().unwrap().iter().enumerate() {
        texts.push(format!("{}. {}", i + 1, r["name"].as_str().unwrap()));
        texts.push(format!("{:+.2}", r["score"].as_f64().unwrap()));
    }
    assert_eq!(sum["ranking"].as_array().unwrap().len(), 3);
    texts.extend((1..=N).map(|i| format!("Tune question {i}: which index suits writes?")));
    in_the_browser(&page, &texts, "tune-report");
}

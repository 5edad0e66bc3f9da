//! `moa sessions export ID --format html` through the binary: a 6-proposer, 3-layer session with a
//! hostile answer (`<script>`, `</pre>`, control characters, a `javascript:` link) becomes one
//! self-contained page that shows it as text. Headless Chromium (Debian's `chromium`; CI installs
//! it) parses the page and takes a screenshot; without it (outside CI) that part is skipped.

// Test code may unwrap: a panic there is the failure report.
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use support::browser::{HOSTILE, assert_dom_inert, assert_inert, chromium, dom, screenshot};
use support::{Reply, Server};

const KEY: &str = "sk-html-export-key";

#[tokio::test(flavor = "multi_thread")]
async fn a_session_exports_as_one_safe_page_a_browser_renders() {
    let s = Server::start().await;
    let long: String = "Proposers explain *B-trees* with `O(log n)` reads, in detail. ".repeat(30);
    s.script("p", vec![Reply::text(&[&long, "\n\n", HOSTILE], 5, 5)]);
    s.script("agg", vec![Reply::text(&["Final: ", HOSTILE], 5, 5)]);
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    std::fs::write(h.join("config.toml"), s.config("")).unwrap();
    std::fs::create_dir_all(h.join("presets")).unwrap();
    std::fs::write(
        h.join("presets/deep.toml"),
        "name = \"deep\"\n[[step]]\nop = \"propose\"\nagents = [{ model = \"fake/p\", n = 6, temperature = 0.7 }]\n[[step]]\nop = \"synthesize\"\nagents = \"previous\"\n[[step]]\nop = \"synthesize\"\nagents = \"previous\"\n[[step]]\nop = \"aggregate\"\nmodel = \"fake/agg\"\n[baseline]\nmodel = \"fake/p\"\n",
    )
    .unwrap();
    let out = support::moa(
        h,
        &["run", "--preset", "deep", "Explain B-trees"],
        None,
        KEY,
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = support::moa(h, &["sessions", "list", "--json"], None, KEY).await;
    let sessions: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let id = sessions[0]["id"].as_str().unwrap().to_string();
    let page = h.join("session.html");
    let out = support::moa(
        h,
        &[
            "sessions",
            "export",
            &id,
            "--format",
            "html",
            "--out",
            page.to_str().unwrap(),
        ],
        None,
        KEY,
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&page).unwrap();
    eprintln!(
        "a 6-proposer, 3-layer session ({} calls) exports to {} bytes of HTML",
        6 * 3 + 2,
        html.len()
    );
    // Self-contained and inert: no script, nothing loaded from elsewhere.
    assert_inert(&html);
    // Every layer's six answers, the aggregator, the baseline, latency bars, the agreement matrix.
    assert_eq!(html.matches("<article class=\"call\">").count(), 6 * 3 + 1);
    for want in [
        "Step 1: propose",
        "Step 2: synthesize",
        "Step 3: synthesize",
        "Aggregator: 1 variant(s)",
        "<h3>Baseline</h3>",
        "<svg",
        "critical path",
        "<span style=",
    ] {
        assert!(html.contains(want), "the page lacks {want:?}");
    }
    assert!(html.len() < 2_000_000, "{} bytes", html.len());

    let Some(browser) = chromium() else { return };
    let dom = dom(browser, &page);
    assert!(
        dom.contains("</section>"),
        "chromium did not render the page: {dom:.400}"
    );
    assert_dom_inert(&dom);
    let png = h.join("session.png");
    let bytes = screenshot(browser, &page, &png, (1400, 2200));
    assert!(
        bytes.len() > 20_000,
        "an empty-looking screenshot: {} bytes",
        bytes.len()
    );
    if let Ok(dir) = std::env::var("MOA_KEEP_SCREENSHOT") {
        std::fs::copy(&png, Path::new(&dir).join("session.png")).unwrap();
        std::fs::copy(&page, Path::new(&dir).join("session.html")).unwrap();
    }
}

//! Headless Chromium for the HTML tests (Debian's `chromium`; `.ci/run` installs it): the DOM it
//! parsed from a page, and a screenshot. Without it the browser part is skipped with a message,
//! except in CI (CI=true), where that is a failure.

use std::path::Path;
use std::process::Command;

pub fn chromium() -> Option<&'static str> {
    for c in ["chromium", "chromium-browser"] {
        if Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Some(c);
        }
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("chromium is missing: CI must install it (.ci/run)");
    }
    eprintln!("skipping the browser part: chromium is not installed");
    None
}

/// Chromium as this machine allows it (root, no network beyond loopback): no sandbox, no GPU, no
/// background connections, a fresh profile.
pub fn headless(browser: &str, profile: &Path) -> Command {
    let mut c = Command::new(browser);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// The page as Chromium parsed it (`--dump-dom`, no script runs in it: the page has none).
pub fn dom(browser: &str, page: &Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = headless(browser, profile.path())
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A screenshot of the page's top `width`×`height` pixels, written to `png`; its bytes.
pub fn screenshot(browser: &str, page: &Path, png: &Path, (width, height): (u32, u32)) -> Vec<u8> {
    let profile = tempfile::tempdir().unwrap();
    let shot = headless(browser, profile.path())
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let bytes = std::fs::read(png).unwrap_or_else(|e| {
        panic!(
            "no screenshot ({e}): {}",
            String::from_utf8_lossy(&shot.stderr)
        )
    });
    assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
    bytes
}

/// An answer no page may obey: a script, an early `</pre>`, a `javascript:` link, a bell and a
/// terminal title sequence, and code with HTML in it.
pub const HOSTILE: &str = "<script>alert('owned')</script> closes </pre> early.\n\n[click me](javascript:alert(1))\n\nbell\u{7} and \u{1b}]0;title\u{7} gone.\n\n```python\ndef f(x):\n    if x:\n        return \"<b>\"\n    return 0\n```\n";

/// The page is self-contained and inert (no script, nothing loaded from elsewhere, no control
/// character) and shows `HOSTILE` as escaped text.
pub fn assert_inert(html: &str) {
    let lower = html.to_lowercase();
    for bad in [
        "<script",
        "javascript:",
        "<img",
        "<link",
        "src=",
        "@import",
        "url(",
        "\u{1b}",
        "\u{7}",
    ] {
        assert!(!lower.contains(bad), "the page holds {bad:?}");
    }
    assert!(html.contains("&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt;"));
    assert!(html.contains("&lt;/pre&gt;"));
}

/// Chromium parsed no script element from the page and shows `HOSTILE` as text.
pub fn assert_dom_inert(dom: &str) {
    assert!(
        !dom.to_lowercase().contains("<script"),
        "a script element was parsed"
    );
    assert!(
        dom.contains("&lt;script&gt;alert('owned')&lt;/script&gt;"),
        "the hostile answer is not there as text: {dom:.2000}"
    );
}

//! What every HTML page of moa shares (the session export, the eval and tune reports): escaping,
//! the style sheet and the document around a body. Inline CSS only: no script, font or image from
//! anywhere, so a page opens in any browser, offline, and prints.

/// Text for HTML: `&<>"'` escaped, escape sequences and control characters (but newline and
/// tab) removed, as for a terminal.
pub fn esc(text: &str) -> String {
    let clean = crate::text::strip_controls(text);
    let mut out = String::with_capacity(clean.len() + clean.len() / 8);
    for c in clean.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub const CSS: &str = "
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.5rem auto;max-width:1400px;padding:0 1rem;color:#1d1f23}
h1{font-size:1.5rem;margin:.2rem 0}h2{font-size:1.2rem;border-bottom:2px solid #dde;padding-bottom:.2rem;margin-top:2.2rem}
h3{font-size:1rem;margin:1.2rem 0 .4rem;color:#333}.meta{color:#666;font-size:.85rem}
blockquote.q{margin:.5rem 0;padding:.5rem .8rem;background:#f4f6fa;border-left:4px solid #8aa;white-space:pre-wrap}
.cols{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:.6rem}
.call{border:1px solid #ccd;border-radius:6px;padding:.3rem .7rem;overflow-wrap:anywhere;break-inside:avoid}
.call h4{margin:.2rem 0 .3rem;font-size:.85rem;color:#445;font-weight:600}
.ok{color:#1a7f37}.bad{color:#b42318}.warn{color:#9a6700}
pre{overflow-x:auto;padding:.5rem;border-radius:4px;background:#f6f8fa;font-size:.82rem;white-space:pre-wrap}
code{font-size:.85em}code.raw{color:#9a3412;white-space:pre-wrap}
table.md,table.grid{border-collapse:collapse;margin:.4rem 0;font-size:.85rem}
table.md td,table.md th,table.grid td,table.grid th{border:1px solid #ccd;padding:.15rem .45rem}
details{border:1px solid #ccd;border-radius:6px;padding:.3rem .7rem;margin:.4rem 0}
details>summary{cursor:pointer;font-weight:600;font-size:.9rem}
.attr{font-size:.82rem;color:#555}svg text{font:11px system-ui,sans-serif}
@media print{details{border:none}body{max-width:none}}
";

/// A whole page: `title` (escaped here), the shared style sheet plus `css`, then `body` as given.
pub fn document(title: &str, css: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{}</title><style>{CSS}{css}</style></head><body>\n{body}</body></html>\n",
        esc(title)
    )
}

/// What the `moa eval` and `moa tune` reports add: figures at the top, number columns, the
/// per-prompt table with answers folded side by side, and paper (every fold printed open, colours
/// kept, no row cut across pages).
pub const REPORT_CSS: &str = "
.cards{display:flex;flex-wrap:wrap;gap:.6rem;margin:.9rem 0}
.card{border:1px solid #ccd;border-radius:6px;padding:.35rem .8rem;min-width:8.5rem}
.card b{display:block;font-size:1.25rem;font-variant-numeric:tabular-nums}.card span{color:#666;font-size:.8rem}
svg.chart{max-width:100%;height:auto;display:block}figure{margin:.5rem 0 1rem}figcaption{font-size:.82rem;color:#555;max-width:60rem}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}td.n,td.ci{white-space:nowrap}
table.prompts{width:100%}table.prompts td{vertical-align:top}table.prompts td.p{max-width:28rem;overflow-wrap:anywhere;white-space:pre-wrap}
tr.fold>td{border-top:none;padding:0 .45rem .6rem}
.side{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:.5rem}
.side details{margin:0;overflow-wrap:anywhere;min-width:0}
.win{color:#1a7f37;font-weight:600}.loss{color:#b42318;font-weight:600}.tie{color:#555}.error{color:#9a6700}
@media print{@page{margin:1.4cm}body{font-size:10pt;margin:0}*{-webkit-print-color-adjust:exact;print-color-adjust:exact}
details::details-content{content-visibility:visible;display:block}details>summary{list-style:none}
h2,h3{break-after:avoid}figure,svg,.card,tr{break-inside:avoid}pre{white-space:pre-wrap}}
";

/// The first figures of a batch report: prompts, done, errors (in red when there are some).
pub fn progress(prompts: usize, done: usize, errors: usize) -> Vec<(&'static str, String)> {
    vec![
        ("prompts", prompts.to_string()),
        ("done", done.to_string()),
        (
            "errors",
            if errors > 0 {
                format!("<span class=\"bad\">{errors}</span>")
            } else {
                "0".into()
            },
        ),
    ]
}

/// Milliseconds as seconds, `-` when unknown.
pub fn secs(ms: Option<u64>) -> String {
    ms.map(|v| format!("{:.2} s", v as f64 / 1000.0))
        .unwrap_or_else(|| "-".into())
}

/// Figures at the top of a report: (what, value), the value already HTML.
pub fn cards(figures: &[(&str, String)]) -> String {
    let mut s = String::from("<div class=\"cards\">");
    for (what, value) in figures {
        s.push_str(&format!(
            "<div class=\"card\"><b>{value}</b><span>{}</span></div>",
            esc(what)
        ));
    }
    s.push_str("</div>\n");
    s
}

/// A model's answer folded: `summary` (already HTML) on the fold, the text as markdown inside.
pub fn folded(summary: &str, text: &str) -> String {
    format!(
        "<details><summary>{summary}</summary>{}</details>",
        super::markdown(text)
    )
}

/// A verdict word in its colour (`win`, `tie`, `loss`, `error`).
pub fn verdict(outcome: crate::session::judge::Outcome, inconsistent: bool) -> String {
    let word = outcome.as_str();
    format!(
        "<span class=\"{word}\">{word}</span>{}",
        if inconsistent {
            " (orders disagreed)"
        } else {
            ""
        }
    )
}

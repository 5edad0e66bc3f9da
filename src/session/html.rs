//! A session as one self-contained HTML page (`moa sessions export ID --format html`): what the
//! workbench shows, to send to someone. Inline CSS and SVG only: no script, font or image from
//! anywhere, so it opens in any browser, offline, and prints.
//!
//! Everything a model or provider wrote is untrusted: answers contain HTML and code. Text is
//! escaped and stripped of control characters; markdown is rendered from pulldown-cmark's events by
//! this module (raw HTML in an answer becomes visible text, links keep only http(s) and mailto
//! targets), and code blocks are highlighted by syntect, which escapes what it emits.

use std::fmt::Write;
use std::sync::OnceLock;

use pulldown_cmark::{CodeBlockKind, Event, HeadingLevel, Options, Parser, Tag, TagEnd};
use syntect::highlighting::{Theme, ThemeSet};
use syntect::parsing::SyntaxSet;

use super::compare::fmt_cost;
use super::variants::{BASELINE, letter};
use super::{RunKind, Session, SessionRun};
use crate::engine::record::{CallRecord, CallStatus, StepRecord};

/// Code blocks longer than this are shown plain: highlighting is linear but not free.
const HIGHLIGHT_MAX: usize = 100_000;

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

fn syntaxes() -> &'static SyntaxSet {
    static S: OnceLock<SyntaxSet> = OnceLock::new();
    S.get_or_init(SyntaxSet::load_defaults_newlines)
}

fn theme() -> Option<&'static Theme> {
    static T: OnceLock<Option<Theme>> = OnceLock::new();
    T.get_or_init(|| ThemeSet::load_defaults().themes.remove("InspiredGitHub"))
        .as_ref()
}

fn code_block(lang: &str, code: &str) -> String {
    let ss = syntaxes();
    let syntax = (!lang.is_empty())
        .then(|| ss.find_syntax_by_token(lang))
        .flatten();
    if let (Some(syntax), Some(theme)) = (syntax, theme())
        && code.len() <= HIGHLIGHT_MAX
        && let Ok(html) = syntect::html::highlighted_html_for_string(
            &crate::text::strip_controls(code),
            ss,
            syntax,
            theme,
        )
    {
        return html;
    }
    format!("<pre><code>{}</code></pre>\n", esc(code))
}

/// A link target a reader may follow: http(s) and mailto only (no `javascript:`, no `data:`).
fn safe_href(url: &str) -> Option<String> {
    let u = url.trim().to_ascii_lowercase();
    (u.starts_with("https://") || u.starts_with("http://") || u.starts_with("mailto:"))
        .then(|| esc(url.trim()))
}

/// Markdown as HTML, every piece of text escaped.
pub fn markdown(text: &str) -> String {
    // Sequences are removed from the whole text first: the parser may cut one in two.
    let text = crate::text::strip_controls(text);
    let mut out = String::new();
    let mut code: Option<(String, String)> = None;
    let mut in_head = false;
    let parser = Parser::new_ext(
        &text,
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS,
    );
    for ev in parser {
        if let Some((_, buf)) = code.as_mut() {
            match ev {
                Event::Text(t) => {
                    buf.push_str(&t);
                    continue;
                }
                Event::End(TagEnd::CodeBlock) => {
                    if let Some((lang, buf)) = code.take() {
                        out.push_str(&code_block(&lang, &buf));
                    }
                    continue;
                }
                _ => continue,
            }
        }
        match ev {
            Event::Start(tag) => match tag {
                Tag::Paragraph => out.push_str("<p>"),
                Tag::Heading { level, .. } => {
                    // Headings inside an answer stay below the page's own.
                    let n = match level {
                        HeadingLevel::H1 | HeadingLevel::H2 => 4,
                        HeadingLevel::H3 => 5,
                        _ => 6,
                    };
                    let _ = write!(out, "<h{n}>");
                }
                Tag::BlockQuote(_) => out.push_str("<blockquote>"),
                Tag::CodeBlock(kind) => {
                    let lang = match kind {
                        CodeBlockKind::Fenced(l) => {
                            l.split_whitespace().next().unwrap_or("").to_string()
                        }
                        CodeBlockKind::Indented => String::new(),
                    };
                    code = Some((lang, String::new()));
                }
                Tag::List(Some(start)) => {
                    let _ = write!(out, "<ol start=\"{start}\">");
                }
                Tag::List(None) => out.push_str("<ul>"),
                Tag::Item => out.push_str("<li>"),
                Tag::Emphasis => out.push_str("<em>"),
                Tag::Strong => out.push_str("<strong>"),
                Tag::Strikethrough => out.push_str("<del>"),
                Tag::Link { dest_url, .. } => match safe_href(&dest_url) {
                    Some(h) => {
                        let _ = write!(out, "<a href=\"{h}\" rel=\"noreferrer nofollow\">");
                    }
                    None => out.push_str("<a>"),
                },
                // Images would load from elsewhere: their alt text and address, as text.
                Tag::Image { dest_url, .. } => {
                    let _ = write!(out, "[image {}: ", esc(&dest_url));
                }
                Tag::Table(_) => out.push_str("<table class=\"md\">"),
                Tag::TableHead => {
                    in_head = true;
                    out.push_str("<thead><tr>");
                }
                Tag::TableRow => out.push_str("<tr>"),
                Tag::TableCell => out.push_str(if in_head { "<th>" } else { "<td>" }),
                _ => {}
            },
            Event::End(tag) => match tag {
                TagEnd::Paragraph => out.push_str("</p>\n"),
                TagEnd::Heading(level) => {
                    let n = match level {
                        HeadingLevel::H1 | HeadingLevel::H2 => 4,
                        HeadingLevel::H3 => 5,
                        _ => 6,
                    };
                    let _ = writeln!(out, "</h{n}>");
                }
                TagEnd::BlockQuote(_) => out.push_str("</blockquote>\n"),
                TagEnd::List(true) => out.push_str("</ol>\n"),
                TagEnd::List(false) => out.push_str("</ul>\n"),
                TagEnd::Item => out.push_str("</li>\n"),
                TagEnd::Emphasis => out.push_str("</em>"),
                TagEnd::Strong => out.push_str("</strong>"),
                TagEnd::Strikethrough => out.push_str("</del>"),
                TagEnd::Link => out.push_str("</a>"),
                TagEnd::Image => out.push(']'),
                TagEnd::Table => out.push_str("</tbody></table>\n"),
                TagEnd::TableHead => {
                    in_head = false;
                    out.push_str("</tr></thead><tbody>");
                }
                TagEnd::TableRow => out.push_str("</tr>\n"),
                TagEnd::TableCell => out.push_str(if in_head { "</th>" } else { "</td>" }),
                _ => {}
            },
            Event::Text(t) => out.push_str(&esc(&t)),
            Event::Code(t) => {
                let _ = write!(out, "<code>{}</code>", esc(&t));
            }
            // Raw HTML in an answer is shown, never obeyed.
            Event::Html(t) | Event::InlineHtml(t) => {
                let _ = write!(out, "<code class=\"raw\">{}</code>", esc(&t));
            }
            Event::SoftBreak => out.push('\n'),
            Event::HardBreak => out.push_str("<br>\n"),
            Event::Rule => out.push_str("<hr>\n"),
            Event::TaskListMarker(done) => {
                out.push_str(if done { "☑ " } else { "☐ " });
            }
            _ => {}
        }
    }
    if let Some((lang, buf)) = code.take() {
        out.push_str(&code_block(&lang, &buf));
    }
    out
}

const CSS: &str = "
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

/// The calls of a run, as the workbench labels them: `propose #2 model t=0.7`.
fn call_label(c: &CallRecord) -> String {
    let t = c.temperature.map(|t| format!(" t={t}")).unwrap_or_default();
    format!("#{} {}{t}", c.slot + 1, c.model)
}

fn status(c: &CallRecord) -> String {
    let (class, word) = match c.status {
        CallStatus::Ok => ("ok", "✓"),
        CallStatus::Late => ("warn", "✓ late"),
        CallStatus::Cancelled => ("warn", "■ cancelled"),
        CallStatus::Dropped => ("warn", "dropped"),
        CallStatus::Failed => ("bad", "✗ failed"),
        CallStatus::Timeout => ("bad", "✗ timed out"),
    };
    format!(
        "<span class=\"{class}\">{word}</span> {:.1}s · {} tok{}",
        c.latency_ms as f64 / 1000.0,
        c.tokens_out,
        if c.cached { " · cached" } else { "" }
    )
}

fn call_html(c: &CallRecord, title: &str) -> String {
    let mut s = format!(
        "<article class=\"call\"><h4>{} · {}</h4>",
        esc(title),
        status(c)
    );
    s.push_str(&markdown(&c.text));
    if let Some(e) = c.error.as_ref().filter(|_| c.status != CallStatus::Ok) {
        let _ = write!(s, "<p class=\"bad\">✗ {}</p>", esc(e));
    }
    s.push_str("</article>\n");
    s
}

/// Latency bars: per call, waiting for the first token (light) then generating (dark), on the
/// run's clock; the slowest call of each step (the critical path) outlined.
fn latency_svg(steps: &[StepRecord], baseline: Option<&CallRecord>) -> String {
    let mut rows: Vec<(String, &CallRecord, bool)> = Vec::new();
    for s in steps {
        let slowest = s
            .calls
            .iter()
            .map(|c| c.start_ms + c.latency_ms)
            .max()
            .unwrap_or(0);
        for c in &s.calls {
            let crit = c.start_ms + c.latency_ms == slowest;
            rows.push((format!("{} {}", s.op, call_label(c)), c, crit));
        }
    }
    if let Some(b) = baseline {
        rows.push((format!("baseline {}", call_label(b)), b, false));
    }
    let end = rows
        .iter()
        .map(|(_, c, _)| c.start_ms + c.latency_ms)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let (label_w, bar_w, row_h) = (260.0, 620.0, 18.0);
    let h = rows.len() as f64 * row_h + 24.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{h}\" role=\"img\" aria-label=\"latency per call\">",
        label_w + bar_w + 70.0
    );
    for (i, (label, c, crit)) in rows.iter().enumerate() {
        let y = i as f64 * row_h + 4.0;
        let x0 = label_w + c.start_ms as f64 / end * bar_w;
        let ttft = c.ttft_ms.unwrap_or(c.latency_ms).min(c.latency_ms) as f64 / end * bar_w;
        let gen_w = (c.latency_ms as f64 / end * bar_w - ttft).max(0.0);
        let color = if c.status == CallStatus::Ok {
            "#3b6fb6"
        } else {
            "#b42318"
        };
        let _ = write!(
            s,
            "<text x=\"0\" y=\"{}\">{}</text><rect x=\"{x0:.1}\" y=\"{y}\" width=\"{ttft:.1}\" height=\"12\" fill=\"#c9d7ee\"/><rect x=\"{:.1}\" y=\"{y}\" width=\"{gen_w:.1}\" height=\"12\" fill=\"{color}\"{}/><text x=\"{:.1}\" y=\"{}\">{:.1}s</text>",
            y + 10.0,
            esc(&crate::text::truncate(label, 42)),
            x0 + ttft,
            if *crit {
                " stroke=\"#111\" stroke-width=\"1.5\""
            } else {
                ""
            },
            x0 + ttft + gen_w + 4.0,
            y + 10.0,
            c.latency_ms as f64 / 1000.0
        );
    }
    let _ = write!(
        s,
        "<text x=\"{label_w}\" y=\"{}\">light: waiting for the first token · dark: generating · outlined: the critical path</text></svg>",
        h - 4.0
    );
    s
}

/// The agreement matrix as a heatmap: darker is more alike.
fn heatmap(step: &StepRecord) -> String {
    let Some(m) = step.agreement_matrix.as_ref().filter(|m| m.len() > 1) else {
        return String::new();
    };
    let ok: Vec<&CallRecord> = step
        .calls
        .iter()
        .filter(|c| c.status == CallStatus::Ok)
        .collect();
    let mut s = String::from("<table class=\"grid\"><tr><th></th>");
    for c in ok.iter().take(m.len()) {
        let _ = write!(s, "<th>#{}</th>", c.slot + 1);
    }
    s.push_str("</tr>");
    for (i, row) in m.iter().enumerate() {
        let _ = write!(
            s,
            "<tr><th>#{}</th>",
            ok.get(i).map_or(i + 1, |c| c.slot + 1)
        );
        for (j, v) in row.iter().enumerate() {
            let v = if v.is_finite() {
                v.clamp(0.0, 1.0)
            } else {
                0.0
            };
            let light = (97.0 - v * 55.0).round();
            let _ = write!(
                s,
                "<td style=\"background:hsl(215,60%,{light}%);color:{}\">{}</td>",
                if light < 60.0 { "#fff" } else { "#111" },
                if i == j {
                    "·".into()
                } else {
                    format!("{v:.2}")
                }
            );
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
    s
}

fn run_html(out: &mut String, n: usize, session: &Session, run: &SessionRun) {
    let r = &run.record;
    let _ = writeln!(
        out,
        "<section class=\"run\"><h2>Run {n}: {}{}</h2>",
        esc(&r.preset),
        match run.kind {
            RunKind::Reaggregate => " (re-aggregated)",
            RunKind::Rerun => " (one proposer again)",
            RunKind::Run => "",
        }
    );
    let _ = writeln!(
        out,
        "<p class=\"meta\">{} · {:.1} s · {} tokens in, {} out · {}</p>",
        esc(&r.created),
        r.wall_ms as f64 / 1000.0,
        r.usage.tokens_in,
        r.usage.tokens_out,
        fmt_cost((!r.usage.cost_incomplete).then_some(r.usage.cost_usd))
    );
    let _ = writeln!(
        out,
        "<blockquote class=\"q\">{}</blockquote>",
        esc(crate::engine::prompts::last_user(&r.messages))
    );
    let family = session.variants(&r.id);
    let last_llm = r.steps.iter().rposition(|s| !s.calls.is_empty());
    for (k, st) in r.steps.iter().enumerate() {
        if st.calls.is_empty() || (Some(k) == last_llm && !family.is_empty()) {
            continue;
        }
        let agreement = match (st.agreement, &st.agreement_method) {
            (Some(a), Some(m)) => format!(" · agreement {a:.2} ({})", esc(m)),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "<h3>Step {}: {}{agreement}</h3><div class=\"cols\">",
            k + 1,
            esc(&st.op)
        );
        for c in &st.calls {
            out.push_str(&call_html(c, &call_label(c)));
        }
        out.push_str("</div>\n");
        out.push_str(&heatmap(st));
    }
    if !family.is_empty() {
        let _ = writeln!(out, "<h3>Aggregator: {} variant(s)</h3>", family.len());
        for (i, v) in family.iter().enumerate() {
            let call = if i == 0 {
                v.aggregated()
            } else {
                v.record.steps.first().and_then(|s| s.calls.first())
            };
            let Some(c) = call else { continue };
            let _ = write!(
                out,
                "<details{}><summary>{} · {} · {}</summary>",
                if i + 1 == family.len() { " open" } else { "" },
                letter(i),
                esc(&call_label(c)),
                status(c)
            );
            out.push_str(&markdown(&c.text));
            if let Some(a) = &v.attribution {
                let sims: Vec<String> = a
                    .slots
                    .iter()
                    .zip(&a.similarity)
                    .map(|(s, x)| format!("#{} {x:.2}", s + 1))
                    .collect();
                let _ = write!(
                    out,
                    "<p class=\"attr\">draws on {} ({}){}</p>",
                    sims.join(" · "),
                    esc(&a.method),
                    a.copied
                        .map(|s| format!(" <span class=\"warn\">⚠ copies #{}</span>", s + 1))
                        .unwrap_or_default()
                );
            }
            if !v.leave_one_out.is_empty() {
                out.push_str("<table class=\"grid\"><tr><th>left out</th><th>verdict for the full answer</th><th>similarity to it</th></tr>");
                for e in &v.leave_one_out {
                    let _ = write!(
                        out,
                        "<tr><td>#{} {}</td><td>{}</td><td>{}</td></tr>",
                        e.slot + 1,
                        esc(&e.model),
                        e.judgement
                            .as_ref()
                            .map(|j| j.outcome.as_str())
                            .unwrap_or("not judged"),
                        e.similarity
                            .map(|s| format!("{s:.2}"))
                            .unwrap_or_else(|| "-".into())
                    );
                }
                out.push_str("</table>");
            }
            out.push_str("</details>\n");
        }
    } else if let Some(f) = &r.final_answer {
        let _ = writeln!(
            out,
            "<h3>Final answer ({})</h3><article class=\"call\">{}</article>",
            esc(&f.source),
            markdown(&f.text)
        );
    }
    if let Some(b) = &r.baseline {
        let _ = writeln!(out, "<h3>Baseline</h3>");
        out.push_str(&call_html(b, &b.model));
    }
    let name = |id: &str| -> String {
        if id == BASELINE {
            return "baseline".into();
        }
        family
            .iter()
            .position(|v| v.record.id == id)
            .map(letter)
            .unwrap_or_else(|| "MoA".into())
    };
    let verdicts: Vec<String> = run
        .judgements
        .iter()
        .map(|j| {
            format!(
                "judge {}: MoA {}{}",
                esc(&j.judge_model),
                j.outcome.as_str(),
                if j.inconsistent {
                    " (the two orders disagreed)"
                } else {
                    ""
                }
            )
        })
        .chain(run.pair_judgements.iter().map(|p| {
            format!(
                "judge {}: {} {} against {}{}",
                esc(&p.judgement.judge_model),
                name(&p.a),
                p.judgement.outcome.as_str(),
                name(&p.b),
                if p.judgement.inconsistent {
                    " (the two orders disagreed)"
                } else {
                    ""
                }
            )
        }))
        .collect();
    if !verdicts.is_empty() {
        let _ = writeln!(out, "<h3>Verdicts</h3><ul>");
        for v in verdicts {
            let _ = writeln!(out, "<li>{v}</li>");
        }
        out.push_str("</ul>\n");
    }
    if r.steps.iter().any(|s| !s.calls.is_empty()) {
        let _ = writeln!(out, "<h3>Latency</h3>");
        out.push_str(&latency_svg(&r.steps, r.baseline.as_ref()));
    }
    out.push_str("</section>\n");
}

/// The whole session as one HTML page.
pub fn html(s: &Session) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{} · moa session</title><style>{CSS}</style></head><body>\n<header><h1>{}</h1><p class=\"meta\">session {} · created {} · {} run(s) · exported by moa {}</p></header>\n",
        esc(&s.name),
        esc(&s.name),
        esc(&s.id),
        esc(&s.created),
        s.runs.len(),
        env!("CARGO_PKG_VERSION")
    );
    for (i, run) in s.runs.iter().enumerate() {
        // A re-aggregation is shown with its parent, as one of its variants.
        if run.kind == RunKind::Reaggregate
            && run
                .parent
                .as_ref()
                .is_some_and(|p| s.runs.iter().any(|r| &r.record.id == p))
        {
            continue;
        }
        run_html(&mut out, i + 1, s, run);
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_text_is_text() {
        let h = markdown(
            "<script>alert(1)</script> and </pre>\n\n<img src=x onerror=alert(2)>\n\n[click](javascript:alert(3)) [ok](https://example.org/?a=1&b=\"2\")\n\n![i](https://tracker.example/p.png)\n\nbell\u{7} esc\u{1b}]0;title\u{7}",
        );
        assert!(!h.to_lowercase().contains("<script"), "{h}");
        assert!(!h.contains("<img"), "{h}");
        assert!(h.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{h}");
        assert!(h.contains("&lt;/pre&gt;"), "{h}");
        assert!(!h.contains("javascript:alert"), "{h}");
        assert!(
            h.contains("href=\"https://example.org/?a=1&amp;b=&quot;2&quot;\""),
            "{h}"
        );
        assert!(
            !h.contains("esc]0;title"),
            "a whole escape sequence goes: {h}"
        );
        assert!(!h.contains('\u{1b}') && !h.contains('\u{7}'), "{h:?}");
    }

    #[test]
    fn code_is_highlighted_and_keeps_its_indentation() {
        let h = markdown("```python\ndef f(x):\n    if x:\n        return \"<b>\"\n```\n");
        assert!(h.contains("<span style="), "{h}");
        assert!(h.contains("    "), "{h}");
        assert!(h.contains("&lt;b&gt;"), "{h}");
        let plain = markdown("```\n<b>x</b>\n```\n");
        assert!(plain.contains("<pre><code>&lt;b&gt;x&lt;/b&gt;"), "{plain}");
    }
}

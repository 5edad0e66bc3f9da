//! Markdown from a model as HTML: pulldown-cmark's events rendered here, every piece of text
//! escaped. Raw HTML in an answer becomes visible text, links keep only http(s) and mailto targets,
//! images are not loaded (their address is shown), escape sequences are removed before parsing, and
//! code blocks are highlighted by syntect (which escapes what it emits). Shared by every page.

use std::fmt::Write;
use std::sync::OnceLock;

use pulldown_cmark::{CodeBlockKind, Event, HeadingLevel, Options, Parser, Tag, TagEnd};
use syntect::highlighting::{Theme, ThemeSet};
use syntect::parsing::SyntaxSet;

use super::page::esc;

/// Code blocks longer than this are shown plain: highlighting is linear but not free.
const HIGHLIGHT_MAX: usize = 100_000;

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

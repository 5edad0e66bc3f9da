//! Markdown for streaming panes, rendered line by line so a growing answer costs O(new text):
//! every complete source line is rendered once and kept (headings, lists, block quotes, tables,
//! emphasis, inline code, links; fenced code highlighted by syntect, whose parse state is carried
//! from line to line); only the unfinished last line is rendered again on each frame. Wrapped
//! lines are cached per width.

use std::sync::OnceLock;

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use syntect::easy::HighlightLines;
use syntect::highlighting::{Theme, ThemeSet};
use syntect::parsing::SyntaxSet;
use unicode_width::UnicodeWidthStr;

fn syntaxes() -> &'static SyntaxSet {
    static S: OnceLock<SyntaxSet> = OnceLock::new();
    S.get_or_init(SyntaxSet::load_defaults_newlines)
}

fn theme() -> &'static Theme {
    static T: OnceLock<Theme> = OnceLock::new();
    T.get_or_init(|| {
        let mut set = ThemeSet::load_defaults();
        set.themes
            .remove("base16-ocean.dark")
            .expect("syntect ships base16-ocean.dark")
    })
}

/// Rendered lines of one streaming text.
pub struct Markdown {
    color: bool,
    /// Bytes of the source already rendered into `lines` (always at a line boundary).
    done: usize,
    lines: Vec<Line<'static>>,
    code: Option<HighlightLines<'static>>,
    in_code: bool,
    /// Wrapped `lines` for one width: (width, wrapped, how many source lines they cover).
    wrapped: Option<(u16, Vec<Line<'static>>, usize)>,
}

impl Markdown {
    pub fn new(color: bool) -> Self {
        Markdown {
            color,
            done: 0,
            lines: Vec::new(),
            code: None,
            in_code: false,
            wrapped: None,
        }
    }

    /// Render what is new in `text` (which only ever grows, or is replaced: then start over).
    /// Forget everything rendered: the pane's text is starting over (a re-run).
    pub fn clear(&mut self) {
        *self = Markdown::new(self.color);
    }

    fn update(&mut self, text: &str) {
        if text.len() < self.done || !text.is_char_boundary(self.done) {
            *self = Markdown::new(self.color);
        }
        while let Some(nl) = text[self.done..].find('\n') {
            let line = &text[self.done..self.done + nl];
            let rendered = self.render_line(line);
            self.lines.push(rendered);
            self.done += nl + 1;
        }
    }

    fn render_line(&mut self, line: &str) -> Line<'static> {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            if self.in_code {
                self.in_code = false;
                self.code = None;
            } else {
                self.in_code = true;
                let lang = trimmed.trim_start_matches(['`', '~']).trim();
                let syntax = syntaxes()
                    .find_syntax_by_token(lang)
                    .unwrap_or_else(|| syntaxes().find_syntax_plain_text());
                self.code = self.color.then(|| HighlightLines::new(syntax, theme()));
            }
            return Line::from(Span::styled(line.to_string(), self.dim()));
        }
        if self.in_code {
            return self.code_line(line);
        }
        block_line(line, self.color)
    }

    fn dim(&self) -> Style {
        if self.color {
            Style::default().fg(Color::DarkGray)
        } else {
            Style::default().add_modifier(Modifier::DIM)
        }
    }

    fn code_line(&mut self, line: &str) -> Line<'static> {
        let Some(h) = self.code.as_mut() else {
            return Line::from(Span::raw(line.to_string()));
        };
        let with_nl = format!("{line}\n");
        match h.highlight_line(&with_nl, syntaxes()) {
            Ok(ranges) => Line::from(
                ranges
                    .into_iter()
                    .map(|(st, s)| {
                        let c = st.foreground;
                        Span::styled(
                            s.trim_end_matches('\n').to_string(),
                            Style::default().fg(Color::Rgb(c.r, c.g, c.b)),
                        )
                    })
                    .collect::<Vec<_>>(),
            ),
            Err(_) => Line::from(Span::raw(line.to_string())),
        }
    }

    /// Every line of `text`, wrapped to `width` (tests and small texts; panes use `render`).
    pub fn wrapped(&mut self, text: &str, width: u16) -> Vec<Line<'static>> {
        let (cached, tail) = self.render(text, width);
        cached.iter().cloned().chain(tail).collect()
    }

    /// The wrapped lines of `text`: the cached ones (by reference: a frame copies only what it
    /// shows) and the open tail, rendered afresh.
    pub fn render(&mut self, text: &str, width: u16) -> (&[Line<'static>], Vec<Line<'static>>) {
        self.update(text);
        let width = width.max(1);
        let stale = match &self.wrapped {
            Some((w, _, _)) => *w != width,
            None => true,
        };
        if stale {
            self.wrapped = Some((width, Vec::new(), 0));
        }
        let (_, cache, covered) = self.wrapped.as_mut().expect("set above");
        for l in &self.lines[*covered..] {
            cache.extend(wrap(l, width));
        }
        *covered = self.lines.len();
        let tail = &text[self.done..];
        let tail_lines = if tail.is_empty() {
            Vec::new()
        } else if self.in_code {
            wrap(&Line::from(Span::raw(tail.to_string())), width)
        } else {
            wrap(&block_line(tail, self.color), width)
        };
        let cache: &[Line<'static>] = &self.wrapped.as_ref().expect("set above").1;
        (cache, tail_lines)
    }
}

/// One line outside code: block markers (heading, list, quote, table row), then inline markdown.
fn block_line(line: &str, color: bool) -> Line<'static> {
    let trimmed = line.trim_start();
    let indent = &line[..line.len() - trimmed.len()];
    let accent = |c: Color| {
        if color {
            Style::default().fg(c)
        } else {
            Style::default()
        }
    };
    if let Some(level) = trimmed
        .strip_prefix('#')
        .map(|_| trimmed.chars().take_while(|c| *c == '#').count())
        && trimmed[level..].starts_with(' ')
    {
        let mut style = accent(Color::Cyan).add_modifier(Modifier::BOLD);
        if level == 1 {
            style = style.add_modifier(Modifier::UNDERLINED);
        }
        return Line::from(Span::styled(trimmed[level + 1..].to_string(), style));
    }
    if let Some(rest) = trimmed
        .strip_prefix("> ")
        .or_else(|| (trimmed == ">").then_some(""))
    {
        let mut spans = vec![Span::styled(format!("{indent}▌ "), accent(Color::DarkGray))];
        spans.extend(inline(
            rest,
            color,
            Style::default().add_modifier(Modifier::ITALIC),
        ));
        return Line::from(spans);
    }
    if trimmed.starts_with('|') {
        // Table rows: keep the cells, draw the separators lightly.
        if trimmed.chars().all(|c| matches!(c, '|' | '-' | ':' | ' ')) {
            let rule: String = trimmed
                .chars()
                .map(|c| if c == '|' { '┼' } else { '─' })
                .collect();
            return Line::from(Span::styled(
                format!("{indent}{rule}"),
                accent(Color::DarkGray),
            ));
        }
        let mut spans = vec![Span::raw(indent.to_string())];
        for (i, cell) in trimmed.trim_matches('|').split('|').enumerate() {
            if i > 0 {
                spans.push(Span::styled(" │ ", accent(Color::DarkGray)));
            }
            spans.extend(inline(cell.trim(), color, Style::default()));
        }
        return Line::from(spans);
    }
    for bullet in ["- ", "* ", "+ "] {
        if let Some(rest) = trimmed.strip_prefix(bullet) {
            let mut spans = vec![Span::styled(format!("{indent}• "), accent(Color::Yellow))];
            spans.extend(inline(rest, color, Style::default()));
            return Line::from(spans);
        }
    }
    let digits = trimmed.chars().take_while(char::is_ascii_digit).count();
    if digits > 0 && trimmed[digits..].starts_with(". ") {
        let mut spans = vec![Span::styled(
            format!("{indent}{} ", &trimmed[..digits + 1]),
            accent(Color::Yellow),
        )];
        spans.extend(inline(&trimmed[digits + 2..], color, Style::default()));
        return Line::from(spans);
    }
    if trimmed == "---" || trimmed == "***" {
        return Line::from(Span::styled("─".repeat(24), accent(Color::DarkGray)));
    }
    let mut spans = vec![Span::raw(indent.to_string())];
    spans.extend(inline(trimmed, color, Style::default()));
    Line::from(spans)
}

/// Emphasis, strong, strike-through, inline code and links within one line, by pulldown-cmark.
fn inline(text: &str, color: bool, base: Style) -> Vec<Span<'static>> {
    let mut spans = Vec::new();
    let mut stack: Vec<Style> = vec![base];
    let mut link_url: Option<String> = None;
    for ev in Parser::new_ext(text, Options::ENABLE_STRIKETHROUGH) {
        let cur = *stack.last().expect("base style");
        match ev {
            Event::Start(Tag::Emphasis) => stack.push(cur.add_modifier(Modifier::ITALIC)),
            Event::Start(Tag::Strong) => stack.push(cur.add_modifier(Modifier::BOLD)),
            Event::Start(Tag::Strikethrough) => stack.push(cur.add_modifier(Modifier::CROSSED_OUT)),
            Event::Start(Tag::Link { dest_url, .. }) => {
                link_url = Some(dest_url.to_string());
                let s = if color { cur.fg(Color::Blue) } else { cur };
                stack.push(s.add_modifier(Modifier::UNDERLINED));
            }
            Event::End(TagEnd::Emphasis | TagEnd::Strong | TagEnd::Strikethrough) => {
                stack.pop();
            }
            Event::End(TagEnd::Link) => {
                stack.pop();
                if let Some(url) = link_url.take() {
                    spans.push(Span::styled(
                        format!(" ({url})"),
                        Style::default().add_modifier(Modifier::DIM),
                    ));
                }
            }
            Event::Text(t) => spans.push(Span::styled(t.to_string(), cur)),
            Event::Code(t) => {
                let s = if color {
                    cur.fg(Color::LightMagenta)
                } else {
                    cur.add_modifier(Modifier::BOLD)
                };
                spans.push(Span::styled(format!("`{t}`"), s));
            }
            Event::SoftBreak | Event::HardBreak => spans.push(Span::raw(" ")),
            Event::Html(t) | Event::InlineHtml(t) => spans.push(Span::styled(t.to_string(), cur)),
            _ => {}
        }
    }
    if spans.is_empty() && !text.is_empty() {
        // pulldown-cmark read the line as something else (e.g. a lone marker): show it as typed.
        spans.push(Span::styled(text.to_string(), base));
    }
    spans
}

/// Wrap a styled line at word boundaries to `width` columns (long words are split).
pub fn wrap(line: &Line<'static>, width: u16) -> Vec<Line<'static>> {
    let width = width as usize;
    let mut out: Vec<Line<'static>> = Vec::new();
    let mut cur: Vec<Span<'static>> = Vec::new();
    let mut cur_w = 0usize;
    for span in &line.spans {
        let style = span.style;
        // Split into words keeping their trailing spaces.
        let mut rest: &str = &span.content;
        while !rest.is_empty() {
            // A token is a run of non-spaces and the spaces after it.
            let word_end = rest.find(' ').unwrap_or(rest.len());
            let spaces = rest[word_end..].len() - rest[word_end..].trim_start_matches(' ').len();
            let end = word_end + spaces;
            let word = &rest[..end];
            rest = &rest[end..];
            let w = word.width();
            if cur_w + w.min(width) > width && cur_w > 0 {
                out.push(Line::from(std::mem::take(&mut cur)));
                cur_w = 0;
            }
            if w > width {
                // A word wider than the pane: hard-split it.
                let mut piece = String::new();
                let mut pw = 0;
                for ch in word.chars() {
                    let cw = UnicodeWidthStr::width(ch.encode_utf8(&mut [0; 4]) as &str);
                    if cur_w + pw + cw > width {
                        cur.push(Span::styled(std::mem::take(&mut piece), style));
                        out.push(Line::from(std::mem::take(&mut cur)));
                        cur_w = 0;
                        pw = 0;
                    }
                    piece.push(ch);
                    pw += cw;
                }
                cur.push(Span::styled(piece, style));
                cur_w += pw;
            } else {
                let word = if cur_w == 0 {
                    word.trim_start_matches(' ')
                } else {
                    word
                };
                cur_w += word.width();
                cur.push(Span::styled(word.to_string(), style));
            }
        }
    }
    out.push(Line::from(cur));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(lines: &[Line]) -> Vec<String> {
        lines
            .iter()
            .map(|l| l.spans.iter().map(|s| s.content.as_ref()).collect())
            .collect()
    }

    #[test]
    fn blocks_and_inline() {
        let mut md = Markdown::new(false);
        let text = "# Title\n- **bold** item\n1. first\n> quoted\n| a | b |\n|---|---|\nsee [docs](http://x)\n";
        let lines = plain(&md.wrapped(text, 80));
        assert_eq!(
            lines,
            vec![
                "Title",
                "• bold item",
                "1. first",
                "▌ quoted",
                "a │ b",
                "┼───┼───┼",
                "see docs (http://x)",
            ]
        );
    }

    #[test]
    fn code_blocks_keep_their_text_and_stream_incrementally() {
        let mut md = Markdown::new(true);
        let mut text = String::from("```rust\nfn main() {");
        let first = plain(&md.wrapped(&text, 80));
        assert_eq!(first, vec!["```rust", "fn main() {"]);
        text.push_str("}\n```\nafter *x*\n");
        let lines = md.wrapped(&text, 80);
        assert_eq!(
            plain(&lines),
            vec!["```rust", "fn main() {}", "```", "after x"]
        );
        // Highlighted: more than one span on the code line.
        assert!(lines[1].spans.len() > 1);
        assert!(
            lines[3]
                .spans
                .iter()
                .any(|s| s.style.add_modifier.contains(Modifier::ITALIC))
        );
    }

    #[test]
    fn wrapping_respects_width_and_splits_long_words() {
        let l = Line::from("the quick brown fox jumps over");
        let w = plain(&wrap(&l, 10));
        assert!(w.iter().all(|s| s.width() <= 10), "{w:?}");
        assert_eq!(w.join(" ").split_whitespace().count(), 6);
        let long = plain(&wrap(&Line::from("abcdefghijklmnop"), 5));
        assert_eq!(long, vec!["abcde", "fghij", "klmno", "p"]);
    }

    #[test]
    fn replaced_text_starts_over() {
        let mut md = Markdown::new(false);
        assert_eq!(plain(&md.wrapped("one\ntwo\n", 20)), vec!["one", "two"]);
        assert_eq!(plain(&md.wrapped("x\n", 20)), vec!["x"]);
    }
}

//! Markdown for streaming panes. The source is cut into blocks at lines that can only start a new
//! block (a blank line, a heading, a fence, a new top-level list item); every finished block is
//! rendered once from pulldown-cmark's events and kept, so list continuations, emphasis across
//! lines and table alignment come out as the whole block says. Inside a fenced code block each
//! finished line is committed as it arrives (syntect's parse state carried from line to line), so a
//! 500-line code answer never re-renders. Only the open block — usually a paragraph or the last
//! code line — is rendered again on each frame. Wrapped lines are cached per width.
//!
//! Cutting at the same lines whether the text arrives at once or in pieces is what makes a
//! streamed answer render exactly as the finished one.

use std::sync::OnceLock;

use pulldown_cmark::{Alignment, CodeBlockKind, Event, Options, Parser, Tag, TagEnd};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use syntect::easy::HighlightLines;
use syntect::highlighting::{Theme, ThemeSet};
use syntect::parsing::SyntaxSet;

use crate::text::{expand_tabs, strip_controls, width, wrap_ranges};

/// Code lines longer than this are shown without highlighting: syntect's regexes on a 100 KB line
/// would stall a frame.
const HIGHLIGHT_MAX: usize = 2_000;

fn syntaxes() -> &'static SyntaxSet {
    static S: OnceLock<SyntaxSet> = OnceLock::new();
    S.get_or_init(SyntaxSet::load_defaults_newlines)
}

fn theme() -> Option<&'static Theme> {
    static T: OnceLock<Option<Theme>> = OnceLock::new();
    T.get_or_init(|| ThemeSet::load_defaults().themes.remove("base16-ocean.dark"))
        .as_ref()
}

/// One rendered source line: its prefix (indentation, list marker, quote bar), its content, and the
/// prefix its wrapped continuation lines get (a hanging indent).
#[derive(Clone, Debug, PartialEq)]
pub struct RLine {
    pub prefix: Vec<Span<'static>>,
    pub content: Vec<Span<'static>>,
    pub cont: Vec<Span<'static>>,
}

impl RLine {
    fn plain(content: Vec<Span<'static>>) -> RLine {
        RLine {
            prefix: Vec::new(),
            content,
            cont: Vec::new(),
        }
    }
}

/// An open fenced code block.
struct Fence {
    marker: char,
    len: usize,
    /// Columns of the fence's own indentation, stripped from its lines (code inside a list item).
    indent: usize,
    tab: usize,
    hl: Option<HighlightLines<'static>>,
}

/// Rendered lines of one streaming text.
pub struct Markdown {
    color: bool,
    /// Bytes of the source rendered into `lines` for good.
    done: usize,
    /// Bytes of complete lines looked at: `done..scan` is the open block.
    scan: usize,
    /// The open block holds a top-level list item (a new one starts a new block).
    block_has_item: bool,
    fence: Option<Fence>,
    lines: Vec<RLine>,
    /// Wrapped `lines` for one width: (width, wrapped, how many lines they cover).
    wrapped: Option<(u16, Vec<Line<'static>>, usize)>,
}

impl Markdown {
    pub fn new(color: bool) -> Self {
        Markdown {
            color,
            done: 0,
            scan: 0,
            block_has_item: false,
            fence: None,
            lines: Vec::new(),
            wrapped: None,
        }
    }

    /// Forget everything rendered: the pane's text is starting over (a re-run).
    pub fn clear(&mut self) {
        *self = Markdown::new(self.color);
    }

    /// Commit what is final in `text` (which only ever grows, or is replaced: then start over).
    fn update(&mut self, text: &str) {
        if text.len() < self.scan || !text.is_char_boundary(self.scan) {
            *self = Markdown::new(self.color);
        }
        while let Some(nl) = text[self.scan..].find('\n') {
            let start = self.scan;
            let line = text[start..start + nl].trim_end_matches('\r');
            let next = start + nl + 1;
            if self.fence.is_some() {
                self.code_line(line);
                self.done = next;
                self.scan = next;
                continue;
            }
            if let Some(f) = opening_fence(line) {
                self.commit(text, start);
                self.open_fence(line, f);
                self.done = next;
                self.scan = next;
                continue;
            }
            let blank = line.trim().is_empty();
            let top = !blank && !line.starts_with([' ', '\t']);
            let item = top && is_list_item(line);
            if blank || (top && is_heading(line)) || (item && self.block_has_item) {
                self.commit(text, start);
            }
            if blank {
                self.lines.push(RLine::plain(Vec::new()));
                self.done = next;
            }
            self.block_has_item |= item;
            self.scan = next;
            if top && is_heading(line) {
                self.commit(text, next);
            }
        }
    }

    /// Render `done..end` as one block, for good.
    fn commit(&mut self, text: &str, end: usize) {
        if end > self.done {
            let rendered = render_block(&text[self.done..end], self.color);
            self.lines.extend(rendered);
        }
        self.done = end;
        self.scan = self.scan.max(end);
        self.block_has_item = false;
    }

    fn open_fence(&mut self, line: &str, (marker, len, indent): (char, usize, usize)) {
        let info = line.trim_start().trim_start_matches(marker).trim();
        let lang = info.split([' ', ',', '{']).next().unwrap_or("");
        let syntax = syntaxes()
            .find_syntax_by_token(lang)
            .unwrap_or_else(|| syntaxes().find_syntax_plain_text());
        let hl = theme()
            .filter(|_| self.color)
            .map(|t| HighlightLines::new(syntax, t));
        self.fence = Some(Fence {
            marker,
            len,
            indent,
            tab: tab_width(lang),
            hl,
        });
        let pad = " ".repeat(indent);
        self.lines.push(RLine {
            prefix: vec![Span::raw(pad.clone())],
            content: vec![Span::styled(line.trim_start().to_string(), dim(self.color))],
            cont: vec![Span::raw(pad)],
        });
    }

    fn code_line(&mut self, line: &str) {
        let color = self.color;
        let Some(f) = self.fence.as_mut() else {
            return;
        };
        let trimmed = line.trim_start();
        if trimmed.starts_with(&f.marker.to_string().repeat(f.len))
            && trimmed.trim_start_matches(f.marker).trim().is_empty()
        {
            let pad = " ".repeat(f.indent);
            self.lines.push(RLine {
                prefix: vec![Span::raw(pad.clone())],
                content: vec![Span::styled(trimmed.to_string(), dim(color))],
                cont: vec![Span::raw(pad)],
            });
            self.fence = None;
            return;
        }
        let line = code_text(line, f.indent, f.tab);
        let spans = match f.hl.as_mut().filter(|_| line.len() <= HIGHLIGHT_MAX) {
            Some(h) => match h.highlight_line(&format!("{line}\n"), syntaxes()) {
                Ok(ranges) => ranges
                    .into_iter()
                    .map(|(st, s)| {
                        let c = st.foreground;
                        Span::styled(
                            s.trim_end_matches('\n').to_string(),
                            Style::default().fg(Color::Rgb(c.r, c.g, c.b)),
                        )
                    })
                    .filter(|s| !s.content.is_empty())
                    .collect(),
                Err(_) => vec![Span::raw(line.clone())],
            },
            None => vec![Span::raw(line.clone())],
        };
        let indent = f.indent;
        self.lines.push(code_rline(spans, indent));
    }

    /// Every line of `text`, wrapped to `width` (tests, the compare view and small texts; panes use
    /// `render`).
    pub fn wrapped(&mut self, text: &str, width: u16) -> Vec<Line<'static>> {
        let (cached, tail) = self.render(text, width);
        cached.iter().cloned().chain(tail).collect()
    }

    /// The wrapped lines of `text`: the cached ones (by reference: a frame copies only what it
    /// shows) and the open block, rendered afresh.
    pub fn render(&mut self, text: &str, width: u16) -> (&[Line<'static>], Vec<Line<'static>>) {
        self.update(text);
        let width = width.max(1);
        if self.wrapped.as_ref().is_none_or(|(w, _, _)| *w != width) {
            self.wrapped = Some((width, Vec::new(), 0));
        }
        let mut tail = Vec::new();
        let open = &text[self.done..];
        if !open.is_empty() {
            match &self.fence {
                // The code line still arriving: plain (syntect's state moves only on whole lines).
                Some(f) => {
                    let line = code_text(open, f.indent, f.tab);
                    tail.extend(wrap(&code_rline(vec![Span::raw(line)], f.indent), width));
                }
                None => {
                    for l in render_block(open, self.color) {
                        tail.extend(wrap(&l, width));
                    }
                }
            }
        }
        let Some((_, cache, covered)) = self.wrapped.as_mut() else {
            return (&[], tail);
        };
        for l in &self.lines[*covered..] {
            cache.extend(wrap(l, width));
        }
        *covered = self.lines.len();
        (cache.as_slice(), tail)
    }
}

/// A code line as shown: the fence's indentation removed, tabs expanded, controls removed.
fn code_text(line: &str, fence_indent: usize, tab: usize) -> String {
    let line = strip_controls(line);
    let line = expand_tabs(&line, tab);
    let cut = line
        .char_indices()
        .take_while(|(i, c)| *c == ' ' && *i < fence_indent)
        .count();
    line[cut..].to_string()
}

/// A code line's leading spaces become its prefix and its continuation lines' hanging indent.
fn code_rline(mut spans: Vec<Span<'static>>, fence_indent: usize) -> RLine {
    let mut lead = 0;
    while let Some(first) = spans.first_mut() {
        let n = first.content.len() - first.content.trim_start_matches(' ').len();
        lead += n;
        if n == first.content.len() {
            spans.remove(0);
        } else {
            first.content = first.content[n..].to_string().into();
            break;
        }
    }
    let pad = " ".repeat(fence_indent + lead);
    RLine {
        prefix: vec![Span::raw(pad.clone())],
        content: spans,
        cont: vec![Span::raw(pad)],
    }
}

/// Tab stops by language: 4 unless the language's convention says otherwise.
fn tab_width(lang: &str) -> usize {
    match lang.to_ascii_lowercase().as_str() {
        "make" | "makefile" | "mk" | "c" | "h" => 8,
        _ => 4,
    }
}

/// `(marker, length, indentation)` when `line` opens a fenced code block.
fn opening_fence(line: &str) -> Option<(char, usize, usize)> {
    let expanded = expand_tabs(line, 4);
    let trimmed = expanded.trim_start();
    let indent = expanded.len() - trimmed.len();
    let marker = trimmed.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let len = trimmed.chars().take_while(|c| *c == marker).count();
    // A backtick fence's info string cannot hold a backtick (that is inline code).
    let info = &trimmed[len..];
    (len >= 3 && !(marker == '`' && info.contains('`'))).then_some((marker, len, indent))
}

fn is_heading(line: &str) -> bool {
    let hashes = line.chars().take_while(|c| *c == '#').count();
    (1..=6).contains(&hashes) && line[hashes..].starts_with([' ', '\t'])
        || (hashes > 0 && hashes <= 6 && line.len() == hashes)
}

fn is_list_item(line: &str) -> bool {
    if let Some(rest) = line.strip_prefix(['-', '*', '+']) {
        return rest.starts_with([' ', '\t']) && !is_rule(line);
    }
    let digits = line.chars().take_while(char::is_ascii_digit).count();
    (1..=9).contains(&digits)
        && (line[digits..].starts_with(". ") || line[digits..].starts_with(") "))
}

fn is_rule(line: &str) -> bool {
    let t: String = line.chars().filter(|c| !c.is_whitespace()).collect();
    t.len() >= 3 && (t.chars().all(|c| c == '-') || t.chars().all(|c| c == '*'))
}

fn dim(color: bool) -> Style {
    if color {
        Style::default().fg(Color::DarkGray)
    } else {
        Style::default().add_modifier(Modifier::DIM)
    }
}

/// One block of markdown (no fenced code: those are cut out before), rendered from its events. The
/// block's common indentation is kept as a prefix, so a list item's continuation paragraph after a
/// blank line stays under its item.
pub fn render_block(src: &str, color: bool) -> Vec<RLine> {
    let src = strip_controls(src);
    let src = expand_tabs(&src, 4);
    let indent = src
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start_matches(' ').len())
        .min()
        .unwrap_or(0);
    let body: String = if indent == 0 {
        src.into_owned()
    } else {
        src.lines()
            .map(|l| l.get(indent..).unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut r = Renderer::new(color);
    let opts = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    for ev in Parser::new_ext(&body, opts) {
        r.event(ev);
    }
    r.flush(false);
    if indent > 0 {
        let pad = " ".repeat(indent);
        for l in &mut r.out {
            l.prefix.insert(0, Span::raw(pad.clone()));
            l.cont.insert(0, Span::raw(pad.clone()));
        }
    }
    r.out
}

/// A list item or block quote around the lines being written: its prefix on its first line, and on
/// the lines after.
struct Container {
    first: Span<'static>,
    rest: Span<'static>,
    used: bool,
}

struct Table {
    aligns: Vec<Alignment>,
    rows: Vec<Vec<Vec<Span<'static>>>>,
    header: usize,
    cell: Vec<Span<'static>>,
    row: Vec<Vec<Span<'static>>>,
}

struct Renderer {
    color: bool,
    out: Vec<RLine>,
    cur: Vec<Span<'static>>,
    containers: Vec<Container>,
    styles: Vec<Style>,
    /// Open lists: the next number for ordered ones.
    lists: Vec<Option<u64>>,
    table: Option<Table>,
    link: Option<String>,
    code_block: bool,
}

impl Renderer {
    fn new(color: bool) -> Renderer {
        Renderer {
            color,
            out: Vec::new(),
            cur: Vec::new(),
            containers: Vec::new(),
            styles: vec![Style::default()],
            lists: Vec::new(),
            table: None,
            link: None,
            code_block: false,
        }
    }

    fn accent(&self, c: Color) -> Style {
        if self.color {
            Style::default().fg(c)
        } else {
            Style::default()
        }
    }

    fn style(&self) -> Style {
        self.styles.last().copied().unwrap_or_default()
    }

    fn push(&mut self, s: Span<'static>) {
        match self.table.as_mut() {
            Some(t) => t.cell.push(s),
            None => self.cur.push(s),
        }
    }

    /// End the line being written (`force`: also when it is empty).
    fn flush(&mut self, force: bool) {
        if self.cur.is_empty() && !force {
            return;
        }
        let mut prefix = Vec::new();
        let mut cont = Vec::new();
        for c in &mut self.containers {
            prefix.push(if c.used {
                c.rest.clone()
            } else {
                c.first.clone()
            });
            c.used = true;
            cont.push(c.rest.clone());
        }
        self.out.push(RLine {
            prefix,
            content: std::mem::take(&mut self.cur),
            cont,
        });
    }

    /// A new block: it starts on a line of its own. (Blank lines between blocks come from the
    /// source itself: blocks are cut at blank lines, so a block has none inside.)
    fn begin_block(&mut self) {
        self.flush(false);
    }

    fn event(&mut self, ev: Event) {
        match ev {
            Event::Start(tag) => self.start(tag),
            Event::End(tag) => self.end(tag),
            Event::Text(t) => {
                if self.code_block {
                    let style = self.accent(Color::Gray);
                    for line in t.split_inclusive('\n') {
                        let line = line.trim_end_matches('\n');
                        let l = code_rline(vec![Span::styled(line.to_string(), style)], 0);
                        let mut prefix: Vec<Span> =
                            self.containers.iter().map(|c| c.rest.clone()).collect();
                        let cont = prefix.clone();
                        prefix.extend(l.prefix);
                        let mut cont = cont;
                        cont.extend(l.cont);
                        self.out.push(RLine {
                            prefix,
                            content: l.content,
                            cont,
                        });
                    }
                } else {
                    let s = self.style();
                    self.push(Span::styled(t.into_string(), s));
                }
            }
            Event::Code(t) => {
                let s = if self.color {
                    self.style().fg(Color::LightMagenta)
                } else {
                    self.style().add_modifier(Modifier::BOLD)
                };
                self.push(Span::styled(format!("`{t}`"), s));
            }
            Event::Html(t) | Event::InlineHtml(t) => {
                let s = self.style();
                for (i, part) in t.split('\n').enumerate() {
                    if i > 0 {
                        self.flush(true);
                    }
                    if !part.is_empty() {
                        self.push(Span::styled(part.to_string(), s));
                    }
                }
            }
            // Models write line breaks to be seen (verse, addresses, short lines): keep them.
            Event::SoftBreak | Event::HardBreak if self.table.is_none() => self.flush(true),
            Event::Rule => {
                self.begin_block();
                let s = self.accent(Color::DarkGray);
                self.push(Span::styled("─".repeat(24), s));
                self.flush(false);
            }
            Event::TaskListMarker(done) => {
                let s = self.accent(Color::Yellow);
                self.push(Span::styled(if done { "☑ " } else { "☐ " }, s));
            }
            Event::FootnoteReference(t) => {
                let s = self.style();
                self.push(Span::styled(format!("[^{t}]"), s));
            }
            _ => {}
        }
    }

    fn start(&mut self, tag: Tag) {
        let cur = self.style();
        match tag {
            Tag::Paragraph => self.begin_block(),
            Tag::Heading { level, .. } => {
                self.begin_block();
                let mut s = self.accent(Color::Cyan).add_modifier(Modifier::BOLD);
                if level == pulldown_cmark::HeadingLevel::H1 {
                    s = s.add_modifier(Modifier::UNDERLINED);
                }
                self.styles.push(s);
            }
            Tag::BlockQuote(_) => {
                self.begin_block();
                let bar = Span::styled("▌ ", self.accent(Color::DarkGray));
                self.containers.push(Container {
                    first: bar.clone(),
                    rest: bar,
                    used: false,
                });
                self.styles.push(cur.add_modifier(Modifier::ITALIC));
            }
            Tag::CodeBlock(kind) => {
                self.begin_block();
                // Fenced blocks are cut out before; an indented block is shown as it is.
                self.code_block =
                    matches!(kind, CodeBlockKind::Indented | CodeBlockKind::Fenced(_));
            }
            Tag::List(start) => {
                if self.lists.is_empty() {
                    self.begin_block();
                } else {
                    self.flush(false);
                }
                self.lists.push(start);
            }
            Tag::Item => {
                self.flush(false);
                let depth = self.lists.len().saturating_sub(1);
                let marker = match self.lists.last_mut() {
                    Some(Some(n)) => {
                        let m = format!("{n}. ");
                        *n += 1;
                        m
                    }
                    _ => format!("{} ", ["•", "◦", "▪"][depth % 3]),
                };
                let w = width(&marker);
                self.containers.push(Container {
                    first: Span::styled(marker, self.accent(Color::Yellow)),
                    rest: Span::raw(" ".repeat(w)),
                    used: false,
                });
            }
            Tag::Table(aligns) => {
                self.begin_block();
                self.table = Some(Table {
                    aligns,
                    rows: Vec::new(),
                    header: 0,
                    cell: Vec::new(),
                    row: Vec::new(),
                });
            }
            Tag::Emphasis => self.styles.push(cur.add_modifier(Modifier::ITALIC)),
            Tag::Strong => self.styles.push(cur.add_modifier(Modifier::BOLD)),
            Tag::Strikethrough => self.styles.push(cur.add_modifier(Modifier::CROSSED_OUT)),
            Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. } => {
                self.link = Some(dest_url.to_string());
                let s = if self.color { cur.fg(Color::Blue) } else { cur };
                self.styles.push(s.add_modifier(Modifier::UNDERLINED));
            }
            _ => {}
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Paragraph => {
                self.flush(false);
            }
            TagEnd::Heading(_) => {
                self.flush(false);
                self.styles.pop();
            }
            TagEnd::BlockQuote(_) => {
                self.flush(false);
                self.containers.pop();
                self.styles.pop();
            }
            TagEnd::CodeBlock => {
                self.code_block = false;
            }
            TagEnd::List(_) => {
                self.flush(false);
                self.lists.pop();
            }
            TagEnd::Item => {
                self.flush(false);
                self.containers.pop();
            }
            TagEnd::TableCell => {
                if let Some(t) = self.table.as_mut() {
                    let cell = std::mem::take(&mut t.cell);
                    t.row.push(cell);
                }
            }
            TagEnd::TableHead | TagEnd::TableRow => {
                if let Some(t) = self.table.as_mut() {
                    let row = std::mem::take(&mut t.row);
                    t.rows.push(row);
                    if tag == TagEnd::TableHead {
                        t.header = t.rows.len();
                    }
                }
            }
            TagEnd::Table => {
                if let Some(t) = self.table.take() {
                    self.table_lines(t);
                }
            }
            TagEnd::Emphasis | TagEnd::Strong | TagEnd::Strikethrough => {
                self.styles.pop();
            }
            TagEnd::Link | TagEnd::Image => {
                self.styles.pop();
                if let Some(url) = self.link.take() {
                    let shown: String = self
                        .cur
                        .iter()
                        .rev()
                        .take(1)
                        .map(|s| s.content.to_string())
                        .collect();
                    // An autolink shows its address already.
                    if shown != url && !url.is_empty() {
                        self.push(Span::styled(
                            format!(" ({url})"),
                            Style::default().add_modifier(Modifier::DIM),
                        ));
                    }
                }
            }
            _ => {}
        }
    }

    /// A table with its columns aligned as the delimiter row says.
    fn table_lines(&mut self, t: Table) {
        let cols = t.rows.iter().map(Vec::len).max().unwrap_or(0);
        let cell_w = |c: &Vec<Span>| c.iter().map(|s| width(&s.content)).sum::<usize>();
        let widths: Vec<usize> = (0..cols)
            .map(|i| {
                t.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(cell_w)
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let sep = self.accent(Color::DarkGray);
        for (ri, row) in t.rows.iter().enumerate() {
            if ri == t.header && t.header > 0 {
                let rule: Vec<String> = widths.iter().map(|w| "─".repeat(*w)).collect();
                self.cur.push(Span::styled(rule.join("─┼─"), sep));
                self.flush(false);
            }
            for (i, w) in widths.iter().enumerate() {
                if i > 0 {
                    self.cur.push(Span::styled(" │ ", sep));
                }
                let empty = Vec::new();
                let cell = row.get(i).unwrap_or(&empty);
                let gap = w.saturating_sub(cell_w(cell));
                let (left, right) = match t.aligns.get(i) {
                    Some(Alignment::Right) => (gap, 0),
                    Some(Alignment::Center) => (gap / 2, gap - gap / 2),
                    _ => (0, gap),
                };
                let header = ri < t.header;
                if left > 0 {
                    self.cur.push(Span::raw(" ".repeat(left)));
                }
                for s in cell {
                    let mut s = s.clone();
                    if header {
                        s.style = s.style.add_modifier(Modifier::BOLD);
                    }
                    self.cur.push(s);
                }
                // The last column's padding would only make wrapped rows longer.
                if right > 0 && i + 1 < widths.len() {
                    self.cur.push(Span::raw(" ".repeat(right)));
                }
            }
            self.flush(true);
        }
    }
}

/// Wrap a rendered line to `width` columns: the prefix on the first line, the hanging indent on the
/// others (dropped when it would leave less than a third of the width).
pub fn wrap(l: &RLine, width: u16) -> Vec<Line<'static>> {
    let width = width.max(1) as usize;
    let spans_w = |v: &[Span]| {
        v.iter()
            .map(|s| crate::text::width(&s.content))
            .sum::<usize>()
    };
    let (mut prefix, mut cont) = (l.prefix.clone(), l.cont.clone());
    if spans_w(&prefix) * 3 > width * 2 {
        prefix.clear();
    }
    if spans_w(&cont) * 3 > width * 2 {
        cont.clear();
    }
    let (pw, cw) = (spans_w(&prefix), spans_w(&cont));
    let text: String = l.content.iter().map(|s| s.content.as_ref()).collect();
    let ranges = wrap_ranges(&text, width - pw, width - cw);
    let mut out = Vec::with_capacity(ranges.len());
    for (i, r) in ranges.into_iter().enumerate() {
        let mut spans = if i == 0 { prefix.clone() } else { cont.clone() };
        let mut at = 0;
        for s in &l.content {
            let (a, b) = (at, at + s.content.len());
            at = b;
            let (lo, hi) = (a.max(r.start), b.min(r.end));
            if lo < hi {
                spans.push(Span::styled(s.content[lo - a..hi - a].to_string(), s.style));
            }
        }
        out.push(Line::from(spans));
    }
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
        let text = "# Title\n- **bold** item\n1. first\n> quoted\n\n| a | b |\n|---|---|\n| 1 | 22 |\n\nsee [docs](http://x)\n";
        let lines = plain(&md.wrapped(text, 80));
        assert_eq!(
            lines,
            vec![
                "Title",
                "• bold item",
                "1. first",
                "▌ quoted",
                "",
                "a │ b",
                "──┼───",
                "1 │ 22",
                "",
                "see docs (http://x)",
            ]
        );
    }

    #[test]
    fn code_keeps_indentation_and_tabs() {
        let mut md = Markdown::new(false);
        let text = "```python\ndef f(x):\n    if x:\n        return 1\n\n    return 0\n```\n```go\nfunc f() {\n\treturn\n}\n```\n";
        assert_eq!(
            plain(&md.wrapped(text, 80)),
            vec![
                "```python",
                "def f(x):",
                "    if x:",
                "        return 1",
                "",
                "    return 0",
                "```",
                "```go",
                "func f() {",
                "    return",
                "}",
                "```",
            ]
        );
    }

    #[test]
    fn wrapped_code_and_list_items_hang() {
        let mut md = Markdown::new(false);
        let text = "- first item that is long\n  - nested item that wraps too\n\n```\n    indented code line\n```\n";
        assert_eq!(
            plain(&md.wrapped(text, 16)),
            vec![
                "• first item",
                "  that is long",
                "  ◦ nested item",
                "    that wraps",
                "    too",
                "",
                "```",
                "    indented",
                "    code line",
                "```",
            ]
        );
    }

    #[test]
    fn streamed_text_renders_as_the_finished_one_at_every_split() {
        let text = "# Plan\nSome *emphasis\nacross* lines.\n\n1. one\n2. two\n   more\n\n```rust\nfn main() {\n\tprintln!(\"x\");\n}\n```\n| a | b |\n|:-:|--:|\n| x | yy |\n\n> quote\n> more\n- [ ] task\n";
        let whole = Markdown::new(true).wrapped(text, 30);
        for k in 0..=text.len() {
            if !text.is_char_boundary(k) {
                continue;
            }
            let mut md = Markdown::new(true);
            let _ = md.wrapped(&text[..k], 30);
            assert_eq!(md.wrapped(text, 30), whole, "split at {k}");
        }
    }

    #[test]
    fn replaced_text_starts_over() {
        let mut md = Markdown::new(false);
        assert_eq!(plain(&md.wrapped("one\ntwo\n", 20)), vec!["one", "two"]);
        assert_eq!(plain(&md.wrapped("x\n", 20)), vec!["x"]);
    }

    #[test]
    fn control_sequences_do_not_reach_the_pane() {
        let mut md = Markdown::new(false);
        let lines = plain(&md.wrapped("a\x1b]52;c;AAAA\x07b \x1b[2Jc\n", 40));
        assert_eq!(lines, vec!["ab c"]);
    }

    /// Lines with their styles, one span a bracket: `[text|fg mods]`.
    fn styled(lines: &[Line]) -> String {
        let mut out = String::new();
        for l in lines {
            for sp in &l.spans {
                let mut tags = Vec::new();
                if let Some(c) = sp.style.fg {
                    tags.push(format!("{c:?}"));
                }
                if !sp.style.add_modifier.is_empty() {
                    tags.push(format!("{:?}", sp.style.add_modifier));
                }
                if tags.is_empty() {
                    out.push_str(&format!("[{}]", sp.content));
                } else {
                    out.push_str(&format!("[{}|{}]", sp.content, tags.join(" ")));
                }
            }
            out.push('\n');
        }
        out
    }

    #[test]
    fn snapshot_code_with_spaces_and_tabs() {
        let text = "```python\nclass A:\n    def f(self):\n        return {'k': 1}\n```\n\n```go\nfunc main() {\n\tfor {\n\t\tbreak\n\t}\n}\n```\n";
        insta::assert_snapshot!(styled(&Markdown::new(true).wrapped(text, 40)));
    }

    #[test]
    fn snapshot_nested_lists_and_emphasis_across_lines() {
        let text = "1. First *point\n   still emphasised* here\n   - nested **bold** item that is long enough to wrap\n     - deeper `code`\n2. Second\n\n- [x] done\n- [ ] open\n";
        insta::assert_snapshot!(styled(&Markdown::new(true).wrapped(text, 32)));
    }

    #[test]
    fn snapshot_table_aligned() {
        let text = "| name | score | note |\n|:-----|------:|:----:|\n| alpha | 1 | ok |\n| a much longer name | 1234 | - |\n";
        insta::assert_snapshot!(styled(&Markdown::new(true).wrapped(text, 60)));
    }

    #[test]
    fn snapshot_cjk_and_emoji() {
        let text =
            "# 标题 🚀\n日本語のテキストは幅が二倍です。👨‍👩‍👧 家族の絵文字も一つの書記素です。\n";
        let lines = Markdown::new(true).wrapped(text, 20);
        for l in &lines {
            let w: usize = l.spans.iter().map(|s| crate::text::width(&s.content)).sum();
            assert!(w <= 20, "{l:?}");
        }
        insta::assert_snapshot!(styled(&lines));
    }

    #[test]
    fn snapshot_a_5000_character_line() {
        let long = "x".repeat(2_500) + " " + &"y".repeat(2_499);
        let text = format!("```\n{long}\n```\n{long}\n");
        let lines = Markdown::new(true).wrapped(&text, 100);
        assert!(lines.len() >= 2 * 50, "{}", lines.len());
        let joined: Vec<String> = plain(&lines);
        assert_eq!(joined[1].len(), 100);
        insta::assert_snapshot!(format!("{} lines\n{}", lines.len(), styled(&lines[..4])));
    }
}

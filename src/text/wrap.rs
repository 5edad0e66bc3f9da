//! Widths and wrapping. A width is what ratatui's buffer gives a string: the sum of its graphemes'
//! widths (so an emoji with a variation selector or a ZWJ sequence counts as the terminal draws it,
//! and CJK counts 2). Lines are broken by textwrap's first-fit over words whose trailing spaces are
//! kept as they were typed (code keeps its alignment); words wider than a line are split between
//! graphemes, never inside one. First-fit is linear, so a 100 KB line wraps without stalling a frame.

use std::ops::Range;

use textwrap::core::Fragment;
use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthStr;

/// Display width of `s` in terminal columns, measured by grapheme.
pub fn width(s: &str) -> usize {
    if s.is_ascii() {
        return s.len();
    }
    s.graphemes(true).map(UnicodeWidthStr::width).sum()
}

/// Tabs replaced by spaces up to the next multiple of `stop` columns (ratatui drops tab cells, and a
/// terminal's own tab stops would not line up inside a pane).
pub fn expand_tabs(line: &str, stop: usize) -> std::borrow::Cow<'_, str> {
    if !line.contains('\t') {
        return std::borrow::Cow::Borrowed(line);
    }
    let stop = stop.max(1);
    let mut out = String::with_capacity(line.len() + 8);
    let mut col = 0;
    for g in line.graphemes(true) {
        if g == "\t" {
            let n = stop - col % stop;
            out.extend(std::iter::repeat_n(' ', n));
            col += n;
        } else if g == "\n" {
            out.push('\n');
            col = 0;
        } else {
            out.push_str(g);
            col += g.width();
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `s` cut to at most `max` columns between graphemes, ending in "…" when anything was cut.
pub fn truncate(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if width(s) <= max {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::new();
    let mut w = 0;
    for g in s.graphemes(true) {
        let gw = g.width();
        if w + gw + 1 > max {
            break;
        }
        out.push_str(g);
        w += gw;
    }
    if max > 0 {
        out.push('…');
    }
    std::borrow::Cow::Owned(out)
}

/// A word (and the spaces after it) as textwrap arranges it, located by byte offsets.
#[derive(Debug)]
struct Piece {
    start: usize,
    end: usize,
    w: f64,
    ws: f64,
}

impl Fragment for Piece {
    fn width(&self) -> f64 {
        self.w
    }
    fn whitespace_width(&self) -> f64 {
        self.ws
    }
    fn penalty_width(&self) -> f64 {
        0.0
    }
}

/// The byte ranges of `text` (one line, no newline) that make its wrapped lines: the first at most
/// `first` columns wide, the others at most `rest`. Trailing spaces at a break are dropped; spaces
/// inside a line (and at its start) are kept.
pub fn wrap_ranges(text: &str, first: usize, rest: usize) -> Vec<Range<usize>> {
    let (first, rest) = (first.max(1), rest.max(1));
    if width(text) <= first {
        return std::iter::once(0..text.len()).collect();
    }
    let limit = first.min(rest);
    let mut pieces = Vec::new();
    let mut i = 0;
    let b = text.as_bytes();
    while i < text.len() {
        // Leading spaces (indentation) are a piece of their own with no word: they stay at the start.
        let word_start = i;
        while i < text.len() && b[i] != b' ' {
            i += 1;
        }
        let word_end = i;
        while i < text.len() && b[i] == b' ' {
            i += 1;
        }
        let ww = width(&text[word_start..word_end]);
        let ws = (i - word_end) as f64;
        if ww <= limit {
            pieces.push(Piece {
                start: word_start,
                end: word_end,
                w: ww as f64,
                ws,
            });
            continue;
        }
        // Too wide for any line: cut between graphemes.
        let mut s = word_start;
        let mut w = 0usize;
        for (off, g) in text[word_start..word_end].grapheme_indices(true) {
            let gw = g.width();
            if w + gw > limit && w > 0 {
                pieces.push(Piece {
                    start: s,
                    end: word_start + off,
                    w: w as f64,
                    ws: 0.0,
                });
                s = word_start + off;
                w = 0;
            }
            w += gw;
        }
        pieces.push(Piece {
            start: s,
            end: word_end,
            w: w as f64,
            ws,
        });
    }
    let lines = textwrap::wrap_algorithms::wrap_first_fit(&pieces, &[first as f64, rest as f64]);
    let mut out: Vec<Range<usize>> = lines
        .iter()
        .filter_map(|l| Some(l.first()?.start..l.last()?.end))
        .collect();
    if out.is_empty() {
        out.push(0..0);
    }
    out
}

/// Plain text wrapped to `width` columns, line by line (blank lines kept, tabs expanded).
pub fn wrap_plain(text: &str, width: usize) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.split('\n') {
        let line = expand_tabs(line.trim_end_matches('\r'), 4);
        for r in wrap_ranges(&line, width, width) {
            out.push(line[r].to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str, first: usize, rest: usize) -> Vec<&str> {
        wrap_ranges(text, first, rest)
            .into_iter()
            .map(|r| &text[r])
            .collect()
    }

    #[test]
    fn keeps_indentation_and_inner_spaces() {
        assert_eq!(lines("    x   = 1", 40, 40), vec!["    x   = 1"]);
        assert_eq!(
            lines("    return a + b  # sum", 12, 12),
            vec!["    return a", "+ b  # sum"]
        );
    }

    #[test]
    fn splits_long_words_between_graphemes() {
        assert_eq!(
            lines("abcdefghijklmnop", 5, 5),
            vec!["abcde", "fghij", "klmno", "p"]
        );
        // A family emoji (ZWJ sequence) is one grapheme of width 2: never cut inside.
        let fam = "👨‍👩‍👧👨‍👩‍👧👨‍👩‍👧";
        let l = lines(fam, 4, 4);
        assert_eq!(l, vec!["👨‍👩‍👧👨‍👩‍👧", "👨‍👩‍👧"]);
        assert!(l.iter().all(|s| width(s) <= 4));
    }

    #[test]
    fn wide_characters_count_two() {
        assert_eq!(width("世界"), 4);
        let l = lines("世界世界世界", 5, 5);
        assert!(l.iter().all(|s| width(s) <= 5), "{l:?}");
        assert_eq!(l.concat(), "世界世界世界");
    }

    #[test]
    fn truncation_ends_in_an_ellipsis_only_when_it_cuts() {
        assert_eq!(truncate("alpha", 5), "alpha");
        assert_eq!(truncate("charlie", 5), "char…");
        assert_eq!(truncate("世界世界", 5), "世界…");
    }

    #[test]
    fn tabs_expand_to_stops() {
        assert_eq!(expand_tabs("\tx", 4), "    x");
        assert_eq!(expand_tabs("ab\tx", 4), "ab  x");
        assert_eq!(
            expand_tabs("func() {\n\treturn\n}", 8),
            "func() {\n        return\n}"
        );
    }

    #[test]
    fn a_100_kb_line_wraps() {
        let line = "word ".repeat(20_000);
        let r = wrap_ranges(&line, 80, 80);
        assert!(r.len() >= 1200, "{}", r.len());
        assert!(r.iter().all(|r| width(&line[r.clone()]) <= 80));
    }
}

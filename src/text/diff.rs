//! Word-level differences between two answers (the compare view marks them): each side as runs of
//! text, each run marked when the other side does not have it. similar's Myers diff, with a
//! deadline so that two long, unrelated answers cannot stall a frame.

use std::time::Duration;

use similar::{ChangeTag, TextDiff};

/// A run of one side's text, and whether it differs from the other side.
pub type Run = (String, bool);

/// `a` and `b` as runs: unchanged words unmarked, words only one side has marked.
pub fn word_diff(a: &str, b: &str) -> (Vec<Run>, Vec<Run>) {
    let diff = TextDiff::configure()
        .timeout(Duration::from_millis(50))
        .diff_words(a, b);
    let (mut left, mut right): (Vec<Run>, Vec<Run>) = (Vec::new(), Vec::new());
    let push = |side: &mut Vec<Run>, text: &str, changed: bool| {
        // Whitespace between two changed words is part of the change, not a break in it.
        let changed =
            changed && (!text.trim().is_empty() || side.last().is_some_and(|l: &Run| l.1));
        match side.last_mut() {
            Some(last) if last.1 == changed => last.0.push_str(text),
            _ => side.push((text.to_string(), changed)),
        }
    };
    for c in diff.iter_all_changes() {
        match c.tag() {
            ChangeTag::Equal => {
                push(&mut left, c.value(), false);
                push(&mut right, c.value(), false);
            }
            ChangeTag::Delete => push(&mut left, c.value(), true),
            ChangeTag::Insert => push(&mut right, c.value(), true),
        }
    }
    (left, right)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marked(runs: &[Run]) -> Vec<&str> {
        runs.iter().filter(|r| r.1).map(|r| r.0.trim()).collect()
    }

    #[test]
    fn marks_only_the_words_that_differ() {
        let (l, r) = word_diff(
            "The capital is Paris, on the Seine.",
            "The capital is Lyon, on the Seine.",
        );
        assert_eq!(marked(&l), ["Paris,"]);
        assert_eq!(marked(&r), ["Lyon,"]);
        // Each side reads back whole.
        assert_eq!(
            l.iter().map(|x| x.0.as_str()).collect::<String>(),
            "The capital is Paris, on the Seine."
        );
        assert_eq!(
            r.iter().map(|x| x.0.as_str()).collect::<String>(),
            "The capital is Lyon, on the Seine."
        );
        let (l, r) = word_diff("same words", "same words");
        assert!(marked(&l).is_empty() && marked(&r).is_empty());
        let (l, _) = word_diff("a b c", "");
        assert_eq!(marked(&l), ["a b c"]);
    }

    #[test]
    fn long_unrelated_answers_finish() {
        let a: String = (0..20_000).map(|i| format!("w{i} ")).collect();
        let b: String = (0..20_000).map(|i| format!("v{i} ")).collect();
        // With the deadline the diff gives up on finding the least change, not on the text.
        let (l, r) = word_diff(&a, &b);
        assert_eq!(l.iter().map(|x| x.0.len()).sum::<usize>(), a.len());
        assert_eq!(r.iter().map(|x| x.0.len()).sum::<usize>(), b.len());
    }
}

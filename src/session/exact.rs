//! Exact-match checking of answers against references, as benchmarks do it: the final number for
//! numeric references (GSM8K), the chosen letter for multiple choice, else the reference's words
//! appearing in the answer (case-insensitive, on word boundaries).

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Number,
    Choice,
    Text,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Match {
    pub method: Method,
    /// What was read from the answer (the number or letter), when anything.
    pub extracted: Option<String>,
    pub correct: bool,
}

pub fn check(answer: &str, reference: &str) -> Match {
    let reference = reference.trim();
    if let Some(want) = parse_number(reference) {
        let got = last_number(answer);
        return Match {
            method: Method::Number,
            correct: got.is_some_and(|g| (g - want).abs() <= 1e-6 * want.abs().max(1.0)),
            extracted: got.map(fmt_number),
        };
    }
    if is_letter(reference) {
        let got = choice(answer);
        return Match {
            method: Method::Choice,
            correct: got.is_some_and(|c| {
                reference
                    .chars()
                    .next()
                    .is_some_and(|r| c.eq_ignore_ascii_case(&r))
            }),
            extracted: got.map(|c| c.to_string()),
        };
    }
    let (a, r) = (words(answer), words(reference));
    Match {
        method: Method::Text,
        extracted: None,
        correct: !r.is_empty() && a.windows(r.len()).any(|w| w == r.as_slice()),
    }
}

fn fmt_number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

fn is_letter(s: &str) -> bool {
    let s = s.trim_matches(|c: char| c == '(' || c == ')' || c == '.');
    s.len() == 1 && s.chars().all(|c| c.is_ascii_alphabetic())
}

/// A number as written in a reference or an answer: `1,234.5`, `-3`, `$42`, `7.50`.
fn parse_number(s: &str) -> Option<f64> {
    let t: String = s
        .trim()
        .trim_start_matches('$')
        .trim_end_matches(['.', '%'])
        .chars()
        .filter(|c| *c != ',')
        .collect();
    if t.is_empty() || !t.chars().any(|c| c.is_ascii_digit()) {
        return None;
    }
    t.parse::<f64>().ok()
}

/// The answer's final number: after a GSM8K `####` marker when there is one, else the last number in
/// the text (thousands separators allowed).
fn last_number(answer: &str) -> Option<f64> {
    let text = answer.rsplit_once("####").map(|(_, t)| t).unwrap_or(answer);
    let b = text.as_bytes();
    let mut best = None;
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let start = if i > 0 && b[i - 1] == b'-' { i - 1 } else { i };
            let mut j = i;
            while j < b.len()
                && (b[j].is_ascii_digit()
                    || ((b[j] == b',' || b[j] == b'.')
                        && j + 1 < b.len()
                        && b[j + 1].is_ascii_digit()))
            {
                j += 1;
            }
            best = parse_number(&text[start..j]).or(best);
            i = j;
        } else {
            i += 1;
        }
    }
    best
}

/// The letter an answer chooses: "answer is (B)", "Answer: B", "**C**", "(D)", or a reply that is
/// only a letter; the last such mention counts.
fn choice(answer: &str) -> Option<char> {
    let t = answer.trim();
    let bare = t.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if bare.len() == 1 && bare.chars().all(|c| c.is_ascii_uppercase()) {
        return bare.chars().next();
    }
    // ASCII lowercasing keeps every byte offset (full lowercasing does not: `İ` becomes three
    // bytes), so offsets found in `lower` slice `t` at the same places.
    let lower = t.to_ascii_lowercase();
    for marker in ["answer is", "answer:", "answer -", "option", "choice:"] {
        if let Some(at) = lower.rfind(marker) {
            let after = &t[at + marker.len()..];
            if let Some(c) = after
                .trim_start_matches(|c: char| c.is_whitespace() || "(*:[\"'".contains(c))
                .chars()
                .next()
                .filter(|c| c.is_ascii_uppercase())
            {
                let next = after
                    .trim_start_matches(|c: char| c.is_whitespace() || "(*:[\"'".contains(c))
                    .chars()
                    .nth(1);
                if next.is_none_or(|n| !n.is_ascii_alphanumeric()) {
                    return Some(c);
                }
            }
        }
    }
    // "(B)" or "B)" at the start of a line, or "**B**": the last one.
    let chars: Vec<char> = t.chars().collect();
    let mut found = None;
    for i in 0..chars.len() {
        let c = chars[i];
        if !c.is_ascii_uppercase() || !('A'..='J').contains(&c) {
            continue;
        }
        let prev = i.checked_sub(1).map(|k| chars[k]);
        let next = chars.get(i + 1).copied();
        let wrapped = prev == Some('(') && next == Some(')')
            || prev == Some('*') && next == Some('*')
            || (prev.is_none_or(|p| p == '\n')
                && matches!(next, Some(')') | Some('.') | Some(':')));
        if wrapped {
            found = Some(c);
        }
    }
    found
}

fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_as_in_gsm8k() {
        assert!(check("She has 3 apples, then 5 more: 3 + 5 = 8.", "8").correct);
        assert!(check("#### 1,234", "1234").correct);
        assert!(check("The total is $7.50.", "7.5").correct);
        assert!(check("It drops to -4 degrees", "-4").correct);
        assert!(!check("8 apples? No: 9", "8").correct);
        assert_eq!(
            check("about 2,500 km", "2500").extracted.as_deref(),
            Some("2500")
        );
        assert!(!check("no numbers here", "3").correct);
        assert_eq!(check("x", "42").method, Method::Number);
    }

    #[test]
    fn multiple_choice_letters() {
        assert!(check("The answer is (B).", "B").correct);
        assert!(check("Answer: C", "C").correct);
        assert!(check("D", "D").correct);
        assert!(check("**A** because it is", "A").correct);
        assert!(check("Looking at the options...\nB) is right", "B").correct);
        assert!(!check("The answer is (B).", "C").correct);
        assert!(!check("I think this is a tricky one", "A").correct);
        assert_eq!(check("x", "(b)").method, Method::Choice);
    }

    #[test]
    fn letters_longer_when_lowercased_do_not_shift_offsets() {
        // `İ` lowercases to three bytes: offsets from a fully lowercased copy pointed into the
        // middle of characters of the original (a panic that aborted `moa eval`).
        let answer = format!("{}answer is (B) x", "İ".repeat(7));
        assert!(check(&answer, "B").correct);
        assert!(!check("İİİİİİİİİİİİ answer: ü", "A").correct);
        for n in 0..12 {
            let a = format!("{}Answer: {}é", "İ".repeat(n), "ẞ");
            let _ = check(&a, "C");
        }
    }

    #[test]
    fn short_text_on_word_boundaries() {
        assert!(check("The capital of France is Paris.", "Paris").correct);
        assert!(check("It was in 1945, when...", "1945").correct);
        assert!(check("New York City is big", "new york").correct);
        assert!(!check("Parisian food", "Paris").correct);
        assert_eq!(check("a", "Paris").method, Method::Text);
    }
}

//! Model and provider text never reaches a terminal with its control sequences: an answer holding
//! OSC 52 would set the user's clipboard, OSC 0 the window title, CSI moves the cursor or erases the
//! screen. `strip_controls` removes C0 controls other than newline and tab, DEL, C1 controls, and
//! whole ESC sequences (CSI, OSC, DCS/SOS/PM/APC strings, two-character escapes), in their 7-bit and
//! 8-bit forms, so no parameter bytes are left behind as litter either.

use std::borrow::Cow;
use std::io::IsTerminal;

/// `text` without terminal control sequences (newlines and tabs are kept).
pub fn strip_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_control) {
        return Cow::Borrowed(text);
    }
    let mut s = Sanitizer::default();
    Cow::Owned(s.feed(text))
}

fn is_control(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t') || c == '\u{7f}'
}

#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    #[default]
    Text,
    /// After ESC.
    Esc,
    /// After ESC and intermediate bytes (ESC ( B): the final byte comes next.
    EscIntermediate,
    /// Inside CSI: parameters and intermediates until a final byte.
    Csi,
    /// Inside an OSC/DCS/SOS/PM/APC string, until BEL or ST.
    Str,
    /// ESC inside such a string (ESC \ ends it).
    StrEsc,
}

/// A sanitizer for text that arrives in pieces (a streamed answer): a sequence split between two
/// pieces is removed whole, its parameters included.
#[derive(Default, Debug)]
pub struct Sanitizer {
    state: State,
}

impl Sanitizer {
    pub fn feed(&mut self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            self.state = match (self.state, c) {
                (State::Text, '\x1b') => State::Esc,
                (State::Text, '\u{9b}') => State::Csi,
                (State::Text, '\u{9d}' | '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}') => State::Str,
                (State::Text, c) => {
                    if !is_control(c) {
                        out.push(c);
                    }
                    State::Text
                }
                (State::Esc, '[') => State::Csi,
                (State::Esc, ']' | 'P' | 'X' | '^' | '_') => State::Str,
                (State::Esc | State::EscIntermediate, '\x20'..='\x2f') => State::EscIntermediate,
                // The final byte of a two-character escape (ESC 7, ESC c, ESC ( B).
                (State::Esc | State::EscIntermediate, '\x30'..='\x7e') => State::Text,
                // Anything else ends the escape; the character itself is judged as text.
                (State::Esc | State::EscIntermediate | State::Csi, c)
                    if !('\x20'..='\x7e').contains(&c) =>
                {
                    if !is_control(c) {
                        out.push(c);
                    }
                    State::Text
                }
                (State::Esc | State::EscIntermediate, _) => State::Text,
                (State::Csi, '\x40'..='\x7e') => State::Text,
                (State::Csi, _) => State::Csi,
                (State::Str, '\x07' | '\u{9c}') => State::Text,
                (State::Str, '\x1b') => State::StrEsc,
                (State::Str, _) => State::Str,
                (State::StrEsc, '\\') => State::Text,
                (State::StrEsc, _) => State::Str,
            };
        }
        out
    }
}

/// Text for a stream that may be a terminal: sanitized when it is one, exact when it is a pipe or
/// a file (scripts and `--json` get what the model wrote).
pub fn for_terminal(text: &str, is_terminal: bool) -> Cow<'_, str> {
    if is_terminal {
        strip_controls(text)
    } else {
        Cow::Borrowed(text)
    }
}

/// Whether stdout / stderr is a terminal (asked once: it does not change while moa runs).
pub fn stdout_is_terminal() -> bool {
    static T: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *T.get_or_init(|| std::io::stdout().is_terminal())
}

pub fn stderr_is_terminal() -> bool {
    static T: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *T.get_or_init(|| std::io::stderr().is_terminal())
}

/// Text for stdout: sanitized when stdout is a terminal.
pub fn out(text: &str) -> Cow<'_, str> {
    for_terminal(text, stdout_is_terminal())
}

/// Text for stderr: sanitized when stderr is a terminal.
pub fn err(text: &str) -> Cow<'_, str> {
    for_terminal(text, stderr_is_terminal())
}

/// `println!` for lines that may hold model, provider or session text: sanitized when stdout is a
/// terminal, exact when it is a pipe or a file.
#[macro_export]
macro_rules! safe_println {
    () => { println!() };
    ($($t:tt)*) => { println!("{}", $crate::text::sanitize::out(&format!($($t)*))) };
}

/// `print!`, sanitized like `safe_println!`.
#[macro_export]
macro_rules! safe_print {
    ($($t:tt)*) => { print!("{}", $crate::text::sanitize::out(&format!($($t)*))) };
}

/// `eprintln!`, sanitized when stderr is a terminal.
#[macro_export]
macro_rules! safe_eprintln {
    () => { eprintln!() };
    ($($t:tt)*) => { eprintln!("{}", $crate::text::sanitize::err(&format!($($t)*))) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_whole_sequences_and_keeps_text() {
        let hostile = "a\x1b]52;c;aGVsbG8=\x07b\x1b]0;title\x1b\\c\x1b[2J\x1b[1;1Hd\u{9b}31me\u{9d}8;;http://x\u{9c}f\x1b7g\x7fh\x01i\r\n\tj";
        assert_eq!(strip_controls(hostile), "abcdefghi\n\tj");
    }

    #[test]
    fn plain_text_is_borrowed() {
        assert!(matches!(
            strip_controls("héllo\n\tworld 世界"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn an_unterminated_sequence_ends_the_text() {
        assert_eq!(strip_controls("ok\x1b]52;c;AAAA"), "ok");
        assert_eq!(strip_controls("ok\x1b"), "ok");
        assert_eq!(strip_controls("ok\x1b[12"), "ok");
    }

    #[test]
    fn a_sequence_split_across_pieces_is_removed_whole() {
        let hostile = "x\x1b]52;c;aGVsbG8=\x07y\x1b[31mz";
        for cut in 1..hostile.len() {
            let mut s = Sanitizer::default();
            let out = s.feed(&hostile[..cut]) + &s.feed(&hostile[cut..]);
            assert_eq!(out, "xyz", "cut at {cut}");
        }
    }

    #[test]
    fn pipes_keep_the_exact_text() {
        assert_eq!(for_terminal("a\x1b[2Jb", false), "a\x1b[2Jb");
        assert_eq!(for_terminal("a\x1b[2Jb", true), "ab");
    }
}

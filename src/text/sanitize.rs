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
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' | '\t' => out.push(c),
            '\x1b' => match chars.peek().copied() {
                Some('[') => {
                    chars.next();
                    skip_csi(&mut chars);
                }
                Some(']' | 'P' | 'X' | '^' | '_') => {
                    chars.next();
                    skip_string(&mut chars);
                }
                // A two-character escape (ESC 7, ESC c, ESC ( B...): intermediates, then the final.
                Some(n) if ('\x20'..='\x7e').contains(&n) => {
                    while chars.next_if(|c| ('\x20'..='\x2f').contains(c)).is_some() {}
                    chars.next();
                }
                _ => {}
            },
            '\u{9b}' => skip_csi(&mut chars),
            '\u{9d}' | '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}' => skip_string(&mut chars),
            c if is_control(c) => {}
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn is_control(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t') || c == '\u{7f}'
}

/// The rest of a CSI sequence: parameter and intermediate bytes, then one final byte.
fn skip_csi(chars: &mut std::iter::Peekable<std::str::Chars>) {
    for c in chars.by_ref() {
        if ('\x40'..='\x7e').contains(&c) || !('\x20'..='\x3f').contains(&c) {
            return;
        }
    }
}

/// The rest of an OSC/DCS/SOS/PM/APC string: up to BEL or ST (ESC \ or U+9C).
fn skip_string(chars: &mut std::iter::Peekable<std::str::Chars>) {
    while let Some(c) = chars.next() {
        match c {
            '\x07' | '\u{9c}' => return,
            '\x1b' => {
                chars.next_if_eq(&'\\');
                return;
            }
            _ => {}
        }
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
    fn pipes_keep_the_exact_text() {
        assert_eq!(for_terminal("a\x1b[2Jb", false), "a\x1b[2Jb");
        assert_eq!(for_terminal("a\x1b[2Jb", true), "ab");
    }
}

//! A filter line over a list, with a selected row: the sessions browser's and the model picker's.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

#[derive(Default)]
pub struct Search {
    pub query: String,
    pub selected: usize,
}

impl Search {
    /// Typing, Backspace, ↑ and ↓ over `n` matching rows; false for any other key.
    pub fn key(&mut self, k: &KeyEvent, n: usize) -> bool {
        match k.code {
            KeyCode::Up => self.selected = self.selected.saturating_sub(1),
            KeyCode::Down => self.selected = (self.selected + 1).min(n.saturating_sub(1)),
            KeyCode::Backspace => {
                self.query.pop();
                self.selected = 0;
            }
            KeyCode::Char(c)
                if !k
                    .modifiers
                    .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT) =>
            {
                self.query.push(c);
                self.selected = 0;
            }
            _ => return false,
        }
        true
    }

    /// Pasted text goes into the filter line: one line, without control characters.
    pub fn paste(&mut self, text: &str) {
        let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        self.query.extend(line.chars().filter(|c| !c.is_control()));
        self.selected = 0;
    }

    /// Whether `hay` contains every word of the query (case-insensitive).
    pub fn accepts(&self, hay: &str) -> bool {
        let hay = hay.to_lowercase();
        self.query
            .to_lowercase()
            .split_whitespace()
            .all(|w| hay.contains(w))
    }
}

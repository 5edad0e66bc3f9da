//! Text as a terminal shows it: escape sequences removed from untrusted text (`sanitize`), widths
//! measured by grapheme and lines wrapped (`wrap`). The workbench's panes and the CLI's printers
//! share it, so a code answer looks the same in both.

pub mod diff;
pub mod sanitize;
pub mod wrap;

pub use sanitize::{for_terminal, strip_controls};
pub use wrap::{expand_tabs, truncate, width, wrap_plain, wrap_ranges};

//! moa's HTML pages, each one self-contained (inline CSS and SVG, no script, nothing loaded from
//! elsewhere): the session export and the `moa eval` report here, the `moa tune` report in
//! `tune::html`. What they share is here too: the page and its style sheet (`page`), model text as
//! escaped, highlighted markdown (`markdown`) and the charts (`svg`).

pub mod eval;
pub mod markdown;
pub mod page;
mod session;
pub mod svg;

pub use markdown::markdown;
pub use page::esc;
pub use session::html;

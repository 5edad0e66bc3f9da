//! The MoA engine: presets, prompts, the runner and its events. It knows nothing of terminals.

pub mod call;
pub mod events;
pub mod preset;
pub mod prompts;
pub mod record;
pub mod runner;

pub use events::{CallTag, RunEvent, Stage};
pub use runner::{Engine, RunHandle, RunOptions};

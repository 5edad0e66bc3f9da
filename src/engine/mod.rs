//! The MoA engine: presets, prompts, the runner and its events. It knows nothing of terminals.

pub mod call;
pub mod events;
pub mod preset;
pub mod prompts;
pub mod record;
pub mod runner;

pub use events::{CallTag, RunEvent, Stage};
pub use runner::{Engine, RunHandle, RunOptions};

/// Why an aggregation cannot be re-run (`Engine::reaggregate`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReaggregateError {
    #[error("preset {preset:?} has no aggregate step to re-run")]
    NoAggregateStep { preset: String },
    #[error("there are no answers to aggregate yet")]
    NoAnswers,
}

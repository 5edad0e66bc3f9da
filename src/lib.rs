//! moa-workbench: a Mixture-of-Agents engine with a terminal workbench and headless runs.

pub mod app;
pub mod cli;
pub mod config;
pub mod engine;
pub mod fetch;
pub mod files;
pub mod metrics;
pub mod provider;
pub mod serve;
pub mod session;
pub mod sys;
pub mod text;
pub mod tui;
pub mod tune;

pub use sys::keep_freed_buffers;

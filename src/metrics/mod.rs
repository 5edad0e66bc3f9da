//! Measures over a run: how far responses agree. (Latency and cost are in the run record.)

pub mod agreement;
pub mod embed;

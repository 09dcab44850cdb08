//! Trace model and formats for mmiotrace.
#![forbid(unsafe_code)]

pub mod event;

pub use event::*;

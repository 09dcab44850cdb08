//! Register databases and the decoder behind `mmiotrace decode`.
#![forbid(unsafe_code)]

pub mod error;
pub mod model;
pub mod rnn;
mod xml;

pub use error::{Error, Result, SourcePos};
pub use model::*;

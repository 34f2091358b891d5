//! The sparse-outlier family's case generators.

pub mod gmatvec;

//! The sparse-outlier family's case generators.

pub mod gmatmul;
pub mod gmatvec;
pub mod rht;
pub mod tmatmul;
pub mod tmatvec;
pub mod tviterbi;

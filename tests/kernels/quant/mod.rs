//! The quantized-matmul family's case generators.

pub mod qmatmul;
pub mod qmatvec;

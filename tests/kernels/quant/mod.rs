//! The quantized-matmul family's case generators.

pub mod qmatmul;
pub mod qmatvec;
pub mod qmatvec_q8;
pub mod quantize_q8;

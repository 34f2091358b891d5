//! wring's quantized-matmul family: products with weights kept in their GGUF block format on the device
//! and dequantized in registers or shared-memory tiles, never in device memory. `qmatvec` serves decode
//! (and batches in 8-row tiles on CPU adapters), `qmatmul` the tiled prefill product on GPUs;
//! `quantize_q8` and `qmatvec_q8` the decode product with 8-bit activations and integer dot products. The block
//! layouts and reference dequantizers the twins build on are `wring-quant`'s; the variants' block sizes are
//! taken from its `BlockFormat` when the family builds.

#![warn(missing_docs)]

pub mod qmatmul;
pub mod qmatvec;
pub mod qmatvec_q8;
pub mod quantize_q8;

pub use qmatmul::Qmatmul;
pub use qmatvec::Qmatvec;
pub use qmatvec_q8::{QmatvecQ8, QmatvecQ8Residual, QmatvecQ8Scaled, QmatvecQ8SwiGlu};
pub use quantize_q8::QuantizeQ8;

wring_kernels_core::family!();

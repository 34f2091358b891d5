//! wring's quantized-matmul family: products with weights kept in their GGUF block format on the device
//! and dequantized in registers or shared-memory tiles, never in device memory. `qmatvec` serves decode
//! (and batches in 8-row tiles on CPU adapters), `qmatmul` the tiled prefill product on GPUs. The block
//! layouts and reference dequantizers the twins build on are `wring-quant`'s; the variants' block sizes are
//! taken from its `BlockFormat` when the family builds.

pub mod qmatmul;
pub mod qmatvec;

pub use qmatmul::Qmatmul;
pub use qmatvec::Qmatvec;

wring_kernels_core::family!();

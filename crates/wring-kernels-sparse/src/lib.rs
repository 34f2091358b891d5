//! wring's sparse-outlier family: products with weights kept in `wring-quant`'s group layout below 4 bits
//! (2- to 8-bit codes in groups along the input, affine f16 or SpQR bilevel statistics, an optional input
//! permutation) and a sparse part of f16 outlier corrections stored per row (CSR). `gmatvec` dequantizes
//! in registers, never in device memory, and gathers each row's outliers in the same workgroup after its
//! dense part, so no row waits on another. `gmatmul` is the prefill product on GPUs: tiles of decoded
//! weights in shared memory, each decoded once per 64 activation rows. `rht` is the incoherence transform
//! a product's input takes when the weights were stored in its basis (`wring_quant::rht`). `tmatvec` multiplies by trellis-coded
//! weights (`wring_quant::trellis`), decoding QTIP's computed code per lane, and `tmatmul` is its
//! prefill product on GPUs (each tile decoded into shared memory once per 64 activation rows);
//! `tviterbi` is the trellis encoder on the device. The layout and its reference
//! dequantizer are `wring_quant::group`'s.

#![warn(missing_docs)]

pub mod gmatmul;
pub mod gmatvec;
pub mod rht;
pub mod tmatmul;
pub mod tmatvec;
pub mod tviterbi;

pub use gmatmul::Gmatmul;
pub use gmatvec::Gmatvec;
pub use rht::Rht;
pub use tmatmul::Tmatmul;
pub use tmatvec::Tmatvec;
pub use tviterbi::Tviterbi;

wring_kernels_core::family!();

//! wring's wavelet family: one level of the discrete wavelet transform along one axis of a batch, forward
//! or inverse, with pywavelets' wavelets, boundary modes and output lengths (`dwt`). 2-D transforms and
//! wavelet packet trees are sequences of these launches, composed in `wring-codec`.

#![warn(missing_docs)]

pub mod dwt;

pub use dwt::{Dwt, Mode, Wavelet};

wring_kernels_core::family!();

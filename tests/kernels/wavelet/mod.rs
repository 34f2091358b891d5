//! The wavelet family's case generators.

pub mod dwt;

//! Array files shared by wring's model crates: numpy's `.npy` (coefficients, codes, vectors) and f32
//! tensors in safetensors (codebooks). One crate, so the codec and the VQ crate read and write arrays the
//! same way and neither depends on the other for it; and `group_file`, the safetensors file of a model's
//! group-quantized linear layers.

pub mod group_file;
pub mod npy;
pub mod safetensors_f32;

use std::path::Path;

/// A file that could not be read or written, or is not what it claims to be.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {what}")]
pub struct IoError {
    /// The file.
    pub path: String,
    /// What is wrong with it.
    pub what: String,
}

impl IoError {
    pub(crate) fn new(path: &Path, what: impl std::fmt::Display) -> IoError {
        IoError {
            path: path.display().to_string(),
            what: what.to_string(),
        }
    }
}

pub use npy::{read_npy, read_npy_u32, write_npy, write_npy_u32};

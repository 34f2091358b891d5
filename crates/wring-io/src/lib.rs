//! Array files shared by wring's model crates: numpy's `.npy` (coefficients, codes, vectors) and f32
//! tensors in safetensors (codebooks). One crate, so the codec and the VQ crate read and write arrays the
//! same way and neither depends on the other for it; and `group_file`, the safetensors file of a model's
//! group-quantized linear layers.

#![warn(missing_docs)]

pub mod batch;
pub mod group_file;
pub mod kv_factors;
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

/// The tensors and `__metadata__` of a safetensors file that must be a `format` file (wring's own
/// schemas: the metadata exists and its `format` names the schema), as `group_file` and `kv_factors` read
/// them.
pub(crate) fn schema<'a>(
    bytes: &'a [u8],
    format: &str,
) -> Result<
    (
        safetensors::SafeTensors<'a>,
        std::collections::HashMap<String, String>,
    ),
    String,
> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
    let meta = header
        .metadata()
        .clone()
        .ok_or(format!("no __metadata__: not a {format} file"))?;
    let found = meta
        .get("format")
        .ok_or_else(|| format!("metadata lacks `format`: not a {format} file"))?;
    if found != format {
        return Err(format!("format `{found}` is not {format}"));
    }
    Ok((st, meta))
}

/// A metadata value a `format` file must have.
pub(crate) fn meta_get<'m>(
    meta: &'m std::collections::HashMap<String, String>,
    key: &str,
    format: &str,
) -> Result<&'m String, String> {
    meta.get(key)
        .ok_or_else(|| format!("metadata lacks `{key}`: not a {format} file"))
}

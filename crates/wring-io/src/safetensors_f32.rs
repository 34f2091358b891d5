//! f32 tensors in the safetensors format, with string metadata: how codebooks are saved.

use std::collections::HashMap;
use std::path::Path;

use crate::IoError;

/// Writes one f32 tensor `name` of `shape` with `metadata`.
pub fn write(
    path: &Path,
    name: &str,
    shape: &[usize],
    data: &[f32],
    metadata: HashMap<String, String>,
) -> Result<(), IoError> {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.to_vec(), &bytes)
            .map_err(|e| IoError::new(path, e))?;
    let out = safetensors::serialize([(name, view)], Some(metadata))
        .map_err(|e| IoError::new(path, e))?;
    std::fs::write(path, out).map_err(|e| IoError::new(path, e))
}

/// Reads the f32 tensor `name`: its shape and values. The safetensors crate checks the header's offsets
/// against the file before any tensor is read.
pub fn read(path: &Path, name: &str) -> Result<(Vec<usize>, Vec<f32>), IoError> {
    let bytes = std::fs::read(path).map_err(|e| IoError::new(path, e))?;
    parse(&bytes, name).map_err(|e| IoError::new(path, e))
}

/// Reads the f32 tensor `name` from a safetensors file held in memory.
pub fn parse(bytes: &[u8], name: &str) -> Result<(Vec<usize>, Vec<f32>), String> {
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
    let t = st.tensor(name).map_err(|e| e.to_string())?;
    if t.dtype() != safetensors::Dtype::F32 {
        return Err(format!("{name} must be F32, not {:?}", t.dtype()));
    }
    Ok((
        t.shape().to_vec(),
        t.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    ))
}

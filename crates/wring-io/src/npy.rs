//! numpy's `.npy` format: little-endian f32 and integer arrays in C order (versions 1 to 3). The header is
//! checked against the file's length before anything is allocated.

use std::path::Path;

use crate::IoError;

/// Writes a little-endian f32 array as .npy (format version 1.0).
pub fn write_npy(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), IoError> {
    write_npy_raw(
        path,
        shape,
        "<f4",
        &data
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<_>>(),
    )
}

/// Writes a little-endian u32 array as .npy (codebook indices).
pub fn write_npy_u32(path: &Path, shape: &[usize], data: &[u32]) -> Result<(), IoError> {
    write_npy_raw(
        path,
        shape,
        "<u4",
        &data
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<_>>(),
    )
}

fn write_npy_raw(path: &Path, shape: &[usize], descr: &str, data: &[u8]) -> Result<(), IoError> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    // Magic (6) + version (2) + length (2) + header + newline is padded to a multiple of 64 bytes.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + data.len());
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).map_err(|e| IoError::new(path, e))
}

/// Reads a little-endian f32 .npy (version 1 or 2, C order); returns the shape and the values. The header is
/// checked against the file's length before anything is allocated.
pub fn read_npy(path: &Path) -> Result<(Vec<usize>, Vec<f32>), IoError> {
    let (shape, descr, data) = read_npy_raw(path)?;
    if descr != "<f4" {
        return Err(IoError::new(
            path,
            format!("the .npy holds '{descr}'; f32 ('<f4') is needed"),
        ));
    }
    Ok((
        shape,
        data.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    ))
}

/// Reads an integer .npy ('<u4', '<i4' or numpy's default '<i8', C order) as u32; negative values and
/// values above u32::MAX are errors.
pub fn read_npy_u32(path: &Path) -> Result<(Vec<usize>, Vec<u32>), IoError> {
    let (shape, descr, data) = read_npy_raw(path)?;
    let range = || IoError::new(path, "an index is negative or above 2^32 - 1".to_string());
    let values = match descr.as_str() {
        "<u4" => data
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        "<i4" => data
            .chunks_exact(4)
            .map(|c| {
                u32::try_from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])).map_err(|_| range())
            })
            .collect::<Result<Vec<_>, _>>()?,
        "<i8" => data
            .chunks_exact(8)
            .map(|c| {
                u32::try_from(i64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .map_err(|_| range())
            })
            .collect::<Result<Vec<_>, _>>()?,
        other => {
            return Err(IoError::new(
                path,
                format!("the .npy holds '{other}'; integers ('<u4', '<i4', '<i8') are needed"),
            ));
        }
    };
    Ok((shape, values))
}

/// The shape, the dtype descriptor and the data bytes of a little-endian C-order .npy. The header is
/// checked against the file's length before anything is allocated.
fn read_npy_raw(path: &Path) -> Result<(Vec<usize>, String, Vec<u8>), IoError> {
    let bytes = std::fs::read(path).map_err(|e| IoError::new(path, e))?;
    let bad = |what: &str| IoError::new(path, format!("not a .npy file wring reads: {what}"));
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("bad magic"));
    }
    let (len, start) = match bytes[6] {
        1 => (
            usize::from(u16::from_le_bytes([bytes[8], bytes[9]])),
            10usize,
        ),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => return Err(bad("unknown version")),
    };
    let header = std::str::from_utf8(
        bytes
            .get(start..start.saturating_add(len))
            .ok_or_else(|| bad("truncated header"))?,
    )
    .map_err(|_| bad("header is not text"))?;
    if header.contains("'fortran_order': True") {
        return Err(bad("only C order is supported"));
    }
    let descr = header
        .split("'descr':")
        .nth(1)
        .and_then(|s| s.split('\'').nth(1))
        .ok_or_else(|| bad("no descr"))?
        .to_string();
    let item = match descr.as_str() {
        "<f4" | "<u4" | "<i4" => 4,
        "<i8" => 8,
        other => return Err(bad(&format!("element type '{other}' is not supported"))),
    };
    let shape_text = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split(['(', ')']).nth(1))
        .ok_or_else(|| bad("no shape"))?;
    let shape: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| bad("bad shape")))
        .collect::<Result<_, _>>()?;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad("shape overflows"))?;
    let data = &bytes[start + len..];
    if count.checked_mul(item) != Some(data.len()) {
        return Err(bad("the data length does not match the shape"));
    }
    Ok((shape, descr, data.to_vec()))
}

//! Files in and out: images through the `image` crate (PNG, JPEG), audio through `hound` (WAV), and
//! coefficients as .npy (numpy's format, so researchers can inspect them).

use std::path::Path;

use crate::CodecError;
use crate::codec::{Audio, Image};

fn io(path: &Path, e: impl std::fmt::Display) -> CodecError {
    CodecError::Io(format!("{}: {e}", path.display()))
}

/// Reads a PNG or JPEG as 8-bit gray (if it has one channel) or RGB (alpha is dropped).
pub fn read_image(path: &Path) -> Result<Image, CodecError> {
    let img = image::open(path).map_err(|e| io(path, e))?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    if img.color().channel_count() <= 2 {
        Ok(Image {
            width,
            height,
            channels: 1,
            pixels: img.into_luma8().into_raw(),
        })
    } else {
        Ok(Image {
            width,
            height,
            channels: 3,
            pixels: img.into_rgb8().into_raw(),
        })
    }
}

/// Writes an image; the format follows the extension.
pub fn write_image(path: &Path, img: &Image) -> Result<(), CodecError> {
    let color = if img.channels == 3 {
        image::ExtendedColorType::Rgb8
    } else {
        image::ExtendedColorType::L8
    };
    image::save_buffer(
        path,
        &img.pixels,
        img.width as u32,
        img.height as u32,
        color,
    )
    .map_err(|e| io(path, e))
}

/// Reads a 16-bit PCM WAV (or 8/24/32-bit integer and float WAVs, converted to 16 bits).
pub fn read_wav(path: &Path) -> Result<Audio, CodecError> {
    let mut r = hound::WavReader::open(path).map_err(|e| io(path, e))?;
    let spec = r.spec();
    let samples: Vec<i16> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Int, 16) => r
            .samples::<i16>()
            .collect::<Result<_, _>>()
            .map_err(|e| io(path, e))?,
        (hound::SampleFormat::Int, bits) => {
            let shift = i32::from(bits) - 16;
            r.samples::<i32>()
                .map(|s| {
                    s.map(|v| {
                        if shift >= 0 {
                            (v >> shift) as i16
                        } else {
                            (v << -shift) as i16
                        }
                    })
                })
                .collect::<Result<_, _>>()
                .map_err(|e| io(path, e))?
        }
        (hound::SampleFormat::Float, _) => r
            .samples::<f32>()
            .map(|s| s.map(|v| (v * 32767.0).round().clamp(-32768.0, 32767.0) as i16))
            .collect::<Result<_, _>>()
            .map_err(|e| io(path, e))?,
    };
    Ok(Audio {
        sample_rate: spec.sample_rate,
        channels: usize::from(spec.channels),
        samples,
    })
}

/// Writes 16-bit PCM WAV.
pub fn write_wav(path: &Path, a: &Audio) -> Result<(), CodecError> {
    let spec = hound::WavSpec {
        channels: a.channels as u16,
        sample_rate: a.sample_rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).map_err(|e| io(path, e))?;
    for &s in &a.samples {
        w.write_sample(s).map_err(|e| io(path, e))?;
    }
    w.finalize().map_err(|e| io(path, e))
}

/// Writes a little-endian f32 array as .npy (format version 1.0).
pub fn write_npy(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), CodecError> {
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
pub fn write_npy_u32(path: &Path, shape: &[usize], data: &[u32]) -> Result<(), CodecError> {
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

fn write_npy_raw(path: &Path, shape: &[usize], descr: &str, data: &[u8]) -> Result<(), CodecError> {
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
    std::fs::write(path, bytes).map_err(|e| io(path, e))
}

/// Reads a little-endian f32 .npy (version 1 or 2, C order); returns the shape and the values. The header is
/// checked against the file's length before anything is allocated.
pub fn read_npy(path: &Path) -> Result<(Vec<usize>, Vec<f32>), CodecError> {
    let (shape, descr, data) = read_npy_raw(path)?;
    if descr != "<f4" {
        return Err(io(
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
pub fn read_npy_u32(path: &Path) -> Result<(Vec<usize>, Vec<u32>), CodecError> {
    let (shape, descr, data) = read_npy_raw(path)?;
    let range = || io(path, "an index is negative or above 2^32 - 1".to_string());
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
            return Err(io(
                path,
                format!("the .npy holds '{other}'; integers ('<u4', '<i4', '<i8') are needed"),
            ));
        }
    };
    Ok((shape, values))
}

/// The shape, the dtype descriptor and the data bytes of a little-endian C-order .npy. The header is
/// checked against the file's length before anything is allocated.
fn read_npy_raw(path: &Path) -> Result<(Vec<usize>, String, Vec<u8>), CodecError> {
    let bytes = std::fs::read(path).map_err(|e| io(path, e))?;
    let bad = |what: &str| io(path, format!("not a .npy file wring reads: {what}"));
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

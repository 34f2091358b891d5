//! Files in and out: images through the `image` crate (PNG, JPEG), audio through `hound` (WAV), and
//! coefficients as .npy (numpy's format, so researchers can inspect them) through `wring-io`.

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
    // hound panics on some of these; they are the caller's mistake, so they are errors here.
    if a.sample_rate == 0 || a.channels == 0 || a.channels > usize::from(u16::MAX) {
        return Err(io(
            path,
            format!(
                "cannot write {} channels at {} Hz as WAV",
                a.channels, a.sample_rate
            ),
        ));
    }
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

pub use wring_io::{read_npy, read_npy_u32, write_npy, write_npy_u32};

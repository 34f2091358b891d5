//! Data compression on wring: the wavelet packet transform (WaLLoC's invertible sandwich) on the GPU, and a
//! lossy image/audio codec built on it.

#![warn(missing_docs)]

pub mod codec;
pub mod container;
pub mod io;
pub mod model;
pub mod tree;
pub mod wpt;

pub use codec::{
    Audio, Coefficients, Decoded, ENCODABLE, Encoded, Image, Limits, Options, Rate, TreeShape,
    decode, decode_coefficients, decode_with, encode_audio, encode_file, encode_image, is_wav,
};
pub use container::Tune;
pub use wpt::Packet;

/// What can go wrong in the codec.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// A GPU-side failure.
    #[error(transparent)]
    Runtime(#[from] wring_runtime::Error),
    /// A request that does not make sense (shapes, levels, rates).
    #[error("{0}")]
    Request(String),
    /// A stream that is truncated, corrupted or not a wring stream.
    #[error("corrupt stream: {0}")]
    Corrupt(String),
    /// A stream from another format version.
    #[error("unsupported stream: {0}")]
    Unsupported(String),
    /// Reading or writing files.
    #[error("{0}")]
    Io(String),
}

impl From<wring_io::IoError> for CodecError {
    fn from(e: wring_io::IoError) -> Self {
        CodecError::Io(e.to_string())
    }
}

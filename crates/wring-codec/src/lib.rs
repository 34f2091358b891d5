//! Data compression on wring: the wavelet packet transform (WaLLoC's invertible sandwich) on the GPU, and a
//! lossy image/audio codec built on it.

pub mod wpt;

pub use wpt::Packet;

/// What can go wrong in the codec.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// A GPU-side failure.
    #[error(transparent)]
    Runtime(#[from] wring_runtime::Error),
    /// A request that does not make sense (shapes, levels).
    #[error("{0}")]
    Request(String),
}

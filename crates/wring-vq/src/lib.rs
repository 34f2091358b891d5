//! Vector quantization on the GPU: codebooks, exact nearest-codeword search (L2, inner product, cosine;
//! top-1 and top-k), k-means, and quantizers made of codebooks: plain VQ, residual VQ (R stages),
//! group-residual VQ (G groups of R stages, as HiFi-Codec) and product quantization (M subspaces, one
//! stage each), with asymmetric-distance search over product codes.
//!
//! Every kernel is in the VQ kernel family (`wring_runtime::kernels::vq`); this crate schedules them. Codebooks above the adapter's
//! binding limit are stored as several device tensors and searched launch by launch; queries are taken in
//! blocks so that no scratch exceeds the limit either.

#![warn(missing_docs)]

pub mod kmeans;
pub mod quantizer;
pub mod search;

pub use kmeans::{Init, KMeans, KMeansOptions, kmeans};
pub use quantizer::Quantizer;
pub use search::{Codebook, Neighbours, Rows, search, search_rows};
pub use wring_runtime::kernels::vq::Metric;

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum VqError {
    /// A GPU-side failure.
    #[error(transparent)]
    Runtime(#[from] wring_runtime::Error),
    /// A request that does not make sense (shapes, k, values).
    #[error("{0}")]
    Request(String),
    /// Reading or writing files.
    #[error("{0}")]
    Io(String),
}

impl From<wring_io::IoError> for VqError {
    fn from(e: wring_io::IoError) -> Self {
        VqError::Io(e.to_string())
    }
}

/// Shorthand.
pub type Result<T> = std::result::Result<T, VqError>;

fn request<T>(what: String) -> Result<T> {
    Err(VqError::Request(what))
}

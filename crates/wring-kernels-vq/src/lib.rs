//! wring's vector-quantization family: the fused nearest-codeword search (`vq_search`, L2, inner product
//! and cosine, top-1 and top-k, f32 or f16 codebooks), the merge of its per-invocation lists
//! (`vq_merge`), the direct refinement of L2 distances (`vq_refine`), squared norms (`vq_norms`),
//! codebook lookup (`vq_lookup`: decode and residual updates) and the k-means centroid update
//! (`vq_update`). Each is a unit in `vq` with its CPU twin.

#![warn(missing_docs)]

pub mod vq;

pub use vq::{Lookup, LookupOp, Merge, Metric, Norms, Refine, Search, Update};

wring_kernels_core::family!();

//! wring's tensor kernel family: the basics an LLM forward pass and most other work is made of. Each
//! module is one kernel unit (a descriptor implementing [`wring_kernels_core::Kernel`] and its CPU twin)
//! over a WGSL file in `shaders/tensor/`; `attention` holds the two attention kernels, `rope` the
//! rotation and the fused rotation + KV append.

#![warn(missing_docs)]

pub mod attention;
pub mod binary;
pub mod copy;
pub mod fill;
pub mod get_rows;
pub mod matmul;
pub mod matvec;
pub mod rmsnorm;
pub mod rope;
pub mod silu_mul;
pub mod softmax;

pub use attention::{Attention, AttnFused, AttnFusedQ8, AttnPv, AttnScores};
pub use binary::{Binary, BinaryOp};
pub use copy::CopyWords;
pub use fill::Fill;
pub use get_rows::GetRows;
pub use matmul::Matmul;
pub use matvec::Matvec;
pub use rmsnorm::{Rmsnorm, RmsnormQ8};
pub use rope::{Rope, RopeMode, RopeQkv};
pub use silu_mul::{SiluMul, SiluMulQ8};
pub use softmax::Softmax;

wring_kernels_core::family!();

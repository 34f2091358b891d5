//! The tensor family's case generators.

pub mod attn_fused;
pub mod attn_pv;
pub mod attn_scores;
pub mod binary;
pub mod copy;
pub mod fill;
pub mod get_rows;
pub mod matmul;
pub mod matvec;
pub mod rmsnorm;
pub mod rope;
pub mod rope_qkv;
pub mod silu_mul;
pub mod softmax;

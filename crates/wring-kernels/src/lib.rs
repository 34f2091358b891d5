//! wring's kernel catalogue.
//!
//! Each kernel is a WGSL file under `shaders/`, a set of variants declared in `shaders/permutations`
//! (validated by naga when this crate builds), a `Params` struct laid out exactly as the shader's uniform,
//! a planner that picks a variant for a shape and an adapter and sizes the dispatch, and a CPU twin written
//! to mirror the shader's loops. This crate does no IO and never touches a device: the runtime does that.

pub mod shader_build;
pub mod variant;

pub use shader_build::{BindingKind, Requires, ShaderError};
pub use variant::{Binding, Variant};

/// The shared helpers under `shaders/common/`, for kernels specialised from source at run time.
pub const COMMON: &[(&str, &str)] = &[
    (
        "attention",
        include_str!("../../../shaders/common/attention.wgsl"),
    ),
    (
        "invocation",
        include_str!("../../../shaders/common/invocation.wgsl"),
    ),
    ("quant", include_str!("../../../shaders/common/quant.wgsl")),
    (
        "reduce",
        include_str!("../../../shaders/common/reduce.wgsl"),
    ),
    ("rope", include_str!("../../../shaders/common/rope.wgsl")),
    ("tile", include_str!("../../../shaders/common/tile.wgsl")),
];

pub mod attention;
pub mod binary;
pub mod check;
pub mod copy;
pub mod dtype;
pub mod fill;
pub mod get_rows;
pub mod matmul;
pub mod matvec;
pub mod plan;
pub mod qmatmul;
pub mod qmatvec;
pub mod reduce;
pub mod rmsnorm;
pub mod rope;
pub mod silu_mul;
pub mod softmax;
pub mod vq;
pub mod wavelet;

pub use dtype::{DType, Element, Float};
pub use plan::{Caps, Choice, KernelError, Plan, Strided};

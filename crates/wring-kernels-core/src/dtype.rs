//! Element types of device tensors.

use half::f16;
pub use wring_quant::BlockFormat;

/// The element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE binary32.
    F32,
    /// IEEE binary16; device kernels need `SHADER_F16`.
    F16,
    /// 32-bit unsigned integer (raw words, indices).
    U32,
    /// 32-bit signed integer (positions).
    I32,
    /// Packed GGUF blocks (weights stay in this form on the device; kernels dequantize on the fly).
    Block(BlockFormat),
}

impl DType {
    /// Bytes per element of a scalar type; for a block format, bytes per block (see [`DType::bytes_for`]).
    pub const fn size(self) -> usize {
        match self {
            DType::F16 => 2,
            DType::F32 | DType::U32 | DType::I32 => 4,
            DType::Block(f) => f.block_bytes(),
        }
    }

    /// Bytes of `len` elements, or `None` when a block format's blocks do not divide `len` (or it overflows).
    pub fn bytes_for(self, len: usize) -> Option<usize> {
        match self {
            DType::Block(f) => len
                .is_multiple_of(f.block_len())
                .then(|| len / f.block_len() * f.block_bytes()),
            _ => len.checked_mul(self.size()),
        }
    }

    /// The lowercase name used in variant names (`f32`, `f16`, `q4_k`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::U32 => "u32",
            DType::I32 => "i32",
            DType::Block(BlockFormat::Q4_0) => "q4_0",
            DType::Block(BlockFormat::Q4_1) => "q4_1",
            DType::Block(BlockFormat::Q5_0) => "q5_0",
            DType::Block(BlockFormat::Q5_1) => "q5_1",
            DType::Block(BlockFormat::Q8_0) => "q8_0",
            DType::Block(BlockFormat::Q4_K) => "q4_k",
            DType::Block(BlockFormat::Q5_K) => "q5_k",
            DType::Block(BlockFormat::Q6_K) => "q6_k",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A host element type that maps to a [`DType`].
pub trait Element: bytemuck::Pod + Copy + Send + Sync + std::fmt::Debug + 'static {
    /// The matching device type.
    const DTYPE: DType;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
}
impl Element for f16 {
    const DTYPE: DType = DType::F16;
}
impl Element for u32 {
    const DTYPE: DType = DType::U32;
}
impl Element for i32 {
    const DTYPE: DType = DType::I32;
}

/// A floating-point element the kernels compute with: converted to f32 on load, as the shaders do.
pub trait Float: Element {
    /// Widen to f32 exactly.
    fn to_f32(self) -> f32;
    /// Round from f32 to nearest even.
    fn from_f32(v: f32) -> Self;
}

impl Float for f32 {
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl Float for f16 {
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
}

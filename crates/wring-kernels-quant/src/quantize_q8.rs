//! `shaders/quant/quantize_q8.wgsl`: activations quantized to 8 bits per 32-value unit for the
//! integer-dot decode product (`qmatvec_q8`), as llama.cpp's CPU back end quantizes them to Q8_1.

use wring_kernels_core::dtype::DType;
use wring_kernels_core::plan::{self, Caps, Choice, KernelError, Plan};
use wring_kernels_core::{Kernel, Operand};

pub use wring_kernels_core::q8::UNIT_WORDS;

/// The shader's `Params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    /// 32-value units in all rows.
    pub units: u32,
    /// Padding to the uniform's 16 bytes.
    pub pad0: u32,
    /// Padding.
    pub pad1: u32,
    /// Padding.
    pub pad2: u32,
}

/// `q = quantize_q8(x)` for `rows` activation rows of `k` values (k a multiple of 32): per unit of 32, the
/// codes round(x * 127 / amax) as signed bytes, d = amax / 127 and s = d * sum(codes), in
/// [`UNIT_WORDS`] words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantizeQ8 {
    /// Values per row, a multiple of 32.
    pub k: usize,
    /// Activation rows.
    pub rows: usize,
}

impl QuantizeQ8 {
    /// Words of the quantized activations.
    pub fn words(&self) -> usize {
        wring_kernels_core::q8::words(self.rows * self.k)
    }
}

impl Kernel for QuantizeQ8 {
    fn kernel(&self) -> &'static str {
        "quantize_q8"
    }

    fn operands(&self) -> Vec<Operand> {
        vec![
            Operand::read("x", DType::F32, 0).shape(&[self.rows, self.k]),
            Operand::write("q", DType::U32, self.words()),
        ]
    }

    /// One invocation per unit, 64 to a workgroup.
    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        plan::ensure(self.k.is_multiple_of(32), "quantize_q8", || {
            format!("k = {} is not a multiple of 32", self.k)
        })?;
        let units = self.rows * self.k / 32;
        plan::index_u32("quantize_q8", "words", self.words())?;
        let v = crate::choose(
            &crate::catalogue::quantize_q8::Q8,
            "the only variant",
            caps,
            choice,
        )?;
        let params = Params {
            units: units as u32,
            pad0: 0,
            pad1: 0,
            pad2: 0,
        };
        plan::per_item(
            "quantize_q8",
            v,
            units as u64,
            bytemuck::bytes_of(&params),
            caps,
        )
    }
}

/// CPU twin, operation for operation: the 8-bit unit's own twin, [`wring_kernels_core::q8::quantize`]
/// (a function here, where tests/tidy.rs looks for every unit's twin).
pub fn cpu(x: &[f32], q: &mut [u32]) {
    wring_kernels_core::q8::quantize(x, q);
}

//! `shaders/quant/quantize_q8.wgsl`: activations quantized to 8 bits per 32-value unit for the
//! integer-dot decode product (`qmatvec_q8`), as llama.cpp's CPU back end quantizes them to Q8_1.

use wring_kernels_core::dtype::DType;
use wring_kernels_core::plan::{self, Caps, Choice, KernelError, Plan};
use wring_kernels_core::{Kernel, Operand};

/// Words one quantized 32-value unit takes: 8 of codes, d, s and two of padding (three vec4s).
pub const UNIT_WORDS: usize = 12;

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
        self.rows * self.k / 32 * UNIT_WORDS
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

/// CPU twin, operation for operation: amax over the unit, d = amax / 127, the codes round(x * (127 /
/// amax)) with ties to even (WGSL's `round`), s = d * (sum of codes).
pub fn cpu(x: &[f32], q: &mut [u32]) {
    for (unit, out) in x.chunks_exact(32).zip(q.chunks_exact_mut(UNIT_WORDS)) {
        let m = unit.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = m / 127.0;
        let id = if m > 0.0 { 127.0 / m } else { 0.0 };
        let codes: Vec<i32> = unit
            .iter()
            .map(|v| (v * id).round_ties_even() as i32)
            .collect();
        let total: i32 = codes.iter().sum();
        for (w, c) in out[..8].iter_mut().zip(codes.chunks_exact(4)) {
            *w = u32::from_le_bytes([c[0] as u8, c[1] as u8, c[2] as u8, c[3] as u8]);
        }
        out[8] = d.to_bits();
        out[9] = (d * total as f32).to_bits();
        out[10] = 0;
        out[11] = 0;
    }
}

//! `shaders/fill.wgsl`: set every word to one value.

use wring_kernels_core::plan::{self, Caps, Choice, KernelError, Plan};
use wring_kernels_core::{DType, Kernel, Operand};

/// The shader's `Params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    /// Words to fill.
    pub n: u32,
    /// The bit pattern written to each word.
    pub value: u32,
    /// Uniform padding to 16 bytes.
    pub pad: [u32; 2],
}

/// Every one of `words` 32-bit words becomes `value`'s bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fill {
    /// Words to fill.
    pub words: usize,
    /// The bit pattern.
    pub value: u32,
}

impl Kernel for Fill {
    fn kernel(&self) -> &'static str {
        "fill"
    }

    fn operands(&self) -> Vec<Operand> {
        vec![Operand::write("dst", DType::U32, self.words).words()]
    }

    /// Plans filling `words` words with `value`'s bits.
    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let Fill { words, value } = *self;
        let v = crate::choose(
            &crate::catalogue::fill::U32,
            "it is the only variant",
            caps,
            choice,
        )?;
        let n = plan::index_u32("fill", "words", words)?;
        let per_group = u64::from(v.define_u32("WG") * v.define_u32("ITEMS"));
        plan::linear(
            "fill",
            v,
            u64::from(n).div_ceil(per_group),
            bytemuck::bytes_of(&Params {
                n,
                value,
                pad: [0; 2],
            }),
            caps,
        )
    }
}

/// CPU twin: every word becomes `value`.
pub fn cpu(dst: &mut [u32], value: u32) {
    for d in dst.iter_mut() {
        *d = value;
    }
}

//! `shaders/fill.wgsl`: set every word to one value.

use crate::plan::{self, Caps, Choice, KernelError, Plan};

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

/// Plans filling `words` words with `value`'s bits.
pub fn plan(
    words: usize,
    value: u32,
    caps: &Caps,
    choice: Choice<'_>,
) -> Result<Plan, KernelError> {
    let v = plan::select("fill", "u32", "it is the only variant", caps, choice)?;
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

/// CPU twin: every word becomes `value`.
pub fn cpu(dst: &mut [u32], value: u32) {
    for d in dst.iter_mut() {
        *d = value;
    }
}

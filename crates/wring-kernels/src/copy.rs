//! `shaders/copy.wgsl`: word copy, the bandwidth probe.

use crate::plan::{self, Caps, Choice, KernelError, Plan};

/// The shader's `Params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    /// Words to copy, in units of the variant's WORD.
    pub n: u32,
    /// Uniform padding to 16 bytes.
    pub pad: [u32; 3],
}

/// Plans a copy of `words` 32-bit words. `vec4` moves 16 bytes per access and needs a multiple of 4 words.
pub fn plan(words: usize, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
    let (auto, why) = if words.is_multiple_of(4) {
        ("vec4", "the length is a multiple of 4 words")
    } else {
        ("u32", "the length is not a multiple of 4 words")
    };
    let v = plan::select("copy", auto, why, caps, choice)?;
    let per_word = if v.name == "vec4" { 4 } else { 1 };
    plan::ensure(words.is_multiple_of(per_word), "copy", || format!("variant {} needs a multiple of 4 words, got {words}", v.id()))?;
    let n = plan::index_u32("copy", "words", words / per_word)?;
    let per_group = u64::from(v.define_u32("WG") * v.define_u32("ITEMS"));
    let workgroups = plan::grid_1d("copy", u64::from(n).div_ceil(per_group), caps)?;
    Ok(Plan { variant: v, params: bytemuck::bytes_of(&Params { n, pad: [0; 3] }).to_vec(), workgroups })
}

/// CPU twin: `dst[i] = src[i]`.
pub fn cpu(src: &[u32], dst: &mut [u32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = *s;
    }
}

//! `shaders/copy.wgsl`: word copy, the bandwidth probe.

use wring_kernels_core::plan::{self, Caps, Choice, KernelError, Plan};
use wring_kernels_core::{DType, Kernel, Operand};

use crate::catalogue::copy::{U32, VEC4};

/// The shader's `Params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    /// Words to copy, in units of the variant's WORD.
    pub n: u32,
    /// Where reading starts in src, in WORDs.
    pub src_offset: u32,
    /// Where writing starts in dst, in WORDs.
    pub dst_offset: u32,
    /// Uniform padding to 16 bytes.
    pub pad: u32,
}

/// A copy of `words` 32-bit words from word `src_offset` of `src` to word `dst_offset` of `dst` (how a
/// step's keys and values are appended to a cache, and the bandwidth probe). The vec4 variant moves 16
/// bytes per access and needs all three to be multiples of 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyWords {
    /// Words to copy.
    pub words: usize,
    /// First word read.
    pub src_offset: usize,
    /// First word written.
    pub dst_offset: usize,
}

impl CopyWords {
    /// A whole copy of `words` words, from the start of one tensor to the start of another.
    pub fn new(words: usize) -> CopyWords {
        CopyWords {
            words,
            src_offset: 0,
            dst_offset: 0,
        }
    }
}

impl Kernel for CopyWords {
    fn kernel(&self) -> &'static str {
        "copy"
    }

    fn operands(&self) -> Vec<Operand> {
        vec![
            Operand::read(
                "src",
                DType::U32,
                self.src_offset.saturating_add(self.words),
            )
            .words(),
            Operand::write(
                "dst",
                DType::U32,
                self.dst_offset.saturating_add(self.words),
            )
            .words(),
        ]
    }

    /// Plans copying `words` 32-bit words from word `src_offset` of the source to word `dst_offset` of the
    /// destination (the vec4 variant needs all three to be multiples of 4).
    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let CopyWords {
            words,
            src_offset,
            dst_offset,
        } = *self;
        let aligned =
            words.is_multiple_of(4) && src_offset.is_multiple_of(4) && dst_offset.is_multiple_of(4);
        let (auto, why) = if aligned {
            (&VEC4, "the length and offsets are multiples of 4 words")
        } else {
            (&U32, "the length or an offset is not a multiple of 4 words")
        };
        let v = crate::choose(auto, why, caps, choice)?;
        let per_word = if std::ptr::eq(v, &VEC4) { 4 } else { 1 };
        plan::ensure(
            words.is_multiple_of(per_word) && (per_word == 1 || aligned),
            "copy",
            || {
                format!(
                    "variant {} needs a multiple of 4 words and offsets, got {words} at {src_offset} -> {dst_offset}",
                    v.id()
                )
            },
        )?;
        let n = plan::index_u32("copy", "words", words / per_word)?;
        let src_offset = plan::index_u32("copy", "source offset", src_offset / per_word)?;
        let dst_offset = plan::index_u32("copy", "destination offset", dst_offset / per_word)?;
        let per_group = u64::from(v.define_u32("WG") * v.define_u32("ITEMS"));
        plan::linear(
            "copy",
            v,
            u64::from(n).div_ceil(per_group),
            bytemuck::bytes_of(&Params {
                n,
                src_offset,
                dst_offset,
                pad: 0,
            }),
            caps,
        )
    }
}

/// CPU twin: `dst[i] = src[i]`.
pub fn cpu(src: &[u32], dst: &mut [u32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = *s;
    }
}

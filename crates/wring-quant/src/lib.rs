//! llama.cpp's block quantization formats, as the GGUF specification lays them out.
//!
//! Each [`BlockFormat`] knows its block length (32 values, or 256 for the K-quants), its bytes per block and
//! its GGML type id. [`BlockFormat::dequantize`] and [`BlockFormat::quantize`] are the CPU reference: the same
//! operations in the same order as llama.cpp's `dequantize_row_*` and `quantize_row_*_ref`, so their
//! results agree bit for bit (checked against the `gguf` Python package in the tests).
//!
//! [`group`] holds wring's own sub-4-bit layout (group quantization with affine or SpQR bilevel statistics
//! and a sparse outlier part) and [`gptq`] its quantizers (round-to-nearest, GPTQ, SpQR, MixLLM-style mixed
//! rows, GQSA-style pruned groups); [`spqr_layout`] packs SpQR matrices into the SpQR authors' kernel layout
//! and decodes that layout as their reference does, a cross-check of the format.
//!
//! This crate does no IO and touches no device; the GPU kernels that read these layouts live in the
//! `wring-kernels-*` family crates, with this crate as their CPU twins' ground truth.

#![warn(missing_docs)]
#![allow(
    clippy::needless_range_loop,
    reason = "index loops mirror llama.cpp's C so the two read side by side"
)]

pub mod gptq;
pub mod group;
mod kquants;
mod legacy;
pub mod lowrank;
pub mod rht;
pub mod spqr_layout;
pub mod trellis;

use half::f16;

/// Values per K-quant super-block.
pub const QK_K: usize = 256;

/// A GGUF block quantization format.
#[allow(
    non_camel_case_types,
    reason = "the names the GGUF specification and llama.cpp use"
)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockFormat {
    /// 32 values: f16 scale d, 16 bytes of 4-bit q; x = (q - 8) d.
    Q4_0,
    /// 32 values: f16 d, f16 m, 16 bytes of 4-bit q; x = q d + m.
    Q4_1,
    /// 32 values: f16 d, 4 bytes of fifth bits, 16 bytes of low nibbles; x = (q - 16) d.
    Q5_0,
    /// 32 values: f16 d, f16 m, 4 bytes of fifth bits, 16 bytes of low nibbles; x = q d + m.
    Q5_1,
    /// 32 values: f16 d, 32 signed bytes; x = q d.
    Q8_0,
    /// 256 values in 8 sub-blocks of 32: f16 d, f16 dmin, 12 bytes of 6-bit scales and mins, 128 bytes of
    /// 4-bit q; x = d sc q - dmin m.
    Q4_K,
    /// As Q4_K with a fifth bit per value in 32 more bytes.
    Q5_K,
    /// 256 values in 16 sub-blocks of 16: 128 bytes of low nibbles, 64 bytes of high 2 bits, 16 signed 8-bit
    /// scales, f16 d; x = d sc (q - 32).
    Q6_K,
}

/// Errors from quantizing or dequantizing: sizes that do not fit the format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    /// A row length that is not a whole number of blocks.
    #[error(
        "{format:?} stores blocks of {block} values; a row of {len} values is not a whole number of blocks"
    )]
    RaggedRow {
        /// The format.
        format: BlockFormat,
        /// Values per block.
        block: usize,
        /// The row's length.
        len: usize,
    },
    /// Packed bytes that do not match the value count.
    #[error("{format:?}: {values} values need {expected} bytes, got {got}")]
    ByteCount {
        /// The format.
        format: BlockFormat,
        /// Values asked for.
        values: usize,
        /// Bytes they take.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// A GGML type id wring does not know.
    #[error("GGML type {0} is not a block format wring supports")]
    UnknownType(u32),
}

impl BlockFormat {
    /// Every supported format.
    pub const ALL: [BlockFormat; 8] = [
        BlockFormat::Q4_0,
        BlockFormat::Q4_1,
        BlockFormat::Q5_0,
        BlockFormat::Q5_1,
        BlockFormat::Q8_0,
        BlockFormat::Q4_K,
        BlockFormat::Q5_K,
        BlockFormat::Q6_K,
    ];

    /// Values per block.
    pub const fn block_len(self) -> usize {
        match self {
            BlockFormat::Q4_K | BlockFormat::Q5_K | BlockFormat::Q6_K => QK_K,
            _ => 32,
        }
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        match self {
            BlockFormat::Q4_0 => 18,
            BlockFormat::Q4_1 => 20,
            BlockFormat::Q5_0 => 22,
            BlockFormat::Q5_1 => 24,
            BlockFormat::Q8_0 => 34,
            BlockFormat::Q4_K => 144,
            BlockFormat::Q5_K => 176,
            BlockFormat::Q6_K => 210,
        }
    }

    /// The `ggml_type` id used in GGUF tensor infos.
    pub const fn ggml_type(self) -> u32 {
        match self {
            BlockFormat::Q4_0 => 2,
            BlockFormat::Q4_1 => 3,
            BlockFormat::Q5_0 => 6,
            BlockFormat::Q5_1 => 7,
            BlockFormat::Q8_0 => 8,
            BlockFormat::Q4_K => 12,
            BlockFormat::Q5_K => 13,
            BlockFormat::Q6_K => 14,
        }
    }

    /// The format with a GGML type id.
    pub fn from_ggml_type(t: u32) -> Result<BlockFormat, QuantError> {
        BlockFormat::ALL
            .into_iter()
            .find(|f| f.ggml_type() == t)
            .ok_or(QuantError::UnknownType(t))
    }

    /// The name llama.cpp and the GGUF specification use (`Q4_K`).
    pub const fn name(self) -> &'static str {
        match self {
            BlockFormat::Q4_0 => "Q4_0",
            BlockFormat::Q4_1 => "Q4_1",
            BlockFormat::Q5_0 => "Q5_0",
            BlockFormat::Q5_1 => "Q5_1",
            BlockFormat::Q8_0 => "Q8_0",
            BlockFormat::Q4_K => "Q4_K",
            BlockFormat::Q5_K => "Q5_K",
            BlockFormat::Q6_K => "Q6_K",
        }
    }

    /// Bits per weight, scales included.
    pub fn bits_per_weight(self) -> f64 {
        (self.block_bytes() * 8) as f64 / self.block_len() as f64
    }

    /// Bytes of `len` values, which must be a whole number of blocks.
    pub fn bytes_for(self, len: usize) -> Result<usize, QuantError> {
        if !len.is_multiple_of(self.block_len()) {
            return Err(QuantError::RaggedRow {
                format: self,
                block: self.block_len(),
                len,
            });
        }
        Ok(len / self.block_len() * self.block_bytes())
    }

    fn check(self, values: usize, bytes: usize) -> Result<(), QuantError> {
        let expected = self.bytes_for(values)?;
        if expected != bytes {
            return Err(QuantError::ByteCount {
                format: self,
                values,
                expected,
                got: bytes,
            });
        }
        Ok(())
    }

    /// Unpacks `src` into `dst` (`dst.len()` values), as llama.cpp's `dequantize_row_*`.
    pub fn dequantize(self, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
        self.check(dst.len(), src.len())?;
        let (bb, bl) = (self.block_bytes(), self.block_len());
        for (b, y) in src.chunks_exact(bb).zip(dst.chunks_exact_mut(bl)) {
            match self {
                BlockFormat::Q4_0 => legacy::dequant_q4_0(b, y),
                BlockFormat::Q4_1 => legacy::dequant_q4_1(b, y),
                BlockFormat::Q5_0 => legacy::dequant_q5_0(b, y),
                BlockFormat::Q5_1 => legacy::dequant_q5_1(b, y),
                BlockFormat::Q8_0 => legacy::dequant_q8_0(b, y),
                BlockFormat::Q4_K => kquants::dequant_q4_k(b, y),
                BlockFormat::Q5_K => kquants::dequant_q5_k(b, y),
                BlockFormat::Q6_K => kquants::dequant_q6_k(b, y),
            }
        }
        Ok(())
    }

    /// Packs `src` into `dst` with llama.cpp's reference quantizer (`quantize_row_*_ref`): round to
    /// nearest for the legacy formats, the reference scale search for the K-quants; no importance matrix.
    pub fn quantize(self, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
        self.check(src.len(), dst.len())?;
        let (bb, bl) = (self.block_bytes(), self.block_len());
        for (x, b) in src.chunks_exact(bl).zip(dst.chunks_exact_mut(bb)) {
            match self {
                BlockFormat::Q4_0 => legacy::quant_q4_0(x, b),
                BlockFormat::Q4_1 => legacy::quant_q4_1(x, b),
                BlockFormat::Q5_0 => legacy::quant_q5_0(x, b),
                BlockFormat::Q5_1 => legacy::quant_q5_1(x, b),
                BlockFormat::Q8_0 => legacy::quant_q8_0(x, b),
                BlockFormat::Q4_K => kquants::quant_q4_k(x, b),
                BlockFormat::Q5_K => kquants::quant_q5_k(x, b),
                BlockFormat::Q6_K => kquants::quant_q6_k(x, b),
            }
        }
        Ok(())
    }

    /// Quantizes a whole row into a new vector.
    pub fn quantize_to_vec(self, src: &[f32]) -> Result<Vec<u8>, QuantError> {
        let mut out = vec![0u8; self.bytes_for(src.len())?];
        self.quantize(src, &mut out)?;
        Ok(out)
    }

    /// Dequantizes packed bytes of `len` values into a new vector.
    pub fn dequantize_to_vec(self, src: &[u8], len: usize) -> Result<Vec<f32>, QuantError> {
        let mut out = vec![0f32; len];
        self.dequantize(src, &mut out)?;
        Ok(out)
    }
}

impl std::fmt::Display for BlockFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for BlockFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BlockFormat::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown block format `{s}`; expected one of Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q4_K Q5_K Q6_K"))
    }
}

/// Reads the little-endian f16 at `b[at..at + 2]` as f32.
pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Writes `v` rounded to f16 (nearest even, as GGML_FP32_TO_FP16) at `b[at..at + 2]`.
pub(crate) fn put_f16(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

/// llama.cpp's `nearest_int`: round half to even through the float trick, valid for |v| <= 4194303.
pub(crate) fn nearest_int(v: f32) -> i32 {
    let bits = (v + 12_582_912.0f32).to_bits() as i32;
    (bits & 0x007f_ffff) - 0x0040_0000
}

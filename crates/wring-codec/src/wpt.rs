//! The wavelet packet transform: J levels, every subband split again at each level (as WaLLoC does). For
//! 2-D signals each channel becomes [LL, LH, HL, HH] at each level, stacked in that order, which is
//! pywavelets' `WaveletPacket2D` natural order (a, h, v, d); 1-D signals become [L, H]. After J levels a
//! batch \[C\]\[H\]\[W\] is \[C * 4^J\]\[h\]\[w\] (or \[C\]\[L\] becomes \[C * 2^J\]\[l\]).
//!
//! A transform is a list of one-axis launches of the `dwt` kernel whose strides put the bands straight
//! where the next level reads them; the GPU and the CPU twin run the same list.

use wring_runtime::kernels::DType;
use wring_runtime::kernels::wavelet::{Dwt, Mode, Wavelet};
use wring_runtime::{Context, Step, Tensor};

use crate::CodecError;

/// A wavelet packet transform of a batch of 1-D or 2-D signals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The filters.
    pub wavelet: Wavelet,
    /// The boundary handling.
    pub mode: Mode,
    /// Levels (0 is the identity).
    pub levels: usize,
    /// Signals in the batch (image channels, audio channels).
    pub channels: usize,
    /// Each signal's shape: \[length\] or [height, width].
    pub dims: Vec<usize>,
    /// Sample type on the device, input, output and every level between: f32 (the default) or f16.
    pub dtype: DType,
}

/// One launch: the kernel's geometry and the sizes of the buffers it reads and writes.
#[derive(Debug, Clone, Copy)]
struct Stage {
    dwt: Dwt,
    src_len: usize,
    dst_len: usize,
}

impl Packet {
    /// Checks the shape: 1 or 2 dimensions, none empty, and (outside periodization) every level long
    /// enough for pywavelets' inverse.
    pub fn new(
        wavelet: Wavelet,
        mode: Mode,
        levels: usize,
        channels: usize,
        dims: &[usize],
    ) -> Result<Packet, CodecError> {
        if !(1..=2).contains(&dims.len()) || dims.contains(&0) || channels == 0 {
            return Err(CodecError::Request(format!(
                "a packet transform needs 1-D or 2-D signals of at least one sample, got {channels} x {dims:?}"
            )));
        }
        if levels > 16 {
            return Err(CodecError::Request(format!(
                "{levels} levels are more than 16"
            )));
        }
        let p = Packet {
            wavelet,
            mode,
            levels,
            channels,
            dims: dims.to_vec(),
            dtype: DType::F32,
        };
        let subbands = p.subbands();
        let total = p
            .level_dims()
            .iter()
            .enumerate()
            .map(|(j, d)| {
                d.iter().product::<usize>().saturating_mul(
                    p.channels
                        .saturating_mul(p.split().saturating_pow(j as u32)),
                )
            })
            .max();
        if subbands == 0 || total.is_none_or(|t| t > u32::MAX as usize) {
            return Err(CodecError::Request(format!(
                "{levels} levels of {channels} x {dims:?} exceed 32-bit indexing"
            )));
        }
        Ok(p)
    }

    /// The same transform on f16 samples (f32 filters and sums; each level stores f16), for adapters with
    /// `SHADER_F16`: half the memory traffic, about 3 significant decimal digits per level.
    pub fn with_dtype(self, dtype: DType) -> Result<Packet, CodecError> {
        if !matches!(dtype, DType::F32 | DType::F16) {
            return Err(CodecError::Request(format!(
                "packet transforms run on f32 or f16 samples, not {dtype}"
            )));
        }
        Ok(Packet { dtype, ..self })
    }

    /// Bands per split: 2 in 1-D, 4 in 2-D.
    fn split(&self) -> usize {
        1 << self.dims.len()
    }

    /// Subbands per channel after all levels.
    pub fn subbands(&self) -> usize {
        self.split().saturating_pow(self.levels as u32)
    }

    /// Each subband's shape at every level, from the input's (level 0) to the last.
    pub fn level_dims(&self) -> Vec<Vec<usize>> {
        let taps = self.wavelet.taps();
        let mut out = vec![self.dims.clone()];
        for _ in 0..self.levels {
            let next = out
                .last()
                .expect("level 0 is there")
                .iter()
                .map(|&n| self.mode.coeffs(n, taps))
                .collect();
            out.push(next);
        }
        out
    }

    /// Coefficients in the output: channels * subbands * the last level's subband size.
    pub fn coeff_len(&self) -> usize {
        self.channels
            * self.subbands()
            * self
                .level_dims()
                .last()
                .expect("level 0")
                .iter()
                .product::<usize>()
    }

    /// Samples in the input.
    pub fn signal_len(&self) -> usize {
        self.channels * self.dims.iter().product::<usize>()
    }

    /// The forward launches in order (each reads the previous one's output); the inverse runs the same
    /// launches backwards with the direction flipped.
    fn stages(&self) -> Vec<Stage> {
        let dims = self.level_dims();
        let mut stages = Vec::new();
        for j in 0..self.levels {
            let c = self.channels * self.split().pow(j as u32);
            let base = Dwt {
                wavelet: self.wavelet,
                mode: self.mode,
                forward: true,
                dtype: self.dtype,
                n: 0,
                outer_hi: 0,
                outer_lo: 1,
                inner: 1,
                band_stride: 0,
                hi_stride: 0,
                lo_stride: 0,
                k_stride: 1,
            };
            if let [n] = dims[j][..] {
                let m = dims[j + 1][0];
                let dwt = Dwt {
                    n,
                    outer_hi: c,
                    band_stride: m,
                    hi_stride: 2 * m,
                    ..base
                };
                stages.push(Stage {
                    dwt,
                    src_len: c * n,
                    dst_len: 2 * c * m,
                });
            } else {
                let (h, w, ho, wo) = (dims[j][0], dims[j][1], dims[j + 1][0], dims[j + 1][1]);
                // Along the width: [c][h][w] -> [c][2][h][wo].
                let rows = Dwt {
                    n: w,
                    outer_hi: c,
                    outer_lo: h,
                    band_stride: h * wo,
                    hi_stride: 2 * h * wo,
                    lo_stride: wo,
                    ..base
                };
                stages.push(Stage {
                    dwt: rows,
                    src_len: c * h * w,
                    dst_len: 2 * c * h * wo,
                });
                // Along the height, [2c][h][wo] -> [c][2 (width band)][2 (height band)][ho][wo]: subband
                // index height band + 2 * width band, pywavelets' a, h, v, d.
                let cols = Dwt {
                    n: h,
                    outer_hi: 2 * c,
                    inner: wo,
                    band_stride: ho * wo,
                    hi_stride: 2 * ho * wo,
                    k_stride: wo,
                    ..base
                };
                stages.push(Stage {
                    dwt: cols,
                    src_len: 2 * c * h * wo,
                    dst_len: 4 * c * ho * wo,
                });
            }
        }
        stages
    }

    /// Records the forward transform of `x` (of the packet's dtype, [channels, dims...] in any shape with
    /// that many elements) and returns the coefficients' tensor [channels * subbands, last level dims...].
    pub fn forward(
        &self,
        ctx: &Context,
        step: &mut Step<'_>,
        x: &Tensor,
    ) -> Result<Tensor, CodecError> {
        self.run(ctx, step, x, true, None)
    }

    /// Records the inverse: coefficients [channels * subbands, ...] back to [channels, dims...].
    pub fn inverse(
        &self,
        ctx: &Context,
        step: &mut Step<'_>,
        coeffs: &Tensor,
    ) -> Result<Tensor, CodecError> {
        self.run(ctx, step, coeffs, false, None)
    }

    /// [`Packet::forward`] (`forward` true) or [`Packet::inverse`] with the last level written into the
    /// caller's tensor `out` (of the packet's dtype, at least as long as the result; the rest is left
    /// alone), so a caller that owns the destination needs no copy. A transform of 0 levels copies.
    pub fn run_into(
        &self,
        ctx: &Context,
        step: &mut Step<'_>,
        x: &Tensor,
        forward: bool,
        out: &Tensor,
    ) -> Result<(), CodecError> {
        self.run(ctx, step, x, forward, Some(out)).map(|_| ())
    }

    fn run(
        &self,
        ctx: &Context,
        step: &mut Step<'_>,
        x: &Tensor,
        forward: bool,
        out: Option<&Tensor>,
    ) -> Result<Tensor, CodecError> {
        let (want, result) = if forward {
            (self.signal_len(), self.coeff_len())
        } else {
            (self.coeff_len(), self.signal_len())
        };
        if x.dtype() != self.dtype || x.len() != want {
            return Err(CodecError::Request(format!(
                "the {} must be {} of {want} elements, got {} of {}",
                if forward { "signal" } else { "coefficients" },
                self.dtype,
                x.dtype(),
                x.len()
            )));
        }
        if let Some(out) = out {
            if out.dtype() != self.dtype || out.len() < result {
                return Err(CodecError::Request(format!(
                    "the output must be {} of at least {result} elements, got {} of {}",
                    self.dtype,
                    out.dtype(),
                    out.len()
                )));
            }
            if self.levels == 0 {
                step.copy(x, out)?;
                return Ok(out.clone());
            }
        }
        let filters = ctx.upload(&[4 * self.wavelet.taps()], &self.wavelet.filter_bank())?;
        let launches = self.launches(forward);
        let last_stage = launches.len().saturating_sub(1);
        let mut cur = x.clone();
        for (i, (dwt, out_len)) in launches.into_iter().enumerate() {
            let next = match out {
                Some(out) if i == last_stage => out.clone(),
                _ => ctx.empty(&[out_len], self.dtype)?,
            };
            step.run(
                &dwt,
                &[("filters", &filters), ("src", &cur), ("dst", &next)],
            )?;
            cur = next;
        }
        if out.is_some() {
            return Ok(cur);
        }
        let last = self.level_dims();
        let shape: Vec<usize> = if forward {
            std::iter::once(self.channels * self.subbands())
                .chain(last.last().expect("level 0").iter().copied())
                .collect()
        } else {
            std::iter::once(self.channels)
                .chain(self.dims.iter().copied())
                .collect()
        };
        Ok(cur
            .reshape(&shape)
            .expect("the stages end at this many elements"))
    }

    /// The whole transform of host data on the device: uploads `data` (rounded to f16 when the packet's
    /// samples are f16), runs one direction in one step, and returns the result's shape and values
    /// (`[channels * subbands, ...]` forward, `[channels, dims...]` inverse). What `wring wavelet` runs.
    pub fn apply(
        &self,
        ctx: &Context,
        data: &[f32],
        forward: bool,
    ) -> Result<(Vec<usize>, Vec<f32>), CodecError> {
        let x = if self.dtype == DType::F16 {
            if !ctx.caps().f16 {
                return Err(CodecError::Request(format!(
                    "f16 samples: the adapter {} has no SHADER_F16",
                    ctx.label()
                )));
            }
            let h: Vec<half::f16> = data.iter().map(|&v| half::f16::from_f32(v)).collect();
            ctx.upload(&[data.len()], &h)?
        } else {
            ctx.upload(&[data.len()], data)?
        };
        let mut step = ctx.step("wavelet packet transform");
        let y = if forward {
            self.forward(ctx, &mut step, &x)?
        } else {
            self.inverse(ctx, &mut step, &x)?
        };
        step.submit()?;
        let out: Vec<f32> = if self.dtype == DType::F16 {
            ctx.read::<half::f16>(&y)?
                .into_iter()
                .map(f32::from)
                .collect()
        } else {
            ctx.read(&y)?
        };
        Ok((y.shape().to_vec(), out))
    }

    /// CPU twin of [`Packet::forward`] (f16 samples are given and returned as f32 holding f16 values).
    pub fn forward_cpu(&self, x: &[f32]) -> Vec<f32> {
        self.run_cpu(x, true)
    }

    /// CPU twin of [`Packet::inverse`].
    pub fn inverse_cpu(&self, coeffs: &[f32]) -> Vec<f32> {
        self.run_cpu(coeffs, false)
    }

    /// The launches of one direction in the order they run, each with its output's length: the forward
    /// stages as listed, or the same stages backwards with the direction flipped.
    fn launches(&self, forward: bool) -> Vec<(Dwt, usize)> {
        let stages = self.stages();
        if forward {
            stages.into_iter().map(|s| (s.dwt, s.dst_len)).collect()
        } else {
            stages
                .into_iter()
                .rev()
                .map(|s| {
                    (
                        Dwt {
                            forward: false,
                            ..s.dwt
                        },
                        s.src_len,
                    )
                })
                .collect()
        }
    }

    fn run_cpu(&self, x: &[f32], forward: bool) -> Vec<f32> {
        let mut cur = x.to_vec();
        for (dwt, out_len) in self.launches(forward) {
            let mut next = vec![0.0; out_len];
            wring_runtime::kernels::wavelet::dwt::cpu(&dwt, &cur, &mut next);
            cur = next;
        }
        cur
    }
}

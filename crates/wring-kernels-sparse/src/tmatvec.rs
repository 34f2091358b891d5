//! `shaders/sparse/tmatvec.wgsl`: `y[b] = W x[b]` with W trellis-coded (`wring_quant::trellis`: tiles of
//! 16 x 16 weights, each a tail-biting stream decoded through QTIP's computed 3INST code, one f32 scale
//! per row, f16 outliers per row), decoded in registers, for any number of activation rows b (decode: 1;
//! prefill: tiles of 8).

use wring_quant::group::{GroupMatrix, Layout, Stats};
use wring_quant::trellis;

use wring_kernels_core::dtype::DType;
use wring_kernels_core::plan::{self, Caps, Choice, KernelError, Plan};
use wring_kernels_core::reduce::tree_sum;
use wring_kernels_core::{Kernel, Operand};

/// Activation rows one workgroup takes in the batched variants.
pub const TILE: usize = 8;

/// The shader's `Params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    /// Rows of W (outputs).
    pub rows: u32,
    /// Columns of W (inputs).
    pub cols: u32,
    /// Bits of each trellis state.
    pub state: u32,
    /// Activation rows.
    pub batch: u32,
}

/// `y[batch][rows] = W[rows][cols] x[batch][cols]` for a trellis-coded W with its sparse outliers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tmatvec {
    /// W's shape and format (`Stats::Trellis`).
    pub layout: Layout,
    /// Activation rows.
    pub batch: usize,
}

impl Tmatvec {
    /// The weight operands tmatvec and tmatmul share (the activations and output are each kernel's own).
    pub(crate) fn weight_operands(&self) -> Vec<Operand> {
        let l = &self.layout;
        vec![
            Operand::read("codes", DType::U32, 0).shape(&[l.rows * l.code_words()]),
            Operand::read("stats", DType::U32, 0).shape(&[l.rows]),
            // Row offsets and then the entries: at least the offsets.
            Operand::read("outliers", DType::U32, l.rows + 1),
        ]
    }

    /// Checks what tmatvec and tmatmul share (a trellis layout, a batch, indices within u32) and gives
    /// the shaders' `Params`.
    pub(crate) fn checked_params(&self, kernel: &'static str) -> Result<Params, KernelError> {
        let l = &self.layout;
        l.check().map_err(|e| KernelError::Shape {
            kernel,
            what: e.to_string(),
        })?;
        let Stats::Trellis { state } = l.stats else {
            return Err(KernelError::Shape {
                kernel,
                what: "the weights are not trellis-coded".into(),
            });
        };
        plan::ensure(self.batch >= 1, kernel, || {
            "the batch must have at least one row".into()
        })?;
        plan::index_u32(kernel, "code words", l.rows.saturating_mul(l.code_words()))?;
        plan::index_u32(kernel, "batch * cols", self.batch.saturating_mul(l.cols))?;
        plan::index_u32(kernel, "batch * rows", self.batch.saturating_mul(l.rows))?;
        Ok(Params {
            rows: l.rows as u32,
            cols: l.cols as u32,
            state,
            batch: self.batch as u32,
        })
    }
}

/// Checks that variant `v` (whose width is a constant) is the one for `bits`-bit codes.
pub(crate) fn ensure_width(
    kernel: &'static str,
    v: &wring_kernels_core::Variant,
    bits: u32,
) -> Result<(), KernelError> {
    plan::ensure(v.define_u32("BITS") == bits, kernel, || {
        format!("variant {} is not the one for {bits}-bit codes", v.id())
    })
}

impl Kernel for Tmatvec {
    fn kernel(&self) -> &'static str {
        "tmatvec"
    }

    fn operands(&self) -> Vec<Operand> {
        let l = &self.layout;
        let mut ops = self.weight_operands();
        ops.extend([
            Operand::read("x", DType::F32, 0).shape(&[self.batch, l.cols]),
            Operand::write("y", DType::F32, 0).shape(&[self.batch, l.rows]),
        ]);
        ops
    }

    /// Plans the product: batch 1 takes the single-row variants, more rows the 8-row variants over tiles
    /// of 8 (the grid's y dimension); CPU adapters the `lanes` variants, GPUs one 64-invocation
    /// workgroup per row reduced through subgroups where they exist; the width is the variant's constant.
    ///
    /// The outlier offsets and columns are data: [`GroupMatrix::check`] vouches for them, and callers
    /// upload only checked matrices.
    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let params = self.checked_params("tmatvec")?;
        let l = self.layout;
        let b = if self.batch == 1 { 1 } else { TILE };
        let (reduction, why) = plan::row_reduction(caps);
        let v = crate::select(
            "tmatvec",
            &format!("b{b}_{}_w{}", reduction.matvec_name(), l.bits),
            why,
            caps,
            choice,
        )?;
        ensure_width("tmatvec", v, l.bits)?;
        let workgroups = plan::grid_rows(
            "tmatvec",
            l.rows,
            self.batch,
            plan::rows_per_workgroup(v),
            v.define_u32("BATCH") as u64,
            caps,
        )?;
        Ok(Plan {
            variant: v,
            params: bytemuck::bytes_of(&params).to_vec(),
            workgroups,
        })
    }
}

/// CPU twin: for each row, each of `wg` lanes takes the column tiles lane, lane + wg, ..., decodes the
/// row's 16 weights of each (`wring_quant::trellis::code` of each state) and adds them four at a time
/// (the shader's `dot`s); the row's scale multiplies the lane's sum when `wg > 1` (the GPU variants) or
/// the row's sum when `wg = 1` (the `lanes` variants); then the outliers lane, lane + wg, ...; the tree of
/// `shaders/common/reduce.wgsl` combines the lanes.
pub fn cpu(m: &GroupMatrix, x: &[f32], y: &mut [f32], batch: usize, wg: usize) {
    let l = &m.layout;
    let Stats::Trellis { state } = l.stats else {
        panic!("tmatvec's twin takes trellis matrices");
    };
    let (col_tiles, tw) = (l.cols / trellis::TILE, trellis::tile_words(l.bits));
    let mut slots = vec![vec![0f32; wg]; batch];
    let mut q = [0f32; trellis::SEQ];
    for row in 0..l.rows {
        let scale = f32::from_bits(m.stats[row]);
        for s in slots.iter_mut() {
            s.fill(0.0);
        }
        for lane in 0..wg {
            for c in (lane..col_tiles).step_by(wg) {
                let base = ((row / trellis::TILE) * col_tiles + c) * tw;
                trellis::decode_tile(&m.codes[base..][..tw], l.bits, state, &mut q);
                let w = &q[(row % trellis::TILE) * trellis::TILE..][..trellis::TILE];
                for (b, s) in slots.iter_mut().enumerate() {
                    let xs = &x[b * l.cols + c * trellis::TILE..][..trellis::TILE];
                    let mut dots = [0f32; 4];
                    for ((d, w), x) in dots.iter_mut().zip(w.chunks(4)).zip(xs.chunks(4)) {
                        *d = w.iter().zip(x).fold(0.0, |acc, (a, b)| acc + a * b);
                    }
                    let d = dots[0] + dots[1] + dots[2] + dots[3];
                    s[lane] += if wg > 1 { scale * d } else { d };
                }
            }
            if wg == 1 {
                for s in slots.iter_mut() {
                    s[0] *= scale;
                }
            }
            crate::gmatvec::add_outliers(m, row, lane, wg, x, &mut slots);
        }
        for (b, s) in slots.iter_mut().enumerate() {
            y[b * l.rows + row] = tree_sum(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wring_quant::gptq::{Config, Hessian, quantize};

    /// The twin's lane-ordered sums agree with the plain product of the dequantized matrix, for each
    /// width and lane count.
    #[test]
    fn the_twin_is_the_product_of_the_dequantized_matrix() {
        let (rows, cols) = (32, 64);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let h = Hessian::identity(cols);
        for bits in 2..=4 {
            let (m, _) = quantize(&w, rows, cols, &h, &Config::trellis(bits, 10, 1)).unwrap();
            let dense = m.dequantize_stored();
            let x: Vec<f32> = (0..2 * cols).map(|i| (i as f32 * 0.37).sin()).collect();
            for wg in [1, 8, 64] {
                let mut y = vec![0f32; 2 * rows];
                cpu(&m, &x, &mut y, 2, wg);
                for b in 0..2 {
                    for r in 0..rows {
                        let want: f64 = (0..cols)
                            .map(|c| f64::from(dense[r * cols + c]) * f64::from(x[b * cols + c]))
                            .sum();
                        let got = f64::from(y[b * rows + r]);
                        assert!((got - want).abs() < 1e-4, "{got} vs {want}");
                    }
                }
            }
        }
    }
}

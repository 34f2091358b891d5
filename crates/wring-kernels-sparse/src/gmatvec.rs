//! `shaders/sparse/gmatvec.wgsl`: `y[b] = W x[b]` with W in `wring_quant::group`'s layout (codes below 4
//! bits, affine or SpQR bilevel statistics, an optional input permutation, per-row f16 outliers, an
//! optional mask of pruned groups), decoded on the fly, for any number of activation rows b (decode: 1;
//! prefill: tiles of 8).

use wring_quant::group::{GroupMatrix, Layout, Stats};

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
    /// Columns per group.
    pub group: u32,
    /// Unused: each row's code width and first words are in the `rowcodes` operand.
    pub _unused: u32,
    /// Words of statistics per row (bilevel; each row's first statistics word is in `rowcodes`).
    pub stat_words: u32,
    /// Bits of each quantized scale and zero (bilevel; 0 for affine).
    pub stat_bits: u32,
    /// Rows per block of second-order parameters (bilevel; 1 for affine).
    pub stat_rows: u32,
    /// Activation rows.
    pub batch: u32,
    /// Padding to the uniform's size.
    pub _pad0: u32,
    /// Padding.
    pub _pad1: u32,
    /// Padding.
    pub _pad2: u32,
    /// Padding.
    pub _pad3: u32,
}

/// `y[batch][rows] = W[rows][cols] x[batch][cols]` for a group-quantized W with its sparse outliers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gmatvec {
    /// W's shape and format.
    pub layout: Layout,
    /// Activation rows.
    pub batch: usize,
    /// Words of codes in all (`rows * layout.code_words()` when every row has `layout.bits` and keeps
    /// every group).
    pub code_words: usize,
    /// Words of statistics in all (`rows * layout.stat_words()` when every row keeps every group).
    pub stat_words: usize,
    /// Whether a mask of kept groups is bound (GQSA's group sparsity; affine statistics only).
    pub masked: bool,
    /// Whether rows differ in code width (MixLLM); otherwise every row has `layout.bits`.
    pub mixed: bool,
}

impl Gmatvec {
    /// The product for `m`'s layout, code and statistics lengths and mask.
    pub fn of(m: &GroupMatrix, batch: usize) -> Gmatvec {
        Gmatvec {
            layout: m.layout,
            batch,
            code_words: m.codes.len(),
            stat_words: m.stats.len(),
            masked: !m.mask.is_empty(),
            mixed: !m.row_bits.is_empty(),
        }
    }
}

impl Gmatvec {
    /// The operands gmatvec and gmatmul share: the weight buffers, the activations `input` [batch][cols] and
    /// the output `output` [batch][rows] (gmatvec's x and y, gmatmul's a and c).
    pub(crate) fn weight_operands(
        &self,
        input: &'static str,
        output: &'static str,
    ) -> Vec<Operand> {
        let l = &self.layout;
        let mut ops = vec![
            Operand::read("codes", DType::U32, 0).shape(&[self.code_words]),
            Operand::read("stats", DType::U32, 0).shape(&[self.stat_words]),
        ];
        if matches!(l.stats, Stats::Bilevel { .. }) {
            ops.push(Operand::read("second", DType::U32, 0).shape(&[l.second_words()]));
        }
        ops.extend([
            Operand::read("perm", DType::U32, 0).shape(&[l.cols]),
            // Row offsets and then the entries: at least the offsets.
            Operand::read("outliers", DType::U32, l.rows + 1),
            Operand::read(input, DType::F32, 0).shape(&[self.batch, l.cols]),
            Operand::write(output, DType::F32, 0).shape(&[self.batch, l.rows]),
            // Each row's first code word, width and first statistics word (GroupMatrix::rowcodes):
            // derived from a checked matrix, like the outlier offsets vouched for by GroupMatrix::check.
            Operand::read("rowcodes", DType::U32, 0).shape(&[l.rows, 3]),
        ]);
        if self.masked {
            ops.push(Operand::read("mask", DType::U32, 0).shape(&[l.rows, l.mask_words()]));
        }
        ops
    }

    /// Checks what gmatvec and gmatmul share and gives the statistics form's variant prefix and the
    /// shaders' `Params`.
    pub(crate) fn checked_params(
        &self,
        kernel: &'static str,
    ) -> Result<(&'static str, Params), KernelError> {
        let Gmatvec {
            layout: l,
            batch,
            code_words,
            stat_words: _,
            masked,
            mixed: _,
        } = *self;
        l.check().map_err(|e| KernelError::Shape {
            kernel,
            what: e.to_string(),
        })?;
        plan::ensure(batch >= 1, kernel, || {
            "the batch must have at least one row".into()
        })?;
        let stats = match (l.stats, masked) {
            (Stats::Affine, false) => "affine",
            (Stats::Affine, true) => "masked",
            (Stats::Bilevel { .. }, false) => "bilevel",
            (Stats::Bilevel { .. }, true) => {
                return Err(KernelError::Shape {
                    kernel,
                    what: "pruned groups need affine statistics".into(),
                });
            }
            (Stats::Trellis { .. }, _) => {
                return Err(KernelError::Shape {
                    kernel,
                    what: "trellis-coded weights take tmatvec".into(),
                });
            }
        };
        plan::index_u32(kernel, "code words", code_words)?;
        plan::index_u32(kernel, "batch * cols", batch.saturating_mul(l.cols))?;
        plan::index_u32(kernel, "batch * rows", batch.saturating_mul(l.rows))?;
        let (stat_bits, stat_rows) = match l.stats {
            Stats::Affine | Stats::Trellis { .. } => (0, 1),
            Stats::Bilevel { bits, rows } => (bits, rows as u32),
        };
        let params = Params {
            rows: l.rows as u32,
            cols: l.cols as u32,
            group: l.group as u32,
            _unused: 0,
            stat_words: l.stat_words() as u32,
            stat_bits,
            stat_rows,
            batch: batch as u32,
            _pad0: 0,
            _pad1: 0,
            _pad2: 0,
            _pad3: 0,
        };
        Ok((stats, params))
    }

    /// Whether variant `v` reads this product's statistics form.
    pub(crate) fn reads(&self, v: &wring_kernels_core::Variant) -> bool {
        v.define("BILEVEL").is_some() == matches!(self.layout.stats, Stats::Bilevel { .. })
            && v.define("MASKED").is_some() == self.masked
            && v.define("BITS")
                .is_none_or(|_| !self.mixed && v.define_u32("BITS") == self.layout.bits)
    }
}

impl Kernel for Gmatvec {
    fn kernel(&self) -> &'static str {
        "gmatvec"
    }

    fn operands(&self) -> Vec<Operand> {
        self.weight_operands("x", "y")
    }

    /// Plans the product. Batch 1 uses the single-row variants, more rows the 8-row variants over tiles of
    /// 8 (the grid's y dimension), which decode each weight once per tile. CPU adapters get the `lanes`
    /// variants (each of 8 invocations owns 8 whole rows, or 4 in the 8-row tiles; `_w2` to `_w4` when
    /// every row has that width, `_any` otherwise); GPUs one 64-invocation workgroup per row, reduced
    /// through subgroups where they exist.
    ///
    /// The outlier entries' columns and offsets are data: [`GroupMatrix::check`] is what vouches for them,
    /// and callers upload only checked matrices.
    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let (stats, params) = self.checked_params("gmatvec")?;
        let b = if self.batch == 1 { 1 } else { TILE };
        let (reduction, why) = plan::row_reduction(caps);
        let kind = reduction.matvec_name();
        // The lanes variants come with the width as a constant for 2, 3 and 4 bits in every row.
        let width = match (kind, self.layout.bits) {
            ("lanes", 2..=4) if !self.mixed => format!("_w{}", self.layout.bits),
            ("lanes", _) => "_any".into(),
            _ => String::new(),
        };
        let v = crate::select(
            "gmatvec",
            &format!("{stats}_b{b}_{kind}{width}"),
            why,
            caps,
            choice,
        )?;
        plan::ensure(self.reads(v), "gmatvec", || {
            format!("variant {} does not read {stats} statistics", v.id())
        })?;
        let tile = v.define_u32("BATCH") as u64;
        let l = self.layout;
        let rows_per_group = plan::rows_per_workgroup(v);
        let workgroups =
            plan::grid_rows("gmatvec", l.rows, self.batch, rows_per_group, tile, caps)?;
        Ok(Plan {
            variant: v,
            params: bytemuck::bytes_of(&params).to_vec(),
            workgroups,
        })
    }
}

/// Kept group `slot` (group `g`)'s statistics as the shaders use them, w = a q + c (`group.wgsl`'s
/// `ac_of`): affine (d, m); bilevel (s, -s z).
pub(crate) fn group_ac(
    m: &GroupMatrix,
    row: usize,
    at: &wring_quant::group::RowAt,
    slot: usize,
    g: usize,
) -> (f32, f32) {
    match (m.group_stats(row, at, slot, g), m.layout.stats) {
        ((d, mn), Stats::Affine) => (d, mn),
        ((s, z), Stats::Bilevel { .. }) => (s, -s * z),
        // Not a group form (tmatvec's twin decodes trellis weights); the scale, as group_stats gives it.
        ((s, _), Stats::Trellis { .. }) => (s, 0.0),
    }
}

/// Adds row `row`'s outliers lane, lane + wg, ... to each activation row's `lane` slot (the shaders'
/// `add_outliers`; the stored column through the permutation, the identity for trellis matrices).
pub(crate) fn add_outliers(
    m: &GroupMatrix,
    row: usize,
    lane: usize,
    wg: usize,
    x: &[f32],
    slots: &mut [Vec<f32>],
) {
    let cols = m.layout.cols;
    let (start, end) = (m.outliers[row] as usize, m.outliers[row + 1] as usize);
    for &word in m.outliers[start..end].iter().skip(lane).step_by(wg) {
        let v = half::f16::from_bits((word >> 16) as u16).to_f32();
        let c = m.perm[(word & 0xFFFF) as usize] as usize;
        for (b, s) in slots.iter_mut().enumerate() {
            s[lane] += v * x[b * cols + c];
        }
    }
}

/// CPU twin: for each row, each of `wg` lanes takes the groups lane, lane + wg, ... (skipping pruned
/// ones), turns the group's statistics into w = a q + c once (bilevel: a = s, c = -s z) and adds the
/// group's columns four at a time (the shader's `dot` of four rebuilt weights with four gathered
/// activations), then the row's outliers lane, lane + wg, ...; the tree of
/// `shaders/common/reduce.wgsl` combines the lanes. With `wg = 1` this is the `lanes` variants' order.
pub fn cpu(m: &GroupMatrix, x: &[f32], y: &mut [f32], batch: usize, wg: usize) {
    let l = &m.layout;
    let mut slots = vec![vec![0f32; wg]; batch];
    for (row, at) in m.row_starts().iter().enumerate() {
        for s in slots.iter_mut() {
            s.fill(0.0);
        }
        for lane in 0..wg {
            for g in (lane..l.groups()).step_by(wg) {
                let Some(slot) = m.slot(row, g) else {
                    continue;
                };
                let (a, c) = group_ac(m, row, at, slot, g);
                for t0 in (0..l.group).step_by(4) {
                    let n = (l.group - t0).min(4);
                    for (b, s) in slots.iter_mut().enumerate() {
                        let dot = (t0..t0 + n)
                            .map(|t| {
                                let w = a * m.code(at, slot, t) as f32 + c;
                                w * x[b * l.cols + m.perm[g * l.group + t] as usize]
                            })
                            .fold(0.0, |acc, v| acc + v);
                        s[lane] += dot;
                    }
                }
            }
            add_outliers(m, row, lane, wg, x, &mut slots);
        }
        for (b, s) in slots.iter_mut().enumerate() {
            y[b * l.rows + row] = tree_sum(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wring_quant::gptq::{Config, Hessian, Method, quantize};

    /// The twin's lane-ordered sums agree with the plain product of the dequantized matrix (which
    /// applies the permutation and outliers independently), for each statistics form and lane count.
    #[test]
    fn the_twin_is_the_product_of_the_dequantized_matrix() {
        let (rows, cols) = (32, 64);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let mut h = Hessian::new(cols);
        let xs: Vec<f32> = (0..4 * cols * cols)
            .map(|i| ((i * 104_729) % 997) as f32 / 997.0 - 0.5)
            .collect();
        h.add(&xs);
        for cfg in [
            Config::spqr(3),
            Config::plain(Method::Gptq, 4, 32),
            Config::gqsa(0.5),
        ] {
            let (m, _) = quantize(&w, rows, cols, &h, &cfg).unwrap();
            let dense = m.dequantize();
            let x: Vec<f32> = (0..2 * cols).map(|i| (i as f32 * 0.37).sin()).collect();
            let want: Vec<f64> = (0..2)
                .flat_map(|b| {
                    let (dense, x) = (&dense, &x);
                    (0..rows).map(move |r| {
                        (0..cols)
                            .map(|c| f64::from(dense[r * cols + c]) * f64::from(x[b * cols + c]))
                            .sum::<f64>()
                    })
                })
                .collect();
            for wg in [1, 8, 64] {
                let mut y = vec![0f32; 2 * rows];
                cpu(&m, &x, &mut y, 2, wg);
                for (a, b) in y.iter().zip(&want) {
                    assert!((f64::from(*a) - b).abs() < 1e-4, "{a} vs {b}");
                }
            }
        }
    }
}

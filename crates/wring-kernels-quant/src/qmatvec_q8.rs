//! `shaders/quant/qmatvec_q8.wgsl`: the decode product `y = W x` with W in Q4_0, Q4_1 or Q8_0 blocks and x
//! quantized to 8 bits by `quantize_q8`, through packed integer dot products: llama.cpp's CPU back end's
//! method, beside the f32-activation `qmatvec`.

use wring_quant::BlockFormat;

use wring_kernels_core::dtype::DType;
use wring_kernels_core::plan::{self, Caps, Choice, KernelError, Plan};
use wring_kernels_core::reduce::tree_sum;
use wring_kernels_core::{Kernel, Operand};

use crate::quantize_q8::UNIT_WORDS;

/// The shader's `Params`: `qmatvec`'s fields (the layout check wants them by name), then the norm's
/// epsilon.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    /// Rows of W (outputs).
    pub n: u32,
    /// Columns of W (inputs), a multiple of the block length.
    pub k: u32,
    /// Activation rows.
    pub batch: u32,
    /// Bytes per row of W.
    pub row_bytes: u32,
    /// The norm's epsilon ([`QmatvecQ8Scaled`]; 0 otherwise).
    pub eps: f32,
    /// Uniform padding to 32 bytes.
    pub pad: [u32; 3],
}

/// The weight formats with an integer-dot product.
pub const FORMATS: [BlockFormat; 3] = [BlockFormat::Q4_0, BlockFormat::Q4_1, BlockFormat::Q8_0];

/// `y[b][n] = W[n][k] x[b][k]` for `batch` activation rows quantized by [`crate::QuantizeQ8`] (`k / 32 *
/// UNIT_WORDS` words each) and W in one of [`FORMATS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QmatvecQ8 {
    /// W's block format.
    pub format: BlockFormat,
    /// Rows of W (outputs).
    pub n: usize,
    /// Columns of W (inputs), a whole number of blocks.
    pub k: usize,
    /// Activation rows.
    pub batch: usize,
}

impl Kernel for QmatvecQ8 {
    fn kernel(&self) -> &'static str {
        "qmatvec_q8"
    }

    fn operands(&self) -> Vec<Operand> {
        vec![
            Operand::read("w", DType::Block(self.format), 0).shape(&[self.n, self.k]),
            Operand::read("x", DType::U32, self.batch * self.k / 32 * UNIT_WORDS),
            Operand::write("y", DType::F32, 0).shape(&[self.batch, self.n]),
        ]
    }

    /// CPU adapters get the `lanes` variants (8 invocations, each owning whole rows, so an activation unit
    /// is loaded once for several rows; `swar` for one activation row of 4-bit weights), over tiles of 8 activation rows for a batch (each weight unit read
    /// once per tile); GPUs a 64-invocation workgroup per row and activation row, reduced through subgroups
    /// where they exist.
    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        self.check()?;
        let QmatvecQ8 { format, batch, .. } = *self;
        let fmt = DType::Block(format).name();
        let (reduction, why) = plan::row_reduction(caps);
        let tiles = batch > 1 && reduction == plan::RowReduction::Narrow;
        // On CPU adapters the tiles' integer multiplies bound the product; two activation rows share one
        // in the PAIRS variants, measured 3-4x faster than one product per row for 4-bit weights on a
        // prefill of 64 rows (bench-results/2026-12-01-llvmpipe-llvm-15-qmatvec-q8).
        // For one activation row of 4-bit weights the lanes instead take two products per 32-bit multiply
        // within a row (the SWAR variants): on lavapipe 0.98-1.44x the `lanes` variants' rate for Q4_1 and
        // 1.11-1.26x for Q4_0 on SmolLM2's shapes, the variants timed in alternating rounds
        // (bench-results/2026-12-01-llvmpipe-llvm-15-qmatvec-q8).
        // Q8_0 keeps `lanes`, whose rows read two blocks at a time from aligned words; its SWAR form needs
        // two multiplies per pair and unaligned loads, and measured 0.49x on the head's shape.
        // A step of 2-4 rows takes tiles of 4, whose pairs need half the multiplies of a tile of 8.
        let auto = if tiles {
            format!("{fmt}_b{}_pairs", if batch <= 4 { 4 } else { 8 })
        } else if reduction == plan::RowReduction::Narrow && format != BlockFormat::Q8_0 {
            format!("{fmt}_b1_swar")
        } else {
            format!("{fmt}_b1_{}", reduction.matvec_name())
        };
        let v = crate::select("qmatvec_q8", &auto, why, caps, choice)?;
        plan::ensure(
            v.define("UNITS_OUT").is_none() && v.define("SCALED").is_none(),
            "qmatvec_q8",
            || {
                format!(
                    "variant {} is one half of a split norm or writes a SwiGLU gate",
                    v.id()
                )
            },
        )?;
        self.plan_variant(v, caps, 0.0)
    }
}

impl QmatvecQ8 {
    /// The checks every form makes: a batch, a format with an integer-dot product, whole blocks.
    fn check(&self) -> Result<(), KernelError> {
        let QmatvecQ8 {
            format, k, batch, ..
        } = *self;
        plan::ensure(batch >= 1, "qmatvec_q8", || {
            "the batch must have at least one row".into()
        })?;
        plan::ensure(FORMATS.contains(&format), "qmatvec_q8", || {
            format!("{format} has no integer-dot product (Q4_0, Q4_1 and Q8_0 have)")
        })?;
        plan::ensure(k.is_multiple_of(format.block_len()), "qmatvec_q8", || {
            format!("k = {k} is not a whole number of {format} blocks")
        })
    }

    /// The plan of variant `v`, checked to read this format, with the norm's epsilon (SCALED).
    fn plan_variant(
        &self,
        v: &'static wring_kernels_core::Variant,
        caps: &Caps,
        eps: f32,
    ) -> Result<Plan, KernelError> {
        let QmatvecQ8 {
            format,
            n,
            k,
            batch,
        } = *self;
        let fmt = DType::Block(format).name();
        plan::ensure(v.name.starts_with(fmt), "qmatvec_q8", || {
            format!("variant {} does not read {format}", v.id())
        })?;
        let row_bytes = format.bytes_for(k).map_err(|e| KernelError::Shape {
            kernel: "qmatvec_q8",
            what: e.to_string(),
        })?;
        plan::index_u32("qmatvec_q8", "n * row bytes", n.saturating_mul(row_bytes))?;
        let params = Params {
            n: n as u32,
            k: k as u32,
            batch: batch as u32,
            row_bytes: row_bytes as u32,
            eps,
            pad: [0; 3],
        };
        let tile = u64::from(v.define_u32("BATCH"));
        let rows_per_group = plan::rows_per_workgroup(v);
        let workgroups = plan::grid_rows("qmatvec_q8", n, batch, rows_per_group, tile, caps)?;
        Ok(Plan {
            variant: v,
            params: bytemuck::bytes_of(&params).to_vec(),
            workgroups,
        })
    }

    /// The plan of one half of a split norm or a SwiGLU epilogue (`half` is the variant's suffix: `res`,
    /// `scaled`, `swiglu` or `scaled_swiglu`) for one activation row: the `lanes` or `swar` form the planner
    /// takes for one row on a CPU adapter. Other adapters give a workgroup one row of W, too few for a
    /// whole unit of the output, and are refused when the planner chooses (so the model runs the norm's or
    /// the gate's own kernel there). `lanes`: the subgroup width the variant's shuffles need.
    fn plan_half(
        &self,
        half: &str,
        lanes: u32,
        caps: &Caps,
        choice: Choice<'_>,
        eps: f32,
    ) -> Result<Plan, KernelError> {
        self.check()?;
        let format = self.format;
        plan::ensure(self.batch == 1, "qmatvec_q8", || {
            "a split norm's products take one activation row".into()
        })?;
        let (reduction, _) = plan::row_reduction(caps);
        if choice == Choice::Auto {
            plan::ensure(
                reduction == plan::RowReduction::Narrow,
                "qmatvec_q8",
                || {
                    "this adapter's product gives a workgroup one row of W, not whole units of the \
                 output: run the norm's own kernel"
                        .into()
                },
            )?;
        }
        let form = if format == BlockFormat::Q8_0 {
            "lanes"
        } else {
            "swar"
        };
        let auto = format!("{}_b1_{form}_{half}", DType::Block(format).name());
        let v = crate::select(
            "qmatvec_q8",
            &auto,
            "a CPU adapter's workgroup owns whole units of the output",
            caps,
            choice,
        )?;
        plan::ensure(
            ["lanes", "swar"]
                .iter()
                .any(|f| v.name.ends_with(&format!("_{f}_{half}"))),
            "qmatvec_q8",
            || format!("variant {} is not a `{half}` variant", v.id()),
        )?;
        // A unit of 32 output rows spans four lanes of 8 rows (and the SwiGLU gate's up rows four more),
        // which shuffle within a subgroup.
        plan::ensure(
            lanes == 0 || caps.subgroup_min_size >= lanes,
            "qmatvec_q8",
            || format!("the `{half}` variants need subgroups of at least {lanes} lanes"),
        )?;
        self.plan_variant(v, caps, eps)
    }
}

/// The first half of an RMSNorm split between two products, for one activation row: `y = W x` (x in
/// 8-bit units, as [`QmatvecQ8`]) added to the residual `res`, the sum `s = res + y` written out, and the
/// next norm's input: 8-bit units `nq` of `s * nw` ([`wring_kernels_core::q8`]) and each unit's sum of
/// squares `ss`. The norm's scale is left to [`QmatvecQ8Scaled`], which reads them. `n` must be a multiple
/// of 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QmatvecQ8Residual(pub QmatvecQ8);

impl Kernel for QmatvecQ8Residual {
    fn kernel(&self) -> &'static str {
        "qmatvec_q8"
    }

    fn operands(&self) -> Vec<Operand> {
        let QmatvecQ8 { format, n, k, .. } = self.0;
        vec![
            Operand::read("w", DType::Block(format), 0).shape(&[n, k]),
            Operand::read("x", DType::U32, k / 32 * UNIT_WORDS),
            Operand::read("res", DType::F32, n),
            Operand::read("nw", DType::F32, n),
            Operand::write("s", DType::F32, n),
            Operand::write("nq", DType::U32, n / 32 * UNIT_WORDS),
            Operand::write("ss", DType::F32, n / 32),
        ]
    }

    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let n = self.0.n;
        plan::ensure(n.is_multiple_of(32) && n > 0, "qmatvec_q8", || {
            format!("the norm's units need whole 32-value units, not {n} rows")
        })?;
        self.0.plan_half("res", 4, caps, choice, 0.0)
    }
}

/// The second half of an RMSNorm split between two products, for one activation row: `y = W x * scale`
/// with x the units [`QmatvecQ8Residual`] wrote (`x`, of the row times the norm's weight) and `scale = 1
/// / sqrt(sum(ss) / k + eps)` from their sums of squares `ss`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QmatvecQ8Scaled {
    /// The product.
    pub product: QmatvecQ8,
    /// The norm's epsilon.
    pub eps: f32,
}

impl Kernel for QmatvecQ8Scaled {
    fn kernel(&self) -> &'static str {
        "qmatvec_q8"
    }

    fn operands(&self) -> Vec<Operand> {
        let mut ops = self.product.operands();
        ops.push(Operand::read("ss_in", DType::F32, self.product.k / 32));
        ops
    }

    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        self.product.plan_half("scaled", 0, caps, choice, self.eps)
    }
}

/// The stacked gate/up product of one activation row with the SwiGLU gate in its epilogue: W is
/// [gate; up] (`n` = 2 n_ff rows, n_ff a multiple of 32), and the kernel writes the 8-bit units of
/// `silu(gate) * up` (`nq`, n_ff values, for the down product) instead of y: silu_mul's launch folded into
/// the product. With `eps`, x is a split norm's units and `ss_in` their sums of squares, as
/// [`QmatvecQ8Scaled`] reads them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QmatvecQ8SwiGlu {
    /// The stacked product.
    pub product: QmatvecQ8,
    /// The split norm's epsilon, where x comes from [`QmatvecQ8Residual`].
    pub eps: Option<f32>,
}

impl Kernel for QmatvecQ8SwiGlu {
    fn kernel(&self) -> &'static str {
        "qmatvec_q8"
    }

    fn operands(&self) -> Vec<Operand> {
        let QmatvecQ8 { format, n, k, .. } = self.product;
        let mut ops = vec![
            Operand::read("w", DType::Block(format), 0).shape(&[n, k]),
            Operand::read("x", DType::U32, k / 32 * UNIT_WORDS),
            Operand::write("nq", DType::U32, n / 64 * UNIT_WORDS),
        ];
        if self.eps.is_some() {
            ops.push(Operand::read("ss_in", DType::F32, k / 32));
        }
        ops
    }

    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let n = self.product.n;
        plan::ensure(n.is_multiple_of(64) && n > 0, "qmatvec_q8", || {
            format!("a stacked gate/up of {n} rows is not two halves of whole 32-value units")
        })?;
        match self.eps {
            Some(eps) => self
                .product
                .plan_half("scaled_swiglu", 8, caps, choice, eps),
            None => self.product.plan_half("swiglu", 8, caps, choice, 0.0),
        }
    }
}

/// One unit's scaled integer dot product, as the shader's `unit_dot`: the 32 products summed exactly, then
/// the format's scaling in the shader's order.
fn unit_dot(format: BlockFormat, block: &[u8], codes: &[i8], d: f32, s: f32) -> f32 {
    let f16 = |at: usize| half::f16::from_le_bytes([block[at], block[at + 1]]).to_f32();
    match format {
        BlockFormat::Q8_0 => {
            let acc: i32 = (0..32)
                .map(|j| i32::from(block[2 + j] as i8) * i32::from(codes[j]))
                .sum();
            f16(0) * d * acc as f32
        }
        BlockFormat::Q4_0 | BlockFormat::Q4_1 => {
            let qs = if format == BlockFormat::Q4_0 { 2 } else { 4 };
            let acc: i32 = (0..16)
                .map(|j| {
                    let b = block[qs + j];
                    i32::from(b & 15) * i32::from(codes[j])
                        + i32::from(b >> 4) * i32::from(codes[j + 16])
                })
                .sum();
            if format == BlockFormat::Q4_0 {
                f16(0) * (d * acc as f32 - 8.0 * s)
            } else {
                f16(0) * d * acc as f32 + f16(2) * s
            }
        }
        other => unreachable!("{other} has no integer-dot product"),
    }
}

/// CPU twin: for each activation row, each of `wg` invocations takes the row's units in turn and adds
/// their scaled dot products in order, then the tree of `shaders/common/reduce.wgsl` combines the
/// invocations (`wg = 1`: the `lanes` variants' order). `xq` is [`crate::quantize_q8::cpu`]'s output.
#[allow(
    clippy::too_many_arguments,
    reason = "a matrix product's shape and the shader's lane count"
)]
pub fn cpu(
    format: BlockFormat,
    w: &[u8],
    xq: &[u32],
    y: &mut [f32],
    n: usize,
    k: usize,
    batch: usize,
    wg: usize,
) {
    let row_bytes = format.bytes_for(k).expect("k is a whole number of blocks");
    let units = k / 32;
    let unit_bytes = format.block_bytes();
    let mut slots = vec![0f32; wg];
    for (i, out) in y.iter_mut().enumerate().take(batch * n) {
        let (bi, row) = (i / n, i % n);
        slots.fill(0.0);
        for (lid, slot) in slots.iter_mut().enumerate() {
            for u in (lid..units).step_by(wg) {
                let unit = &xq[(bi * units + u) * UNIT_WORDS..][..UNIT_WORDS];
                let codes: Vec<i8> = unit[..8]
                    .iter()
                    .flat_map(|w| w.to_le_bytes())
                    .map(|b| b as i8)
                    .collect();
                let block = &w[row * row_bytes + u * unit_bytes..][..unit_bytes];
                *slot += unit_dot(
                    format,
                    block,
                    &codes,
                    f32::from_bits(unit[8]),
                    f32::from_bits(unit[9]),
                );
            }
        }
        *out = tree_sum(&mut slots);
    }
}

/// CPU twin of [`QmatvecQ8Residual`] (one activation row, the lanes' order): `y` by [`cpu`], then
/// `s = res + y`, the units of `s * nw` by [`crate::quantize_q8::cpu`] into `nq`, and each unit's sum of
/// squares, its 32 values in order, into `ss`.
#[allow(
    clippy::too_many_arguments,
    reason = "the residual, the norm's weight and the three outputs beside the product's operands"
)]
pub fn cpu_residual(
    format: BlockFormat,
    w: &[u8],
    xq: &[u32],
    res: &[f32],
    nw: &[f32],
    s: &mut [f32],
    nq: &mut [u32],
    ss: &mut [f32],
    n: usize,
    k: usize,
) {
    let mut y = vec![0f32; n];
    cpu(format, w, xq, &mut y, n, k, 1, 1);
    for (i, si) in s.iter_mut().enumerate().take(n) {
        *si = res[i] + y[i];
    }
    let weighted: Vec<f32> = (0..n).map(|i| s[i] * nw[i]).collect();
    crate::quantize_q8::cpu(&weighted, nq);
    for (unit, sq) in s[..n].chunks_exact(32).zip(ss.iter_mut()) {
        *sq = unit.iter().fold(0.0, |acc, v| acc + v * v);
    }
}

/// CPU twin of [`QmatvecQ8Scaled`] (one activation row, the lanes' order): [`cpu`] times the norm's
/// scale, `1 / sqrt(sum(ss) / k + eps)` with `ss` summed in order.
#[allow(
    clippy::too_many_arguments,
    reason = "the units' sums of squares and the norm's epsilon beside the product's operands"
)]
pub fn cpu_scaled(
    format: BlockFormat,
    w: &[u8],
    xq: &[u32],
    ss: &[f32],
    eps: f32,
    y: &mut [f32],
    n: usize,
    k: usize,
) {
    cpu(format, w, xq, y, n, k, 1, 1);
    let total = ss[..k / 32].iter().fold(0.0f32, |acc, v| acc + v);
    let scale = 1.0 / (total / k as f32 + eps).sqrt();
    for v in y.iter_mut() {
        *v *= scale;
    }
}

/// CPU twin of [`QmatvecQ8SwiGlu`] (the lanes' order): y of the stacked product by [`cpu`] (by
/// [`cpu_scaled`] with a split norm's `ss` and epsilon), then `silu(y[j]) * y[n / 2 + j]` as silu_mul
/// computes it, quantized by [`crate::quantize_q8::cpu`] into `nq`.
pub fn cpu_swiglu(
    format: BlockFormat,
    w: &[u8],
    xq: &[u32],
    scaled: Option<(&[f32], f32)>,
    nq: &mut [u32],
    n: usize,
    k: usize,
) {
    let mut y = vec![0f32; n];
    match scaled {
        Some((ss, eps)) => cpu_scaled(format, w, xq, ss, eps, &mut y, n, k),
        None => cpu(format, w, xq, &mut y, n, k, 1, 1),
    }
    let (gate, up) = y.split_at(n / 2);
    let gated: Vec<f32> = gate
        .iter()
        .zip(up)
        .map(|(&g, &u)| g / (1.0 + (-g).exp()) * u)
        .collect();
    crate::quantize_q8::cpu(&gated, nq);
}

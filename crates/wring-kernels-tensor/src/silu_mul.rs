//! `shaders/silu_mul.wgsl`: `silu(a) * b`, the SwiGLU gate, over rows read through strides (so the two
//! halves of a fused gate/up projection can be read in place).

use wring_kernels_core::plan::{self, Caps, Choice, KernelError, Plan, Strided};
use wring_kernels_core::{DType, Kernel, Operand, q8};

/// The shader's `Params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    /// Elements per row.
    pub cols: u32,
    /// rows * cols.
    pub total: u32,
    /// Row stride and offset of a, then of b.
    /// Row stride of a.
    pub a_stride: u32,
    /// Offset of a's first entry.
    pub a_off: u32,
    /// Row stride of b.
    pub b_stride: u32,
    /// Offset of b's first entry.
    pub b_off: u32,
    /// Uniform padding to 32 bytes.
    /// 0: SiLU (SwiGLU); 1: GELU's tanh form (GeGLU, Gemma).
    pub gate: u32,
    /// Uniform padding to 32 bytes.
    pub pad: u32,
}

/// The gate's activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Gate {
    /// `x / (1 + exp(-x))`: SwiGLU (llama, Qwen, Phi-3).
    #[default]
    Silu,
    /// `0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))`, ggml's `ggml_gelu`: GeGLU (Gemma).
    Gelu,
}

impl Gate {
    /// The activation of one value, as the shader's `act` computes it.
    pub fn of(self, x: f32) -> f32 {
        match self {
            Gate::Silu => x / (1.0 + (-x).exp()),
            Gate::Gelu => {
                const SQRT_2_OVER_PI: f32 = 0.797_884_6;
                0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + 0.044_715 * x * x)).tanh())
            }
        }
    }
}

/// `y[row][i] = silu(a[row][i]) * b[row][i]` for `rows` rows of `cols` f32 values, `a` and `b` read
/// through strides (so both may be halves of one fused gate/up output) and `y` dense.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiluMul {
    /// Values per row.
    pub cols: usize,
    /// Rows.
    pub rows: usize,
    /// Where rows of `a` are read.
    pub a: Strided,
    /// Where rows of `b` are read.
    pub b: Strided,
    /// The activation applied to `a`.
    pub gate: Gate,
}

impl SiluMul {
    /// `y = silu(a) * b` on dense tensors of `rows` rows of `cols`.
    pub fn dense(cols: usize, rows: usize) -> SiluMul {
        let d = Strided {
            stride: cols,
            offset: 0,
        };
        SiluMul {
            cols,
            rows,
            a: d,
            b: d,
            gate: Gate::Silu,
        }
    }

    /// The same gate with another activation.
    pub fn with_gate(self, gate: Gate) -> SiluMul {
        SiluMul { gate, ..self }
    }

    /// The SwiGLU gate of a fused gate/up projection: `gu` is [rows, 2 ff] and both halves are read in
    /// place (bind the same tensor as `a` and `b`).
    pub fn halves(ff: usize, rows: usize) -> SiluMul {
        SiluMul {
            cols: ff,
            rows,
            a: Strided {
                stride: 2 * ff,
                offset: 0,
            },
            b: Strided {
                stride: 2 * ff,
                offset: ff,
            },
            gate: Gate::Silu,
        }
    }
}

impl Kernel for SiluMul {
    fn kernel(&self) -> &'static str {
        "silu_mul"
    }

    fn operands(&self) -> Vec<Operand> {
        vec![
            Operand::read("a", DType::F32, self.a.extent(self.rows, self.cols)),
            Operand::read("b", DType::F32, self.b.extent(self.rows, self.cols)),
            Operand::write("y", DType::F32, self.rows.saturating_mul(self.cols)),
        ]
    }

    /// Plans `y[row][i] = silu(a[row][i]) * b[row][i]` for `rows` rows of `cols` f32 values, with `y` dense.
    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let SiluMul { cols, rows, .. } = *self;
        let v = crate::choose(
            &crate::catalogue::silu_mul::F32,
            "it is the only variant writing floats",
            caps,
            choice,
        )?;
        let params = self.params(rows, cols)?;
        let per_group = u64::from(v.define_u32("WG") * v.define_u32("ITEMS"));
        plan::linear(
            "silu_mul",
            v,
            u64::from(params.total).div_ceil(per_group),
            bytemuck::bytes_of(&params),
            caps,
        )
    }
}

impl SiluMul {
    /// The checked uniform of either output form.
    fn params(&self, rows: usize, cols: usize) -> Result<Params, KernelError> {
        let SiluMul { a, b, gate, .. } = *self;
        plan::ensure(cols > 0, "silu_mul", || "rows must not be empty".into())?;
        let total = plan::index_u32("silu_mul", "rows * cols", rows.saturating_mul(cols))?;
        for (s, name) in [(a, "a"), (b, "b")] {
            plan::ensure(s.stride >= cols || rows <= 1, "silu_mul", || {
                format!("rows of {name} overlap: stride {} < {cols}", s.stride)
            })?;
            plan::index_u32(
                "silu_mul",
                name,
                rows.saturating_sub(1)
                    .saturating_mul(s.stride)
                    .saturating_add(s.offset)
                    .saturating_add(cols),
            )?;
        }
        // The extents were checked against u32 above, so each stride and offset fits.
        Ok(Params {
            cols: cols as u32,
            total,
            a_stride: a.stride as u32,
            a_off: a.offset as u32,
            b_stride: b.stride as u32,
            b_off: b.offset as u32,
            gate: match gate {
                Gate::Silu => 0,
                Gate::Gelu => 1,
            },
            pad: 0,
        })
    }
}

/// [`SiluMul`] writing `y` as 8-bit activation units (`q`, [`wring_kernels_core::q8`]) for the down
/// projection's `qmatvec_q8` instead of floats: the quantize_q8 launch folded into the gate. `cols` must
/// be a multiple of 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiluMulQ8(pub SiluMul);

impl Kernel for SiluMulQ8 {
    fn kernel(&self) -> &'static str {
        "silu_mul"
    }

    fn operands(&self) -> Vec<Operand> {
        let SiluMul { cols, rows, .. } = self.0;
        q8::units_output(self.0.operands(), "y", "q", rows.saturating_mul(cols))
    }

    /// One invocation per 32-value unit, 64 to a workgroup.
    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let SiluMul { cols, rows, .. } = self.0;
        plan::ensure(cols.is_multiple_of(32), "silu_mul", || {
            format!("8-bit units need rows of whole 32-value units, not {cols}")
        })?;
        let v = crate::choose(
            &crate::catalogue::silu_mul::Q8,
            "it is the only variant writing 8-bit units",
            caps,
            choice,
        )?;
        let params = self.0.params(rows, cols)?;
        plan::per_item(
            "silu_mul",
            v,
            u64::from(params.total / 32),
            bytemuck::bytes_of(&params),
            caps,
        )
    }
}

/// CPU twin: `y[row][i] = a / (1 + exp(-a)) * b` with a and b read through their strides.
pub fn cpu(cols: usize, a: &[f32], sa: Strided, b: &[f32], sb: Strided, y: &mut [f32]) {
    cpu_gate(Gate::Silu, cols, a, sa, b, sb, y);
}

/// CPU twin of either gate: `y[row][i] = gate(a) * b` with a and b read through their strides.
#[allow(
    clippy::too_many_arguments,
    reason = "the gate, two strided inputs and the output, as the shader"
)]
pub fn cpu_gate(
    gate: Gate,
    cols: usize,
    a: &[f32],
    sa: Strided,
    b: &[f32],
    sb: Strided,
    y: &mut [f32],
) {
    for (row, yr) in y.chunks_exact_mut(cols).enumerate() {
        for (i, yi) in yr.iter_mut().enumerate() {
            let x = a[row * sa.stride + sa.offset + i];
            *yi = gate.of(x) * b[row * sb.stride + sb.offset + i];
        }
    }
}

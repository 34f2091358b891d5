//! `shaders/sparse/rht.wgsl`: the incoherence transform `y = V x` of `wring_quant::rht` for each row of a
//! product's input, run before a product whose weights were stored as `W V^T`.

use wring_kernels_core::plan::{self, Caps, Choice, KernelError, Plan};
use wring_kernels_core::{DType, Kernel, Operand};

/// The shader's `Params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    /// Values per row.
    pub n: u32,
    /// The power-of-two factor.
    pub a: u32,
    /// The odd factor.
    pub b: u32,
    /// Rows.
    pub rows: u32,
}

/// `y[row] = V x[row]` for `rows` rows of width `n`, with V's signs (`signs`, `ceil(n / 32)` words) and
/// its DCT factor (`dct`, `b * b` values from `wring_quant::rht::Rht::dct`) bound as operands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rht {
    /// Values per row.
    pub n: usize,
    /// Rows.
    pub rows: usize,
}

impl Rht {
    fn transform(&self) -> Result<wring_quant::rht::Rht, KernelError> {
        wring_quant::rht::Rht::new(self.n).map_err(|e| KernelError::Shape {
            kernel: "rht",
            what: e.to_string(),
        })
    }
}

impl Kernel for Rht {
    fn kernel(&self) -> &'static str {
        "rht"
    }

    fn operands(&self) -> Vec<Operand> {
        let b = self.transform().map_or(1, |t| t.b);
        vec![
            Operand::read("x", DType::F32, 0).shape(&[self.rows, self.n]),
            Operand::read("signs", DType::U32, 0).shape(&[self.n.div_ceil(32)]),
            Operand::read("dct", DType::F32, 0).shape(&[b, b]),
            Operand::write("y", DType::F32, 0).shape(&[self.rows, self.n]),
        ]
    }

    /// One workgroup per (entry of the odd factor, row); the power-of-two factor must fit the variant's
    /// workgroup memory.
    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let t = self.transform()?;
        plan::ensure(self.rows >= 1, "rht", || "no rows".into())?;
        plan::index_u32("rht", "rows * n", self.rows.saturating_mul(self.n))?;
        let v = crate::select("rht", "wg64", "it is the only variant", caps, choice)?;
        plan::ensure(t.a <= v.define_u32("MAX_A") as usize, "rht", || {
            format!(
                "a power-of-two factor of {} exceeds the workgroup's {}",
                t.a,
                v.define_u32("MAX_A")
            )
        })?;
        let params = Params {
            n: self.n as u32,
            a: t.a as u32,
            b: t.b as u32,
            rows: self.rows as u32,
        };
        Ok(Plan {
            variant: v,
            params: bytemuck::bytes_of(&params).to_vec(),
            workgroups: plan::grid_2d("rht", t.b, self.rows, 1, 1, caps)?,
        })
    }
}

/// CPU twin: `wring_quant::rht::Rht::forward` on each row (the shader's arithmetic in its order).
pub fn cpu(n: usize, signs: &[u32], x: &[f32], y: &mut [f32]) {
    let t = wring_quant::rht::Rht::new(n).expect("a width with a transform");
    let dct = t.dct();
    for (src, dst) in x.chunks(n).zip(y.chunks_mut(n)) {
        t.forward(&dct, signs, src, dst);
    }
}

//! `shaders/silu_mul.wgsl`: `silu(a) * b`, the SwiGLU gate, over rows read through strides (so the two
//! halves of a fused gate/up projection can be read in place).

use crate::plan::{self, Caps, Choice, KernelError, Plan, Strided};

/// The shader's `Params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    /// Elements per row.
    pub cols: u32,
    /// rows * cols.
    pub total: u32,
    /// Row stride and offset of a, then of b.
    pub strides: [u32; 4],
    /// Uniform padding to 32 bytes.
    pub pad: [u32; 2],
}

/// Plans `y[row][i] = silu(a[row][i]) * b[row][i]` for `rows` rows of `cols` f32 values, with `y` dense.
pub fn plan(
    cols: usize,
    rows: usize,
    a: Strided,
    b: Strided,
    caps: &Caps,
    choice: Choice<'_>,
) -> Result<Plan, KernelError> {
    let v = plan::select("silu_mul", "f32", "it is the only variant", caps, choice)?;
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
    let strides = [
        a.stride as u32,
        a.offset as u32,
        b.stride as u32,
        b.offset as u32,
    ];
    let params = Params {
        cols: cols as u32,
        total,
        strides,
        pad: [0; 2],
    };
    let per_group = u64::from(v.define_u32("WG") * v.define_u32("ITEMS"));
    plan::linear(
        "silu_mul",
        v,
        u64::from(total).div_ceil(per_group),
        bytemuck::bytes_of(&params),
        caps,
    )
}

/// CPU twin: `y[row][i] = a / (1 + exp(-a)) * b` with a and b read through their strides.
pub fn cpu(cols: usize, a: &[f32], sa: Strided, b: &[f32], sb: Strided, y: &mut [f32]) {
    for (row, yr) in y.chunks_exact_mut(cols).enumerate() {
        for (i, yi) in yr.iter_mut().enumerate() {
            let x = a[row * sa.stride + sa.offset + i];
            *yi = x / (1.0 + (-x).exp()) * b[row * sb.stride + sb.offset + i];
        }
    }
}

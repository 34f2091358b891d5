//! The one dispatch policy that belongs in the runtime: which kernel multiplies activations by a weight
//! tensor, chosen by the weight's format and the adapter. Model code calls [`matmul_weights`] for every
//! projection, so the weight's format stays a property of the tensor and one model implementation serves
//! quantized and float weights.

use crate::error::{Error, Result};
use crate::kernels::DType;
use crate::kernels::quant::{Qmatmul, Qmatvec};
use crate::kernels::tensor::{Matmul, Matvec};
use crate::step::Step;
use crate::tensor::Tensor;

fn dims2(t: &Tensor, name: &str) -> Result<(usize, usize)> {
    match t.shape() {
        [r, c] => Ok((*r, *c)),
        s => Err(Error::Shape(format!("{name} must be 2-D, got shape {s:?}"))),
    }
}

/// `y = x w^T` for a weight tensor `w` [n, k] of any format and activations `x` [m, k]; `y` is f32
/// [m, n]. Quantized weights go to qmatvec for one row, for batches on CPU adapters (its 8-row tiles
/// need no barriers) and for f16 activations, and to the tiled qmatmul for batches on GPUs; float
/// weights go to matvec for one row and matmul otherwise.
pub fn matmul_weights(step: &mut Step<'_>, w: &Tensor, x: &Tensor, y: &Tensor) -> Result<()> {
    let (n, k) = dims2(w, "w")?;
    let (m, _) = dims2(x, "x")?;
    let caps = *step.caps();
    match w.dtype() {
        DType::Block(format) if m == 1 || caps.software || x.dtype() == DType::F16 => {
            tracing::debug!(
                m,
                "quantized weights: qmatvec (one row, a CPU adapter, or f16 activations)"
            );
            let unit = Qmatvec {
                format,
                act: x.dtype(),
                n,
                k,
                batch: m,
            };
            step.run(&unit, &[("w", w), ("x", x), ("y", y)])
        }
        DType::Block(format) => {
            tracing::debug!(m, "quantized weights: tiled qmatmul (a batch on a GPU)");
            step.run(
                &Qmatmul { format, m, n, k },
                &[("a", x), ("w", w), ("c", y)],
            )
        }
        dtype @ (DType::F32 | DType::F16) if m == 1 => {
            let (xv, yv) = (
                x.reshape(&[k])
                    .ok_or_else(|| Error::Shape(format!("x must be [1, {k}]")))?,
                y.reshape(&[y.len()])
                    .ok_or_else(|| Error::Shape("y".into()))?,
            );
            step.run(&Matvec { dtype, n, k }, &[("w", w), ("x", &xv), ("y", &yv)])
        }
        dtype @ (DType::F32 | DType::F16) => {
            step.run(&Matmul { dtype, m, n, k }, &[("a", x), ("b", w), ("c", y)])
        }
        other => Err(Error::Shape(format!(
            "weights of type {other} cannot multiply activations"
        ))),
    }
}

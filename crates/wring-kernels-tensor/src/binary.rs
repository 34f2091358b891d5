//! `shaders/binary.wgsl`: elementwise add and multiply with a broadcast right operand.

use wring_kernels_core::dtype::{DType, Float};
use wring_kernels_core::plan::{self, Caps, Choice, KernelError, Plan};
use wring_kernels_core::{Kernel, Operand};

/// The operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    /// `a + b`.
    Add,
    /// `a * b`.
    Mul,
}

impl BinaryOp {
    fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Mul => "mul",
        }
    }
}

/// The shader's `Params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    /// Elements of `a` and `c`.
    pub n: u32,
    /// Elements of `b`, repeated over `a`.
    pub nb: u32,
    /// Uniform padding to 16 bytes.
    pub pad: [u32; 2],
}

/// `c = a op b` on `n` elements of `dtype`, `b` of `nb` elements broadcast over `a` (nb divides n).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binary {
    /// The operation.
    pub op: BinaryOp,
    /// Element type of all three operands.
    pub dtype: DType,
    /// Elements of `a` and `c`.
    pub n: usize,
    /// Elements of `b`.
    pub nb: usize,
}

impl Kernel for Binary {
    fn kernel(&self) -> &'static str {
        "binary"
    }

    fn operands(&self) -> Vec<Operand> {
        vec![
            Operand::read("a", self.dtype, self.n),
            Operand::read("b", self.dtype, self.nb),
            Operand::write("c", self.dtype, self.n),
        ]
    }

    /// Plans `c = a op b` for `n` elements of `dtype`, `b` of `nb` elements broadcast (nb divides n).
    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let Binary { op, dtype, n, nb } = *self;
        plan::ensure(nb > 0 && n.is_multiple_of(nb), "binary", || {
            format!("b has {nb} elements, which must divide a's {n}")
        })?;
        use crate::catalogue::binary as bin;
        let auto = match (op, dtype == DType::F16) {
            (BinaryOp::Add, false) => &bin::ADD_F32,
            (BinaryOp::Add, true) => &bin::ADD_F16,
            (BinaryOp::Mul, false) => &bin::MUL_F32,
            (BinaryOp::Mul, true) => &bin::MUL_F16,
        };
        let v = crate::choose(
            auto,
            "it matches the operation and element type",
            caps,
            choice,
        )?;
        plan::ensure(
            v.name.starts_with(op.name()) && v.define("ELEM") == Some(dtype.name()),
            "binary",
            || {
                format!(
                    "variant {} does not compute {} on {dtype}",
                    v.id(),
                    op.name()
                )
            },
        )?;
        let params = Params {
            n: plan::index_u32("binary", "n", n)?,
            nb: plan::index_u32("binary", "nb", nb)?,
            pad: [0; 2],
        };
        let per_group = u64::from(v.define_u32("WG") * v.define_u32("ITEMS"));
        plan::linear(
            "binary",
            v,
            (n as u64).div_ceil(per_group),
            bytemuck::bytes_of(&params),
            caps,
        )
    }
}

/// CPU twin: computes in f32 and rounds to the element type, as the f16 shader's arithmetic does.
pub fn cpu<T: Float>(op: BinaryOp, a: &[T], b: &[T], c: &mut [T]) {
    for (i, (ci, ai)) in c.iter_mut().zip(a).enumerate() {
        let bi = b[i % b.len()].to_f32();
        *ci = T::from_f32(match op {
            BinaryOp::Add => ai.to_f32() + bi,
            BinaryOp::Mul => ai.to_f32() * bi,
        });
    }
}

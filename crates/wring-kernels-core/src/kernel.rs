//! The kernel unit: a descriptor in natural units that declares its operands once and plans its launch.
//!
//! Every kernel of every family implements [`Kernel`]; the runtime's one generic launch path
//! (`Step::run`) checks the tensors it is given against [`Kernel::operands`], plans with
//! [`Kernel::plan`], and binds the operands to the variant's reflected bindings by name. The CPU twin lives
//! beside the descriptor in the same file.

use crate::dtype::DType;
use crate::plan::{Caps, Choice, KernelError, Plan};
use crate::shader::BindingKind;
use crate::variant::Variant;

/// Whether a kernel reads an operand or writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Bound read-only.
    Read,
    /// Bound read-write: the kernel writes it (and may read it).
    Write,
}

/// The element types an operand accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    /// Exactly this type.
    Is(DType),
    /// Any 32-bit scalar type (f32, u32, i32): kernels that move words without interpreting them.
    Word,
}

impl Elem {
    /// Whether a tensor of `dtype` may be bound here.
    pub fn accepts(self, dtype: DType) -> bool {
        match self {
            Elem::Is(t) => t == dtype,
            Elem::Word => matches!(dtype, DType::F32 | DType::U32 | DType::I32),
        }
    }
}

impl std::fmt::Display for Elem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Elem::Is(t) => write!(f, "{t}"),
            Elem::Word => f.write_str("a 32-bit type"),
        }
    }
}

/// One operand of a kernel: the storage binding it goes to, its element type, the elements the kernel may
/// touch, optionally its exact shape, and whether the kernel writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operand {
    /// The WGSL binding's variable name.
    pub name: &'static str,
    /// The element types accepted.
    pub elem: Elem,
    /// The least number of elements the tensor must hold (the kernel reads or writes up to here).
    pub min_len: usize,
    /// The exact shape required, when the kernel's descriptor fixes one.
    pub shape: Option<Vec<usize>>,
    /// Read or written.
    pub access: Access,
}

impl Operand {
    /// A read operand of `dtype` with at least `min_len` elements.
    pub fn read(name: &'static str, dtype: DType, min_len: usize) -> Operand {
        Operand {
            name,
            elem: Elem::Is(dtype),
            min_len,
            shape: None,
            access: Access::Read,
        }
    }

    /// A written operand of `dtype` with at least `min_len` elements.
    pub fn write(name: &'static str, dtype: DType, min_len: usize) -> Operand {
        Operand {
            access: Access::Write,
            ..Operand::read(name, dtype, min_len)
        }
    }

    /// The same operand accepting any 32-bit element type.
    pub fn words(mut self) -> Operand {
        self.elem = Elem::Word;
        self
    }

    /// The same operand with an exact shape (its element count becomes the minimum length).
    pub fn shape(mut self, shape: &[usize]) -> Operand {
        self.min_len = shape.iter().product();
        self.shape = Some(shape.to_vec());
        self
    }
}

/// A kernel unit: a descriptor of one launch in natural units (usize shapes, enums), its operands declared
/// once, and its planner. Implemented by every kernel of every family.
pub trait Kernel: std::fmt::Debug {
    /// The kernel's name, the stem of its WGSL file.
    fn kernel(&self) -> &'static str;

    /// The operands of this launch, one per storage binding of every variant.
    fn operands(&self) -> Vec<Operand>;

    /// Picks the variant for the adapter (or the forced one), checks the descriptor, and sizes the
    /// dispatch.
    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError>;
}

/// Checks that `operands` declare exactly the storage bindings of `v`, with the access each binding has:
/// a unit whose declaration drifted from its WGSL fails here (and in the catalogue test for every variant)
/// instead of binding the wrong buffer.
pub fn check_declaration(v: &Variant, operands: &[Operand]) -> Result<(), KernelError> {
    let bad = |what: String| KernelError::Shape {
        kernel: "declaration",
        what: format!("{}: {what}", v.id()),
    };
    for b in v.bindings.iter() {
        if b.kind == BindingKind::Uniform {
            continue;
        }
        let Some(op) = operands.iter().find(|o| o.name == b.name) else {
            return Err(bad(format!("binding `{}` has no declared operand", b.name)));
        };
        let writes = b.kind == BindingKind::StorageReadWrite;
        if writes != (op.access == Access::Write) {
            return Err(bad(format!(
                "operand `{}` is declared {:?} but the binding is {:?}",
                op.name, op.access, b.kind
            )));
        }
    }
    for op in operands {
        if !v
            .bindings
            .iter()
            .any(|b| b.name == op.name && b.kind != BindingKind::Uniform)
        {
            return Err(bad(format!(
                "operand `{}` names no storage binding",
                op.name
            )));
        }
    }
    Ok(())
}

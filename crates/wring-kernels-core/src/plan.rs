//! What every kernel's planner shares: adapter capabilities, forced or automatic variant choice, the plan
//! handed to the runtime, and the kernel-level error type.

use crate::variant::{self, Variant};

/// What the adapter offers that changes which variant a kernel may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// `SHADER_F16` is enabled on the device.
    pub f16: bool,
    /// `SUBGROUP` is enabled on the device.
    pub subgroup: bool,
    /// The narrowest subgroup the adapter may run (0 without subgroups): kernels that treat a small
    /// workgroup as one subgroup need at least their workgroup's size.
    pub subgroup_min_size: u32,
    /// `max_compute_workgroups_per_dimension`.
    pub max_workgroups_per_dim: u32,
    /// Plan as for a CPU implementation (lavapipe, WARP, SwiftShader): shared memory is ordinary memory
    /// and barriers are expensive, so planners prefer variants without them. The runtime sets it from the
    /// adapter's kind unless a plan is forced (`wring_runtime::PlanAs`, `WRING_PLAN`), so that a hardware
    /// GPU's plan runs on lavapipe too. Every planner branch on it is listed in ARCHITECTURE.md's table
    /// with the end-to-end test that runs it (tests/tidy.rs checks the list).
    pub software: bool,
}

impl Caps {
    /// Baseline WebGPU: no optional features, the default workgroup-count limit.
    pub const BASELINE: Caps = Caps {
        f16: false,
        subgroup: false,
        subgroup_min_size: 0,
        max_workgroups_per_dim: 65_535,
        software: false,
    };

    /// The feature `v` needs that this adapter lacks, if any.
    pub fn missing(&self, v: &Variant) -> Option<&'static str> {
        if v.requires.f16 && !self.f16 {
            Some("SHADER_F16")
        } else if v.requires.subgroup && !self.subgroup {
            Some("SUBGROUP")
        } else {
            None
        }
    }
}

/// Which variant a kernel runs: the planner's choice, or one named variant (tests force every variant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Choice<'a> {
    /// Let the planner choose for the shape and the adapter.
    #[default]
    Auto,
    /// Run this variant, or fail if the adapter or the shape rules it out.
    Force(&'a str),
}

/// Errors from planning a launch: all of them are about the caller's request, none about a device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    /// No variant of that name.
    #[error("kernel {kernel} has no variant `{name}`; it has: {available}")]
    NoSuchVariant {
        /// The kernel.
        kernel: String,
        /// The variant asked for.
        name: String,
        /// The variants it has, comma separated.
        available: String,
    },
    /// The adapter lacks a feature the variant needs.
    #[error(
        "variant {variant} needs the adapter feature {feature}, which this adapter does not offer; use another variant"
    )]
    Unsupported {
        /// The variant.
        variant: String,
        /// The feature it needs.
        feature: &'static str,
    },
    /// The operands' shapes do not fit the kernel.
    #[error("{kernel}: {what}")]
    Shape {
        /// The kernel.
        kernel: &'static str,
        /// What does not fit.
        what: String,
    },
    /// More workgroups than the adapter can dispatch.
    #[error(
        "{kernel} needs {needed} workgroups in one dimension, above this adapter's limit of {limit}; split the operation"
    )]
    TooManyWorkgroups {
        /// The kernel.
        kernel: &'static str,
        /// Workgroups needed.
        needed: u64,
        /// The adapter's limit per dimension.
        limit: u32,
    },
}

/// A planned launch: the variant, its uniform parameters as bytes, and the dispatch size.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The variant to run.
    pub variant: &'static Variant,
    /// The bytes of the kernel's `Params` uniform.
    pub params: Vec<u8>,
    /// Workgroup counts.
    pub workgroups: [u32; 3],
}

/// A plan of `groups` workgroups in one dimension (spilling into y and z past the per-dimension limit).
pub fn linear(
    kernel: &'static str,
    v: &'static Variant,
    groups: u64,
    params: &[u8],
    caps: &Caps,
) -> Result<Plan, KernelError> {
    Ok(Plan {
        variant: v,
        params: params.to_vec(),
        workgroups: grid_1d(kernel, groups, caps)?,
    })
}

/// A plan of one invocation per item, in workgroups of the variant's `WG` invocations.
pub fn per_item(
    kernel: &'static str,
    v: &'static Variant,
    items: u64,
    params: &[u8],
    caps: &Caps,
) -> Result<Plan, KernelError> {
    linear(
        kernel,
        v,
        items.div_ceil(u64::from(v.define_u32("WG"))),
        params,
        caps,
    )
}

/// Resolves a choice among the variants of `kernel` in a family's `table`: the forced one, or `auto` with
/// `why` logged at debug level.
pub fn select(
    table: &[&'static Variant],
    kernel: &str,
    auto: &str,
    why: &str,
    caps: &Caps,
    choice: Choice<'_>,
) -> Result<&'static Variant, KernelError> {
    let name = match choice {
        Choice::Auto => auto,
        Choice::Force(name) => name,
    };
    let v = variant::find(table, kernel, name).ok_or_else(|| KernelError::NoSuchVariant {
        kernel: kernel.into(),
        name: name.into(),
        available: variant::of_kernel(table, kernel)
            .map(|v| v.name.as_ref())
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    if let Some(feature) = caps.missing(v) {
        return Err(KernelError::Unsupported {
            variant: v.id(),
            feature,
        });
    }
    match choice {
        Choice::Auto => tracing::debug!(variant = %v.id(), "using {} because {why}", v.name),
        Choice::Force(_) => {
            tracing::debug!(variant = %v.id(), "using {} because the caller forced it", v.name)
        }
    }
    Ok(v)
}

/// A 1D dispatch of `groups` workgroups, spilled into y when it exceeds the per-dimension limit;
/// `linear_workgroup` in `shaders/common/invocation.wgsl` folds it back.
pub fn grid_1d(kernel: &'static str, groups: u64, caps: &Caps) -> Result<[u32; 3], KernelError> {
    let limit = u64::from(caps.max_workgroups_per_dim.max(1));
    let groups = groups.max(1);
    if groups <= limit {
        return Ok([groups as u32, 1, 1]);
    }
    let y = groups.div_ceil(limit);
    if y > limit {
        return Err(KernelError::TooManyWorkgroups {
            kernel,
            needed: groups,
            limit: caps.max_workgroups_per_dim,
        });
    }
    Ok([limit as u32, y as u32, 1])
}

/// A checked workgroup count for one dimension of a 2D grid.
pub fn dim(kernel: &'static str, groups: u64, caps: &Caps) -> Result<u32, KernelError> {
    if groups > u64::from(caps.max_workgroups_per_dim) {
        return Err(KernelError::TooManyWorkgroups {
            kernel,
            needed: groups,
            limit: caps.max_workgroups_per_dim,
        });
    }
    Ok(groups.max(1) as u32)
}

/// A 2D grid covering `cols` x `rows` items with one workgroup per `tile_cols` x `tile_rows` block (x over
/// columns, y over rows): how the tiled products and the row-tiled matrix-vector kernels size dispatches.
pub fn grid_2d(
    kernel: &'static str,
    cols: usize,
    rows: usize,
    tile_cols: u64,
    tile_rows: u64,
    caps: &Caps,
) -> Result<[u32; 3], KernelError> {
    // Without the spill into z, x must hold every column group: `dim` refuses more.
    dim(kernel, (cols as u64).div_ceil(tile_cols.max(1)), caps)?;
    grid_rows(kernel, cols, rows, tile_cols, tile_rows, caps)
}

/// A product's grid as [`grid_2d`] lays it out, except that output-row groups past the per-dimension
/// limit spill from x into z (x * z >= the groups needed, the extra groups past the last row): for the
/// matrix-vector kernels, whose shaders read their row group with `col_workgroup` and skip rows past the
/// end. A vocabulary head of 151,936 rows at one row per workgroup needs it on every GPU.
pub fn grid_rows(
    kernel: &'static str,
    cols: usize,
    rows: usize,
    tile_cols: u64,
    tile_rows: u64,
    caps: &Caps,
) -> Result<[u32; 3], KernelError> {
    let groups = (cols as u64).div_ceil(tile_cols.max(1));
    let limit = u64::from(caps.max_workgroups_per_dim);
    let z = groups.div_ceil(limit).max(1);
    let x = groups.div_ceil(z);
    Ok([
        dim(kernel, x, caps)?,
        dim(kernel, (rows as u64).div_ceil(tile_rows.max(1)), caps)?,
        dim(kernel, z, caps)?,
    ])
}

/// Fails with a shape error unless `ok`.
pub fn ensure(
    ok: bool,
    kernel: &'static str,
    what: impl FnOnce() -> String,
) -> Result<(), KernelError> {
    if ok {
        Ok(())
    } else {
        Err(KernelError::Shape {
            kernel,
            what: what(),
        })
    }
}

/// Elements as `u32`, the index type of every shader; larger arrays cannot be bound anyway.
pub fn index_u32(kernel: &'static str, what: &str, n: usize) -> Result<u32, KernelError> {
    u32::try_from(n).map_err(|_| KernelError::Shape {
        kernel,
        what: format!("{what} = {n} exceeds u32 indexing"),
    })
}

/// The variant of a one-workgroup-per-row kernel (rmsnorm, softmax) for an adapter, and why.
///
/// On CPU adapters a workgroup is one SIMD batch per core and every barrier switches between batches, so
/// 8 invocations per row (`narrow`) beat 256; GPUs want the wide workgroup, reduced through subgroups
/// where they exist.
pub fn row_reduction(caps: &Caps) -> (RowReduction, &'static str) {
    if caps.software {
        (RowReduction::Narrow, "the adapter is a CPU")
    } else if caps.subgroup {
        (RowReduction::Subgroup, "the adapter has subgroups")
    } else {
        (RowReduction::Shared, "the adapter has no subgroups")
    }
}

/// Output rows one workgroup of a matrix-vector variant covers: with `ROW_PER_LANE` each of its WG lanes
/// owns ROWS whole rows (one where the variant defines no ROWS); otherwise the workgroup shares one row.
pub fn rows_per_workgroup(v: &Variant) -> u64 {
    if v.define("ROW_PER_LANE").is_some() {
        let rows = v.define("ROWS").map_or(1, |_| v.define_u32("ROWS"));
        u64::from(v.define_u32("WG") * rows)
    } else {
        1
    }
}

/// How a one-workgroup-per-row kernel reduces its row (see [`row_reduction`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowReduction {
    /// 8 invocations, a tree in private memory: CPU adapters.
    Narrow,
    /// 256 invocations through shared memory.
    Shared,
    /// 256 invocations through subgroup operations.
    Subgroup,
}

impl RowReduction {
    /// The axis value the matrix-vector kernels (qmatvec, gmatvec) name this choice by: their narrow form
    /// gives each of 8 lanes whole rows (`lanes`), their wide forms a 64-invocation workgroup per row.
    pub fn matvec_name(self) -> &'static str {
        match self {
            RowReduction::Narrow => "lanes",
            RowReduction::Shared => "shared",
            RowReduction::Subgroup => "subgroup",
        }
    }
}

/// Rows read in place from a wider tensor: element `row * stride + offset + i` holds entry i of a row
/// (how fused kernels read the parts of a fused projection's output).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Strided {
    /// Floats from one row to the next.
    pub stride: usize,
    /// Floats before the first entry of a row.
    pub offset: usize,
}

impl Strided {
    /// Elements a tensor needs to hold `rows` rows of `cols` values read through these strides.
    pub fn extent(self, rows: usize, cols: usize) -> usize {
        rows.saturating_sub(1)
            .saturating_mul(self.stride)
            .saturating_add(self.offset)
            .saturating_add(cols)
    }
}

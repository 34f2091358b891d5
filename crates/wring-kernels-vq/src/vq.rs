//! Vector quantization: `shaders/vq_search.wgsl` (exact nearest-codeword search fused with a per-invocation
//! top-k), `vq_merge.wgsl` (the final top-k per query and the distances), `vq_norms.wgsl` (squared row
//! norms), `vq_lookup.wgsl` (decode, and the residual update between VQ stages) and `vq_update.wgsl` (the
//! k-means centroid update), with their CPU twins.
//!
//! Matrices are row-major. Queries and data points are read as `x[row * x_stride + x_offset + i]`, i < d, so
//! one subspace of a product quantizer, or one group of a group-residual quantizer, is searched in place.
//! A search writes `lists` sorted candidate lists per query into a scratch (`[query][list][k]` keys and
//! ids); the codebook may be split over workgroups (`splits`) and over launches (`code_base`,
//! `list_base`), which is how codebooks above the adapter's binding limit are searched.

use wring_kernels_core::dtype::DType;
use wring_kernels_core::plan::{self, Caps, Choice, KernelError, Plan};
use wring_kernels_core::{Kernel, Operand};

/// How a query is compared with a codeword.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Squared Euclidean distance, smallest first (faiss `IndexFlatL2`).
    L2,
    /// Inner product, largest first (faiss `IndexFlatIP`).
    InnerProduct,
    /// Cosine similarity, largest first: the inner product of the vectors scaled to unit length (a zero
    /// vector has similarity 0 with everything).
    Cosine,
}

impl Metric {
    /// Every metric.
    pub const ALL: [Metric; 3] = [Metric::L2, Metric::InnerProduct, Metric::Cosine];

    /// The name used on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            Metric::L2 => "l2",
            Metric::InnerProduct => "ip",
            Metric::Cosine => "cosine",
        }
    }

    /// The metric of a name.
    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }

    fn code(self) -> u32 {
        match self {
            Metric::L2 => 0,
            Metric::InnerProduct => 1,
            Metric::Cosine => 2,
        }
    }

    /// Whether the search needs the codewords' squared norms.
    pub fn needs_norms(self) -> bool {
        self != Metric::InnerProduct
    }
}

/// Invocations per workgroup along the codebook in `vq_search`; each takes 4 codewords at a time.
pub const SEARCH_WX: usize = 8;
/// Invocations per workgroup along the queries in `vq_search`.
pub const SEARCH_WY: usize = 8;
/// Queries per invocation in `vq_search` (the variants' TM).
pub const SEARCH_TM: usize = 4;
/// The largest k the top-k variants hold.
pub const MAX_K: usize = 64;

/// One `vq_search` launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Search {
    /// Queries.
    pub nq: usize,
    /// Dimensions compared.
    pub d: usize,
    /// Elements from one query row to the next.
    pub x_stride: usize,
    /// Element of query 0's first compared dimension (a column, plus whole rows for a block that starts
    /// further down the tensor).
    pub x_offset: usize,
    /// Codewords in this launch's codebook tensor (\[n_codes\]\[d\], contiguous).
    pub n_codes: usize,
    /// Global index of this tensor's first codeword (reported ids add it).
    pub code_base: usize,
    /// Codewords per workgroup split.
    pub split_len: usize,
    /// Neighbours kept per query.
    pub k: usize,
    /// The comparison.
    pub metric: Metric,
    /// Lists per query in the whole scratch (every launch of one search).
    pub lists: usize,
    /// This launch's first list.
    pub list_base: usize,
    /// Element type of the codebook (f32, or f16 with `SHADER_F16`).
    pub dtype: DType,
}

/// `vq_search`'s `Params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct SearchParams {
    /// See [`Search`].
    pub nq: u32,
    pub d: u32,
    pub x_stride: u32,
    pub x_offset: u32,
    pub n_codes: u32,
    pub code_base: u32,
    pub split_len: u32,
    pub k: u32,
    pub metric: u32,
    pub lists: u32,
    pub list_base: u32,
    pub pad0: u32,
}

impl Search {
    /// Workgroup splits of the codebook.
    pub fn splits(&self) -> usize {
        self.n_codes.div_ceil(self.split_len.max(1))
    }

    /// Lists this launch writes per query.
    pub fn launch_lists(&self) -> usize {
        self.splits() * SEARCH_WX
    }

    /// How to split `n_codes` codewords so that `nq` queries give the adapter enough workgroups: a CPU
    /// adapter wants a few per core, a GPU thousands. Returns `split_len`, a multiple of the 32 codewords
    /// a workgroup takes per step.
    pub fn split_len_for(nq: usize, n_codes: usize, caps: &Caps) -> usize {
        let step = SEARCH_WX * 4;
        let query_groups = nq.div_ceil(SEARCH_WY * SEARCH_TM).max(1);
        let target: usize = if caps.software { 16 } else { 1024 };
        let splits = target
            .div_ceil(query_groups)
            .clamp(1, n_codes.div_ceil(8 * step).max(1));
        n_codes.div_ceil(splits).div_ceil(step).max(1) * step
    }
}

impl Kernel for Search {
    fn kernel(&self) -> &'static str {
        "vq_search"
    }

    fn operands(&self) -> Vec<Operand> {
        let scratch = self.nq.saturating_mul(self.lists).saturating_mul(self.k);
        vec![
            Operand::read(
                "x",
                DType::F32,
                rows_extent(self.nq, self.x_stride, self.x_offset, self.d),
            ),
            Operand::read("codes", self.dtype, self.n_codes.saturating_mul(self.d)),
            Operand::read("cnorm", DType::F32, self.n_codes),
            Operand::write("keys", DType::F32, scratch),
            Operand::write("ids", DType::U32, scratch),
        ]
    }

    /// Plans one search launch.
    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let s = self;
        plan::ensure(
            matches!(s.dtype, DType::F32 | DType::F16),
            "vq_search",
            || format!("codebooks are f32 or f16, not {}", s.dtype),
        )?;
        plan::ensure(
            s.nq > 0 && s.d > 0 && s.n_codes > 0 && s.split_len > 0,
            "vq_search",
            || "queries, dimensions and codewords must be at least 1".into(),
        )?;
        plan::ensure((1..=MAX_K).contains(&s.k), "vq_search", || {
            format!("k = {} is outside 1..={MAX_K}", s.k)
        })?;
        // x_offset is the first element of query 0 (a block of rows further down a tensor starts further in).
        plan::ensure(s.d <= s.x_stride, "vq_search", || {
            format!("{} dimensions do not fit rows of {}", s.d, s.x_stride)
        })?;
        plan::ensure(
            s.list_base + s.launch_lists() <= s.lists,
            "vq_search",
            || {
                format!(
                    "lists {}..{} exceed the scratch's {}",
                    s.list_base,
                    s.list_base + s.launch_lists(),
                    s.lists
                )
            },
        )?;
        let vec4 =
            s.d.is_multiple_of(4) && s.x_stride.is_multiple_of(4) && s.x_offset.is_multiple_of(4);
        let auto = format!(
            "{}_{}{}",
            s.dtype.name(),
            if s.k == 1 { "top1" } else { "topk" },
            if vec4 { "_vec4" } else { "" }
        );
        let v = crate::select(
            "vq_search",
            &auto,
            "it matches the codebook type, k and the row alignment",
            caps,
            choice,
        )?;
        plan::ensure(
            v.define("ELEM") == Some(s.dtype.name()),
            "vq_search",
            || {
                format!(
                    "variant {} reads another codebook type than {}",
                    v.id(),
                    s.dtype
                )
            },
        )?;
        plan::ensure(v.define_u32("KMAX") as usize >= s.k, "vq_search", || {
            format!("variant {} keeps fewer than {} neighbours", v.id(), s.k)
        })?;
        plan::ensure(v.define("VEC4").is_none() || vec4, "vq_search", || {
            format!(
                "variant {} needs d, the row stride and the offset to be multiples of 4",
                v.id()
            )
        })?;
        let u = |what: &str, n: usize| plan::index_u32("vq_search", what, n);
        let end =
            s.nq.checked_mul(s.lists)
                .and_then(|v| v.checked_mul(s.k))
                .unwrap_or(usize::MAX);
        u("scratch", end)?;
        u(
            "queries",
            s.nq.saturating_mul(s.x_stride).saturating_add(s.x_offset),
        )?;
        u("codebook", s.n_codes.saturating_mul(s.d))?;
        let params = SearchParams {
            nq: u("nq", s.nq)?,
            d: u("d", s.d)?,
            x_stride: u("x_stride", s.x_stride)?,
            x_offset: u("x_offset", s.x_offset)?,
            n_codes: u("n_codes", s.n_codes)?,
            code_base: u("code_base", s.code_base.saturating_add(s.n_codes))? - s.n_codes as u32,
            split_len: u("split_len", s.split_len)?,
            k: s.k as u32,
            metric: s.metric.code(),
            lists: u("lists", s.lists)?,
            list_base: u("list_base", s.list_base)?,
            pad0: 0,
        };
        let workgroups = [
            plan::dim("vq_search", s.splits() as u64, caps)?,
            plan::dim(
                "vq_search",
                s.nq.div_ceil(SEARCH_WY * SEARCH_TM) as u64,
                caps,
            )?,
            1,
        ];
        Ok(Plan {
            variant: v,
            params: bytemuck::bytes_of(&params).to_vec(),
            workgroups,
        })
    }
}

/// One `vq_merge` launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Merge {
    /// Queries.
    pub nq: usize,
    /// Lists per query in the scratch.
    pub lists: usize,
    /// Neighbours per query.
    pub k: usize,
    /// The comparison.
    pub metric: Metric,
    /// Query dimensions (for |x|).
    pub d: usize,
    /// Query row stride.
    pub x_stride: usize,
    /// Query column offset.
    pub x_offset: usize,
}

/// `vq_merge`'s `Params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct MergeParams {
    /// See [`Merge`].
    pub nq: u32,
    pub lists: u32,
    pub k: u32,
    pub metric: u32,
    pub d: u32,
    pub x_stride: u32,
    pub x_offset: u32,
    pub pad0: u32,
}

impl Kernel for Merge {
    fn kernel(&self) -> &'static str {
        "vq_merge"
    }

    fn operands(&self) -> Vec<Operand> {
        let scratch = self.nq.saturating_mul(self.lists).saturating_mul(self.k);
        let out = self.nq.saturating_mul(self.k);
        vec![
            Operand::read(
                "x",
                DType::F32,
                rows_extent(self.nq, self.x_stride, self.x_offset, self.d),
            ),
            Operand::read("keys", DType::F32, scratch),
            Operand::read("ids", DType::U32, scratch),
            Operand::write("dist", DType::F32, out),
            Operand::write("idx", DType::U32, out),
        ]
    }

    /// Plans the merge.
    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let m = self;
        plan::ensure(
            (1..=MAX_K).contains(&m.k) && m.nq > 0 && m.lists > 0,
            "vq_merge",
            || format!("k = {} must be in 1..={MAX_K}, with queries and lists", m.k),
        )?;
        let auto = if m.k == 1 {
            &crate::catalogue::vq_merge::TOP1
        } else {
            &crate::catalogue::vq_merge::TOPK
        };
        let v = crate::choose(auto, "it holds k neighbours", caps, choice)?;
        plan::ensure(v.define_u32("KMAX") as usize >= m.k, "vq_merge", || {
            format!("variant {} keeps fewer than {} neighbours", v.id(), m.k)
        })?;
        let u = |what: &str, n: usize| plan::index_u32("vq_merge", what, n);
        u("scratch", m.nq.saturating_mul(m.lists).saturating_mul(m.k))?;
        u(
            "queries",
            m.nq.saturating_mul(m.x_stride).saturating_add(m.x_offset),
        )?;
        let params = MergeParams {
            nq: u("nq", m.nq)?,
            lists: u("lists", m.lists)?,
            k: m.k as u32,
            metric: m.metric.code(),
            d: u("d", m.d)?,
            x_stride: u("x_stride", m.x_stride)?,
            x_offset: u("x_offset", m.x_offset)?,
            pad0: 0,
        };
        plan::per_item(
            "vq_merge",
            v,
            m.nq as u64,
            bytemuck::bytes_of(&params),
            caps,
        )
    }
}

/// One `vq_refine` launch: the L2 distances of the chosen pairs whose ids lie in one codebook tensor,
/// recomputed directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refine {
    /// Queries.
    pub nq: usize,
    /// Neighbours per query.
    pub k: usize,
    /// Dimensions.
    pub d: usize,
    /// Query row stride.
    pub x_stride: usize,
    /// Element of query 0's first dimension.
    pub x_offset: usize,
    /// First codeword's global index in this codebook tensor.
    pub code_base: usize,
    /// Codewords in this tensor.
    pub n_codes: usize,
    /// The codebook's element type.
    pub dtype: DType,
}

/// `vq_refine`'s `Params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct RefineParams {
    /// See [`Refine`].
    pub nq: u32,
    pub k: u32,
    pub d: u32,
    pub x_stride: u32,
    pub x_offset: u32,
    pub code_base: u32,
    pub n_codes: u32,
    /// Padding.
    pub pad0: u32,
}

impl Kernel for Refine {
    fn kernel(&self) -> &'static str {
        "vq_refine"
    }

    fn operands(&self) -> Vec<Operand> {
        let pairs = self.nq.saturating_mul(self.k);
        vec![
            Operand::read(
                "x",
                DType::F32,
                rows_extent(self.nq, self.x_stride, self.x_offset, self.d),
            ),
            Operand::read("codes", self.dtype, self.n_codes.saturating_mul(self.d)),
            Operand::read("idx", DType::U32, pairs),
            Operand::write("dist", DType::F32, pairs),
        ]
    }

    /// Plans the refinement of L2 distances against one codebook tensor of `dtype`.
    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let r = self;
        let dtype = r.dtype;
        let u = |what: &str, n: usize| plan::index_u32("vq_refine", what, n);
        let params = RefineParams {
            nq: u("nq", r.nq)?,
            k: u("k", r.k)?,
            d: u("d", r.d)?,
            x_stride: u("x_stride", r.x_stride)?,
            x_offset: u("x_offset", r.x_offset)?,
            code_base: u("code_base", r.code_base.saturating_add(r.n_codes))? - r.n_codes as u32,
            n_codes: u("n_codes", r.n_codes)?,
            pad0: 0,
        };
        plan::ensure(
            r.nq > 0 && r.k > 0 && r.d > 0 && r.d <= r.x_stride,
            "vq_refine",
            || "queries, k and dimensions must be at least 1, d within the row".into(),
        )?;
        let auto = if dtype == DType::F16 {
            &crate::catalogue::vq_refine::F16
        } else {
            &crate::catalogue::vq_refine::F32
        };
        let v = crate::choose(auto, "it reads the codebook's type", caps, choice)?;
        plan::ensure(v.define("ELEM") == Some(dtype.name()), "vq_refine", || {
            format!("variant {} reads another type than {dtype}", v.id())
        })?;
        let n = u64::from(params.nq) * u64::from(params.k);
        plan::index_u32("vq_refine", "pairs", n as usize)?;
        plan::per_item("vq_refine", v, n, bytemuck::bytes_of(&params), caps)
    }
}

/// The direct squared L2 distance, summed in index order in f32 (the refine kernel's arithmetic).
pub fn l2_direct(x: &[f32], c: &[f32]) -> f32 {
    x.iter()
        .zip(c)
        .fold(0.0f32, |s, (&a, &b)| s + (a - b) * (a - b))
}

/// Re-sorts each query's k neighbours by (distance, id) after refinement: the expansion ranked them, the
/// direct distances may order near-equal ones differently.
pub fn resort(k: usize, dist: &mut [f32], ids: &mut [u32]) {
    for (d, i) in dist.chunks_exact_mut(k).zip(ids.chunks_exact_mut(k)) {
        let mut pairs: Vec<(f32, u32)> = d.iter().copied().zip(i.iter().copied()).collect();
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for (j, (dv, iv)) in pairs.into_iter().enumerate() {
            d[j] = dv;
            i[j] = iv;
        }
    }
}

/// Squared norms of `rows` rows of an f32 or f16 matrix, over columns `offset..offset + d` of rows of
/// `stride` elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Norms {
    /// Rows.
    pub rows: usize,
    /// Columns summed.
    pub d: usize,
    /// Row stride.
    pub stride: usize,
    /// First column.
    pub offset: usize,
    /// The matrix's element type.
    pub dtype: DType,
}

/// `vq_norms`'s `Params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct NormsParams {
    /// See [`Norms`].
    pub rows: u32,
    pub d: u32,
    pub stride: u32,
    pub offset: u32,
}

impl Kernel for Norms {
    fn kernel(&self) -> &'static str {
        "vq_norms"
    }

    fn operands(&self) -> Vec<Operand> {
        vec![
            Operand::read(
                "x",
                self.dtype,
                rows_extent(self.rows, self.stride, self.offset, self.d),
            ),
            Operand::write("out", DType::F32, self.rows),
        ]
    }

    /// Plans squared row norms of an f32 or f16 matrix.
    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let n = self;
        let dtype = n.dtype;
        plan::ensure(n.offset + n.d <= n.stride && n.rows > 0, "vq_norms", || {
            format!(
                "columns {}..{} do not fit rows of {}",
                n.offset,
                n.offset + n.d,
                n.stride
            )
        })?;
        let auto = if dtype == DType::F16 {
            &crate::catalogue::vq_norms::F16
        } else {
            &crate::catalogue::vq_norms::F32
        };
        let v = crate::choose(auto, "it reads the matrix's type", caps, choice)?;
        plan::ensure(v.define("ELEM") == Some(dtype.name()), "vq_norms", || {
            format!("variant {} reads another type than {dtype}", v.id())
        })?;
        plan::index_u32("vq_norms", "matrix", n.rows.saturating_mul(n.stride))?;
        let u = |what: &str, v: usize| plan::index_u32("vq_norms", what, v);
        let params = NormsParams {
            rows: u("rows", n.rows)?,
            d: u("d", n.d)?,
            stride: u("stride", n.stride)?,
            offset: u("offset", n.offset)?,
        };
        plan::per_item(
            "vq_norms",
            v,
            u64::from(params.rows),
            bytemuck::bytes_of(&params),
            caps,
        )
    }
}

/// What a lookup does with each codeword.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupOp {
    /// `out = c` (decode).
    Set,
    /// `out += c` (decode the next stage of a residual quantizer).
    Add,
    /// `out -= c` (the residual that the next stage encodes).
    Sub,
}

/// `vq_lookup`'s `Params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct LookupParams {
    /// Rows (ids).
    pub n: u32,
    /// Codeword length.
    pub d: u32,
    /// Output row stride.
    pub out_stride: u32,
    /// Output column offset.
    pub out_offset: u32,
    /// Global index of this codebook tensor's first codeword.
    pub code_base: u32,
    /// Codewords in this tensor.
    pub n_codes: u32,
    /// 0 set, 1 add, 2 subtract.
    pub op: u32,
    /// Padding.
    pub pad0: u32,
}

/// One lookup launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lookup {
    /// Rows.
    pub n: usize,
    /// Codeword length.
    pub d: usize,
    /// Output row stride.
    pub out_stride: usize,
    /// Output column offset.
    pub out_offset: usize,
    /// First codeword's global index.
    pub code_base: usize,
    /// Codewords in this tensor.
    pub n_codes: usize,
    /// The operation.
    pub op: LookupOp,
    /// Codebook element type.
    pub dtype: DType,
}

impl Kernel for Lookup {
    fn kernel(&self) -> &'static str {
        "vq_lookup"
    }

    fn operands(&self) -> Vec<Operand> {
        vec![
            Operand::read("ids", DType::U32, self.n),
            Operand::read("codes", self.dtype, self.n_codes.saturating_mul(self.d)),
            Operand::write(
                "out",
                DType::F32,
                rows_extent(self.n, self.out_stride, self.out_offset, self.d),
            ),
        ]
    }

    /// Plans a lookup.
    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let l = self;
        plan::ensure(
            l.out_offset + l.d <= l.out_stride && l.n > 0 && l.d > 0,
            "vq_lookup",
            || {
                format!(
                    "columns {}..{} do not fit rows of {}",
                    l.out_offset,
                    l.out_offset + l.d,
                    l.out_stride
                )
            },
        )?;
        let v = {
            let auto = if l.dtype == DType::F16 {
                &crate::catalogue::vq_lookup::F16
            } else {
                &crate::catalogue::vq_lookup::F32
            };
            crate::choose(auto, "it reads the codebook's type", caps, choice)?
        };
        plan::ensure(
            v.define("ELEM") == Some(l.dtype.name()),
            "vq_lookup",
            || format!("variant {} reads another type than {}", v.id(), l.dtype),
        )?;
        let u = |what: &str, n: usize| plan::index_u32("vq_lookup", what, n);
        u("output", l.n.saturating_mul(l.out_stride))?;
        u("codebook", l.n_codes.saturating_mul(l.d))?;
        let params = LookupParams {
            n: u("n", l.n)?,
            d: u("d", l.d)?,
            out_stride: u("out_stride", l.out_stride)?,
            out_offset: u("out_offset", l.out_offset)?,
            code_base: u("code_base", l.code_base.saturating_add(l.n_codes))? - l.n_codes as u32,
            n_codes: u("n_codes", l.n_codes)?,
            op: match l.op {
                LookupOp::Set => 0,
                LookupOp::Add => 1,
                LookupOp::Sub => 2,
            },
            pad0: 0,
        };
        plan::per_item(
            "vq_lookup",
            v,
            (l.n * l.d) as u64,
            bytemuck::bytes_of(&params),
            caps,
        )
    }
}

/// The k-means centroid update: `k` centroids of `d` dimensions become the means of their `points`
/// points (read at columns `x_offset..` of rows of `x_stride`), grouped by a host counting sort
/// ([`group_by_cluster`]); empty clusters are left unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Update {
    /// Centroids.
    pub k: usize,
    /// Dimensions.
    pub d: usize,
    /// Data row stride.
    pub x_stride: usize,
    /// Data column offset.
    pub x_offset: usize,
    /// Points assigned (the length of the order).
    pub points: usize,
}

/// `vq_update`'s `Params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct UpdateParams {
    /// See [`Update`].
    pub k: u32,
    pub d: u32,
    pub x_stride: u32,
    pub x_offset: u32,
}

impl Kernel for Update {
    fn kernel(&self) -> &'static str {
        "vq_update"
    }

    fn operands(&self) -> Vec<Operand> {
        vec![
            Operand::read(
                "x",
                DType::F32,
                rows_extent(self.points, self.x_stride, self.x_offset, self.d),
            ),
            Operand::read("order", DType::U32, self.points.max(1)),
            Operand::read("offsets", DType::U32, self.k + 1),
            Operand::write("centroids", DType::F32, self.k.saturating_mul(self.d)),
        ]
    }

    /// Plans a centroid update.
    fn plan(&self, caps: &Caps, choice: Choice<'_>) -> Result<Plan, KernelError> {
        let up = self;
        let n_points = up.points;
        plan::ensure(
            up.x_offset + up.d <= up.x_stride && up.k > 0 && up.d > 0,
            "vq_update",
            || {
                format!(
                    "columns {}..{} do not fit rows of {}",
                    up.x_offset,
                    up.x_offset + up.d,
                    up.x_stride
                )
            },
        )?;
        let v = crate::choose(
            &crate::catalogue::vq_update::F32,
            "it is the only one",
            caps,
            choice,
        )?;
        plan::index_u32("vq_update", "data", n_points.saturating_mul(up.x_stride))?;
        let u = |what: &str, v: usize| plan::index_u32("vq_update", what, v);
        let params = UpdateParams {
            k: u("k", up.k)?,
            d: u("d", up.d)?,
            x_stride: u("x_stride", up.x_stride)?,
            x_offset: u("x_offset", up.x_offset)?,
        };
        let n = u64::from(params.k) * u64::from(params.d);
        plan::per_item("vq_update", v, n, bytemuck::bytes_of(&params), caps)
    }
}

/// The rank key of a (query, codeword) pair as the search kernel computes it from the dot product and the
/// codeword's squared norm.
fn key(metric: Metric, dot: f32, cnorm: f32) -> f32 {
    match metric {
        Metric::L2 => cnorm - 2.0 * dot,
        Metric::InnerProduct => -dot,
        Metric::Cosine => -dot / cnorm.sqrt().max(1e-30),
    }
}

/// The reported distance from a key and the query's squared norm (the merge kernel's last step).
fn distance(metric: Metric, key: f32, xnorm: f32) -> f32 {
    match metric {
        Metric::L2 => (key + xnorm).max(0.0),
        Metric::InnerProduct => -key,
        Metric::Cosine => -key / xnorm.sqrt().max(1e-30),
    }
}

/// Squared norm of `v`, summed in order in f32 (the norms kernel's and the merge kernel's arithmetic).
pub fn norm2(v: &[f32]) -> f32 {
    v.iter().fold(0.0f32, |s, &x| s + x * x)
}

/// CPU twin of a whole search (every `vq_search` launch, the merge, and for L2 the refinement and
/// re-sort): for each query row of `x` (read with `stride` and `offset`), the `k` best codewords of
/// `codes` (\[n\]\[d\]) as (distances, ids), ties going to the lower id. Sums run in index order in f32.
#[allow(
    clippy::too_many_arguments,
    reason = "the query layout, the codebook, k and the metric"
)]
pub fn cpu_search(
    x: &[f32],
    nq: usize,
    d: usize,
    stride: usize,
    offset: usize,
    codes: &[f32],
    k: usize,
    metric: Metric,
) -> (Vec<f32>, Vec<u32>) {
    let n = codes.len() / d.max(1);
    let norms: Vec<f32> = codes.chunks_exact(d).map(norm2).collect();
    let mut dist = Vec::with_capacity(nq * k);
    let mut ids = Vec::with_capacity(nq * k);
    for q in 0..nq {
        let row = &x[q * stride + offset..q * stride + offset + d];
        let mut cand: Vec<(f32, u32)> = (0..n)
            .map(|c| {
                let dot = row
                    .iter()
                    .zip(&codes[c * d..(c + 1) * d])
                    .fold(0.0f32, |s, (&a, &b)| s + a * b);
                (key(metric, dot, norms[c]), c as u32)
            })
            .filter(|(kv, _)| !kv.is_nan())
            .collect();
        cand.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let xn = norm2(row);
        for j in 0..k {
            let (kv, id) = cand.get(j).copied().unwrap_or((f32::INFINITY, u32::MAX));
            // L2 distances are refined to the direct sum, as `vq_refine` does.
            let c = id as usize;
            dist.push(if metric == Metric::L2 && c < n {
                l2_direct(row, &codes[c * d..(c + 1) * d])
            } else {
                distance(metric, kv, xn)
            });
            ids.push(id);
        }
    }
    if metric == Metric::L2 {
        resort(k, &mut dist, &mut ids);
    }
    (dist, ids)
}

/// CPU twin of `vq_lookup`.
pub fn cpu_lookup(l: &Lookup, ids: &[u32], codes: &[f32], out: &mut [f32]) {
    for (r, &id) in ids.iter().enumerate().take(l.n) {
        let Some(c) = (id as usize)
            .checked_sub(l.code_base)
            .filter(|&c| c < l.n_codes)
        else {
            continue;
        };
        for i in 0..l.d {
            let v = codes[c * l.d + i];
            let o = &mut out[r * l.out_stride + l.out_offset + i];
            *o = match l.op {
                LookupOp::Set => v,
                LookupOp::Add => *o + v,
                LookupOp::Sub => *o - v,
            };
        }
    }
}

/// Groups points by cluster, in increasing point order within each (a counting sort): returns `order` and
/// `offsets` (k + 1 entries) as `vq_update` reads them. Assignments at or above k are ignored.
pub fn group_by_cluster(assign: &[u32], k: usize) -> (Vec<u32>, Vec<u32>) {
    let mut offsets = vec![0u32; k + 1];
    for &a in assign {
        if (a as usize) < k {
            offsets[a as usize + 1] += 1;
        }
    }
    for c in 0..k {
        offsets[c + 1] += offsets[c];
    }
    let mut next = offsets.clone();
    let mut order = vec![0u32; offsets[k] as usize];
    for (p, &a) in assign.iter().enumerate() {
        if (a as usize) < k {
            order[next[a as usize] as usize] = p as u32;
            next[a as usize] += 1;
        }
    }
    (order, offsets)
}

/// CPU twin of `vq_update`: each centroid with points becomes their mean, summed in `order`.
pub fn cpu_update(up: &Update, x: &[f32], order: &[u32], offsets: &[u32], centroids: &mut [f32]) {
    let (d, stride, offset) = (up.d, up.x_stride, up.x_offset);
    for c in 0..up.k {
        let (first, end) = (offsets[c] as usize, offsets[c + 1] as usize);
        if end <= first {
            continue;
        }
        for i in 0..d {
            let s = order[first..end]
                .iter()
                .fold(0.0f32, |s, &p| s + x[p as usize * stride + offset + i]);
            centroids[c * d + i] = s / (end - first) as f32;
        }
    }
}

/// Elements a tensor needs to hold `rows` rows of `d` values read at `row * stride + offset`.
pub fn rows_extent(rows: usize, stride: usize, offset: usize, d: usize) -> usize {
    rows.saturating_sub(1)
        .saturating_mul(stride)
        .saturating_add(offset)
        .saturating_add(d)
}

//! Every kernel unit against its CPU twin, from one catalogue of case generators, as ggml's
//! test-backend-ops does: one file per kernel under `<family>/<kernel>.rs` whose `cases()` lists the cases
//! that force each of its variants across the shapes where variants and code paths switch, the
//! [`CATALOGUE`] table listing those generators, one test per kernel running its cases on every adapter
//! through the harness, and a coverage test that fails when any variant the build produced
//! (`wring::kernels::all()`) has no case forcing it.
//!
//! A case prints every parameter in its name; `WRING_CASE=<part of a name>` runs only the matching cases
//! of a kernel's test. Error budgets are documented in each kernel's file.

use std::collections::BTreeSet;

use proptest::test_runner::{Config, RngSeed};
use wring::kernels::{self, Variant};
use wring::quant::BlockFormat;

use crate::harness::Case;

mod kv;
mod quant;
mod sparse;
mod tensor;
pub mod vq;
mod wavelet;

/// A case not yet built: the variant it forces, and how to build it (the twin runs only then, so listing
/// the catalogue is cheap).
pub struct Planned {
    pub variant: &'static Variant,
    pub make: Box<dyn Fn() -> Case<'static>>,
}

/// A case of `v` built by `make`.
pub fn planned(v: &'static Variant, make: impl Fn() -> Case<'static> + 'static) -> Planned {
    Planned {
        variant: v,
        make: Box::new(make),
    }
}

/// One kernel's case generator.
pub struct Entry {
    pub family: &'static str,
    pub kernel: &'static str,
    pub cases: fn() -> Vec<Planned>,
}

macro_rules! catalogue {
    ($($family:ident :: $kernel:ident),* $(,)?) => {
        /// Every kernel's case generator, by family.
        pub static CATALOGUE: &[Entry] = &[
            $(Entry { family: stringify!($family), kernel: stringify!($kernel), cases: $family::$kernel::cases },)*
        ];

        /// One test per kernel: all of its cases on every adapter.
        mod every_case {
            $(#[test] fn $kernel() { super::run(stringify!($kernel)) })*
        }
    };
}

catalogue! {
    tensor::attn_fused,
    tensor::attn_pv,
    tensor::attn_scores,
    tensor::binary,
    tensor::copy,
    tensor::fill,
    tensor::get_rows,
    tensor::matmul,
    tensor::matvec,
    tensor::rmsnorm,
    tensor::rope,
    tensor::rope_qkv,
    tensor::silu_mul,
    tensor::softmax,
    quant::qmatmul,
    quant::qmatvec,
    quant::qmatvec_q8,
    quant::quantize_q8,
    sparse::gmatmul,
    sparse::gmatvec,
    sparse::rht,
    sparse::tmatmul,
    sparse::tmatvec,
    sparse::tviterbi,
    kv::attn_paged,
    kv::kv_ems_compact,
    kv::kv_ems_score,
    kv::kv_gear,
    kv::kv_gear_load,
    kv::kv_load,
    kv::kv_paged_seal,
    kv::kv_paged_store,
    kv::kv_rotate,
    kv::kv_store,
    wavelet::dwt,
    vq::vq_lookup,
    vq::vq_merge,
    vq::vq_norms,
    vq::vq_refine,
    vq::vq_search,
    vq::vq_update,
}

/// Runs every case of one kernel (those whose name contains `WRING_CASE`, when it is set).
fn run(kernel: &str) {
    let entry = CATALOGUE
        .iter()
        .find(|e| e.kernel == kernel)
        .expect("the catalogue lists the kernel");
    let filter = std::env::var("WRING_CASE").ok();
    let mut ran = 0;
    for p in (entry.cases)() {
        let case = (p.make)();
        if filter
            .as_ref()
            .is_some_and(|f| !case.name.contains(f.as_str()))
        {
            continue;
        }
        case.assert();
        ran += 1;
    }
    assert!(ran > 0 || filter.is_some(), "{kernel} has no case");
}

/// The coverage test: every variant of every family has a case that forces it, every catalogue entry is a
/// kernel of its family, and every case forces a variant of its own kernel.
#[test]
fn every_variant_has_a_case() {
    let mut forced = BTreeSet::new();
    for e in CATALOGUE {
        let family = kernels::families()
            .iter()
            .find(|(f, _)| *f == e.family)
            .unwrap_or_else(|| panic!("no family {}", e.family));
        assert!(
            family.1.iter().any(|v| v.kernel == e.kernel),
            "{} is not a kernel of the {} family",
            e.kernel,
            e.family
        );
        for p in (e.cases)() {
            assert_eq!(
                p.variant.kernel,
                e.kernel,
                "a case of {} forces {}",
                e.kernel,
                p.variant.id()
            );
            forced.insert(p.variant.id());
        }
    }
    let missing: Vec<String> = kernels::all()
        .map(|v| v.id())
        .filter(|id| !forced.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "variants with no case in the catalogue: {missing:?}"
    );
    eprintln!("{} variants, every one forced by a case", forced.len());
}

/// The variants of one kernel.
/// What a `_q8` variant's case expects: the twin's floats quantized to 8-bit units, as f32 bits (compared
/// with `Tolerance::Q8Units`).
pub fn expected_units(values: &[f32]) -> Vec<f32> {
    let mut q = vec![0u32; kernels::q8::words(values.len())];
    kernels::q8::quantize(values, &mut q);
    q.into_iter().map(f32::from_bits).collect()
}

/// Adapter traits for planner tests: lavapipe (a CPU adapter with 8-lane subgroups) and a GPU with
/// subgroups of at least 32.
pub fn planner_caps() -> (kernels::Caps, kernels::Caps) {
    let lavapipe = kernels::Caps {
        software: true,
        subgroup: true,
        subgroup_min_size: 8,
        ..kernels::Caps::BASELINE
    };
    let gpu = kernels::Caps {
        subgroup: true,
        subgroup_min_size: 32,
        ..kernels::Caps::BASELINE
    };
    (lavapipe, gpu)
}

pub fn variants(kernel: &str) -> Vec<&'static Variant> {
    let v: Vec<_> = kernels::of_kernel(kernel).collect();
    assert!(!v.is_empty(), "kernel {kernel} has no variants");
    v
}

/// One variant by kernel and name.
pub fn variant(kernel: &str, name: &str) -> &'static Variant {
    kernels::find(kernel, name).unwrap_or_else(|| panic!("no variant {kernel}/{name}"))
}

/// The invocations a matrix-vector variant's twin splits a row between: 1 for the `lanes` variants (one
/// lane walks a whole row), the workgroup size for those that share a row.
pub fn twin_lanes(v: &Variant) -> usize {
    if v.define("ROW_PER_LANE").is_some() {
        1
    } else {
        v.define_u32("WG") as usize
    }
}

/// The block format a quantized variant reads, from its FMT_* define.
pub fn variant_format(v: &Variant) -> BlockFormat {
    BlockFormat::ALL
        .into_iter()
        .find(|f| v.define(&format!("FMT_{}", f.name())).is_some())
        .expect("quantized variants name a format")
}

/// Variant `i` of a list, wrapping: how proptests pick a variant.
pub fn pick<'a>(vs: &[&'a Variant], i: usize) -> &'a Variant {
    vs[i % vs.len()]
}

/// The proptest configuration of every kernel proptest: a fixed seed, so a run's shapes are the same on
/// every machine and a failure reproduces from the test name alone.
pub fn proptest_config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x5752_494e_4721),
        ..Config::default()
    }
}

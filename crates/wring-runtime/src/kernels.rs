//! Every kernel family, re-exported for the crates above the runtime, and the catalogue across them.
//!
//! What the families share (`Kernel`, `Caps`, `Choice`, `DType`, `Tolerance`, ...) is re-exported from
//! `wring-kernels-core` at this level; each family is a module (`tensor`, `quant`, `sparse`, `kv`, `wavelet`, `vq`).

pub use wring_kernels_core::*;
pub use wring_kernels_kv as kv;
pub use wring_kernels_quant as quant;
pub use wring_kernels_sparse as sparse;
pub use wring_kernels_tensor as tensor;
pub use wring_kernels_vq as vq;
pub use wring_kernels_wavelet as wavelet;

/// The family tables, in the order the catalogue lists them.
const FAMILIES: [(&str, &[&Variant]); 6] = [
    ("tensor", tensor::catalogue::ALL),
    ("quant", quant::catalogue::ALL),
    ("sparse", sparse::catalogue::ALL),
    ("kv", kv::catalogue::ALL),
    ("wavelet", wavelet::catalogue::ALL),
    ("vq", vq::catalogue::ALL),
];

/// Every built-in variant of every family, each family sorted by kernel then variant name.
pub fn all() -> impl Iterator<Item = &'static Variant> {
    FAMILIES.iter().flat_map(|(_, t)| t.iter().copied())
}

/// The family names with their variant tables.
pub fn families() -> &'static [(&'static str, &'static [&'static Variant])] {
    &FAMILIES
}

/// The built-in variants of one kernel.
pub fn of_kernel(kernel: &str) -> impl Iterator<Item = &'static Variant> + '_ {
    all().filter(move |v| v.kernel == kernel)
}

/// One built-in variant by kernel and variant name.
pub fn find(kernel: &str, name: &str) -> Option<&'static Variant> {
    all().find(|v| v.kernel == kernel && v.name == name)
}

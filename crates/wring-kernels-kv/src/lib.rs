//! wring's KV-cache family: the kernels behind a compressed KV cache. `kv_store` writes a step's keys and
//! values into a layer's cache (KIVI-style codes at 8, 4 or 2 bits for the complete groups of tokens older
//! than a recent window, that window in f16; or every position in f16), `kv_load` materializes the cache
//! as f32 for the attention kernels before a step, and `kv_rotate` applies the orthonormal Hadamard
//! rotation to queries and keys (which leaves attention unchanged and makes keys easier to quantize);
//! `kv_gear` and `kv_gear_load` add GEAR's outliers and low-rank error correction to the codes;
//! `kv_ems_score` and `kv_ems_compact` keep an f32 cache within a per-head budget (EMS evict-then-merge);
//! `kv_paged_store`, `kv_paged_seal` and `attn_paged` serve the paged cache of continuous batching (block
//! tables).
//! The cache's layout is [`cache::KvLayout`]; each kernel's CPU twin is beside its descriptor.

#![warn(missing_docs)]

pub mod cache;
pub mod ems;
pub mod gear;
pub mod paged;
pub mod rotate;

pub use cache::{KvLayout, KvLoad, KvStore};
pub use ems::{EmsLayout, KvEmsCompact, KvEmsScore};
pub use gear::{KvGear, KvGearLoad};
pub use paged::{AttnPaged, KvPagedSeal, KvPagedStore, Pool};
pub use rotate::KvRotate;

wring_kernels_core::family!();

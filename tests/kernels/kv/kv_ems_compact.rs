//! `kv_ems_compact`: its cases live beside `kv_ems_score`'s, which they share helpers with (`kv_ems.rs`).

use crate::kernels::Planned;

pub fn cases() -> Vec<Planned> {
    super::kv_ems::compact_cases()
}

//! `kv_gear_load`: its cases live beside `kv_gear`'s, which they share helpers with (`kv_gear.rs`).

use crate::kernels::Planned;

pub fn cases() -> Vec<Planned> {
    super::kv_gear::load_cases()
}

//! `kv_ems_score`: its cases live in `kv_ems.rs`, beside `kv_ems_compact`'s.

use crate::kernels::Planned;

pub fn cases() -> Vec<Planned> {
    super::kv_ems::cases()
}

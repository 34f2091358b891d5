//! `vq_refine`: each variant forced on L2 searches of f32 or f16 codebooks, whose type it reads. Pipeline
//! and budget: `mod.rs`.

use wring::kernels::vq::Metric;

use super::{Forced, SHAPES, search_case};
use crate::kernels::{Planned, planned, variants};

pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    let mut seed = 2000;
    for v in variants("vq_refine") {
        let f16 = v.define("ELEM") == Some("f16");
        for (nq, d, n) in SHAPES {
            for k in [1usize, 5] {
                if k > n {
                    continue;
                }
                seed += 1;
                let name: &'static str = &v.name;
                out.push(planned(v, move || {
                    search_case(Forced::Refine(name), nq, d, n, k, Metric::L2, f16, seed)
                }));
            }
        }
    }
    out
}

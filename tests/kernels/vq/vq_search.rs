//! `vq_search`: every variant forced, over every metric and k the variant holds (see `mod.rs` for the
//! pipeline and the budget).

use wring::kernels::vq::Metric;

use super::{Forced, SHAPES, search_case};
use crate::kernels::{Planned, planned, variants};

pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    let mut seed = 0;
    for v in variants("vq_search") {
        let f16 = v.define("ELEM") == Some("f16");
        let vec4 = v.define("VEC4").is_some();
        let kmax = v.define_u32("KMAX") as usize;
        for (nq, d, n) in SHAPES {
            if vec4 && !d.is_multiple_of(4) {
                continue;
            }
            for metric in Metric::ALL {
                for k in [1usize, 5, 64] {
                    if k > kmax || k > n || (kmax > 1 && k == 1) {
                        continue;
                    }
                    seed += 1;
                    let name: &'static str = &v.name;
                    out.push(planned(v, move || {
                        search_case(Forced::Search(name), nq, d, n, k, metric, f16, seed)
                    }));
                }
            }
        }
    }
    out
}

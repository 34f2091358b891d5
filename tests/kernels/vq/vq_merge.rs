//! `vq_merge`: each variant forced on the lists of a search over every metric (the top-1 variant for k = 1,
//! the top-k variant for k = 1, 5 and 64). Pipeline and budget: `mod.rs`.

use wring::kernels::vq::Metric;

use super::{Forced, SHAPES, search_case};
use crate::kernels::{Planned, planned, variants};

pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    let mut seed = 1000;
    for v in variants("vq_merge") {
        let kmax = v.define_u32("KMAX") as usize;
        for (nq, d, n) in SHAPES {
            for metric in Metric::ALL {
                for k in [1usize, 5, 64] {
                    if k > kmax || k > n {
                        continue;
                    }
                    seed += 1;
                    let name: &'static str = &v.name;
                    out.push(planned(v, move || {
                        search_case(Forced::Merge(name), nq, d, n, k, metric, false, seed)
                    }));
                }
            }
        }
    }
    out
}

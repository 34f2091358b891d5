//! `tmatmul`: the prefill product with trellis-coded weights on GPUs. Budget: NMSE 1e-9 (the twin adds in
//! the shader's order; only the driver's contraction of multiply-adds differs). Random matrices as for
//! tmatvec (`super::tmatvec::random_matrix`); batches of one, a ragged tile (70: one full tile of 64 and
//! 6 rows), exactly one tile, and SmolLM2's 576 and 1536 columns with 12- and 16-bit states.

use wring::quant::group::{Layout, Stats};

use super::tmatvec::product_case;
use crate::kernels::{Planned, planned, variants};

pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    for v in variants("tmatmul") {
        let bits = v.define_u32("BITS");
        for (i, &(rows, cols, state, batch)) in [
            (16, 64, 12, 1),
            (48, 576, 16, 70),
            (32, 1536, 12, 64),
            (16, 96, 8, 5),
        ]
        .iter()
        .enumerate()
        {
            let layout = Layout {
                rows,
                cols,
                bits,
                group: 16,
                stats: Stats::Trellis { state },
            };
            let seed = 300 + i as u64 + u64::from(bits) * 10;
            out.push(planned(v, move || {
                product_case(v, layout, batch, seed, true)
            }));
        }
    }
    out
}

//! `gmatmul`: the tiled prefill product `c = a Wᵀ` with W group-quantized (affine, SpQR bilevel, or with
//! pruned groups). Budget: NMSE 1e-9 (the twin decodes with `GroupMatrix::decode` and accumulates over the
//! stored columns in the shader's order; only the driver's contraction of multiply-adds differs). The same
//! random matrices as gmatvec's cases (every field over its range, permuted columns, 0 to 4 outliers per
//! row, mixed row widths), with activation rows and output rows that end inside a 64 x 64 tile, exactly
//! one tile, and several, and inner sizes that are not a multiple of the 16-deep tile (48 = 3 tiles, 40).

use crate::kernels::sparse::gmatvec::{case_layout, product_case};
use crate::kernels::{Planned, planned, variants};

pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    for v in variants("gmatmul") {
        let bilevel = v.define("BILEVEL").is_some();
        // (rows, cols, bits, group, m).
        let shapes: &[(usize, usize, u32, usize, usize)] = if bilevel {
            &[
                (20, 48, 3, 16, 5),
                (64, 576, 3, 16, 64),
                (80, 64, 2, 16, 70),
            ]
        } else {
            &[
                (67, 48, 3, 16, 5),
                (64, 576, 4, 32, 64),
                (130, 40, 8, 8, 70),
                (12, 1088, 4, 16, 3),
            ]
        };
        for (i, &(rows, cols, bits, group, m)) in shapes.iter().enumerate() {
            let layout = case_layout(bilevel, rows, cols, bits, group);
            for mixed in [false, true].into_iter().take(if i == 0 { 2 } else { 1 }) {
                out.push(planned(v, move || {
                    product_case(v, layout, m, (i * 100 + m) as u64, mixed, true)
                }));
            }
        }
    }
    out
}

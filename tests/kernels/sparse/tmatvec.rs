//! `tmatvec`: `y[b] = W x[b]` with W trellis-coded (`wring_quant::trellis`). Budget: NMSE 1e-9 (the twin
//! decodes with the reference `trellis::code` and adds in the shader's order; only the subgroup
//! variants' reduction order and the driver's contraction of multiply-adds differ). Streams are random
//! words (every bit pattern is a valid tail-biting stream), so every state and every wrap-around of the
//! window past a tile's last word is reached; scales random over two decades; 0 to 4 f16 outliers per
//! row. Shapes: one row tile, 16 rows (fewer than a lanes workgroup covers), SmolLM2's 576 and 1536
//! columns, 3-bit rows whose tile rows start mid-word, states of 8, 12 and 16 bits; batches of 1, exactly
//! one tile of 8, and ragged tiles.

use half::f16;
use wring::kernels::check::Tolerance;
use wring::kernels::sparse::{Tmatmul, Tmatvec, tmatmul, tmatvec};
use wring::kernels::{Choice, DType};
use wring::quant::group::{GroupMatrix, Layout, Stats};

use crate::harness::{Case, Rng};
use crate::kernels::{Planned, planned, twin_lanes, variants};

/// A random trellis matrix: random stream words, scales and outliers.
pub fn random_matrix(layout: Layout, seed: u64) -> GroupMatrix {
    let mut rng = Rng::new(seed);
    let words = layout.rows * layout.code_words();
    let codes: Vec<u32> = (0..words)
        .map(|_| {
            let v = rng.vec(2, 0.0, 65535.99);
            (v[0] as u32) | (v[1] as u32) << 16
        })
        .collect();
    let stats: Vec<u32> = rng
        .vec(layout.rows, -1.0, 1.0)
        .into_iter()
        .map(|v| (0.01 * 10f32.powf(v.abs()) * v.signum()).to_bits())
        .collect();
    let mut offsets = vec![0u32; layout.rows + 1];
    let mut entries = Vec::new();
    offsets[0] = (layout.rows + 1) as u32;
    for r in 0..layout.rows {
        let n = rng.vec(1, 0.0, 4.99)[0] as usize;
        for _ in 0..n {
            let v = rng.vec(2, 0.0, 1.0);
            let col = (v[0] * (layout.cols as f32 - 0.01)) as u32;
            entries.push(col | u32::from(f16::from_f32(v[1] - 0.5).to_bits()) << 16);
        }
        offsets[r + 1] = offsets[0] + entries.len() as u32;
    }
    offsets.extend(entries);
    let m = GroupMatrix {
        layout,
        codes,
        stats,
        second: Vec::new(),
        perm: (0..layout.cols as u32).collect(),
        outliers: offsets,
        row_bits: Vec::new(),
        mask: Vec::new(),
        signs: Vec::new(),
    };
    m.check().expect("a valid random trellis matrix");
    m
}

/// A case of tmatvec (`tiled` false: x and y, the lane-ordered twin) or tmatmul (`tiled`: a and c) on a
/// random matrix of `layout` with `batch` activation rows.
pub fn product_case(
    v: &'static wring::kernels::Variant,
    layout: Layout,
    batch: usize,
    seed: u64,
    tiled: bool,
) -> Case<'static> {
    let m = random_matrix(layout, seed);
    let mut rng = Rng::new(seed ^ 0x5151);
    let x = rng.vec(batch * layout.cols, -1.0, 1.0);
    let mut y = vec![0f32; batch * layout.rows];
    let (kernel, input, output) = if tiled {
        tmatmul::cpu(&m, &x, &mut y, batch);
        ("tmatmul", "a", "c")
    } else {
        tmatvec::cpu(&m, &x, &mut y, batch, twin_lanes(v));
        ("tmatvec", "x", "y")
    };
    Case {
        name: format!(
            "{kernel} variant={} rows={} cols={} bits={} stats={:?} batch={batch} seed={seed}",
            v.name, layout.rows, layout.cols, layout.bits, layout.stats
        ),
        tol: Tolerance::Nmse(1e-9),
        out_dtype: DType::F32,
        out_shape: vec![batch, layout.rows],
        expected: y,
        record: Box::new(move |ctx, step, out| {
            let tc = ctx.upload(&[m.codes.len()], &m.codes)?;
            let ts = ctx.upload(&[m.stats.len()], &m.stats)?;
            let to = ctx.upload(&[m.outliers.len()], &m.outliers)?;
            let tx = ctx.upload(&[batch, layout.cols], &x)?;
            let ops = [
                ("codes", &tc),
                ("stats", &ts),
                ("outliers", &to),
                (input, &tx),
                (output, out),
            ];
            let unit = Tmatvec { layout, batch };
            if tiled {
                step.run_with(&Tmatmul(unit), Choice::Force(&v.name), &ops)
            } else {
                step.run_with(&unit, Choice::Force(&v.name), &ops)
            }
        }),
        needs_f16: false,
        needs_subgroup: v.define("SUBGROUP").is_some(),
    }
}

pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    for v in variants("tmatvec") {
        let bits = v.define_u32("BITS");
        let batched = v.define_u32("BATCH") > 1;
        let shapes: &[(usize, usize, u32, usize)] = if batched {
            &[(16, 64, 12, 8), (64, 576, 16, 3), (48, 96, 8, 11)]
        } else {
            &[
                (16, 64, 12, 1),
                (64, 576, 16, 1),
                (1536, 576, 12, 1),
                (32, 1536, 8, 1),
            ]
        };
        for (i, &(rows, cols, state, batch)) in shapes.iter().enumerate() {
            let layout = Layout {
                rows,
                cols,
                bits,
                group: 16,
                stats: Stats::Trellis { state },
            };
            let seed = 100 + i as u64 + u64::from(bits) * 10;
            out.push(planned(v, move || {
                product_case(v, layout, batch, seed, false)
            }));
        }
    }
    out
}

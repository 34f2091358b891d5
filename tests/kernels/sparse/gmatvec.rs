//! `gmatvec`: `y[b] = W x[b]` with W group-quantized below 4 bits (affine or SpQR bilevel statistics,
//! permuted columns, per-row f16 outliers). Budget: NMSE 1e-9 (the twin decodes with the reference
//! `GroupMatrix::decode` and adds in the shader's order; only the subgroup variants' reduction order and
//! the driver's contraction of multiply-adds differ). Matrices are random in every field (codes over their
//! whole range, statistics, permutation, 0 to 4 outliers per row), at 2, 3, 4 and 8 bits, groups of 16 and
//! 32, rows that end inside a workgroup of the lanes variants, codes that straddle words (48 columns of 3
//! bits), SmolLM2's 576 columns, rows of mixed widths (MixLLM: every row its own 2 to 8 bits, so row starts
//! fall anywhere in the code words), pruned groups (GQSA: each group kept with probability one half, with a
//! row that keeps none and one that keeps all, masks of one to three words per row), and batches within one
//! tile, exactly one, and ragged tiles. The lanes variants with a constant width (`_w2` to `_w4`) take
//! the first three shapes at their width.

use half::f16;
use wring::kernels::check::Tolerance;
use wring::kernels::sparse::{Gmatmul, Gmatvec, gmatmul, gmatvec};
use wring::kernels::{Choice, DType, Variant};
use wring::quant::group::{Builder, GroupMatrix, Layout, Stats};

use crate::harness::{Case, Rng};
use crate::kernels::{Planned, planned, twin_lanes, variants};

/// A random matrix of this layout: every field drawn over its range; with `mixed`, every row its own
/// width from 2 to 8 bits; with `masked`, about half of the groups pruned (row 0 keeps none, row 1 all).
pub fn random_matrix(layout: Layout, seed: u64, mixed: bool, masked: bool) -> GroupMatrix {
    let mut rng = Rng::new(seed);
    let Layout {
        rows, cols, bits, ..
    } = layout;
    let groups = layout.groups();
    let row_bits: Vec<u8> = if mixed {
        rng.vec(rows, 2.0, 8.99)
            .into_iter()
            .map(|v| v as u8)
            .collect()
    } else {
        Vec::new()
    };
    let codes: Vec<u8> = (0..rows)
        .flat_map(|r| {
            let maxq = (1u32 << row_bits.get(r).map_or(bits, |&b| u32::from(b))) as f32;
            rng.vec(cols, 0.0, maxq - 0.01)
                .into_iter()
                .map(|v| v as u8)
                .collect::<Vec<_>>()
        })
        .collect();
    let affine: Vec<(f16, f16)> = (0..rows * groups)
        .map(|_| {
            let v = rng.vec(2, 0.0, 1.0);
            (
                f16::from_f32(0.002 + 0.02 * v[0]),
                f16::from_f32(-0.1 * v[1]),
            )
        })
        .collect();
    let (quantized, second) = match layout.stats {
        Stats::Affine | Stats::Trellis { .. } => (Vec::new(), Vec::new()),
        Stats::Bilevel { bits: sb, rows: sr } => {
            let top = (1u32 << sb) as f32 - 0.01;
            let q: Vec<(u8, u8)> = (0..rows * groups)
                .map(|_| {
                    let v = rng.vec(2, 0.0, top);
                    (v[0] as u8, v[1] as u8)
                })
                .collect();
            let s: Vec<[f16; 4]> = (0..(rows / sr) * groups)
                .map(|_| {
                    let v = rng.vec(4, 0.0, 1.0);
                    [
                        f16::from_f32(0.001 + 0.004 * v[0]),
                        f16::from_f32(-2.0 * v[1]),
                        f16::from_f32(0.1 + 0.5 * v[2]),
                        f16::from_f32(-v[3]),
                    ]
                })
                .collect();
            (q, s)
        }
    };
    // A permutation by sorting random keys.
    let keys = rng.vec(cols, 0.0, 1.0);
    let mut perm: Vec<u32> = (0..cols as u32).collect();
    perm.sort_by(|&a, &b| keys[a as usize].total_cmp(&keys[b as usize]));
    let outliers: Vec<Vec<(u16, f16)>> = (0..rows)
        .map(|_| {
            let n = rng.vec(1, 0.0, 4.99)[0] as usize;
            let mut cs: Vec<u16> = rng
                .vec(n, 0.0, cols as f32 - 0.01)
                .into_iter()
                .map(|v| v as u16)
                .collect();
            cs.sort_unstable();
            cs.dedup();
            cs.into_iter()
                .map(|c| (c, f16::from_f32(rng.vec(1, -0.5, 0.5)[0])))
                .collect()
        })
        .collect();
    let kept: Vec<bool> = if masked {
        rng.vec(rows * groups, 0.0, 1.0)
            .into_iter()
            .enumerate()
            .map(|(i, v)| match i / groups {
                0 => false,
                1 => true,
                _ => v < 0.5,
            })
            .collect()
    } else {
        Vec::new()
    };
    Builder {
        layout,
        codes: &codes,
        affine: &affine,
        quantized: &quantized,
        second: &second,
        perm: Some(&perm),
        outliers: &outliers,
        row_bits: &row_bits,
        kept: &kept,
    }
    .build()
    .expect("a valid random matrix")
}

/// Uploads `m`'s buffers under their operand names.
pub fn upload(
    ctx: &wring::runtime::Context,
    m: &GroupMatrix,
) -> wring::runtime::Result<Vec<(String, wring::runtime::Tensor)>> {
    let layout = m.layout;
    let up = |name: &str, shape: &[usize], data: &[u32]| {
        ctx.upload(shape, data).map(|t| (name.to_string(), t))
    };
    let mut ts = vec![
        up("codes", &[m.codes.len()], &m.codes)?,
        up("rowcodes", &[layout.rows, 3], &m.rowcodes())?,
        up("stats", &[m.stats.len()], &m.stats)?,
        up("perm", &[layout.cols], &m.perm)?,
        up("outliers", &[m.outliers.len()], &m.outliers)?,
    ];
    if matches!(layout.stats, Stats::Bilevel { .. }) {
        ts.push(up("second", &[m.second.len()], &m.second)?);
    }
    if !m.mask.is_empty() {
        ts.push(up("mask", &[layout.rows, layout.mask_words()], &m.mask)?);
    }
    Ok(ts)
}

/// A case of gmatvec (`tiled` false: x and y, the lane-ordered twin) or gmatmul (`tiled`: a and c, the
/// k-ordered twin) on a random matrix of `layout` with `batch` activation rows.
pub fn product_case(
    v: &'static Variant,
    layout: Layout,
    batch: usize,
    seed: u64,
    mixed: bool,
    tiled: bool,
) -> Case<'static> {
    let masked = v.define("MASKED").is_some();
    let m = random_matrix(layout, seed, mixed, masked);
    let mut rng = Rng::new(seed ^ 0x5151);
    let x = rng.vec(batch * layout.cols, -1.0, 1.0);
    let mut y = vec![0f32; batch * layout.rows];
    let (kernel, input, output) = if tiled {
        gmatmul::cpu(&m, &x, &mut y, batch);
        ("gmatmul", "a", "c")
    } else {
        gmatvec::cpu(&m, &x, &mut y, batch, twin_lanes(v));
        ("gmatvec", "x", "y")
    };
    Case {
        name: format!(
            "{kernel} variant={} rows={} cols={} bits={}{}{} group={} stats={:?} batch={batch} seed={seed}",
            v.name,
            layout.rows,
            layout.cols,
            layout.bits,
            if mixed { " (mixed rows)" } else { "" },
            if masked { " (pruned groups)" } else { "" },
            layout.group,
            layout.stats
        ),
        tol: Tolerance::Nmse(1e-9),
        out_dtype: DType::F32,
        out_shape: vec![batch, layout.rows],
        expected: y,
        record: Box::new(move |ctx, step, out| {
            let ts = upload(ctx, &m)?;
            let tx = ctx.upload(&[batch, layout.cols], &x)?;
            let mut ops: Vec<(&str, &wring::runtime::Tensor)> =
                ts.iter().map(|(n, t)| (n.as_str(), t)).collect();
            ops.push((input, &tx));
            ops.push((output, out));
            if tiled {
                step.run_with(&Gmatmul::of(&m, batch), Choice::Force(&v.name), &ops)
            } else {
                step.run_with(&Gmatvec::of(&m, batch), Choice::Force(&v.name), &ops)
            }
        }),
        needs_f16: v.requires.f16,
        needs_subgroup: v.requires.subgroup,
    }
}

/// A case's layout: affine, or SpQR's 3-bit statistics over 16 rows (4 when the rows are not a multiple
/// of 16, so they end inside a statistics block of the lanes variants).
pub fn case_layout(bilevel: bool, rows: usize, cols: usize, bits: u32, group: usize) -> Layout {
    let stats = if bilevel {
        Stats::Bilevel {
            bits: 3,
            rows: if rows.is_multiple_of(16) { 16 } else { 4 },
        }
    } else {
        Stats::Affine
    };
    Layout {
        rows,
        cols,
        bits,
        group,
        stats,
    }
}

pub fn cases() -> Vec<Planned> {
    let mut out = Vec::new();
    for v in variants("gmatvec") {
        let bilevel = v.define("BILEVEL").is_some();
        let batches: &[usize] = if v.define_u32("BATCH") == 1 {
            &[1, 3]
        } else {
            &[2, 8, 21]
        };
        // (rows, cols, bits, group): rows ending inside a lanes workgroup (67, or 20 with 4-row statistics
        // blocks), codes straddling words, SmolLM2's width.
        let shapes: &[(usize, usize, u32, usize)] = if bilevel {
            &[
                (20, 48, 3, 16),
                (48, 64, 2, 16),
                (32, 576, 3, 16),
                (16, 64, 4, 32),
            ]
        } else if v.define("MASKED").is_some() {
            // One to three mask words per row (1088 columns in groups of 16 are 68 groups).
            &[
                (67, 48, 3, 16),
                (12, 1088, 4, 16),
                (32, 576, 4, 32),
                (9, 64, 8, 16),
            ]
        } else {
            &[
                (67, 48, 3, 16),
                (16, 64, 2, 32),
                (32, 576, 4, 32),
                (9, 64, 8, 16),
            ]
        };
        // A constant-width variant takes the first three shapes at its width, all rows alike.
        let width = v.define("BITS").map(|_| v.define_u32("BITS"));
        let shapes: Vec<(usize, usize, u32, usize)> = match width {
            Some(w) => shapes[..3]
                .iter()
                .map(|&(r, c, _, g)| (r, c, w, g))
                .collect(),
            None => shapes.to_vec(),
        };
        for (i, &(rows, cols, bits, group)) in shapes.iter().enumerate() {
            let layout = case_layout(bilevel, rows, cols, bits, group);
            for &batch in batches {
                // The first shape of each form also runs with mixed row widths.
                let mixes = if i == 0 && width.is_none() { 2 } else { 1 };
                for mixed in [false, true].into_iter().take(mixes) {
                    out.push(planned(v, move || {
                        product_case(v, layout, batch, (i * 100 + batch) as u64, mixed, false)
                    }));
                }
            }
        }
    }
    out
}

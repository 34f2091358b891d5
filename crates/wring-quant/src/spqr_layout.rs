//! The SpQR authors' kernel layout (the `spqr_quant` package's `tensor_compress_interleaved` buffer and its
//! `dequantize_compressed` reference), for cross-checking wring's SpQR matrices against it and for handing
//! them to that runtime.
//!
//! Their kernels take only 3-bit codes in 16 x 16 tiles with 3-bit bilevel statistics over 16 rows: wring's
//! `Config::spqr(3)` layout. Each row of a tile is one u64:
//! `| qs:3 | qz:3 | w0..w15: 16 x 3 | fragment:8 | unused:2 |`, and the tile's four f16 second-order
//! parameters (64 bits: the scales' scale and the zeros' scale, then the scales' zero and the zeros' zero,
//! as two half2 pairs) are cut into eight 8-bit fragments, fragment f stored in rows 2f and 2f + 1. The
//! words run row block by row block, each block's tiles along the input, each tile's 16 rows in order.
//! Columns are in stored order (the input is gathered through the permutation), and outliers are CSR with
//! the stored column in the low 16 bits and the f16 value in the high 16 bits, as wring stores them, with
//! offsets that start at 0.
//!
//! Their reference decodes in f16 arithmetic (each subtraction and product rounded to f16) and rounds the
//! result to f16; wring decodes in f32 from the same f16 parameters. [`dequantize_compressed`] does either,
//! so the layout can be checked bit for bit (f32) and the arithmetic difference measured (f16).

use half::f16;

use crate::group::{GroupError, GroupMatrix, Stats, get_bits, unpack_f16x2};

/// Rows and columns per tile, and bits per code: the only sizes the authors' kernels take.
pub const TILE: usize = 16;
const BITS: u32 = 3;
/// Where a tile row's second-order fragment starts: after the two statistics and 16 codes.
const FRAGMENT_AT: u32 = BITS * (TILE as u32 + 2);

/// A matrix in the authors' layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpqrKernelMatrix {
    /// Output rows.
    pub m: usize,
    /// Input columns.
    pub n: usize,
    /// `m * n / 16` tile-row words.
    pub dense: Vec<u64>,
    /// `m + 1` CSR offsets from 0.
    pub row_offsets: Vec<u32>,
    /// One (column, f16 value) word per outlier.
    pub col_vals: Vec<u32>,
    /// The stored order of the columns (`in_order`).
    pub in_order: Vec<u16>,
}

/// Packs `g` into the authors' layout: 3-bit codes, groups of 16, 3-bit bilevel statistics over 16 rows,
/// rows a multiple of 16, every group kept and every row 3 bits wide.
pub fn pack(g: &GroupMatrix) -> Result<SpqrKernelMatrix, GroupError> {
    let l = &g.layout;
    let fits = l.bits == BITS
        && l.group == TILE
        && l.stats
            == Stats::Bilevel {
                bits: BITS,
                rows: TILE,
            }
        && l.rows.is_multiple_of(TILE)
        && g.row_bits.is_empty()
        && g.mask.is_empty();
    if !fits {
        return Err(GroupError::Shape(format!(
            "the SpQR kernel layout takes 3-bit codes in 16 x 16 tiles with 3-bit statistics over 16 rows, \
             not {l:?}"
        )));
    }
    g.check()?;
    let (m, n) = (l.rows, l.cols);
    let groups = l.groups();
    let mut dense = Vec::with_capacity(m * groups);
    let starts = g.row_starts();
    for block in 0..m / TILE {
        for t in 0..groups {
            let p = |i: usize| unpack_f16x2(g.second[2 * (block * groups + t) + i]);
            let ((ss, sz), (zs, zz)) = (p(0), p(1));
            let h = |v: f32| u64::from(f16::from_f32(v).to_bits());
            // The half2 pairs (ss, zs) and (sz, zz), low half first.
            let second = h(ss) | h(zs) << 16 | h(sz) << 32 | h(zz) << 48;
            for k in 0..TILE {
                let row = block * TILE + k;
                let at = &starts[row];
                let f = get_bits(&g.stats[at.stat..], t * 2 * BITS as usize, 2 * BITS);
                let mut word = u64::from(f);
                for j in 0..TILE {
                    let q = get_bits(&g.codes[at.code..], (t * TILE + j) * BITS as usize, BITS);
                    word |= u64::from(q) << (BITS * (2 + j as u32));
                }
                let fragment = (second >> ((k / 2) * 8)) & 0xFF;
                dense.push(word | fragment << FRAGMENT_AT);
            }
        }
    }
    let base = g.outliers[0];
    Ok(SpqrKernelMatrix {
        m,
        n,
        dense,
        row_offsets: g.outliers[..=m].iter().map(|&o| o - base).collect(),
        col_vals: g.outliers[m + 1..].to_vec(),
        in_order: g.perm.iter().map(|&p| p as u16).collect(),
    })
}

/// The authors' `dequantize_compressed`: W \[m\]\[n\] in stored column order. With `f16_arithmetic`, their
/// arithmetic (every step rounded to f16, outliers added in f32, the sum rounded to f16); without it,
/// wring's (f32 throughout), which must give wring's weights bit for bit.
pub fn dequantize_compressed(k: &SpqrKernelMatrix, f16_arithmetic: bool) -> Vec<f32> {
    let (m, n) = (k.m, k.n);
    let mut out = vec![0f32; m * n];
    let round = |v: f32| {
        if f16_arithmetic {
            f16::from_f32(v).to_f32()
        } else {
            v
        }
    };
    // dequantize(q, s, z) = s (q - z), each operation rounded in the f16 mode.
    let deq = |q: f32, s: f32, z: f32| round(s * round(q - z));
    let mut words = k.dense.iter();
    for block in 0..m / TILE {
        for t in 0..n / TILE {
            let tile: Vec<u64> = words.by_ref().take(TILE).copied().collect();
            let mut second = 0u64;
            for (r, w) in tile.iter().enumerate() {
                second |= (w >> FRAGMENT_AT & 0xFF) << ((r / 2) * 8);
            }
            let half = |at: u32| f16::from_bits((second >> at) as u16).to_f32();
            let (ss, zs, sz, zz) = (half(0), half(16), half(32), half(48));
            for (r, &w) in tile.iter().enumerate() {
                let field = |i: u32| ((w >> (BITS * i)) & 0b111) as f32;
                let s = deq(field(0), ss, sz);
                let z = deq(field(1), zs, zz);
                for j in 0..TILE {
                    out[(block * TILE + r) * n + t * TILE + j] = deq(field(2 + j as u32), s, z);
                }
            }
        }
    }
    for r in 0..m {
        for &cv in &k.col_vals[k.row_offsets[r] as usize..k.row_offsets[r + 1] as usize] {
            out[r * n + (cv & 0xFFFF) as usize] += f16::from_bits((cv >> 16) as u16).to_f32();
        }
    }
    if f16_arithmetic {
        for v in &mut out {
            *v = round(*v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gptq::{Config, Hessian, quantize};

    /// wring's SpQR w3 matrix, packed into the authors' tiles and decoded by their reference in f32, is
    /// wring's own dequantization bit for bit (in stored column order; their kernel gathers the input
    /// through the same permutation); in their f16 arithmetic it differs by f16 rounding only.
    #[test]
    fn spqr_w3_matches_the_authors_layout() {
        let (rows, cols) = (32, 96);
        let mut w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        w[77] = 6.0;
        w[1000] = -5.0;
        let mut h = Hessian::new(cols);
        h.add(
            &(0..8 * cols * cols)
                .map(|i| ((i * 104_729) % 997) as f32 / 997.0 - 0.5)
                .collect::<Vec<_>>(),
        );
        let (g, report) = quantize(&w, rows, cols, &h, &Config::spqr(3)).unwrap();
        assert!(report.outliers > 0 && g.permuted());
        let k = pack(&g).unwrap();
        assert_eq!(k.dense.len(), rows * cols / TILE);
        assert_eq!(k.col_vals.len(), report.outliers);
        // wring's weights in stored column order.
        let input_order = g.dequantize();
        let stored: Vec<f32> = (0..rows * cols)
            .map(|i| input_order[(i / cols) * cols + g.perm[i % cols] as usize])
            .collect();
        assert_eq!(dequantize_compressed(&k, false), stored);
        let theirs = dequantize_compressed(&k, true);
        let (num, den) = theirs
            .iter()
            .zip(&stored)
            .fold((0.0, 0.0), |(a, b), (x, y)| {
                (a + f64::from(x - y).powi(2), b + f64::from(*y).powi(2))
            });
        eprintln!(
            "the authors' f16 arithmetic against wring's f32: NMSE {:.2e}",
            num / den
        );
        assert!(num / den < 1e-6, "NMSE {}", num / den);
        // Other layouts are refused.
        let (g4, _) = quantize(&w, rows, cols, &h, &Config::spqr(4)).unwrap();
        assert!(pack(&g4).is_err());
    }
}

//! Incoherence processing (QuIP#, QTIP): a randomized orthogonal transform V of a linear layer's input
//! space. The weights are stored as W V^T (each row w as V w) and quantized in that basis, where a row's
//! large entries are spread over all of its columns, so groups see nearly Gaussian values and no column
//! dominates its group's scale; the product then reads V x instead of x, since W x = (W V^T)(V x). The
//! Hessian of the layer's inputs becomes V H V^T, so GPTQ's and SpQR's feedback work in the same basis.
//!
//! QuIP# uses a randomized Hadamard transform, H S with S a diagonal of random signs, which needs a
//! power-of-two size. SmolLM2's widths are not: 576 = 64 x 9 and 1536 = 512 x 3. So V is
//! (H_a ⊗ C_b) S with n = a b, a the largest power of two dividing n (at most 4,096: the GPU kernel keeps a
//! column of a values in workgroup memory), H_a the orthonormal Walsh-Hadamard matrix (applied as a fast
//! transform, a log2 a butterflies) and C_b the orthonormal DCT-II matrix of the odd part b (at most 64:
//! applied as a dense b x b product per element). A Kronecker product of orthogonal matrices is orthogonal,
//! and the DCT mixes the b columns of each block fully, as a Hadamard factor would. The signs are drawn
//! from a seed (SplitMix64) and stored in the file, one bit per input column.
//!
//! Only the input side is transformed. The output side of QuIP# (U W with U on the rows) matters for
//! formats with one scale per row; wring's statistics are per group of a row, which the input side already
//! makes incoherent, and an output transform would cost a second launch after every product.
//!
//! Index convention: element i of a length-n vector is (i_a, i_b) with i = i_a b + i_b, and
//! (H_a ⊗ C_b)[(i_a, i_b), (j_a, j_b)] = H_a\[i_a\]\[j_a\] C_b\[i_b\]\[j_b\].

use crate::group::GroupError;

/// The largest power-of-two factor the transform takes (the GPU kernel's workgroup memory).
pub const MAX_POW2: usize = 4096;
/// The largest odd factor the transform takes (its DCT is a dense product per element).
pub const MAX_ODD: usize = 64;

/// The transform of a width n = a b.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rht {
    /// The width.
    pub n: usize,
    /// The power-of-two factor (Walsh-Hadamard).
    pub a: usize,
    /// The odd factor (DCT-II).
    pub b: usize,
}

impl Rht {
    /// The transform of width `n`, or why there is none.
    pub fn new(n: usize) -> Result<Rht, GroupError> {
        if n == 0 {
            return Err(GroupError::Shape(
                "an incoherence transform of width 0".into(),
            ));
        }
        let a = 1usize << n.trailing_zeros();
        let b = n / a;
        if a > MAX_POW2 || b > MAX_ODD {
            return Err(GroupError::Shape(format!(
                "no incoherence transform for width {n} = {a} x {b}: the power-of-two factor must be at most \
                 {MAX_POW2} and the odd factor at most {MAX_ODD}"
            )));
        }
        Ok(Rht { n, a, b })
    }

    /// Words of sign bits.
    pub fn sign_words(&self) -> usize {
        self.n.div_ceil(32)
    }

    /// The orthonormal DCT-II matrix C_b, row-major: C\[k\]\[j\] = sqrt(2/b) c_k cos(pi (2j + 1) k / 2b),
    /// c_0 = 1/sqrt(2). Computed in f64 and rounded once, so the kernels and this crate use the same values.
    pub fn dct(&self) -> Vec<f32> {
        let b = self.b;
        let mut c = Vec::with_capacity(b * b);
        for k in 0..b {
            let ck = if k == 0 { (0.5f64).sqrt() } else { 1.0 };
            for j in 0..b {
                let v = (2.0 / b as f64).sqrt()
                    * ck
                    * (std::f64::consts::PI * (2 * j + 1) as f64 * k as f64 / (2 * b) as f64).cos();
                c.push(v as f32);
            }
        }
        c
    }

    /// y = V x for one vector: the signs, then C_b along each block of b (sums in order j_b), then the
    /// Walsh-Hadamard butterflies along the a blocks (strides 1, 2, 4, ...), then the scale 1/sqrt(a).
    /// The GPU kernel's arithmetic, in its order.
    pub fn forward(&self, dct: &[f32], signs: &[u32], x: &[f32], y: &mut [f32]) {
        let Rht { n, a, b } = *self;
        debug_assert_eq!(x.len(), n);
        let mut col = vec![0f32; a];
        for ib in 0..b {
            for (ja, t) in col.iter_mut().enumerate() {
                let mut s = 0f32;
                for jb in 0..b {
                    let j = ja * b + jb;
                    s += dct[ib * b + jb] * (sign(signs, j) * x[j]);
                }
                *t = s;
            }
            fwht(&mut col);
            let scale = 1.0 / (a as f32).sqrt();
            for (ia, t) in col.iter().enumerate() {
                y[ia * b + ib] = t * scale;
            }
        }
    }

    /// x = V^T y (the inverse: V is orthogonal), in f64: for rebuilding the weights a stored matrix
    /// stands for (each row w = V^T w~) and for checks.
    pub fn inverse(&self, dct: &[f32], signs: &[u32], y: &[f32], x: &mut [f32]) {
        let Rht { n, a, b } = *self;
        debug_assert_eq!(y.len(), n);
        let mut mid = vec![0f64; n];
        let mut col = vec![0f64; a];
        for ib in 0..b {
            for (ia, t) in col.iter_mut().enumerate() {
                *t = f64::from(y[ia * b + ib]);
            }
            fwht(&mut col);
            for (ja, t) in col.iter().enumerate() {
                mid[ja * b + ib] = t / (a as f64).sqrt();
            }
        }
        for ja in 0..a {
            for jb in 0..b {
                let s: f64 = (0..b)
                    .map(|ib| f64::from(dct[ib * b + jb]) * mid[ja * b + ib])
                    .sum();
                let j = ja * b + jb;
                x[j] = (f64::from(sign(signs, j)) * s) as f32;
            }
        }
    }

    /// V H V^T for a symmetric n x n matrix H (row-major, f64): the Hessian of the transformed inputs.
    pub fn conjugate(&self, dct: &[f32], signs: &[u32], h: &[f64]) -> Vec<f64> {
        let n = self.n;
        // V M for each column of M, then (V (V M)^T)^T = V M V^T.
        let apply_columns = |m: &[f64]| {
            let mut out = vec![0f64; n * n];
            let mut x = vec![0f32; n];
            let mut y = vec![0f32; n];
            let mut hi = vec![0f64; n];
            for c in 0..n {
                // f64 through the f32 transform would lose precision: split the column into a high and
                // a low f32 part and transform both (the transform is linear).
                for r in 0..n {
                    hi[r] = f64::from(m[r * n + c] as f32);
                    x[r] = m[r * n + c] as f32;
                }
                self.forward(dct, signs, &x, &mut y);
                for r in 0..n {
                    out[r * n + c] = f64::from(y[r]);
                    x[r] = (m[r * n + c] - hi[r]) as f32;
                }
                self.forward(dct, signs, &x, &mut y);
                for r in 0..n {
                    out[r * n + c] += f64::from(y[r]);
                }
            }
            out
        };
        let vm = apply_columns(h);
        let mut t = vec![0f64; n * n];
        for r in 0..n {
            for c in 0..n {
                t[c * n + r] = vm[r * n + c];
            }
        }
        let vmv = apply_columns(&t);
        let mut out = vec![0f64; n * n];
        for r in 0..n {
            for c in 0..n {
                out[r * n + c] = vmv[c * n + r];
            }
        }
        out
    }
}

/// +1 or -1 for bit j of the packed signs (a set bit is -1).
pub fn sign(signs: &[u32], j: usize) -> f32 {
    if (signs[j / 32] >> (j % 32)) & 1 == 1 {
        -1.0
    } else {
        1.0
    }
}

/// n random sign bits from `seed` (SplitMix64, 32 bits per draw), packed into words.
pub fn signs_from_seed(n: usize, seed: u64) -> Vec<u32> {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) as u32
    };
    let mut words: Vec<u32> = (0..n.div_ceil(32)).map(|_| next()).collect();
    // Bits past n are zero, so equal transforms have equal words.
    if !n.is_multiple_of(32) {
        if let Some(last) = words.last_mut() {
            *last &= (1u32 << (n % 32)) - 1;
        }
    }
    words
}

/// The unnormalized Walsh-Hadamard transform in place (butterflies of stride 1, 2, 4, ...).
fn fwht<T: Copy + std::ops::Add<Output = T> + std::ops::Sub<Output = T>>(v: &mut [T]) {
    let mut h = 1;
    while h < v.len() {
        for i in (0..v.len()).step_by(2 * h) {
            for j in i..i + h {
                let (x, y) = (v[j], v[j + h]);
                v[j] = x + y;
                v[j + h] = x - y;
            }
        }
        h *= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// V is orthogonal to 1e-6 (V V^T = I, entry by entry) for SmolLM2's widths and the factors' edges,
    /// and the inverse undoes the forward transform.
    #[test]
    fn the_transform_is_orthogonal() {
        for n in [576, 1536, 64, 9, 1, 4096, 20, 192] {
            let r = Rht::new(n).unwrap();
            let dct = r.dct();
            let signs = signs_from_seed(n, n as u64);
            // Column j of V is V e_j.
            let mut v = vec![0f32; n * n];
            let mut e = vec![0f32; n];
            let mut y = vec![0f32; n];
            for j in 0..n {
                e.fill(0.0);
                e[j] = 1.0;
                r.forward(&dct, &signs, &e, &mut y);
                for i in 0..n {
                    v[i * n + j] = y[i];
                }
            }
            let mut worst = 0f64;
            for i in 0..n {
                for k in 0..n {
                    let d: f64 = (0..n)
                        .map(|j| f64::from(v[i * n + j]) * f64::from(v[k * n + j]))
                        .sum();
                    let want = if i == k { 1.0 } else { 0.0 };
                    worst = worst.max((d - want).abs());
                }
            }
            assert!(worst < 1e-6, "n = {n}: |V V^T - I| reaches {worst:e}");
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let mut back = vec![0f32; n];
            r.forward(&dct, &signs, &x, &mut y);
            r.inverse(&dct, &signs, &y, &mut back);
            for (a, b) in x.iter().zip(&back) {
                assert!((a - b).abs() < 1e-4, "n = {n}: {a} came back as {b}");
            }
        }
    }

    /// Widths whose factors are too large have no transform (a typed error, no panic).
    #[test]
    fn widths_without_a_transform_are_refused() {
        for n in [0, 8192, 67 * 2, 127] {
            assert!(Rht::new(n).is_err(), "{n}");
        }
        assert_eq!(
            Rht::new(576).unwrap(),
            Rht {
                n: 576,
                a: 64,
                b: 9
            }
        );
        assert_eq!(
            Rht::new(1536).unwrap(),
            Rht {
                n: 1536,
                a: 512,
                b: 3
            }
        );
    }

    /// The conjugated Hessian is the Hessian of transformed inputs: for H = X^T X, V H V^T = (X V^T)^T
    /// (X V^T).
    #[test]
    fn conjugating_a_hessian_transforms_its_inputs() {
        let n = 24;
        let r = Rht::new(n).unwrap();
        let (dct, signs) = (r.dct(), signs_from_seed(n, 7));
        let rows = 40;
        let x: Vec<f32> = (0..rows * n)
            .map(|i| ((i * 7919 % 1000) as f32 / 1000.0) - 0.5)
            .collect();
        let gram = |x: &[f32]| {
            let mut h = vec![0f64; n * n];
            for row in x.chunks(n) {
                for i in 0..n {
                    for j in 0..n {
                        h[i * n + j] += f64::from(row[i]) * f64::from(row[j]);
                    }
                }
            }
            h
        };
        let mut xt = vec![0f32; rows * n];
        for (src, dst) in x.chunks(n).zip(xt.chunks_mut(n)) {
            r.forward(&dct, &signs, src, dst);
        }
        let want = gram(&xt);
        let got = r.conjugate(&dct, &signs, &gram(&x));
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }
}

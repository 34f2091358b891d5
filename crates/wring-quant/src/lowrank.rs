//! Low-rank factors of a projection for a KV cache that stores fewer channels (CSKV, Wang et al. 2024):
//! a layer's keys K = X Wᵀ are cached as R-dimensional features c = X Aᵀ and rebuilt as c Bᵀ, with
//! A = V_Rᵀ W (hidden -> R) and B = V_R (R -> kv dim), V_R orthonormal. All three ways of choosing V_R
//! are the top R eigenvectors of a [kv, kv] matrix W M Wᵀ:
//! - `Svd`: M = I, the truncated SVD of W;
//! - `Asvd`: M = S², S = diag(input rms)^(1/2), activation-aware SVD (ASVD's alpha 0.5; ASVD scales by
//!   the mean absolute input, this by its root mean square, which the calibration Hessian holds);
//! - `Lsq`: M = XᵀX, the exact minimizer of the layer-wise reconstruction error ||X Wᵀ - X Aᵀ Bᵀ||² over
//!   the calibration inputs among rank-R maps (reduced-rank regression: K's principal subspace). CSKV
//!   reaches its factors by training A and B on that loss; this is its closed form, with no training.

/// How the subspace is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// The leading singular vectors of the weights (plain SVD).
    Svd,
    /// ASVD: singular vectors of the weights scaled by the activations' channel magnitudes.
    Asvd,
    /// The exact least-squares optimum of the layer's output error on the calibration activations.
    Lsq,
}

impl Init {
    /// Every method, in the order the commands list them.
    pub const ALL: [Init; 3] = [Init::Svd, Init::Asvd, Init::Lsq];

    /// The method's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Init::Svd => "svd",
            Init::Asvd => "asvd",
            Init::Lsq => "lsq",
        }
    }
}

/// The eigenvalues (descending) and eigenvectors (columns of an \[n\]\[n\] row-major matrix, in the same
/// order) of a symmetric matrix, by cyclic Jacobi rotations until the off-diagonal mass is negligible.
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let total: f64 = a.iter().map(|x| x * x).sum::<f64>().max(f64::MIN_POSITIVE);
    for _sweep in 0..64 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum();
        if off <= 1e-22 * total {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[j * n + j].total_cmp(&a[i * n + i]));
    let values = order.iter().map(|&i| a[i * n + i]).collect();
    let mut vectors = vec![0.0; n * n];
    for (col, &i) in order.iter().enumerate() {
        for k in 0..n {
            vectors[k * n + col] = v[k * n + i];
        }
    }
    (values, vectors)
}

/// Rank-`rank` factors of `w` (\[out\]\[inp\], row-major): A \[rank\]\[inp\] and B \[out\]\[rank\], chosen by `init`
/// with `gram` the calibration inputs' XᵀX/N (\[inp\]\[inp\]; unused by `Svd`). Also returns the fraction of
/// W M Wᵀ's trace the kept subspace holds (for `Lsq`, the share of the calibration keys' energy kept).
pub fn factors(
    w: &[f32],
    out: usize,
    inp: usize,
    gram: &[f64],
    init: Init,
    rank: usize,
) -> (Vec<f32>, Vec<f32>, f64) {
    assert!(
        rank >= 1 && rank <= out,
        "rank {rank} of a {out}-row matrix"
    );
    // M as a function applied to a row of W: M w.
    let m_row = |row: &[f32]| -> Vec<f64> {
        match init {
            Init::Svd => row.iter().map(|&x| f64::from(x)).collect(),
            Init::Asvd => row
                .iter()
                .enumerate()
                .map(|(j, &x)| f64::from(x) * gram[j * inp + j].max(0.0).sqrt())
                .collect(),
            Init::Lsq => (0..inp)
                .map(|j| {
                    let g = &gram[j * inp..(j + 1) * inp];
                    row.iter().zip(g).map(|(&x, &h)| f64::from(x) * h).sum()
                })
                .collect(),
        }
    };
    let mw: Vec<Vec<f64>> = (0..out)
        .map(|i| m_row(&w[i * inp..(i + 1) * inp]))
        .collect();
    let mut g = vec![0.0; out * out];
    for i in 0..out {
        for j in 0..=i {
            let s: f64 = w[i * inp..(i + 1) * inp]
                .iter()
                .zip(&mw[j])
                .map(|(&a, &b)| f64::from(a) * b)
                .sum();
            g[i * out + j] = s;
            g[j * out + i] = s;
        }
    }
    let (values, vectors) = symmetric_eigen(&g, out);
    let trace: f64 = values.iter().map(|v| v.max(0.0)).sum();
    let kept: f64 = values[..rank].iter().map(|v| v.max(0.0)).sum();
    let b: Vec<f32> = (0..out)
        .flat_map(|i| (0..rank).map(move |r| (i, r)))
        .map(|(i, r)| vectors[i * out + r] as f32)
        .collect();
    let mut a = vec![0.0f32; rank * inp];
    for r in 0..rank {
        for i in 0..out {
            let vir = vectors[i * out + r];
            for (j, x) in w[i * inp..(i + 1) * inp].iter().enumerate() {
                a[r * inp + j] += (vir * f64::from(*x)) as f32;
            }
        }
    }
    (a, b, if trace > 0.0 { kept / trace } else { 1.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eigen_of_a_kv_sized_matrix_converges_quickly() {
        let n = 192;
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..=i {
                let x = (((i * 131 + j * 71) % 97) as f64 - 48.0) / 48.0;
                a[i * n + j] = x;
                a[j * n + i] = x;
            }
        }
        let t = std::time::Instant::now();
        let (values, _) = symmetric_eigen(&a, n);
        let trace: f64 = (0..n).map(|i| a[i * n + i]).sum();
        assert!((values.iter().sum::<f64>() - trace).abs() < 1e-8);
        eprintln!("192 x 192 in {:.3} s", t.elapsed().as_secs_f64());
    }

    #[test]
    fn eigen_reconstructs_a_symmetric_matrix() {
        let n = 6;
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] =
                    ((i * 7 + j * 7 + i * j) % 11) as f64 - 5.0 + if i == j { 10.0 } else { 0.0 };
            }
        }
        let (values, vectors) = symmetric_eigen(&a, n);
        assert!(values.windows(2).all(|w| w[0] >= w[1]));
        for i in 0..n {
            for j in 0..n {
                let r: f64 = (0..n)
                    .map(|k| vectors[i * n + k] * values[k] * vectors[j * n + k])
                    .sum();
                assert!(
                    (r - a[i * n + j]).abs() < 1e-9,
                    "({i}, {j}): {r} vs {}",
                    a[i * n + j]
                );
            }
        }
    }

    #[test]
    fn full_rank_factors_rebuild_the_matrix_and_lsq_beats_svd_on_skewed_inputs() {
        let (out, inp) = (4, 6);
        let w: Vec<f32> = (0..out * inp)
            .map(|i| ((i * 37 % 17) as f32 - 8.0) / 8.0)
            .collect();
        // Inputs whose last coordinate dominates: XᵀX = diag(1, 1, 1, 1, 1, 100).
        let mut gram = vec![0.0; inp * inp];
        for j in 0..inp {
            gram[j * inp + j] = if j == inp - 1 { 100.0 } else { 1.0 };
        }
        let (a, b, kept) = factors(&w, out, inp, &gram, Init::Lsq, out);
        assert!((kept - 1.0).abs() < 1e-12);
        for i in 0..out {
            for j in 0..inp {
                let r: f32 = (0..out).map(|k| b[i * out + k] * a[k * inp + j]).sum();
                assert!((r - w[i * inp + j]).abs() < 1e-5);
            }
        }
        // Rank 1: the error weighted by the inputs is smallest for Lsq.
        let err = |init| {
            let (a, b, _) = factors(&w, out, inp, &gram, init, 1);
            let mut e = 0.0;
            for i in 0..out {
                for j in 0..inp {
                    let d = f64::from(w[i * inp + j] - b[i] * a[j]);
                    e += d * d * gram[j * inp + j];
                }
            }
            e
        };
        assert!(err(Init::Lsq) <= err(Init::Svd) + 1e-9);
        assert!(err(Init::Lsq) <= err(Init::Asvd) + 1e-9);
    }
}

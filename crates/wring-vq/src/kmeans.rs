//! k-means (Lloyd's iterations) on the GPU: assignment by the exact top-1 search, the centroid update by
//! `vq_update`'s fixed-order sums, so a run is deterministic for a seed; empty clusters are reseeded by
//! splitting a large one, as faiss does.

use wring_runtime::Context;
use wring_runtime::kernels::DType;
use wring_runtime::kernels::vq::{Metric, Update, vq};

use crate::search::{Codebook, Rows, search_rows};
use crate::{Result, request};

/// How the first centroids are chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Init {
    /// k distinct points drawn uniformly (a seeded permutation).
    Random,
    /// k-means++: each next centroid drawn with probability proportional to its squared distance to the
    /// nearest centroid already chosen.
    PlusPlus,
    /// These centroids (\[k\]\[d\]).
    Given(Vec<f32>),
}

/// k-means settings.
#[derive(Debug, Clone, PartialEq)]
pub struct KMeansOptions {
    /// Clusters.
    pub k: usize,
    /// Lloyd iterations.
    pub iters: usize,
    /// Seed of every random choice (initialisation and empty-cluster splits).
    pub seed: u64,
    /// Initialisation.
    pub init: Init,
}

/// The result of k-means.
#[derive(Debug, Clone, PartialEq)]
pub struct KMeans {
    /// Centroids \[k\]\[d\].
    pub centroids: Vec<f32>,
    /// The objective (sum of squared distances to the assigned centroid) at each iteration, measured
    /// against that iteration's centroids before they are updated (faiss's `obj` convention).
    pub objective: Vec<f64>,
    /// The objective of the final centroids.
    pub final_objective: f64,
    /// Each point's final cluster.
    pub assignment: Vec<u32>,
    /// Empty clusters reseeded over the run.
    pub splits: usize,
}

/// A small seeded generator (SplitMix64): the same numbers on every platform.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize % n.max(1)
    }
}

/// Runs k-means on device rows (f32). `progress` is called after each iteration with its index and
/// objective.
pub fn kmeans(
    ctx: &Context,
    x: Rows<'_>,
    opts: &KMeansOptions,
    progress: &mut dyn FnMut(usize, f64),
) -> Result<KMeans> {
    let (n, d, k) = (x.rows, x.d, opts.k);
    if k == 0 || k > n {
        return request(format!("k = {k} clusters need between 1 and {n} points"));
    }
    let mut rng = Rng::new(opts.seed);
    let mut centroids = match &opts.init {
        Init::Given(c) if c.len() == k * d => c.clone(),
        Init::Given(c) => {
            return request(format!(
                "{} initial centroid values are not {k} x {d}",
                c.len()
            ));
        }
        Init::Random => {
            let points = read_rows(ctx, x)?;
            // A partial Fisher-Yates shuffle: the first k of a seeded permutation.
            let mut perm: Vec<usize> = (0..n).collect();
            for i in 0..k {
                let j = i + rng.below(n - i);
                perm.swap(i, j);
            }
            perm[..k]
                .iter()
                .flat_map(|&p| points[p * d..(p + 1) * d].to_vec())
                .collect()
        }
        Init::PlusPlus => plus_plus(ctx, x, k, &mut rng)?,
    };
    let update = |points: usize| Update {
        k,
        d,
        x_stride: x.stride,
        x_offset: x.offset,
        points,
    };
    let mut objective = Vec::with_capacity(opts.iters);
    let mut splits = 0;
    for it in 0..opts.iters {
        let cb = Codebook::new(ctx, centroids.clone(), d, DType::F32)?;
        let nb = search_rows(ctx, &cb, x, 1, Metric::L2)?;
        let obj: f64 = nb.distances.iter().map(|&v| f64::from(v)).sum();
        objective.push(obj);
        let (order, offsets) = vq::group_by_cluster(&nb.ids, k);
        let c = ctx.upload(&[k, d], &centroids)?;
        let order_t = ctx.upload(&[order.len()], &order)?;
        let offsets_t = ctx.upload(&[k + 1], &offsets)?;
        let mut step = ctx.step("k-means update");
        step.run(
            &update(order.len()),
            &[
                ("x", x.tensor),
                ("order", &order_t),
                ("offsets", &offsets_t),
                ("centroids", &c),
            ],
        )?;
        step.submit()?;
        centroids = ctx.read(&c)?;
        let mut sizes: Vec<usize> = offsets.windows(2).map(|w| (w[1] - w[0]) as usize).collect();
        splits += split_empty(&mut centroids, &mut sizes, d, n, &mut rng);
        progress(it, obj);
    }
    let cb = Codebook::new(ctx, centroids.clone(), d, DType::F32)?;
    let nb = search_rows(ctx, &cb, x, 1, Metric::L2)?;
    let final_objective = nb.distances.iter().map(|&v| f64::from(v)).sum();
    Ok(KMeans {
        centroids,
        objective,
        final_objective,
        assignment: nb.ids,
        splits,
    })
}

/// Reseeds every empty cluster from a non-empty one chosen with probability proportional to its size
/// beyond one point: the centroid is copied and the two are pushed apart by a relative 1/1024 in
/// alternating directions, and the points are shared out (faiss's `split_clusters`). Returns how many.
fn split_empty(
    centroids: &mut [f32],
    sizes: &mut [usize],
    d: usize,
    n: usize,
    rng: &mut Rng,
) -> usize {
    const EPS: f32 = 1.0 / 1024.0;
    let k = sizes.len();
    let mut count = 0;
    for ci in 0..k {
        if sizes[ci] != 0 || n <= k {
            continue;
        }
        let mut r = rng.unit() * (n - k) as f64;
        let mut cj = 0;
        while cj + 1 < k && r >= sizes[cj].saturating_sub(1) as f64 {
            r -= sizes[cj].saturating_sub(1) as f64;
            cj += 1;
        }
        for j in 0..d {
            let v = centroids[cj * d + j];
            let (a, b) = if j % 2 == 0 {
                (1.0 + EPS, 1.0 - EPS)
            } else {
                (1.0 - EPS, 1.0 + EPS)
            };
            centroids[ci * d + j] = v * a;
            centroids[cj * d + j] = v * b;
        }
        sizes[ci] = sizes[cj] / 2;
        sizes[cj] -= sizes[ci];
        count += 1;
    }
    count
}

/// The rows back on the host.
fn read_rows(ctx: &Context, x: Rows<'_>) -> Result<Vec<f32>> {
    let all: Vec<f32> = ctx.read(x.tensor)?;
    Ok((0..x.rows)
        .flat_map(|r| all[r * x.stride + x.offset..r * x.stride + x.offset + x.d].to_vec())
        .collect())
}

/// k-means++ seeding, the distances to each new centroid from the GPU search.
fn plus_plus(ctx: &Context, x: Rows<'_>, k: usize, rng: &mut Rng) -> Result<Vec<f32>> {
    let d = x.d;
    let points = read_rows(ctx, x)?;
    let first = rng.below(x.rows);
    let mut centroids = points[first * d..(first + 1) * d].to_vec();
    let mut nearest = vec![f64::INFINITY; x.rows];
    for c in 1..k {
        let cb = Codebook::new(ctx, centroids[(c - 1) * d..c * d].to_vec(), d, DType::F32)?;
        let nb = search_rows(ctx, &cb, x, 1, Metric::L2)?;
        for (m, &v) in nearest.iter_mut().zip(&nb.distances) {
            *m = m.min(f64::from(v));
        }
        let total: f64 = nearest.iter().sum();
        let pick = if total > 0.0 {
            let mut r = rng.unit() * total;
            nearest
                .iter()
                .position(|&v| {
                    r -= v;
                    r < 0.0
                })
                .unwrap_or(x.rows - 1)
        } else {
            rng.below(x.rows)
        };
        centroids.extend_from_slice(&points[pick * d..(pick + 1) * d]);
    }
    Ok(centroids)
}

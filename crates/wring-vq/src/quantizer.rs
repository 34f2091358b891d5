//! Quantizers built from codebooks: G groups of consecutive dimensions, each quantized by R residual
//! stages of K codewords. G = R = 1 is plain VQ, G = 1 residual VQ, R = 1 product quantization (the groups
//! are its subspaces), and both above 1 group-residual VQ as in HiFi-Codec. A vector's code is G * R
//! indices, group-major.
//!
//! Encoding runs on the device: each stage searches the current residual of its group's columns in place
//! (a row stride and a column offset, no copies), then subtracts the chosen codewords from the residual.

use std::collections::HashMap;
use std::path::Path;

use wring_runtime::Context;
use wring_runtime::kernels::DType;
use wring_runtime::kernels::vq::{LookupOp, Metric};

use crate::kmeans::{Init, KMeansOptions, kmeans};
use crate::search::{Codebook, Neighbours, Rows, search_rows};
use crate::{Result, VqError, request};

/// A (group-)residual or product quantizer.
#[derive(Debug)]
pub struct Quantizer {
    /// Dimensions of the vectors.
    pub d: usize,
    /// Groups of consecutive dimensions (subspaces).
    pub groups: usize,
    /// Residual stages per group.
    pub stages: usize,
    /// Codewords per codebook.
    pub k: usize,
    /// Codebooks, `[group * stages + stage]`, each [k][d / groups].
    books: Vec<Codebook>,
}

impl Quantizer {
    /// A quantizer from codebook values: `books[g * stages + r]` is [k][d / groups].
    pub fn from_books(
        ctx: &Context,
        d: usize,
        groups: usize,
        stages: usize,
        books: Vec<Vec<f32>>,
        dtype: DType,
    ) -> Result<Quantizer> {
        if groups == 0
            || stages == 0
            || d == 0
            || !d.is_multiple_of(groups)
            || books.len() != groups * stages
        {
            return request(format!(
                "{} codebooks do not make {groups} groups of {stages} stages over {d} dimensions (d must divide into the groups)",
                books.len()
            ));
        }
        let dg = d / groups;
        let k = books.first().map_or(0, |b| b.len() / dg);
        // Every book's size is checked before any is uploaded: a bad set does no device work (which
        // would wait behind whatever the device's queue holds).
        if let Some(b) = books.iter().find(|b| b.len() != k * dg) {
            return request(format!(
                "codebooks differ in size: {} values, not {k} x {dg}",
                b.len()
            ));
        }
        let books = books
            .into_iter()
            .map(|b| Codebook::new(ctx, b, dg, dtype))
            .collect::<Result<Vec<_>>>()?;
        Ok(Quantizer {
            d,
            groups,
            stages,
            k,
            books,
        })
    }

    /// Trains every codebook by k-means on the residuals the earlier stages leave (`points` is \[n\]\[d\]).
    /// `opts.k` codewords per codebook; each codebook's seed is `opts.seed` plus its index.
    pub fn train(
        ctx: &Context,
        points: &[f32],
        d: usize,
        groups: usize,
        stages: usize,
        opts: &KMeansOptions,
        progress: &mut dyn FnMut(usize, usize, f64),
    ) -> Result<Quantizer> {
        if groups == 0
            || stages == 0
            || d == 0
            || !d.is_multiple_of(groups)
            || !points.len().is_multiple_of(d)
        {
            return request(format!(
                "{groups} groups of {stages} stages over {d} dimensions do not fit {} values",
                points.len()
            ));
        }
        if let Some(i) = points.iter().position(|v| !v.is_finite()) {
            return request(format!("training value {i} is {}", points[i]));
        }
        let n = points.len() / d;
        let dg = d / groups;
        let residual = ctx.upload(&[n, d], points)?;
        let mut books = Vec::with_capacity(groups * stages);
        for g in 0..groups {
            for r in 0..stages {
                let at = g * stages + r;
                let rows = Rows {
                    tensor: &residual,
                    rows: n,
                    stride: d,
                    offset: g * dg,
                    d: dg,
                };
                let o = KMeansOptions {
                    seed: opts.seed.wrapping_add(at as u64),
                    ..opts.clone()
                };
                let km = kmeans(ctx, rows, &o, &mut |it, obj| progress(at, it, obj))?;
                let cb = Codebook::new(ctx, km.centroids, dg, DType::F32)?;
                if r + 1 < stages {
                    let ids = ctx.upload(&[n], &km.assignment)?;
                    let mut step = ctx.step("residual");
                    cb.lookup(&mut step, &ids, n, &residual, d, g * dg, LookupOp::Sub)?;
                    step.submit()?;
                }
                books.push(cb);
            }
        }
        let k = opts.k;
        Ok(Quantizer {
            d,
            groups,
            stages,
            k,
            books,
        })
    }

    /// Codes per vector.
    pub fn code_len(&self) -> usize {
        self.groups * self.stages
    }

    /// The codebook of group `g`, stage `r`.
    pub fn book(&self, g: usize, r: usize) -> &Codebook {
        &self.books[g * self.stages + r]
    }

    /// Checks that vectors stored `dims` to a row fit this quantizer (`d` dimensions): a flat slice of 8-wide
    /// rows is also a whole number of 4-wide ones, so callers that know their array's shape check it here.
    pub fn check_vectors(&self, dims: usize) -> Result<()> {
        if dims != self.d {
            return request(format!(
                "the vectors have {dims} dimensions but the quantizer takes {}",
                self.d
            ));
        }
        Ok(())
    }

    /// Checks that codes stored `width` to a row fit this quantizer ([`Quantizer::code_len`] codes per
    /// vector: groups * stages).
    pub fn check_codes(&self, width: usize) -> Result<()> {
        if width != self.code_len() {
            return request(format!(
                "the codes have {width} per vector but the quantizer writes {} (groups {} x stages {})",
                self.code_len(),
                self.groups,
                self.stages
            ));
        }
        Ok(())
    }

    /// Encodes vectors (\[n\]\[d\]) into codes ([n][groups * stages]), each stage the nearest codeword (L2) to
    /// what the stages before it left.
    pub fn encode(&self, ctx: &Context, points: &[f32]) -> Result<Vec<u32>> {
        if !points.len().is_multiple_of(self.d) {
            return request(format!(
                "{} values are not a whole number of {}-dimensional vectors",
                points.len(),
                self.d
            ));
        }
        if let Some(i) = points.iter().position(|v| !v.is_finite()) {
            return request(format!("value {i} is {}", points[i]));
        }
        let n = points.len() / self.d;
        let mut codes = vec![0u32; n * self.code_len()];
        if n == 0 {
            return Ok(codes);
        }
        let residual = ctx.upload(&[n, self.d], points)?;
        let dg = self.d / self.groups;
        for g in 0..self.groups {
            for r in 0..self.stages {
                let cb = self.book(g, r);
                let rows = Rows {
                    tensor: &residual,
                    rows: n,
                    stride: self.d,
                    offset: g * dg,
                    d: dg,
                };
                let nb = search_rows(ctx, cb, rows, 1, Metric::L2)?;
                if r + 1 < self.stages {
                    let ids = ctx.upload(&[n], &nb.ids)?;
                    let mut step = ctx.step("residual");
                    cb.lookup(&mut step, &ids, n, &residual, self.d, g * dg, LookupOp::Sub)?;
                    step.submit()?;
                }
                for (i, id) in nb.ids.into_iter().enumerate() {
                    codes[i * self.code_len() + g * self.stages + r] = id;
                }
            }
        }
        Ok(codes)
    }

    /// Decodes codes ([n][groups * stages]) into vectors: the sum of each group's stages' codewords.
    pub fn decode(&self, ctx: &Context, codes: &[u32]) -> Result<Vec<f32>> {
        let m = self.code_len();
        if !codes.len().is_multiple_of(m) {
            return request(format!(
                "{} codes are not a whole number of {m}-code vectors",
                codes.len()
            ));
        }
        if let Some(i) = codes.iter().position(|&c| c as usize >= self.k) {
            return request(format!(
                "code {i} is {}, beyond the codebook's {} codewords",
                codes[i], self.k
            ));
        }
        let n = codes.len() / m;
        if n == 0 {
            return Ok(Vec::new());
        }
        let out = ctx.upload(&[n, self.d], &vec![0f32; n * self.d])?;
        let dg = self.d / self.groups;
        let mut step = ctx.step("vq decode");
        for g in 0..self.groups {
            for r in 0..self.stages {
                let col: Vec<u32> = (0..n).map(|i| codes[i * m + g * self.stages + r]).collect();
                let ids = ctx.upload(&[n], &col)?;
                self.book(g, r)
                    .lookup(&mut step, &ids, n, &out, self.d, g * dg, LookupOp::Add)?;
            }
        }
        step.submit()?;
        Ok(ctx.read(&out)?)
    }

    /// Asymmetric-distance search over product codes (one stage per group): for each query (\[nq\]\[d\]),
    /// the `k` database vectors (codes \[n\]\[groups\]) with the smallest sum over subspaces of the squared
    /// distance from the query's subvector to the code's codeword, read from a per-query table
    /// \[groups\]\[k\] (faiss `IndexPQ`'s ADC). Ties go to the lower database index. Runs on the host.
    pub fn search_codes(&self, queries: &[f32], codes: &[u32], k: usize) -> Result<Neighbours> {
        if self.stages != 1 {
            return request(
                "asymmetric-distance search is for product quantizers (one stage per group)".into(),
            );
        }
        let (m, d, dg) = (self.groups, self.d, self.d / self.groups);
        if !queries.len().is_multiple_of(d)
            || !codes.len().is_multiple_of(m)
            || codes.iter().any(|&c| c as usize >= self.k)
        {
            return request(format!(
                "queries must be [n][{d}] and codes [n][{m}] below {}",
                self.k
            ));
        }
        let n = codes.len() / m;
        if k == 0 || k > n {
            return request(format!(
                "k = {k} must be between 1 and the {n} database vectors"
            ));
        }
        let mut out = Neighbours {
            k,
            distances: Vec::new(),
            ids: Vec::new(),
        };
        let mut table = vec![0f32; m * self.k];
        for q in queries.chunks_exact(d) {
            for g in 0..m {
                let sub = &q[g * dg..(g + 1) * dg];
                for (j, c) in self.book(g, 0).values().chunks_exact(dg).enumerate() {
                    table[g * self.k + j] = sub
                        .iter()
                        .zip(c)
                        .fold(0.0f32, |s, (&a, &b)| s + (a - b) * (a - b));
                }
            }
            let mut best: Vec<(f32, u32)> = codes
                .chunks_exact(m)
                .enumerate()
                .map(|(i, code)| {
                    (
                        code.iter()
                            .enumerate()
                            .fold(0.0f32, |s, (g, &c)| s + table[g * self.k + c as usize]),
                        i as u32,
                    )
                })
                .collect();
            best.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            best.truncate(k);
            best.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            out.distances.extend(best.iter().map(|b| b.0));
            out.ids.extend(best.iter().map(|b| b.1));
        }
        Ok(out)
    }

    /// Saves as safetensors: one f32 tensor `codebooks` [groups, stages, k, d / groups] and the layout in
    /// the metadata.
    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        let values: Vec<f32> = self
            .books
            .iter()
            .flat_map(|b| b.values().to_vec())
            .collect();
        let shape = [self.groups, self.stages, self.k, self.d / self.groups];
        let meta = HashMap::from([
            ("format".to_string(), "wring-vq".to_string()),
            ("d".to_string(), self.d.to_string()),
        ]);
        Ok(wring_io::safetensors_f32::write(
            path,
            "codebooks",
            &shape,
            &values,
            meta,
        )?)
    }

    /// Saves as .npy: [groups, stages, k, d / groups] f32.
    pub fn save_npy(&self, path: &Path) -> Result<()> {
        let values: Vec<f32> = self
            .books
            .iter()
            .flat_map(|b| b.values().to_vec())
            .collect();
        Ok(wring_io::write_npy(
            path,
            &[self.groups, self.stages, self.k, self.d / self.groups],
            &values,
        )?)
    }

    /// Loads a quantizer saved by [`Quantizer::save_safetensors`] or [`Quantizer::save_npy`] (by the file's
    /// extension). A 2-D array \[k\]\[d\] is read as one plain codebook. Shapes are checked against the data
    /// before anything is built.
    pub fn load(ctx: &Context, path: &Path, dtype: DType) -> Result<Quantizer> {
        let (shape, values) = if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
        {
            wring_io::read_npy(path)?
        } else {
            wring_io::safetensors_f32::read(path, "codebooks")?
        };
        let (groups, stages, k, dg) = match shape[..] {
            [k, d] => (1, 1, k, d),
            [g, r, k, dg] => (g, r, k, dg),
            _ => {
                return request(format!(
                    "{}: codebooks must be [k, d] or [groups, stages, k, d / groups], got {shape:?}",
                    path.display()
                ));
            }
        };
        let per = k.checked_mul(dg).filter(|&p| p > 0).ok_or_else(|| {
            VqError::Request(format!(
                "{}: empty or overflowing codebook shape {shape:?}",
                path.display()
            ))
        })?;
        let books = values.chunks_exact(per).map(<[f32]>::to_vec).collect();
        Quantizer::from_books(ctx, groups * dg, groups, stages, books, dtype)
    }
}

/// Default k-means options for a quantizer of `k` codewords.
pub fn default_options(k: usize) -> KMeansOptions {
    KMeansOptions {
        k,
        iters: 20,
        seed: 0,
        init: Init::PlusPlus,
    }
}

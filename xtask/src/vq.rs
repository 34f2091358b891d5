//! `cargo xtask bench vq`: exact nearest-codeword search at the shapes, as queries per second and
//! GFLOP/s (2 * queries * codewords * d per search), against the adapter's own f32 matmul on the same
//! product measured in the same run, and against faiss-cpu (IndexFlatL2) on this machine when Python has
//! it.

use std::time::Instant;

use serde::Serialize;
use wring_runtime::kernels::DType;
use wring_runtime::kernels::tensor::Matmul;
use wring_runtime::{Context, ContextOptions};
use wring_vq::{Codebook, Metric, Rows, search_rows};

/// One search shape.
#[derive(Debug, Serialize)]
pub struct Row {
    pub queries: usize,
    pub codewords: usize,
    pub d: usize,
    pub k: usize,
    pub ms: f64,
    pub queries_per_s: f64,
    pub gflops: f64,
    pub matmul_gflops: f64,
    pub fraction_of_matmul: f64,
    pub faiss_ms: Option<f64>,
    pub speed_vs_faiss: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct VqReport {
    pub adapter: String,
    pub rows: Vec<Row>,
    pub summary: Vec<String>,
}

/// Deterministic uniform data in [-1, 1).
fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            ((s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}

/// faiss-cpu's IndexFlatL2 search time in ms (best of two) on random data of the shape, or None.
fn faiss_ms(nq: usize, n: usize, d: usize, k: usize) -> Option<f64> {
    let py = format!(
        "import numpy as np, faiss, time\nx=np.random.rand({nq},{d}).astype('float32')\nc=np.random.rand({n},{d}).astype('float32')\ni=faiss.IndexFlatL2({d})\ni.add(c)\nb=1e9\nfor _ in range(2):\n t=time.time(); i.search(x,{k}); b=min(b,time.time()-t)\nprint(b*1e3)"
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &py])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

pub fn run(quick: bool) -> Result<VqReport, String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let ctx = Context::new(ContextOptions {
        profile: true,
        ..Default::default()
    })
    .map_err(|x| e(&x))?;
    let mut report = VqReport {
        adapter: ctx.label(),
        rows: Vec::new(),
        summary: Vec::new(),
    };
    let shapes: &[(usize, usize, usize)] = if quick {
        &[(4096, 1024, 128), (512, 16384, 256), (1, 65536, 256)]
    } else {
        &[(65536, 1024, 128), (4096, 16384, 256), (1, 65536, 256)]
    };
    for &(nq, n, d) in shapes {
        let cb = Codebook::new(&ctx, data(n * d, 1), d, DType::F32).map_err(|x| e(&x))?;
        let x = ctx.upload(&[nq, d], &data(nq * d, 2)).map_err(|x| e(&x))?;
        // The peer: this adapter's f32 matmul on the same product (a block of at least 256 and at most
        // what keeps the [rows, codewords] result inside the binding limit), GPU time from timestamps.
        let m = nq.clamp(256, ((16 << 20) / n).max(256));
        let a = ctx.upload(&[m, d], &data(m * d, 3)).map_err(|x| e(&x))?;
        let b = ctx.upload(&[n, d], cb.values()).map_err(|x| e(&x))?;
        let c = ctx.empty(&[m, n], DType::F32).map_err(|x| e(&x))?;
        let mut mm_ms = f64::MAX;
        for _ in 0..3 {
            let mut step = ctx.step("matmul");
            let unit = Matmul {
                dtype: DType::F32,
                m,
                n,
                k: d,
            };
            step.run(&unit, &[("a", &a), ("b", &b), ("c", &c)])
                .map_err(|x| e(&x))?;
            let r = step.submit().map_err(|x| e(&x))?;
            mm_ms = mm_ms.min(
                r.times
                    .map(|t| t.iter().map(|l| l.nanos).sum::<f64>() / 1e6)
                    .unwrap_or(f64::NAN),
            );
        }
        let matmul_gflops = 2.0 * (m * n * d) as f64 / mm_ms / 1e6;
        for k in [1usize, 10] {
            let mut ms = f64::MAX;
            for _ in 0..if nq == 1 { 5 } else { 2 } {
                let t = Instant::now();
                search_rows(
                    &ctx,
                    &cb,
                    Rows {
                        tensor: &x,
                        rows: nq,
                        stride: d,
                        offset: 0,
                        d,
                    },
                    k,
                    Metric::L2,
                )
                .map_err(|x| e(&x))?;
                ms = ms.min(t.elapsed().as_secs_f64() * 1e3);
            }
            let gflops = 2.0 * (nq * n * d) as f64 / ms / 1e6;
            let faiss = faiss_ms(nq, n, d, k);
            let row = Row {
                queries: nq,
                codewords: n,
                d,
                k,
                ms,
                queries_per_s: nq as f64 / ms * 1e3,
                gflops,
                matmul_gflops,
                fraction_of_matmul: gflops / matmul_gflops,
                faiss_ms: faiss,
                speed_vs_faiss: faiss.map(|f| f / ms),
            };
            let line = format!(
                "search L2 top-{k} ({nq}, {n}, {d}): {ms:.1} ms wall, {:.0} queries/s, {gflops:.1} GFLOP/s = {:.0}% of this adapter's f32 matmul ({matmul_gflops:.1} GFLOP/s); faiss-cpu {}",
                row.queries_per_s,
                100.0 * row.fraction_of_matmul,
                faiss.map_or("not run".to_string(), |f| format!(
                    "{f:.1} ms, wring/faiss speed {:.2}",
                    f / ms
                ))
            );
            println!("{line}");
            report.summary.push(line);
            report.rows.push(row);
        }
    }
    Ok(report)
}

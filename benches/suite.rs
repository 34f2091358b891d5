//! wring's benchmark suite: every kernel over a size sweep, timed with GPU timestamp queries where the
//! adapter has them (wall clock after a full device wait otherwise), reported in the unit of its family
//! (GB/s, or GFLOP/s for matmul) and as a fraction of the copy bandwidth measured in the same run.
//!
//! Shared by `cargo xtask bench` (which writes `bench-results/`) and the `cargo bench` binary.

use std::time::Instant;

use half::f16;
use wring_quant::BlockFormat;
use wring_runtime::kernels::quant::{Qmatmul, Qmatvec, QmatvecQ8, QuantizeQ8, qmatvec_q8};
use wring_runtime::kernels::tensor::{
    Attention, Binary, BinaryOp, CopyWords, Fill, GetRows, Matmul, Matvec, Rmsnorm, RmsnormQ8,
    Rope, RopeMode, RopeQkv, SiluMul, SiluMulQ8, Softmax,
};
use wring_runtime::kernels::wavelet::{Dwt, Mode, Wavelet};
use wring_runtime::kernels::{self as variant, Choice, DType, Kernel as _, q8};
use wring_runtime::{Context, ContextOptions, Step, Tensor};

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Fewer sizes and repetitions (a smoke run).
    pub quick: bool,
    /// Only kernels whose name contains this.
    pub filter: Option<String>,
}

/// One measured configuration.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub kernel: String,
    pub variant: String,
    pub shape: String,
    /// Median seconds per launch.
    pub seconds: f64,
    /// Fastest launch.
    pub best_seconds: f64,
    pub reps: usize,
    /// Bytes the kernel must move at least (reads + writes).
    pub bytes: f64,
    pub gb_per_s: f64,
    /// 2*m*n*k for matmul and matvec, else 0.
    pub flops: f64,
    pub gflop_per_s: f64,
    /// gb_per_s over the copy kernel's bandwidth measured in this run.
    pub fraction_of_copy: f64,
    /// "gpu-timestamp" or "wall-clock".
    pub timer: &'static str,
}

/// The whole run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub adapter: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub timer: &'static str,
    /// Best copy-kernel bandwidth (read + write), the roofline every fraction refers to.
    pub copy_gb_per_s: f64,
    /// The DMA buffer-to-buffer copy, the copy kernel's peer.
    pub dma_copy_gb_per_s: f64,
    /// Wall-clock cost of one tiny launch inside a step of many (submission overhead per dispatch).
    pub dispatch_overhead_us: f64,
    /// Best matmul GFLOP/s over all variants and shapes.
    pub matmul_gflop_per_s: f64,
    pub rows: Vec<Row>,
}

/// What a timing records into a step: one launch or copy.
type Record<'r> = dyn Fn(&mut Step<'_>) -> wring_runtime::Result<()> + 'r;

struct Bench<'a> {
    ctx: &'a Context,
    reps: usize,
    rows: Vec<Row>,
    copy_gbs: f64,
}

impl Bench<'_> {
    /// Times `record` (one launch or copy per step) after one warm-up, `reps` times or until a second of
    /// device time has passed (at least 3 times), returning (median, best) seconds.
    fn time(&self, record: &Record<'_>) -> wring_runtime::Result<(f64, f64, usize)> {
        Ok(self.time_interleaved(&[record])?[0])
    }

    /// Times several alternatives of one measurement (variants of a kernel on one shape) in rounds, one
    /// launch of each per round, so that a machine whose speed drifts over seconds (a shared host) shifts
    /// them all alike rather than favouring whichever ran first: after one warm-up each, `reps` rounds or
    /// until every alternative has had a second of device time (at least 3 rounds); (median, best, samples)
    /// seconds for each, in order.
    fn time_interleaved(
        &self,
        records: &[&Record<'_>],
    ) -> wring_runtime::Result<Vec<(f64, f64, usize)>> {
        for record in records {
            let mut warm = self.ctx.step("bench warm-up");
            record(&mut warm)?;
            warm.submit()?;
            self.ctx.wait()?;
        }
        let mut samples = vec![Vec::with_capacity(self.reps); records.len()];
        let enough = |s: &Vec<Vec<f64>>| {
            s[0].len() >= self.reps
                || (s[0].len() >= 3 && s.iter().all(|x| x.iter().sum::<f64>() >= 1.0))
        };
        while !enough(&samples) {
            for (record, out) in records.iter().zip(&mut samples) {
                let start = Instant::now();
                let mut s = self.ctx.step("bench");
                record(&mut s)?;
                let report = s.submit()?;
                self.ctx.wait()?;
                let wall = start.elapsed().as_secs_f64();
                out.push(match report.times {
                    Some(t) if !t.is_empty() => t.iter().map(|l| l.nanos).sum::<f64>() * 1e-9,
                    _ => wall,
                });
            }
        }
        Ok(samples
            .into_iter()
            .map(|mut x| {
                x.sort_by(f64::total_cmp);
                (x[x.len() / 2], x[0], x.len())
            })
            .collect())
    }

    #[allow(clippy::too_many_arguments, reason = "a row has this many facts")]
    fn row(
        &mut self,
        kernel: &str,
        variant: &str,
        shape: String,
        t: (f64, f64, usize),
        bytes: f64,
        flops: f64,
    ) {
        let gbs = bytes / t.0 / 1e9;
        let row = Row {
            kernel: kernel.into(),
            variant: variant.into(),
            shape,
            seconds: t.0,
            best_seconds: t.1,
            reps: t.2,
            bytes,
            gb_per_s: gbs,
            flops,
            gflop_per_s: if flops > 0.0 { flops / t.0 / 1e9 } else { 0.0 },
            fraction_of_copy: if self.copy_gbs > 0.0 {
                gbs / self.copy_gbs
            } else {
                0.0
            },
            timer: if self.ctx.info().timestamps {
                "gpu-timestamp"
            } else {
                "wall-clock"
            },
        };
        println!(
            "{:<10} {:<14} {:<22} {:>10.1} us (best {:>9.1}) {:>8.2} GB/s {:>8} {:>6.0}% of copy",
            row.kernel,
            row.variant,
            row.shape,
            row.seconds * 1e6,
            row.best_seconds * 1e6,
            row.gb_per_s,
            if flops > 0.0 {
                format!("{:.1} GF/s", row.gflop_per_s)
            } else {
                String::new()
            },
            row.fraction_of_copy * 100.0
        );
        self.rows.push(row);
    }
}

fn ramp(n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * scale)
        .collect()
}

fn to_f16(v: &[f32]) -> Vec<f16> {
    v.iter().map(|&x| f16::from_f32(x)).collect()
}

/// Runs the suite on the adapter `WRING_BACKEND` / `WRING_ADAPTER` choose.
pub fn run(opts: &Options) -> wring_runtime::Result<Report> {
    let ctx = Context::new(ContextOptions {
        profile: true,
        ..Default::default()
    })?;
    let info = ctx.info().clone();
    println!(
        "adapter: {} ({:?}, {:?}), driver {} {}",
        info.adapter.name,
        info.adapter.backend,
        info.adapter.device_type,
        info.adapter.driver,
        info.adapter.driver_info
    );
    println!(
        "timer: {}",
        if info.timestamps {
            "GPU timestamp queries"
        } else {
            "wall clock after a device wait"
        }
    );
    let mut b = Bench {
        ctx: &ctx,
        reps: if opts.quick { 10 } else { 20 },
        rows: Vec::new(),
        copy_gbs: 0.0,
    };
    let want = |k: &str| opts.filter.as_deref().is_none_or(|f| k.contains(f));

    // Copy first: every other row's fraction refers to it.
    let sizes_mib: &[u64] = if opts.quick {
        &[1, 16]
    } else {
        &[1, 4, 16, 64, 120]
    };
    let dma_best = copy_rows(&mut b, sizes_mib)?;
    // Fractions of the copy rows were computed against a running best; recompute against the final one.
    let copy_gbs = b.copy_gbs;
    for r in &mut b.rows {
        r.fraction_of_copy = r.gb_per_s / copy_gbs;
    }
    println!(
        "copy bandwidth (copy kernel, read + write): {copy_gbs:.2} GB/s; DMA copy: {dma_best:.2} GB/s"
    );
    let dispatch_overhead_us = dispatch_overhead_us()?;

    if want("fill") {
        let words = (16usize << 20) / 4;
        let dst = ctx.empty(&[words], DType::U32)?;
        let t = b.time(&|s| {
            s.run(
                &Fill {
                    words: dst.len(),
                    value: 7,
                },
                &[("dst", &dst)],
            )
        })?;
        b.row("fill", "u32", "16 MiB".into(), t, (words * 4) as f64, 0.0);
    }
    if want("binary") {
        for v in variant::of_kernel("binary") {
            let n = 4usize << 20;
            let dt = if v.define("ELEM") == Some("f16") {
                DType::F16
            } else {
                DType::F32
            };
            if dt == DType::F16 && !ctx.caps().f16 {
                continue;
            }
            let op = if v.name.starts_with("add") {
                BinaryOp::Add
            } else {
                BinaryOp::Mul
            };
            let data = ramp(n, 1.0);
            let (a, bb) = match dt {
                DType::F16 => (
                    ctx.upload(&[n], &to_f16(&data))?,
                    ctx.upload(&[n], &to_f16(&data))?,
                ),
                _ => (ctx.upload(&[n], &data)?, ctx.upload(&[n], &data)?),
            };
            let c = ctx.empty(&[n], dt)?;
            let t = b.time(&|s| {
                s.run_with(
                    &Binary {
                        op,
                        dtype: dt,
                        n,
                        nb: n,
                    },
                    Choice::Force(&v.name),
                    &[("a", &a), ("b", &bb), ("c", &c)],
                )
            })?;
            b.row(
                "binary",
                &v.name,
                format!("{n}"),
                t,
                (3 * n * dt.size()) as f64,
                0.0,
            );
        }
    }
    if want("silu_mul") {
        let n = 4usize << 20;
        let a = ctx.upload(&[n], &ramp(n, 4.0))?;
        let bb = ctx.upload(&[n], &ramp(n, 1.0))?;
        let y = ctx.empty(&[n], DType::F32)?;
        let t = b.time(&|s| s.run(&SiluMul::dense(n, 1), &[("a", &a), ("b", &bb), ("y", &y)]))?;
        b.row("silu_mul", "f32", format!("{n}"), t, (12 * n) as f64, 0.0);
        let q = ctx.empty(&[q8::words(n)], DType::U32)?;
        let t = b.time(&|s| {
            s.run(
                &SiluMulQ8(SiluMul::dense(n, 1)),
                &[("a", &a), ("b", &bb), ("q", &q)],
            )
        })?;
        b.row(
            "silu_mul",
            "q8",
            format!("{n}"),
            t,
            (8 * n + 6 * n / 4) as f64,
            0.0,
        );
    }
    if want("q8_fusion") {
        // What writing the 8-bit units in the producer saves at decode's shapes (one row): the norm, the
        // gate and the attention each with quantize_q8 after them (two launches) against their _q8 form
        // (one), as the model runs them (the planner's variants).
        let (e, ff) = (576usize, 1536usize);
        let x = ctx.upload(&[1, e], &ramp(e, 3.0))?;
        let w = ctx.upload(&[e], &ramp(e, 1.0))?;
        let (y, sum) = (
            ctx.empty(&[1, e], DType::F32)?,
            ctx.empty(&[1, e], DType::F32)?,
        );
        let qe = ctx.empty(&[q8::words(e)], DType::U32)?;
        let norm = Rmsnorm {
            n: e,
            rows: 1,
            eps: 1e-5,
            residual: true,
        };
        let norm_ops = [("x", &x), ("r", &x), ("w", &w), ("s", &sum)];
        let quantize = QuantizeQ8 { k: e, rows: 1 };
        let t = b.time(&|s| {
            let mut ops = norm_ops.to_vec();
            ops.push(("y", &y));
            s.run(&norm, &ops)?;
            s.run(&quantize, &[("x", &y), ("q", &qe)])
        })?;
        b.row(
            "q8_fusion",
            "rmsnorm_add+quantize_q8",
            format!("1x{e}"),
            t,
            0.0,
            0.0,
        );
        let t = b.time(&|s| {
            let mut ops = norm_ops.to_vec();
            ops.push(("q", &qe));
            s.run(&RmsnormQ8(norm), &ops)
        })?;
        b.row("q8_fusion", "rmsnorm_add_q8", format!("1x{e}"), t, 0.0, 0.0);
        let gu = ctx.upload(&[1, 2 * ff], &ramp(2 * ff, 4.0))?;
        let (g, qf) = (
            ctx.empty(&[1, ff], DType::F32)?,
            ctx.empty(&[q8::words(ff)], DType::U32)?,
        );
        let gate = SiluMul::halves(ff, 1);
        let t = b.time(&|s| {
            s.run(&gate, &[("a", &gu), ("b", &gu), ("y", &g)])?;
            s.run(&QuantizeQ8 { k: ff, rows: 1 }, &[("x", &g), ("q", &qf)])
        })?;
        b.row(
            "q8_fusion",
            "silu_mul+quantize_q8",
            format!("1x{ff}"),
            t,
            0.0,
            0.0,
        );
        let t = b.time(&|s| s.run(&SiluMulQ8(gate), &[("a", &gu), ("b", &gu), ("q", &qf)]))?;
        b.row("q8_fusion", "silu_mul_q8", format!("1x{ff}"), t, 0.0, 0.0);
        let (a, q, k, v) = smollm_attention(&ctx, 1, 1023)?;
        let o = ctx.empty(&[1, a.n_heads * a.head_dim], DType::F32)?;
        let t = b.time(&|s| {
            s.run(&a.fused(), &[("q", &q), ("k", &k), ("v", &v), ("o", &o)])?;
            s.run(&quantize, &[("x", &o), ("q", &qe)])
        })?;
        b.row(
            "q8_fusion",
            "attn_fused+quantize_q8",
            "decode at 1024".into(),
            t,
            0.0,
            0.0,
        );
        let t = b.time(&|s| {
            s.run(
                &a.fused_q8(),
                &[("q", &q), ("k", &k), ("v", &v), ("oq", &qe)],
            )
        })?;
        b.row(
            "q8_fusion",
            "attn_fused_q8",
            "decode at 1024".into(),
            t,
            0.0,
            0.0,
        );
    }
    if want("matvec") {
        // SmolLM2-135M's projection shapes (outputs x inputs) and its 49152 x 576 tied embedding.
        let shapes: &[(usize, usize)] = if opts.quick {
            &[(576, 576), (1536, 576), (49_152, 576)]
        } else {
            &[
                (576, 576),
                (192, 576),
                (1536, 576),
                (576, 1536),
                (49_152, 576),
            ]
        };
        for v in variant::of_kernel("matvec") {
            let f16_in = v.define("ELEM") == Some("f16");
            if (f16_in && !ctx.caps().f16) || (v.requires.subgroup && !ctx.caps().subgroup) {
                continue;
            }
            for &(n, k) in shapes {
                let (w, x) = weights(&ctx, n, k, f16_in)?;
                let y = ctx.empty(&[n], DType::F32)?;
                let t = b.time(&|s| {
                    s.run_with(
                        &Matvec {
                            dtype: w.dtype(),
                            n,
                            k,
                        },
                        Choice::Force(&v.name),
                        &[("w", &w), ("x", &x), ("y", &y)],
                    )
                })?;
                let es = if f16_in { 2 } else { 4 };
                b.row(
                    "matvec",
                    &v.name,
                    format!("{n}x{k}"),
                    t,
                    ((n * k + k) * es + 4 * n) as f64,
                    (2 * n * k) as f64,
                );
            }
        }
    }
    if want("qmatvec") {
        // Decode through SmolLM2's projection shapes and its 49152 x 576 tied embedding, per block format:
        // GB/s counts the packed weight bytes read (the activations are tiny beside them).
        let shapes: &[(usize, usize)] = if opts.quick {
            &[(1536, 576)]
        } else {
            &[(576, 576), (1536, 576), (576, 1536), (49_152, 576)]
        };
        for f in BlockFormat::ALL {
            for &(n, k) in shapes {
                if k % f.block_len() != 0 {
                    continue;
                }
                let w = f.quantize_to_vec(&ramp(n * k, 0.05)).expect("whole blocks");
                let tw = ctx.upload_blocks(&[n, k], f, &w)?;
                // 512 rows is llama-bench's pp512 prefill through this projection.
                let batches: &[usize] = if k == 576 && n != 1536 || opts.quick {
                    &[1, 8]
                } else {
                    &[1, 8, 512]
                };
                for &batch in batches {
                    let x = ctx.upload(&[batch, k], &ramp(batch * k, 1.0))?;
                    let y = ctx.empty(&[batch, n], DType::F32)?;
                    let kinds: &[&str] = if (n, k) == (1536, 576) && batch == 1 {
                        &["lanes", "shared", "subgroup"]
                    } else {
                        &["auto"]
                    };
                    for (name, kind) in matvec_kinds(&ctx, f, batch, kinds) {
                        let choice = kind_choice(kind, &name);
                        let unit = Qmatvec {
                            format: f,
                            act: DType::F32,
                            n,
                            k,
                            batch,
                        };
                        let plan = unit.plan(ctx.caps(), choice)?;
                        let t = b.time(&|s| {
                            s.run_with(&unit, choice, &[("w", &tw), ("x", &x), ("y", &y)])
                        })?;
                        b.row(
                            "qmatvec",
                            &plan.variant.name,
                            format!("{n}x{k} b{batch}"),
                            t,
                            w.len() as f64,
                            (2 * n * k * batch) as f64,
                        );
                    }
                    if batch > 8 {
                        // The GPU prefill kernel, on the same shapes, beside qmatvec's 8-row tiles.
                        let unit = Qmatmul {
                            format: f,
                            m: batch,
                            n,
                            k,
                        };
                        let plan = unit.plan(ctx.caps(), Choice::Auto)?;
                        let t = b.time(&|s| s.run(&unit, &[("a", &x), ("w", &tw), ("c", &y)]))?;
                        b.row(
                            "qmatmul",
                            &plan.variant.name,
                            format!("{n}x{k} m{batch}"),
                            t,
                            w.len() as f64,
                            (2 * n * k * batch) as f64,
                        );
                    }
                }
            }
        }
    }
    if want("qmatvec_q8") || want("quantize_q8") {
        // The 8-bit-activation decode product (what `wring generate` runs by default) on the same shapes, for
        // the formats it serves; the activations are quantized once beforehand (quantize_q8's own row times
        // that launch). GB/s counts the packed weight bytes read, as qmatvec's rows do, so the two compare.
        let shapes: &[(usize, usize)] = if opts.quick {
            &[(1536, 576)]
        } else {
            &[(576, 576), (1536, 576), (576, 1536), (49_152, 576)]
        };
        for &(n, k) in shapes {
            // 64 rows: a prefill's tiles of 8 side by side, as the model runs them (8 alone would leave
            // most of a CPU adapter's threads idle on the smaller shapes).
            for &batch in &[1usize, 64] {
                if batch > 1 && n > 4096 && opts.quick {
                    continue;
                }
                let x = ctx.upload(&[batch, k], &ramp(batch * k, 1.0))?;
                let quantize = QuantizeQ8 { k, rows: batch };
                let q = ctx.empty(&[quantize.words()], DType::U32)?;
                let plan = quantize.plan(ctx.caps(), Choice::Auto)?;
                let t = b.time(&|s| s.run(&quantize, &[("x", &x), ("q", &q)]))?;
                b.row(
                    "quantize_q8",
                    &plan.variant.name,
                    format!("{batch}x{k}"),
                    t,
                    (batch * k * 4 + quantize.words() * 4) as f64,
                    0.0,
                );
                let mut once = ctx.step("quantize once");
                once.run(&quantize, &[("x", &x), ("q", &q)])?;
                once.submit()?;
                let y = ctx.empty(&[batch, n], DType::F32)?;
                for &f in qmatvec_q8::FORMATS.iter() {
                    let w = f.quantize_to_vec(&ramp(n * k, 0.05)).expect("whole blocks");
                    let tw = ctx.upload_blocks(&[n, k], f, &w)?;
                    let kinds: &[&str] = if (n, k) == (1536, 576) && batch == 1 {
                        &["lanes", "swar", "shared", "subgroup"]
                    } else if batch > 1 {
                        &["lanes", "pairs"]
                    } else {
                        &["lanes", "swar"]
                    };
                    // The kinds are timed in rounds: their ratios are what the planner's choice rests on.
                    let unit = QmatvecQ8 {
                        format: f,
                        n,
                        k,
                        batch,
                    };
                    let kinds = matvec_kinds(&ctx, f, batch, kinds);
                    let choices: Vec<_> = kinds
                        .iter()
                        .map(|(name, kind)| kind_choice(kind, name))
                        .collect();
                    let records: Vec<Box<Record<'_>>> = choices
                        .iter()
                        .map(|&choice| {
                            let (unit, tw, q, y) = (&unit, &tw, &q, &y);
                            Box::new(move |s: &mut Step<'_>| {
                                s.run_with(unit, choice, &[("w", tw), ("x", q), ("y", y)])
                            }) as Box<Record<'_>>
                        })
                        .collect();
                    let refs: Vec<&Record<'_>> = records.iter().map(|r| r.as_ref()).collect();
                    let times = b.time_interleaved(&refs)?;
                    for (&choice, t) in choices.iter().zip(times) {
                        let plan = unit.plan(ctx.caps(), choice)?;
                        b.row(
                            "qmatvec_q8",
                            &plan.variant.name,
                            format!("{n}x{k} b{batch}"),
                            t,
                            w.len() as f64,
                            (2 * n * k * batch) as f64,
                        );
                    }
                }
            }
        }
    }
    if want("gmatvec") {
        // The sparse-outlier family on SmolLM2's shapes, per format below 4 bits: 4-bit affine groups of 32
        // (Q4_1's bytes, beside qmatvec's Q4_1 rows), SpQR w3 (bilevel statistics over 16 rows, permuted)
        // with no outliers and with 1 % (what the outlier pass costs), MixLLM rows (a tenth at 8 bits
        // beside 4-bit groups of 64), GQSA (half of each row's groups of 32 pruned) and trellis codes at 2,
        // 3 and 4 bits (tmatvec). Batches of 1 (decode),
        // 8 and 64 (prefill: gmatmul on GPUs, gmatvec's 8-row tiles on CPU adapters, as the model runs
        // them). GB/s counts every stored word the product reads.
        use wring_quant::gptq::{Config, Hessian, Method, quantize, quantize_rows};
        use wring_runtime::kernels::sparse::{Gmatmul, Gmatvec, Tmatmul, Tmatvec};
        let shapes: &[(usize, usize)] = if opts.quick {
            &[(1536, 576)]
        } else {
            &[(576, 576), (1536, 576), (576, 1536)]
        };
        for &(n, k) in shapes {
            let w = ramp(n * k, 0.05);
            let h = Hessian::identity(k);
            let spqr = Config {
                method: Method::Rtn,
                outlier_threshold: None,
                ..Config::spqr(3)
            };
            let mixed = Config {
                method: Method::Rtn,
                ..Config::mixllm(0.1)
            };
            let widths: Vec<u8> = (0..n).map(|r| if r % 10 == 0 { 8 } else { 4 }).collect();
            let quantized =
                |cfg: &Config, widths: &[u8]| quantize_rows(&w, n, k, &h, cfg, widths).map(|q| q.0);
            let mut formats = vec![
                (
                    "rtn4 g32",
                    quantize(&w, n, k, &h, &Config::plain(Method::Rtn, 4, 32)).map(|q| q.0),
                ),
                ("spqr3 0% outliers", quantized(&spqr, &[])),
            ];
            // 1 % of the weights as outliers, spread over the rows and columns.
            let with_outliers = quantized(&spqr, &[]).map(|mut m| {
                let per_row = k / 100;
                let mut offsets = vec![(n + 1) as u32];
                let mut entries = Vec::new();
                for r in 0..n {
                    for e in 0..per_row {
                        let col = ((r * 37 + e * 101) % k) as u32;
                        entries.push(col | (u32::from(f16::from_f32(0.01).to_bits()) << 16));
                    }
                    offsets.push(offsets[0] + entries.len() as u32);
                }
                offsets.extend(entries);
                m.outliers = offsets;
                m
            });
            formats.push(("spqr3 1% outliers", with_outliers));
            formats.push(("mixllm 4/8 10%", quantized(&mixed, &widths)));
            let pruned = Config {
                method: Method::Rtn,
                ..Config::gqsa(0.5)
            };
            formats.push(("gqsa4 g32 50%", quantized(&pruned, &[])));
            // Trellis codes (tmatvec): decoding costs the same whatever the state width; 12-bit states
            // keep the bench's encoding to seconds.
            for bits in 2..=4 {
                let label = ["trellis2 L12", "trellis3 L12", "trellis4 L12"][bits as usize - 2];
                formats.push((label, quantized(&Config::trellis(bits, 12, 1), &[])));
            }
            // The kernel matmul_weights runs for a group or trellis matrix and a batch on this adapter.
            let plan_of = |m: &wring_quant::group::GroupMatrix,
                           batch: usize|
             -> wring_runtime::Result<(
                &'static str,
                wring_runtime::kernels::Plan,
            )> {
                let unit = Gmatvec::of(m, batch);
                let trellis = Tmatvec {
                    layout: m.layout,
                    batch,
                };
                let one = batch == 1 || ctx.caps().software;
                Ok(match m.layout.stats {
                    wring_quant::group::Stats::Trellis { .. } if one => {
                        ("tmatvec", trellis.plan(ctx.caps(), Choice::Auto)?)
                    }
                    wring_quant::group::Stats::Trellis { .. } => {
                        ("tmatmul", Tmatmul(trellis).plan(ctx.caps(), Choice::Auto)?)
                    }
                    _ if one => ("gmatvec", unit.plan(ctx.caps(), Choice::Auto)?),
                    _ => ("gmatmul", Gmatmul(unit).plan(ctx.caps(), Choice::Auto)?),
                })
            };
            let formats = formats
                .into_iter()
                .map(|(label, m)| {
                    let m = m.map_err(|e| wring_runtime::Error::Shape(e.to_string()))?;
                    let gw = wring_runtime::dispatch::GroupWeights::upload(&ctx, &m)?;
                    Ok((label, m, gw))
                })
                .collect::<wring_runtime::Result<Vec<_>>>()?;
            // Decode (one activation row): every format timed in rounds with the Q4_1 products the model
            // would otherwise run (qmatvec on f32 activations, as gmatvec takes them, and qmatvec_q8 on
            // activations quantized once beforehand, `wring generate`'s default), on the same weights as
            // the 4-bit groups of 32, so a shared host's drift shifts them all alike and the ratios hold.
            let x = ctx.upload(&[1, k], &ramp(k, 1.0))?;
            let y = ctx.empty(&[1, n], DType::F32)?;
            let q41 = BlockFormat::Q4_1;
            let wq = q41.quantize_to_vec(&w).expect("whole blocks");
            let tw = ctx.upload_blocks(&[n, k], q41, &wq)?;
            let quantize = QuantizeQ8 { k, rows: 1 };
            let xq = ctx.empty(&[quantize.words()], DType::U32)?;
            let mut once = ctx.step("quantize once");
            once.run(&quantize, &[("x", &x), ("q", &xq)])?;
            once.submit()?;
            let plain = Qmatvec {
                format: q41,
                act: DType::F32,
                n,
                k,
                batch: 1,
            };
            let q8 = QmatvecQ8 {
                format: q41,
                n,
                k,
                batch: 1,
            };
            let mut records: Vec<Box<Record<'_>>> = formats
                .iter()
                .map(|(_, _, gw)| {
                    let weights = wring_runtime::dispatch::Weights::Group(Box::new(gw.clone()));
                    let (x, y) = (&x, &y);
                    Box::new(move |s: &mut Step<'_>| {
                        wring_runtime::dispatch::matmul_weights(s, &weights, x, y)
                    }) as Box<Record<'_>>
                })
                .collect();
            records.push(Box::new(|s: &mut Step<'_>| {
                s.run(&plain, &[("w", &tw), ("x", &x), ("y", &y)])
            }));
            records.push(Box::new(|s: &mut Step<'_>| {
                s.run(&q8, &[("w", &tw), ("x", &xq), ("y", &y)])
            }));
            let refs: Vec<&Record<'_>> = records.iter().map(|r| r.as_ref()).collect();
            let times = b.time_interleaved(&refs)?;
            for ((label, m, _), &t) in formats.iter().zip(&times) {
                let (kernel, plan) = plan_of(m, 1)?;
                b.row(
                    kernel,
                    &plan.variant.name,
                    format!("{n}x{k} b1 {label}"),
                    t,
                    m.bits_per_weight() * (n * k) as f64 / 8.0,
                    (2 * n * k) as f64,
                );
            }
            let tail = &times[formats.len()..];
            for ((kernel, plan), &t) in [
                ("qmatvec", plain.plan(ctx.caps(), Choice::Auto)?),
                ("qmatvec_q8", q8.plan(ctx.caps(), Choice::Auto)?),
            ]
            .into_iter()
            .zip(tail)
            {
                b.row(
                    kernel,
                    &plan.variant.name,
                    format!("{n}x{k} b1 (beside gmatvec)"),
                    t,
                    wq.len() as f64,
                    (2 * n * k) as f64,
                );
            }
            for (label, m, gw) in &formats {
                let bytes = m.bits_per_weight() * (n * k) as f64 / 8.0;
                for batch in [8usize, 64] {
                    let x = ctx.upload(&[batch, k], &ramp(batch * k, 1.0))?;
                    let y = ctx.empty(&[batch, n], DType::F32)?;
                    let (kernel, plan) = plan_of(m, batch)?;
                    let t = b.time(&|s| {
                        wring_runtime::dispatch::matmul_weights(
                            s,
                            &wring_runtime::dispatch::Weights::Group(Box::new(gw.clone())),
                            &x,
                            &y,
                        )
                    })?;
                    b.row(
                        kernel,
                        &plan.variant.name,
                        format!("{n}x{k} b{batch} {label}"),
                        t,
                        bytes,
                        (2 * n * k * batch) as f64,
                    );
                }
            }
        }
    }
    if want("tviterbi") {
        // The trellis encoder: the device's tviterbi against the CPU encoder on this machine's threads
        // (wring_quant::trellis::cpu_encoder), on the same tiles, for the state widths `wring quantize`
        // uses. `wring quantize` encodes on the device only where it is a GPU; this row is the timing that
        // choice rests on. GFLOP/s counts 2 x 2^L operations per weight and pass.
        use wring_quant::trellis;
        use wring_runtime::kernels::sparse::Tviterbi;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let states: &[u32] = if opts.quick { &[12] } else { &[12, 16] };
        for &state in states {
            let tiles = if state > 12 { 16 } else { 64 };
            let x: Vec<i32> = ramp(tiles * trellis::SEQ, 2.0)
                .into_iter()
                .map(trellis::to_fixed)
                .collect();
            let unit = Tviterbi {
                bits: 2,
                state,
                tiles,
            };
            let tx = ctx.upload(&[x.len()], &x)?;
            let ts = ctx.empty(&[tiles * trellis::tile_words(2)], DType::U32)?;
            let scratch = wring_runtime::dispatch::TviterbiScratch::new(&ctx, &unit)?;
            let time = b.time(&|s| scratch.run(s, &unit, &tx, &ts))?;
            let ops = (4usize << state) as f64 * (tiles * trellis::SEQ) as f64;
            let plan = unit.plan(ctx.caps(), Choice::Auto)?;
            let shape = format!("{tiles} tiles K=2 L={state}");
            b.row(
                "tviterbi",
                &plan.variant.name,
                shape.clone(),
                time,
                0.0,
                ops,
            );
            let mut enc = trellis::cpu_encoder(2, state, threads)
                .map_err(|e| wring_runtime::Error::Shape(e.to_string()))?;
            let mut cpu = Vec::new();
            for _ in 0..3 {
                let start = Instant::now();
                enc(&x).map_err(|e| wring_runtime::Error::Shape(e.to_string()))?;
                cpu.push(start.elapsed().as_secs_f64());
            }
            cpu.sort_by(f64::total_cmp);
            b.row(
                "tviterbi",
                &format!("cpu encoder ({threads} threads)"),
                shape,
                (cpu[1], cpu[0], cpu.len()),
                0.0,
                ops,
            );
        }
    }
    let mut matmul_best = 0.0f64;
    if want("matmul") {
        // (m, n, k): a 512-token prefill through SmolLM2's projections, and square sizes.
        let shapes: &[(usize, usize, usize)] = if opts.quick {
            &[(128, 576, 576)]
        } else {
            &[
                (512, 576, 576),
                (512, 1536, 576),
                (512, 576, 1536),
                (256, 256, 256),
                (1024, 1024, 1024),
            ]
        };
        for v in variant::of_kernel("matmul") {
            let f16_in = v.define("ELEM") == Some("f16");
            if f16_in && !ctx.caps().f16 {
                continue;
            }
            for &(m, n, k) in shapes {
                let (a, _) = weights(&ctx, m, k, f16_in)?;
                let (w, _) = weights(&ctx, n, k, f16_in)?;
                let c = ctx.empty(&[m, n], DType::F32)?;
                let t = b.time(&|s| {
                    s.run_with(
                        &Matmul {
                            dtype: a.dtype(),
                            m,
                            n,
                            k,
                        },
                        Choice::Force(&v.name),
                        &[("a", &a), ("b", &w), ("c", &c)],
                    )
                })?;
                let es = if f16_in { 2 } else { 4 };
                let flops = (2 * m * n * k) as f64;
                matmul_best = matmul_best.max(flops / t.0 / 1e9);
                b.row(
                    "matmul",
                    &v.name,
                    format!("{m}x{n}x{k}"),
                    t,
                    ((m * k + n * k) * es + 4 * m * n) as f64,
                    flops,
                );
            }
        }
    }
    if want("rmsnorm") || want("softmax") {
        let shapes: &[(usize, usize)] = if opts.quick {
            &[(64, 576)]
        } else {
            &[(512, 576), (1, 576), (8, 49_152)]
        };
        for &(rows, n) in shapes {
            let x = ctx.upload(&[rows, n], &ramp(rows * n, 3.0))?;
            let w = ctx.upload(&[n], &ramp(n, 1.0))?;
            let (y, sum) = (
                ctx.empty(&[rows, n], DType::F32)?,
                ctx.empty(&[rows, n], DType::F32)?,
            );
            let units = ctx.empty(&[q8::words(rows * n)], DType::U32)?;
            for kernel in ["rmsnorm", "softmax"] {
                if !want(kernel) {
                    continue;
                }
                for v in variant::of_kernel(kernel) {
                    if v.requires.subgroup && !ctx.caps().subgroup {
                        continue;
                    }
                    let residual = v.define("RESIDUAL").is_some();
                    let q8out = v.define("Q8OUT").is_some();
                    let t = if kernel == "rmsnorm" {
                        let unit = Rmsnorm {
                            n,
                            rows,
                            eps: 1e-5,
                            residual,
                        };
                        let mut ops = vec![("x", &x), ("w", &w)];
                        if residual {
                            ops.extend([("r", &x), ("s", &sum)]);
                        }
                        if q8out {
                            ops.push(("q", &units));
                            b.time(&|s| s.run_with(&RmsnormQ8(unit), Choice::Force(&v.name), &ops))?
                        } else {
                            ops.push(("y", &y));
                            b.time(&|s| s.run_with(&unit, Choice::Force(&v.name), &ops))?
                        }
                    } else {
                        let unit = Softmax {
                            n,
                            rows,
                            scale: 0.125,
                        };
                        b.time(&|s| {
                            s.run_with(&unit, Choice::Force(&v.name), &[("x", &x), ("y", &y)])
                        })?
                    };
                    // Bytes moved: read x and write y (12 words per 32 values as 8-bit units), plus read r
                    // and write s with a residual.
                    let out = if q8out {
                        6 * rows * n / 4
                    } else {
                        4 * rows * n
                    };
                    let bytes = 4 * rows * n + out + if residual { 8 * rows * n } else { 0 };
                    b.row(kernel, &v.name, format!("{rows}x{n}"), t, bytes as f64, 0.0);
                }
            }
        }
    }
    if want("rope") {
        for v in variant::of_kernel("rope") {
            let mode = if v.name == "neox" {
                RopeMode::Neox
            } else {
                RopeMode::Normal
            };
            let r = Rope {
                mode,
                tokens: 512,
                n_heads: 9,
                head_dim: 64,
                n_dims: 64,
                freq_base: 100_000.0,
                freq_scale: 1.0,
            };
            let n = r.tokens * r.n_heads * r.head_dim;
            let x = ctx.upload(&[r.tokens, r.n_heads, r.head_dim], &ramp(n, 1.0))?;
            let pos = ctx.upload(&[r.tokens], &(0..r.tokens as i32).collect::<Vec<_>>())?;
            let y = ctx.empty(&[r.tokens, r.n_heads, r.head_dim], DType::F32)?;
            let t = b.time(&|s| {
                s.run_with(
                    &r,
                    Choice::Force(&v.name),
                    &[("x", &x), ("pos", &pos), ("y", &y)],
                )
            })?;
            b.row(
                "rope",
                &v.name,
                "512x9x64".into(),
                t,
                (8 * n + 4 * r.tokens) as f64,
                0.0,
            );
        }
    }
    if want("attention") {
        // SmolLM2's heads (9 query over 3 key/value, 64 dims): one decode token against 512 cached positions,
        // and a 128-token prefill. GB/s counts the cache read once.
        for (tokens, pos0) in [(1usize, 511usize), (128, 0)] {
            let (a, q, kc, vc) = smollm_attention(&ctx, tokens, pos0)?;
            let s1 = ctx.empty(&[tokens * 9 * a.kv_len], DType::F32)?;
            let s2 = ctx.empty(&[tokens * 9 * a.kv_len], DType::F32)?;
            let o = ctx.empty(&[tokens * 9 * 64], DType::F32)?;
            let t = b.time(&|s| wring_llm::layers::attention(s, &a, &q, &kc, &vc, &s1, &s2, &o))?;
            let flops = (4 * tokens * 9 * a.kv_len * 64) as f64;
            let shape = format!("t{tokens} kv{}", a.kv_len);
            let cache_bytes = (a.kv_len * 3 * 64 * 4) as f64;
            b.row(
                "attention",
                "scores+softmax+pv",
                shape.clone(),
                t,
                2.0 * cache_bytes,
                flops,
            );
            // The two attention kernels on their own: each reads the cache once and half the flops.
            let t = b.time(&|s| s.run(&a.scores(), &[("q", &q), ("k", &kc), ("s", &s1)]))?;
            b.row(
                "attn_scores",
                "f32",
                shape.clone(),
                t,
                cache_bytes,
                flops / 2.0,
            );
            let t = b.time(&|s| s.run(&a.pv(), &[("p", &s2), ("v", &vc), ("o", &o)]))?;
            b.row("attn_pv", "f32", shape, t, cache_bytes, flops / 2.0);
        }
    }
    if want("attn_fused") {
        // The one-launch attention's variants on SmolLM2's heads: decoding deep in a 2,048-position cache,
        // and a 512-token prefill (the causal half of the scores: flops count the keys each query sees).
        for (tokens, pos0) in [(1usize, 2047usize), (512, 0)] {
            let (a, q, kc, vc) = smollm_attention(&ctx, tokens, pos0)?;
            let o = ctx.empty(&[tokens * 9 * 64], DType::F32)?;
            let seen: usize = (0..tokens).map(|t| pos0 + t + 1).sum();
            let flops = (4 * 9 * seen * 64) as f64;
            let cache_bytes = (a.kv_len * 3 * 64 * 4 * 2) as f64;
            for v in variant::of_kernel("attn_fused") {
                // The _q8 forms are timed against attn_fused + quantize_q8 in `q8_fusion`.
                if v.define("HD").is_some_and(|hd| hd != "64") || v.define("Q8OUT").is_some() {
                    continue;
                }
                let f = a.fused();
                let operands = [("q", &q), ("k", &kc), ("v", &vc), ("o", &o)];
                let t = b.time(&|s| s.run_with(&f, Choice::Force(&v.name), &operands))?;
                b.row(
                    "attn_fused",
                    &v.name,
                    format!("t{tokens} kv{}", a.kv_len),
                    t,
                    cache_bytes,
                    flops,
                );
            }
        }
    }
    if want("rope_qkv") {
        // A 512-token prefill of SmolLM2's fused q|k|v projection output: rotate q and k, append k and v.
        let (t, h, hkv, hd) = (512usize, 9usize, 3usize, 64usize);
        let row = (h + 2 * hkv) * hd;
        let qkv = ctx.upload(&[t, row], &ramp(t * row, 1.0))?;
        let pos = ctx.upload(&[t], &(0..t as i32).collect::<Vec<_>>())?;
        let q_out = ctx.empty(&[t * h * hd], DType::F32)?;
        let kc = ctx.empty(&[t * hkv * hd], DType::F32)?;
        let vc = ctx.empty(&[t * hkv * hd], DType::F32)?;
        for v in variant::of_kernel("rope_qkv") {
            let mode = if v.name.starts_with("neox") {
                RopeMode::Neox
            } else {
                RopeMode::Normal
            };
            let rope = Rope {
                mode,
                tokens: t,
                n_heads: h,
                head_dim: hd,
                n_dims: hd,
                freq_base: 100_000.0,
                freq_scale: 1.0,
            };
            let strided = |offset| wring_runtime::kernels::Strided {
                stride: row,
                offset,
            };
            // The extended glue timed at its dearest: biases, Qwen3's q/k norm and frequency factors.
            let extras = v.name.ends_with("_ext").then_some(
                wring_runtime::kernels::tensor::rope::QkvExtras {
                    qk_norm: true,
                    norm_eps: 1e-6,
                    mscale: 1.0,
                },
            );
            let unit = RopeQkv {
                rope,
                n_kv_heads: hkv,
                cache_pos: 0,
                q: strided(0),
                k: strided(h * hd),
                v: strided((h + hkv) * hd),
                extras,
            };
            let extra = unit.extra_vector([&[], &[], &[]], [&[], &[]], &[])?;
            let extra = ctx.upload(&[extra.len()], &extra)?;
            let mut operands = vec![
                ("q", &qkv),
                ("k", &qkv),
                ("v", &qkv),
                ("pos", &pos),
                ("q_out", &q_out),
                ("k_cache", &kc),
                ("v_cache", &vc),
            ];
            if extras.is_some() {
                operands.push(("extra", &extra));
            }
            let tm = b.time(&|s| s.run_with(&unit, Choice::Force(&v.name), &operands))?;
            b.row(
                "rope_qkv",
                &v.name,
                format!("{t}x{row}"),
                tm,
                (8 * t * row) as f64,
                0.0,
            );
        }
    }
    if want("get_rows") {
        // The Q8_0 token embedding of SmolLM2 (49152 x 576) gathered for a 512-token prompt.
        let (rows, k, tokens) = (49_152usize, 576usize, 512usize);
        let f = BlockFormat::Q8_0;
        let table = ctx.upload_blocks(
            &[rows, k],
            f,
            &f.quantize_to_vec(&ramp(rows * k, 0.05))
                .expect("whole blocks"),
        )?;
        let ids = ctx.upload(
            &[tokens],
            &(0..tokens as u32)
                .map(|i| i * 97 % rows as u32)
                .collect::<Vec<_>>(),
        )?;
        let out = ctx.empty(&[tokens, k], DType::F32)?;
        let unit = GetRows {
            table: table.dtype(),
            rows,
            k,
            tokens,
            scale: 1.0,
        };
        let t = b.time(&|s| s.run(&unit, &[("w", &table), ("ids", &ids), ("out", &out)]))?;
        b.row(
            "get_rows",
            "q8_0",
            format!("{tokens} of {rows}x{k}"),
            t,
            (tokens * (k / 32 * 34 + k * 4)) as f64,
            0.0,
        );
    }
    if want("dwt") {
        // One level of bior4.4 (10 taps) along each axis of a 2048 x 2048 image, in periodization: GB/s
        // counts the samples read and written once.
        let (hgt, wid) = (2048usize, 2048usize);
        let wav = Wavelet::Bior4_4;
        let filters = ctx.upload(&[4 * wav.taps()], &wav.filter_bank())?;
        for v in variant::of_kernel("dwt") {
            let f16_in = v.define("ELEM") == Some("f16");
            if (f16_in && !ctx.caps().f16) || v.define_u32("TAPS") as usize != wav.taps() {
                continue;
            }
            let dt = if f16_in { DType::F16 } else { DType::F32 };
            let forward = v.define("INVERSE").is_none();
            // Along rows: [hgt][wid] in, two bands [2][hgt][wid / 2] out (or back).
            let m = Mode::Periodization.coeffs(wid, wav.taps());
            let d = Dwt {
                wavelet: wav,
                mode: Mode::Periodization,
                forward,
                dtype: dt,
                n: wid,
                outer_hi: 1,
                outer_lo: hgt,
                inner: 1,
                band_stride: hgt * m,
                hi_stride: 0,
                lo_stride: m,
                k_stride: 1,
            };
            let data = ramp(hgt * wid, 1.0);
            let (src, dst) = if f16_in {
                (
                    ctx.upload(&[hgt * wid], &to_f16(&data))?,
                    ctx.empty(&[2 * hgt * m], dt)?,
                )
            } else {
                (
                    ctx.upload(&[hgt * wid], &data)?,
                    ctx.empty(&[2 * hgt * m], dt)?,
                )
            };
            let (src, dst) = if forward { (src, dst) } else { (dst, src) };
            let operands = [("filters", &filters), ("src", &src), ("dst", &dst)];
            let t = b.time(&|s| s.run_with(&d, Choice::Force(&v.name), &operands))?;
            let bytes = (2 * hgt * wid * dt.size()) as f64;
            b.row("dwt", &v.name, format!("{hgt}x{wid} rows"), t, bytes, 0.0);
        }
    }
    if want("vq") {
        vq_rows(&ctx, &mut b, opts.quick)?;
    }
    // Every kernel the build produced should have a row; say which do not, rather than hide them.
    let mut missing: Vec<String> = variant::all()
        .map(|v| v.kernel.to_string())
        .filter(|k| want(k) && !b.rows.iter().any(|r| &r.kernel == k))
        .collect();
    missing.dedup();
    if !missing.is_empty() {
        println!(
            "kernels without a bench row in this run: {}",
            missing.join(", ")
        );
    }
    Ok(Report {
        adapter: info.adapter.name.clone(),
        backend: format!("{:?}", info.adapter.backend),
        device_type: format!("{:?}", info.adapter.device_type),
        driver: info.adapter.driver.clone(),
        driver_info: info.adapter.driver_info.clone(),
        timer: if info.timestamps {
            "gpu-timestamp"
        } else {
            "wall-clock"
        },
        copy_gb_per_s: copy_gbs,
        dma_copy_gb_per_s: dma_best,
        dispatch_overhead_us,
        matmul_gflop_per_s: matmul_best,
        rows: b.rows,
    })
}

/// Rows for the copy kernel's variants and the DMA copy at each size (capped at the storage binding
/// limit), keeping the best copy-kernel bandwidth in `b.copy_gbs`; returns the best DMA bandwidth.
fn copy_rows(b: &mut Bench<'_>, sizes_mib: &[u64]) -> wring_runtime::Result<f64> {
    let ctx = b.ctx;
    let limit = ctx.info().limits.max_storage_buffer_binding_size;
    let mut dma_best = 0.0f64;
    for &mib in sizes_mib {
        let bytes = (mib << 20).min(limit);
        let words = (bytes / 4) as usize;
        let src = ctx.upload(&[words], &vec![1u32; words])?;
        let dst = ctx.empty(&[words], DType::U32)?;
        for v in variant::of_kernel("copy") {
            let t = b.time(&|s| {
                s.run_with(
                    &CopyWords::new(words),
                    Choice::Force(&v.name),
                    &[("src", &src), ("dst", &dst)],
                )
            })?;
            b.copy_gbs = b.copy_gbs.max(2.0 * bytes as f64 / t.0 / 1e9);
            b.row(
                "copy",
                &v.name,
                format!("{mib} MiB"),
                t,
                2.0 * bytes as f64,
                0.0,
            );
        }
        let t = b.time(&|s| s.copy(&src, &dst))?;
        dma_best = dma_best.max(2.0 * bytes as f64 / t.0 / 1e9);
        b.row(
            "copy",
            "dma",
            format!("{mib} MiB"),
            t,
            2.0 * bytes as f64,
            0.0,
        );
    }
    Ok(dma_best)
}

/// The copy kernel's best bandwidth (read + write, GB/s) over its variants on 64 MiB (16 MiB in a quick
/// run), on a context of its own: the roofline the LLM bench's decode bound refers to, measured the way
/// the kernel suite measures it.
#[allow(
    dead_code,
    reason = "xtask's LLM bench calls it; `cargo bench`, which compiles this file too, does not"
)]
pub fn copy_bandwidth(quick: bool) -> wring_runtime::Result<f64> {
    let ctx = Context::new(ContextOptions {
        profile: true,
        ..Default::default()
    })?;
    let mut b = Bench {
        ctx: &ctx,
        reps: if quick { 10 } else { 20 },
        rows: Vec::new(),
        copy_gbs: 0.0,
    };
    copy_rows(&mut b, &[if quick { 16 } else { 64 }])?;
    Ok(b.copy_gbs)
}

/// Wall-clock cost of one tiny launch inside a step of 200 (a fill of 64 words each), after a device wait,
/// on a context without timestamps: what every launch of a decode step pays beyond its own work.
pub fn dispatch_overhead_us() -> wring_runtime::Result<f64> {
    let launches = 200;
    let plain = Context::new(ContextOptions::default())?;
    let tiny = plain.empty(&[64], DType::U32)?;
    let fill = |value: u32| Fill {
        words: tiny.len(),
        value,
    };
    let mut s = plain.step("overhead warm-up");
    s.run(&fill(0), &[("dst", &tiny)])?;
    s.submit()?;
    plain.wait()?;
    let start = Instant::now();
    let mut s = plain.step("overhead");
    for i in 0..launches {
        s.run(&fill(i), &[("dst", &tiny)])?;
    }
    s.submit()?;
    plain.wait()?;
    let us = start.elapsed().as_secs_f64() / f64::from(launches) * 1e6;
    println!("dispatch overhead: {us:.1} us per launch ({launches} launches in one step)");
    Ok(us)
}

/// The quantized matvecs' variants to time, by kind (`lanes`, `shared`, `subgroup`, `pairs`, or `auto`
/// for the planner's own choice), with the name a forced kind resolves to; subgroup kinds only where the
/// adapter has subgroups.
fn matvec_kinds<'k>(
    ctx: &Context,
    f: BlockFormat,
    batch: usize,
    kinds: &[&'k str],
) -> Vec<(String, &'k str)> {
    kinds
        .iter()
        .filter(|&&kind| kind != "subgroup" || ctx.caps().subgroup)
        .map(|&kind| {
            let name = format!("{}_b{}_{kind}", DType::Block(f).name(), batch.min(8));
            (name, kind)
        })
        .collect()
}

/// The choice that times kind `kind` (whose variant is `name`): the planner's for `auto`.
fn kind_choice<'n>(kind: &str, name: &'n str) -> Choice<'n> {
    if kind == "auto" {
        Choice::Auto
    } else {
        Choice::Force(name)
    }
}

fn weights(
    ctx: &Context,
    n: usize,
    k: usize,
    f16_in: bool,
) -> wring_runtime::Result<(Tensor, Tensor)> {
    let w = ramp(n * k, 0.05);
    let x = ramp(k, 1.0);
    if f16_in {
        Ok((
            ctx.upload(&[n, k], &to_f16(&w))?,
            ctx.upload(&[k], &to_f16(&x))?,
        ))
    } else {
        Ok((ctx.upload(&[n, k], &w)?, ctx.upload(&[k], &x)?))
    }
}

/// The VQ kernels at a 4096-query, 1024-codeword, 128-dimension top-10 L2 search (the middle of
/// `cargo xtask bench vq`'s shapes, which time whole searches against faiss): each kernel of the search
/// alone, then the norms, lookup and k-means update on the same data. GB/s counts the bytes each must
/// read and write at least; the search's GFLOP/s is 2 * queries * codewords * d.
fn vq_rows(ctx: &Context, b: &mut Bench<'_>, quick: bool) -> wring_runtime::Result<()> {
    use wring_runtime::kernels::vq::{
        Lookup, LookupOp, Merge, Metric, Norms, Refine, Search, Update, vq,
    };
    let (nq, n, d, k) = if quick {
        (1024, 1024, 128, 10)
    } else {
        (4096, 1024, 128, 10)
    };
    let x = ctx.upload(&[nq, d], &ramp(nq * d, 1.0))?;
    let codes = ctx.upload(&[n, d], &ramp(n * d, 0.9))?;
    let cnorm = ctx.empty(&[n], DType::F32)?;
    let norms = Norms {
        rows: n,
        d,
        stride: d,
        offset: 0,
        dtype: DType::F32,
    };
    let t = b.time(&|s| s.run(&norms, &[("x", &codes), ("out", &cnorm)]))?;
    b.row(
        "vq_norms",
        "f32",
        format!("{n}x{d}"),
        t,
        (4 * n * d + 4 * n) as f64,
        0.0,
    );
    let split_len = Search::split_len_for(nq, n, ctx.caps());
    let search = Search {
        nq,
        d,
        x_stride: d,
        x_offset: 0,
        n_codes: n,
        code_base: 0,
        split_len,
        k,
        metric: Metric::L2,
        lists: 0,
        list_base: 0,
        dtype: DType::F32,
    };
    let search = Search {
        lists: search.launch_lists(),
        ..search
    };
    let scratch = nq * search.lists * k;
    let (keys, ids) = (
        ctx.empty(&[scratch], DType::F32)?,
        ctx.empty(&[scratch], DType::U32)?,
    );
    let (dist, idx) = (
        ctx.empty(&[nq * k], DType::F32)?,
        ctx.empty(&[nq * k], DType::U32)?,
    );
    let shape = format!("{nq}q {n}x{d} k{k}");
    let operands = [
        ("x", &x),
        ("codes", &codes),
        ("cnorm", &cnorm),
        ("keys", &keys),
        ("ids", &ids),
    ];
    let plan = search.plan(ctx.caps(), Choice::Auto)?;
    let t = b.time(&|s| s.run(&search, &operands))?;
    let flops = (2 * nq * n * d) as f64;
    b.row(
        "vq_search",
        &plan.variant.name,
        shape.clone(),
        t,
        (4 * (nq + n) * d + 8 * scratch) as f64,
        flops,
    );
    let merge = Merge {
        nq,
        lists: search.lists,
        k,
        metric: Metric::L2,
        d,
        x_stride: d,
        x_offset: 0,
    };
    let operands = [
        ("x", &x),
        ("keys", &keys),
        ("ids", &ids),
        ("dist", &dist),
        ("idx", &idx),
    ];
    let plan = merge.plan(ctx.caps(), Choice::Auto)?;
    let t = b.time(&|s| s.run(&merge, &operands))?;
    b.row(
        "vq_merge",
        &plan.variant.name,
        shape.clone(),
        t,
        (8 * scratch + 8 * nq * k) as f64,
        0.0,
    );
    let refine = Refine {
        nq,
        k,
        d,
        x_stride: d,
        x_offset: 0,
        code_base: 0,
        n_codes: n,
        dtype: DType::F32,
    };
    // The refinement reads each chosen codeword; initialise the ids so that they are in range.
    let ids_in_range: Vec<u32> = (0..nq * k).map(|i| (i * 7 % n) as u32).collect();
    ctx.write(&idx, &ids_in_range)?;
    let operands = [("x", &x), ("codes", &codes), ("idx", &idx), ("dist", &dist)];
    let t = b.time(&|s| s.run(&refine, &operands))?;
    b.row(
        "vq_refine",
        "f32",
        shape,
        t,
        (4 * nq * k * (d + 2) + 4 * nq * d) as f64,
        0.0,
    );
    let out = ctx.empty(&[nq, d], DType::F32)?;
    let lookup = Lookup {
        n: nq,
        d,
        out_stride: d,
        out_offset: 0,
        code_base: 0,
        n_codes: n,
        op: LookupOp::Sub,
        dtype: DType::F32,
    };
    let ids1 = ctx.upload(&[nq], &ids_in_range[..nq])?;
    let t = b.time(&|s| s.run(&lookup, &[("ids", &ids1), ("codes", &codes), ("out", &out)]))?;
    b.row(
        "vq_lookup",
        "f32",
        format!("{nq}x{d} sub"),
        t,
        (12 * nq * d) as f64,
        0.0,
    );
    let assign: Vec<u32> = (0..nq).map(|i| (i * 7 % n) as u32).collect();
    let (order, offsets) = vq::group_by_cluster(&assign, n);
    let (to, toff) = (ctx.upload(&[nq], &order)?, ctx.upload(&[n + 1], &offsets)?);
    let cent = ctx.empty(&[n, d], DType::F32)?;
    let update = Update {
        k: n,
        d,
        x_stride: d,
        x_offset: 0,
        points: nq,
    };
    let operands = [
        ("x", &x),
        ("order", &to),
        ("offsets", &toff),
        ("centroids", &cent),
    ];
    let t = b.time(&|s| s.run(&update, &operands))?;
    b.row(
        "vq_update",
        "f32",
        format!("{nq} points {n}x{d}"),
        t,
        (4 * nq * d + 4 * n * d) as f64,
        0.0,
    );
    Ok(())
}

/// An attention launch on SmolLM2's heads (9 query over 3 key/value heads of 64) for `tokens` queries after
/// `pos0` cached positions, with its query and filled key and value caches uploaded.
fn smollm_attention(
    ctx: &Context,
    tokens: usize,
    pos0: usize,
) -> wring_runtime::Result<(Attention, Tensor, Tensor, Tensor)> {
    let a = Attention {
        tokens,
        kv_len: pos0 + tokens,
        n_heads: 9,
        n_kv_heads: 3,
        head_dim: 64,
        pos0,
        scale: 0.125,
        softcap: 0.0,
        window: 0,
    };
    let q = ctx.upload(&[tokens * 9 * 64], &ramp(tokens * 9 * 64, 1.0))?;
    let kc = ctx.upload(&[a.kv_len * 3 * 64], &ramp(a.kv_len * 3 * 64, 1.0))?;
    let vc = ctx.upload(&[a.kv_len * 3 * 64], &ramp(a.kv_len * 3 * 64, 1.0))?;
    Ok((a, q, kc, vc))
}

//! `cargo xtask bench kv`: the KV cache's modes against the f16 cache with the streaming protocol (each
//! chunk run 32 tokens at a time, the past stored in the mode's form between steps and every step scored
//! against it), on the first 4,096 tokens of *Around the World in Eighty Days* (tests/fixtures/
//! eighty_days_eval.txt) at contexts 512 (8 chunks) and 2048 (2 chunks). Per mode: KV bytes per token
//! with every code and statistic counted, the device bytes of the whole cache at a 4,096-token context
//! (including a packed mode's f32 working cache), perplexity, ΔPPL, mean KLD and top-1 agreement against
//! the f16 cache's distributions, and decode tokens/s with 512 and 4,000 positions cached. Modes named
//! `paged:MODE` run the paged cache of continuous batching (`Llama::set_paged`, blocks of the mode's
//! `paged_block`) as one sequence through `Llama::forward_paged`, so that its packed attention is scored
//! by the same protocol (`--only paged` runs those alone).

use std::path::Path;
use std::time::Instant;

use wring_gguf::Gguf;
use wring_llm::compress::{Quality, quality, reference_streaming};
use wring_llm::{GgufTokenizer, KvMode, Llama};
use wring_runtime::{Context, ContextOptions};

/// Tokens per streaming step (the protocol allows 32 to 64; the smaller step reads more compressed past).
const STEP: usize = 32;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Row {
    pub mode: String,
    pub n_ctx: usize,
    pub chunks: usize,
    /// Bytes per cached token, keys and values of every layer, every code and statistic counted.
    pub bytes_per_token: f64,
    /// Device bytes of the whole cache at a 4,096-position context: every layer's buffers and a packed
    /// mode's shared f32 working cache.
    pub cache_bytes_4k: u64,
    pub ppl: f64,
    /// Perplexity relative to the f16 cache's, in percent.
    pub delta_ppl_pct: f64,
    pub kld: f64,
    pub top1: f64,
    pub scored: usize,
    pub eval_s: f64,
    /// Greedy decode steps per second with 512 and with 4,000 positions cached.
    pub decode_512: f64,
    pub decode_4k: f64,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct KvReport {
    pub adapter: String,
    pub text: String,
    pub tokens: usize,
    pub step: usize,
    /// The f16 cache's perplexity per context.
    pub f16_ppl: Vec<(usize, f64)>,
    pub rows: Vec<Row>,
}

/// The modes measured at each context (quick: fewer).
fn modes(n_ctx: usize, quick: bool) -> Vec<&'static str> {
    if quick {
        vec!["f32", "q8", "q4h", "q2h"]
    } else if n_ctx <= 512 {
        // GEAR with its ablations (codes alone, + outliers, + low rank, all three) at 2 and 4 bits.
        vec![
            "f32",
            "q8",
            "q4",
            "q4h",
            "q2",
            "q2h",
            "gear:2",
            "gear:2:q",
            "gear:2:qs",
            "gear:2:ql",
            "gear:4",
            "gear:4:q",
            "gear:4:qs",
            "gear:4:ql",
            "paged:f16",
            "paged:q8",
            "paged:q4",
            "paged:q4h",
            "paged:q2",
            "paged:q2h",
        ]
    } else {
        // EMS at three budgets: 128, 256 and 512 slots per head of the 2,048-token context.
        vec!["q4", "q2h", "gear:2", "ems:256", "ems:128", "ems:512"]
    }
}

/// A mode name of the bench: the cache mode, and whether it is paged (`paged:MODE`).
fn mode_of(name: &str) -> Result<(KvMode, bool), String> {
    let (mode, paged) = match name.strip_prefix("paged:") {
        Some(m) => (m, true),
        None => (name, false),
    };
    Ok((
        mode.parse()
            .map_err(|x: wring_llm::LlmError| x.to_string())?,
        paged,
    ))
}

/// Whether `--only` leaves `mode` out (`paged` keeps every paged mode).
fn skipped(only: Option<&str>, mode: &str) -> bool {
    only.is_some_and(|o| o != mode && !(o == "paged" && mode.starts_with("paged:")))
}

/// Sets `m`'s cache to the bench's mode `name` for `positions` positions.
fn set_mode(m: &mut Llama, ctx: &Context, name: &str, positions: usize) -> Result<(), String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let (kv, paged) = mode_of(name)?;
    if paged {
        let block = kv.paged_block();
        m.set_paged(ctx, kv, positions.div_ceil(block), block)
            .map_err(|x| e(&x))?;
    } else {
        m.set_kv_mode(ctx, kv).map_err(|x| e(&x))?;
    }
    Ok(())
}

/// Greedy decode steps per second with `at` positions cached (a paged cache: one sequence over its
/// blocks in order, whatever they hold).
fn decode_speed(m: &mut Llama, ctx: &Context, at: usize) -> Result<f64, String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let n = 8;
    let step = |m: &mut Llama, token: u32, pos: usize| -> Result<(), String> {
        match m.paged() {
            Some(_) => {
                m.forward_paged_alone(ctx, &[token], pos, 1)
                    .map_err(|x| e(&x))?;
            }
            None => {
                m.forward(ctx, &[token], false).map_err(|x| e(&x))?;
            }
        }
        Ok(())
    };
    if m.paged().is_none() {
        m.assume_filled(ctx, at).map_err(|x| e(&x))?;
    }
    // The first step builds any pipeline not built yet; it is not timed.
    step(m, 1, at)?;
    let start = Instant::now();
    for t in 0..n as u32 {
        step(m, 2 + t * 7, at + 1 + t as usize)?;
    }
    Ok(f64::from(n) / start.elapsed().as_secs_f64())
}

/// Runs the bench; rows of `previous` (an interrupted run's report, on the same adapter) are kept and not
/// measured again, though each context's f16 reference is (the other rows' KLD needs its distributions).
pub fn run(
    quick: bool,
    only: Option<&str>,
    previous: Option<KvReport>,
    keep: &mut dyn FnMut(&KvReport),
) -> Result<KvReport, String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let g = Gguf::open(root.join("models/SmolLM2-135M-Instruct.Q4_1.gguf")).map_err(|x| e(&x))?;
    let tok = GgufTokenizer::from_gguf(&g).map_err(|x| e(&x))?;
    let text = "tests/fixtures/eighty_days_eval.txt";
    let ids = tok
        .encode(&std::fs::read_to_string(root.join(text)).map_err(|x| format!("{text}: {x}"))?)
        .map_err(|x| e(&x))?;
    let tokens = if quick { 512 } else { 4096 };
    if ids.len() < tokens {
        return Err(format!(
            "{text} has {} tokens, fewer than {tokens}",
            ids.len()
        ));
    }
    let ids = &ids[..tokens];
    let bos = if tok.add_bos { tok.bos } else { None };
    let ctx = Context::new(ContextOptions::default()).map_err(|x| e(&x))?;
    let mut report = KvReport {
        adapter: ctx.label(),
        text: text.into(),
        tokens,
        step: STEP,
        f16_ppl: Vec::new(),
        rows: previous
            .filter(|p| p.adapter == ctx.label() && p.tokens == tokens && p.step == STEP)
            .map(|p| p.rows)
            .unwrap_or_default(),
    };
    let done = |r: &KvReport, mode: &str, n_ctx: usize| {
        r.rows
            .iter()
            .any(|row| row.mode == mode && row.n_ctx == n_ctx)
    };
    // Decode speed and cache bytes at 4,096 positions, from one model with that context.
    let mut long = Llama::load(&ctx, &g, 4096, |_, _| {}).map_err(|x| e(&x))?;
    // The long context first: its rows (EMS budgets) are the ones no other context gives.
    let contexts: &[usize] = if quick { &[256] } else { &[2048, 512] };
    for &n_ctx in contexts {
        let chunks = tokens / n_ctx;
        // A context none of whose modes `--only` keeps needs no reference.
        if modes(n_ctx, quick).iter().all(|m| skipped(only, m)) {
            continue;
        }
        // A resumed run skips a context whose rows are all kept: its f16 reference alone costs a
        // quarter of an hour on a CPU adapter, and the kept f16 row already holds its perplexity.
        let kept_f16 = report
            .rows
            .iter()
            .find(|r| r.mode == "f16" && r.n_ctx == n_ctx)
            .map(|r| r.ppl);
        if let Some(ppl) = kept_f16
            && modes(n_ctx, quick)
                .iter()
                .all(|m| skipped(only, m) || done(&report, m, n_ctx))
        {
            eprintln!("== ctx {n_ctx}: every row kept from the interrupted run");
            report.f16_ppl.push((n_ctx, ppl));
            continue;
        }
        let mut m = Llama::load_with(&ctx, &g, n_ctx, KvMode::F16, |_, _| {}).map_err(|x| e(&x))?;
        eprintln!("== f16 reference: {chunks} chunks of {n_ctx}, steps of {STEP}");
        let start = Instant::now();
        let r =
            reference_streaming(&mut m, &ctx, ids, n_ctx, chunks, bos, STEP).map_err(|x| e(&x))?;
        // The f16 row against its own distributions: KLD 0 and top-1 100 % by construction.
        let base = Quality {
            ppl: r.perplexity(ids),
            kld: 0.0,
            top1: 1.0,
            scored: chunks * (n_ctx / 2 - 1),
        };
        eprintln!(
            "   PPL {:.4} in {:.0} s",
            base.ppl,
            start.elapsed().as_secs_f64()
        );
        report.f16_ppl.push((n_ctx, base.ppl));
        let mut measured = vec![("f16", base, start.elapsed().as_secs_f64())];
        for mode in modes(n_ctx, quick) {
            if skipped(only, mode) || done(&report, mode, n_ctx) {
                continue;
            }
            set_mode(&mut m, &ctx, mode, n_ctx)?;
            let start = Instant::now();
            let q = quality(&mut m, &ctx, ids, &r).map_err(|x| e(&x))?;
            measured.push((mode, q, start.elapsed().as_secs_f64()));
            let last = measured.len() - 1;
            report.rows.push(row(
                &mut long,
                &ctx,
                n_ctx,
                chunks,
                measured[last],
                base.ppl,
            )?);
            keep(&report);
        }
        // The f16 row itself: its speed and bytes.
        report
            .rows
            .retain(|r| !(r.mode == "f16" && r.n_ctx == n_ctx));
        report
            .rows
            .push(row(&mut long, &ctx, n_ctx, chunks, measured[0], base.ppl)?);
        keep(&report);
    }
    Ok(report)
}

fn row(
    long: &mut Llama,
    ctx: &Context,
    n_ctx: usize,
    chunks: usize,
    (mode, q, eval_s): (&str, Quality, f64),
    f16_ppl: f64,
) -> Result<Row, String> {
    let (kv, paged) = mode_of(mode)?;
    set_mode(long, ctx, mode, 4096)?;
    // EMS holds its budget's slots whatever the context: their bytes spread over the context's tokens.
    // A paged mode's are its pools' over the positions they hold (a KIVI pool's tails come with the
    // sequences that run; one block of f16 each).
    let bytes_per_token = match kv {
        _ if paged => long.kv_bytes() as f64 / 4096.0,
        KvMode::Ems { budget } => {
            kv.bytes_per_token(&long.cfg) * budget.min(n_ctx) as f64 / n_ctx as f64
        }
        _ => kv.bytes_per_token(&long.cfg),
    };
    let r = Row {
        mode: mode.into(),
        n_ctx,
        chunks,
        bytes_per_token,
        cache_bytes_4k: long.kv_bytes(),
        ppl: q.ppl,
        delta_ppl_pct: 100.0 * (q.ppl / f16_ppl - 1.0),
        kld: q.kld,
        top1: q.top1,
        scored: q.scored,
        eval_s,
        decode_512: decode_speed(long, ctx, 512)?,
        decode_4k: decode_speed(long, ctx, 4000)?,
    };
    eprintln!(
        "   {mode} at ctx {n_ctx}: {:.0} B/token, PPL {:.4} ({:+.2} %), KLD {:.5}, top-1 {:.1} %, decode {:.1} / {:.1} tokens/s at 512 / 4k",
        r.bytes_per_token,
        r.ppl,
        r.delta_ppl_pct,
        r.kld,
        100.0 * r.top1,
        r.decode_512,
        r.decode_4k
    );
    Ok(r)
}

/// The summary table, one row per mode and context.
pub fn table(r: &KvReport) -> String {
    let mut s = format!(
        "# KV cache modes on {}\n\nStreaming protocol: the first {} tokens of {}, each chunk run {} tokens at a time, the past \
         stored in the mode's form between steps; llama-perplexity's scored positions (second half of each chunk). \
         ΔPPL, mean KLD and top-1 against the f16 cache (PPL {}). Bytes per token: keys and values of all 30 layers, every \
         code and statistic (f16: 23,040); for ems:B, the B slots per head it keeps (f32 keys and values and their \
         scores) over the context's tokens. Cache at 4k: device bytes of the whole cache for 4,096 positions, including a \
         packed mode's f32 working cache. Decode: greedy steps per second with 512 / 4,000 positions cached.\n\n\
         | mode | ctx | bytes/token | x smaller than f16 | cache at 4k (MiB) | PPL | ΔPPL | mean KLD | top-1 | decode tok/s @512 | @4k |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
        r.adapter,
        r.tokens,
        r.text,
        r.step,
        r.f16_ppl
            .iter()
            .map(|(c, p)| format!("{p:.4} at ctx {c}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for row in &r.rows {
        s += &format!(
            "| {} | {} | {:.0} | {:.2} | {:.1} | {:.4} | {:+.2} % | {:.5} | {:.1} % | {:.1} | {:.1} |\n",
            row.mode,
            row.n_ctx,
            row.bytes_per_token,
            23_040.0 / row.bytes_per_token,
            row.cache_bytes_4k as f64 / f64::from(1 << 20),
            row.ppl,
            row.delta_ppl_pct,
            row.kld,
            100.0 * row.top1,
            row.decode_512,
            row.decode_4k
        );
    }
    s
}

/// Bytes per token against ΔPPL, one series per context.
pub fn plot(path: &Path, r: &KvReport) -> Result<(), String> {
    use plotters::prelude::*;
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let root = SVGBackend::new(path, (760, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let y = |row: &Row| (1.0 + row.delta_ppl_pct / 100.0).max(0.999);
    let hi = r.rows.iter().map(y).fold(1.01f64, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("SmolLM2-135M KV cache, streaming in steps of {}", r.step),
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..50_000.0f64, 0.99..hi * 1.05)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("KV bytes per token (all layers, everything counted)")
        .y_desc("perplexity / f16 cache")
        .draw()
        .map_err(|x| e(&x))?;
    for (i, (n_ctx, _)) in r.f16_ppl.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let pts: Vec<&Row> = r.rows.iter().filter(|row| row.n_ctx == *n_ctx).collect();
        chart
            .draw_series(
                pts.iter()
                    .map(|row| Circle::new((row.bytes_per_token, y(row)), 4, color.filled())),
            )
            .map_err(|x| e(&x))?
            .label(format!("ctx {n_ctx}"))
            .legend(move |(x, y)| Circle::new((x, y), 4, color.filled()));
        chart
            .draw_series(pts.iter().map(|row| {
                Text::new(
                    row.mode.clone(),
                    (row.bytes_per_token + 400.0, y(row)),
                    ("sans-serif", 12),
                )
            }))
            .map_err(|x| e(&x))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))
}

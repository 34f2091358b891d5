//! Compression of the real model's linear layers through the library: quantized matrices served in place
//! of the originals by `compress::Quantized`, through the same forward pass.

use wring::gguf::Gguf;
use wring::llm::compress::{Quantized, calibrate, dense_matrix, quality_against, quantize_linears};
use wring::llm::{GgufTokenizer, Llama};
use wring::quant::gptq::{self, Config, Method};

use crate::fixture;

/// The last position's logits of `base` and of the same model with `matrices` served in place of its
/// own, on one short prompt.
fn base_and_quantized_logits(
    g: &Gguf,
    base: &mut Llama,
    matrices: &std::collections::HashMap<String, wring::quant::group::GroupMatrix>,
) -> (Vec<f32>, Vec<f32>) {
    let ctx = crate::harness::ctx();
    let src = Quantized { base: g, matrices };
    let mut q = Llama::load_from(ctx, &src, 64, |_, _| {}).unwrap();
    let ids = GgufTokenizer::from_gguf(g)
        .unwrap()
        .encode("The capital of France is")
        .unwrap();
    (
        base.forward(ctx, &ids, true).unwrap(),
        q.forward(ctx, &ids, true).unwrap(),
    )
}

/// Finite quantized logits `b` within 1e-3 NMSE of the base's `a`, with the same top token.
fn assert_close_with_the_same_top_token(a: &[f32], b: &[f32]) {
    assert!(b.iter().all(|v| v.is_finite()));
    let e = wring::kernels::check::compare(b, a, wring::kernels::check::Tolerance::Nmse(1e-3));
    assert!(e.is_ok(), "{}", e.unwrap_err());
    let argmax = |v: &[f32]| (0..v.len()).max_by(|&i, &j| v[i].total_cmp(&v[j])).unwrap();
    assert_eq!(argmax(a), argmax(b));
}

/// The sanity row of every bits-versus-quality table: 4-bit affine groups of 32 (round to nearest) hold
/// Q4_1's grid, so SmolLM2's Q4_1 linears come back bit for bit, and the model run on the group kernels
/// gives the logits of the model run on the Q4_1 kernels (to the two kernels' summation orders).
#[test]
fn rtn_4bit_g32_rebuilds_smollm2_and_its_logits() {
    let g = Gguf::open(crate::quant::test_model()).unwrap();
    let ctx = crate::harness::ctx();
    let mut base = Llama::load(ctx, &g, 64, |_, _| {}).unwrap();
    let cfg = Config::plain(Method::Rtn, 4, 32);
    let (matrices, summary) = quantize_linears(&g, &base.cfg, None, &cfg, |_, _, _| {}).unwrap();
    assert_eq!(matrices.len(), 7 * base.cfg.n_layers);
    for name in ["blk.0.attn_q.weight", "blk.17.ffn_down.weight"] {
        let (_, _, w) = dense_matrix(&g, name).unwrap();
        assert_eq!(
            matrices[name].dequantize(),
            w,
            "{name} is not rebuilt exactly"
        );
    }
    // Q4_1's own 5.0 bits plus the empty outlier offsets (one word per row).
    let bpw = summary.bits_per_weight();
    assert!((5.0..5.07).contains(&bpw), "{bpw} bits per weight");
    assert_eq!(summary.outliers, 0);
    let (a, b) = base_and_quantized_logits(&g, &mut base, &matrices);
    let e = wring::kernels::check::compare(&b, &a, wring::kernels::check::Tolerance::Nmse(1e-9));
    assert!(e.is_ok(), "{}", e.unwrap_err());
}

/// MixLLM's mixed widths end to end: a tenth of the weights, whole rows ranked over the model, at 8 bits
/// beside Q4_1's grid (round to nearest, so the ranking is by plain squared error and needs no
/// calibration). The rows keep their widths through stacking (q/k/v and gate/up are served stacked), the
/// bits add up, and the model on the mixed kernels stays within rounding of the base: the 4-bit rows are
/// Q4_1's exactly and the 8-bit rows are closer still.
#[test]
fn mixed_row_widths_run_the_whole_model() {
    let g = Gguf::open(crate::quant::test_model()).unwrap();
    let ctx = crate::harness::ctx();
    let mut base = Llama::load(ctx, &g, 64, |_, _| {}).unwrap();
    let cfg = Config {
        method: Method::Rtn,
        group: 32,
        ..Config::mixllm(0.1)
    };
    let (matrices, summary) = quantize_linears(&g, &base.cfg, None, &cfg, |_, _, _| {}).unwrap();
    let (wide, all): (usize, usize) = matrices.values().fold((0, 0), |(w, a), m| {
        let cols = m.layout.cols;
        (
            w + m.row_bits.iter().filter(|&&b| b == 8).count() * cols,
            a + m.layout.rows * cols,
        )
    });
    let share = wide as f64 / all as f64;
    assert!(
        (0.099..=0.1).contains(&share),
        "{share} of the weights at 8 bits"
    );
    // 0.9 x 5 + 0.1 x 9 bits, one byte per row of widths, the outlier offsets.
    let bpw = summary.bits_per_weight();
    assert!((5.4..5.48).contains(&bpw), "{bpw} bits per weight");
    let (a, b) = base_and_quantized_logits(&g, &mut base, &matrices);
    assert_close_with_the_same_top_token(&a, &b);
}

/// GQSA's pruned groups end to end: a quarter of every row's groups pruned (round to nearest, so the
/// choice is by magnitude and needs no calibration), through q/k/v and gate/up stacking, on the masked
/// kernels. The oracle is the same weights with the pruned groups stored as zero groups on the unmasked
/// kernels: the logits agree to rounding (the masked kernels skip what the others add as zeros), and the
/// bits add up.
#[test]
fn pruned_groups_run_the_whole_model() {
    let g = Gguf::open(crate::quant::test_model()).unwrap();
    let ctx = crate::harness::ctx();
    let cfg = Config {
        method: Method::Rtn,
        ..Config::gqsa(0.25)
    };
    let cfg_llama = Llama::load(ctx, &g, 64, |_, _| {}).unwrap().cfg;
    let (matrices, summary) = quantize_linears(&g, &cfg_llama, None, &cfg, |_, _, _| {}).unwrap();
    // 576 columns are 18 groups (4.5 pruned, rounded to 5: 13 kept), 1536 are 48 (36 kept).
    assert_eq!(matrices["blk.3.attn_q.weight"].kept_count(7), 13);
    assert_eq!(matrices["blk.3.ffn_down.weight"].kept_count(100), 36);
    let bpw = summary.bits_per_weight();
    // 5 bits per kept weight (13/18 of the 576-wide rows' weights, 3/4 of ffn_down's): 3.6458; a mask
    // word per 576-wide row and two per ffn_down row: 0.0521; the outlier offsets, a word per row: 0.0469.
    assert!((3.744..3.746).contains(&bpw), "{bpw} bits per weight");
    let plain: std::collections::HashMap<_, _> = matrices
        .iter()
        .map(|(n, m)| (n.clone(), m.without_mask()))
        .collect();
    let mut oracle = Llama::load_from(
        ctx,
        &Quantized {
            base: &g,
            matrices: &plain,
        },
        64,
        |_, _| {},
    )
    .unwrap();
    let (a, b) = base_and_quantized_logits(&g, &mut oracle, &matrices);
    assert!(b.iter().all(|v| v.is_finite()));
    let e = wring::kernels::check::compare(&b, &a, wring::kernels::check::Tolerance::Nmse(1e-9));
    assert!(e.is_ok(), "{}", e.unwrap_err());
    // `wring perplexity --kl-base`'s measure, chunk by chunk: the model against itself is exact, the
    // pruned model against the base is not, and the base's perplexity is the plain perplexity's.
    let ids = GgufTokenizer::from_gguf(&g)
        .unwrap()
        .encode(&fixture::text("perplexity_text.txt"))
        .unwrap();
    let mut base = Llama::load(ctx, &g, 64, |_, _| {}).unwrap();
    let mut same = Llama::load(ctx, &g, 64, |_, _| {}).unwrap();
    let (q0, base_ppl) = quality_against(&mut base, &mut same, ctx, &ids, 64, 2, None).unwrap();
    assert_eq!((q0.kld, q0.top1, q0.scored), (0.0, 1.0, 62));
    assert!((q0.ppl / base_ppl - 1.0).abs() < 1e-12);
    let plain_ppl = base.perplexity(ctx, &ids, 64, Some(2), None).unwrap().ppl;
    // The same positions; the two sum log-probabilities computed in f32 and in f64.
    assert!(
        (plain_ppl / base_ppl - 1.0).abs() < 1e-6,
        "{plain_ppl} vs {base_ppl}"
    );
    let mut pruned = Llama::load_from(
        ctx,
        &Quantized {
            base: &g,
            matrices: &matrices,
        },
        64,
        |_, _| {},
    )
    .unwrap();
    let (q, _) = quality_against(&mut base, &mut pruned, ctx, &ids, 64, 2, None).unwrap();
    assert!(q.kld > 0.01 && q.top1 < 1.0 && q.ppl.is_finite(), "{q:?}");
}

/// Calibration on the real model gathers each linear layer's input statistics from wring's own forward
/// pass (symmetric, positive diagonal, the right widths), and SpQR at 3 bits with them beats
/// round-to-nearest at the same format on GPTQ's objective for a real layer.
#[test]
fn calibrated_spqr_beats_rtn_on_a_real_layer() {
    let g = Gguf::open(crate::quant::test_model()).unwrap();
    let ctx = crate::harness::ctx();
    let mut llama = Llama::load(ctx, &g, 64, |_, _| {}).unwrap();
    let tok = GgufTokenizer::from_gguf(&g).unwrap();
    let ids = tok.encode(&fixture::text("perplexity_text.txt")).unwrap();
    let calib = calibrate(&mut llama, ctx, &ids[..128], 64, |_, _| {}).unwrap();
    assert_eq!(calib.tokens, 128);
    assert_eq!(calib.layers.len(), llama.cfg.n_layers);
    let h = calib.hessian("blk.5.attn_k.weight").unwrap();
    assert_eq!((h.n, h.samples), (576, 128));
    assert!((0..h.n).all(|i| h.h[i * h.n + i] > 0.0));
    assert!((0..h.n).all(|i| (0..i).all(|j| h.h[i * h.n + j] == h.h[j * h.n + i])));
    assert_eq!(calib.hessian("blk.5.ffn_down.weight").unwrap().n, 1536);
    let name = "blk.5.attn_k.weight";
    let (rows, cols, w) = dense_matrix(&g, name).unwrap();
    let spqr = gptq::quantize(&w, rows, cols, h, &Config::spqr(3)).unwrap();
    let rtn = gptq::quantize(
        &w,
        rows,
        cols,
        h,
        &Config {
            method: Method::Rtn,
            outlier_threshold: None,
            ..Config::spqr(3)
        },
    )
    .unwrap();
    let (es, er) = (
        gptq::output_error(&w, &spqr.0.dequantize(), cols, h),
        gptq::output_error(&w, &rtn.0.dequantize(), cols, h),
    );
    eprintln!(
        "{name}: SpQR 3-bit output error {es:.4e} ({} outliers, {:.3} bpw), RTN {er:.4e}",
        spqr.1.outliers,
        spqr.0.bits_per_weight()
    );
    assert!(es < 0.7 * er, "SpQR {es} vs RTN {er}");
}

/// Incoherence processing end to end: every linear layer quantized at 8 bits in the basis of its input
/// site's transform (round to nearest, no calibration), served through q/k/v and gate/up stacking (the
/// matrices of a site share their signs), with the products transforming their input by the rht kernel.
/// At 8 bits the rounding is small, so any mismatch between the quantizer's basis and the kernels'
/// would show: the matrices come back to the original weights within 8-bit error, and the model's logits
/// stay within 1e-3 NMSE of the base with the same top token.
#[test]
fn incoherence_processing_runs_the_whole_model() {
    let g = Gguf::open(crate::quant::test_model()).unwrap();
    let ctx = crate::harness::ctx();
    let mut base = Llama::load(ctx, &g, 64, |_, _| {}).unwrap();
    let cfg = Config {
        incoherence: Some(5),
        ..Config::plain(Method::Rtn, 8, 32)
    };
    let (matrices, summary) = quantize_linears(&g, &base.cfg, None, &cfg, |_, _, _| {}).unwrap();
    let signs = |n: &str| matrices[&format!("blk.2.{n}.weight")].signs.clone();
    assert_eq!(signs("attn_q"), signs("attn_k"));
    assert_eq!(signs("attn_q"), signs("attn_v"));
    assert_eq!(signs("ffn_gate"), signs("ffn_up"));
    assert_ne!(signs("attn_q"), signs("attn_output"));
    assert_ne!(signs("attn_q"), matrices["blk.3.attn_q.weight"].signs);
    assert_eq!(signs("ffn_down").len(), 1536 / 32);
    for name in ["blk.0.attn_q.weight", "blk.17.ffn_down.weight"] {
        let (_, _, w) = dense_matrix(&g, name).unwrap();
        let back = matrices[name].dequantize();
        let e =
            wring::kernels::check::compare(&back, &w, wring::kernels::check::Tolerance::Nmse(1e-4));
        assert!(e.is_ok(), "{name}: {}", e.unwrap_err());
    }
    // 8 bits, one f16 pair per 32 weights (1 bit), the outlier offsets and the signs.
    let bpw = summary.bits_per_weight();
    assert!((9.0..9.07).contains(&bpw), "{bpw} bits per weight");
    let (a, b) = base_and_quantized_logits(&g, &mut base, &matrices);
    assert_close_with_the_same_top_token(&a, &b);
}

/// Widths chosen per input site for a target: round to nearest at 2, 3 and 4 bits (no calibration), a
/// target of 3.5 bits per weight. The mix meets the target, uses more than one width, keeps each site's
/// matrices at one width (they are served stacked), and the model runs on it.
#[test]
fn a_target_in_bits_per_weight_chooses_widths_per_site() {
    use wring::llm::compress::quantize_to_target;
    let g = Gguf::open(crate::quant::test_model()).unwrap();
    let ctx = crate::harness::ctx();
    let mut base = Llama::load(ctx, &g, 64, |_, _| {}).unwrap();
    let candidates: Vec<Config> = (2..=4)
        .map(|bits| Config::plain(Method::Rtn, bits, 32))
        .collect();
    let (matrices, summary, choices) =
        quantize_to_target(&g, &base.cfg, None, &candidates, 3.5, |_, _, _| {}).unwrap();
    let bpw = summary.bits_per_weight();
    assert!((3.3..=3.5).contains(&bpw), "{bpw} bits per weight");
    assert_eq!(choices.len(), 4 * base.cfg.n_layers);
    let bits_of = |b: usize, n: &str| matrices[&format!("blk.{b}.{n}.weight")].layout.bits;
    for c in &choices {
        let first = c.site.split('+').next().unwrap();
        for n in c.site.split('+') {
            assert_eq!(bits_of(c.block, n), bits_of(c.block, first), "{c:?}");
        }
    }
    let widths: std::collections::BTreeSet<u32> =
        matrices.values().map(|m| m.layout.bits).collect();
    assert!(widths.len() >= 2, "one width only: {widths:?}");
    let total: f64 = choices.iter().map(|c| c.bits).sum();
    assert!((total - summary.bits).abs() < 1e-6 * total);
    assert!(
        quantize_to_target(&g, &base.cfg, None, &candidates, 2.5, |_, _, _| {}).is_err(),
        "2.5 bits is below round to nearest's 2-bit groups with their statistics"
    );
    let (_, b) = base_and_quantized_logits(&g, &mut base, &matrices);
    assert!(b.iter().all(|v| v.is_finite()));
}

//! The path a hardware GPU takes, run end to end on every machine. wgpu reports lavapipe as a CPU adapter,
//! so left to themselves the planners take the CPU forms there (split norms, SWAR and 8-row-tile products,
//! the tiled attention, small VQ chunks). Here one loaded model runs through two sibling contexts on the
//! same device (`Context::sibling`), one forced to the hardware-GPU plan (`PlanAs::Gpu`, what
//! `WRING_PLAN=gpu` selects) and one to the CPU-adapter plan, and their results are compared: prompts of
//! 1, 7, 64 and 512 tokens, decode steps at depth 0 and 2,048, f32 and 8-bit activations, every KV cache
//! mode, the weights of every `wring quantize` method, greedy ids against llama.cpp's fixture, and the
//! codec and VQ. On a hardware GPU the same tests run the CPU forms there.
//!
//! Error budgets (NMSE of logits, GPU plan against CPU plan; each measured on lavapipe, figures in the
//! tests' comments): the two plans sum in other orders (a 64-invocation workgroup per row against lanes
//! owning rows; the tiled qmatmul against 8-row qmatvec tiles; the per-row attention against the tiled
//! one), which moves f32 logits by 1e-14 to 2e-11 of their energy (budget 1e-8, every top token equal).
//! With 8-bit activations the CPU plan's split norm is turned off in these comparisons (the GPU plan has
//! no such form; tests/llm.rs bounds the split against f32 activations), so both plans round floats that
//! differ only by summation order, and a code landing on the other side of a half step moves the logits
//! by up to 1e-3 (budget 1e-2, every top token equal). The GPU plan multiplies a prompt's rows with f32
//! activations in the tiled qmatmul, so its 8-bit prompts equal its f32 ones bit for bit.

use std::sync::OnceLock;

use wring::gguf::Gguf;
use wring::kernels::check::{Tolerance, compare};
use wring::llm::WeightSource;
use wring::llm::{GgufTokenizer, Llama, LlamaConfig, LlmError};
use wring::runtime::dispatch::Weights;
use wring::runtime::{Context, ContextOptions, PlanAs, Tensor};

use crate::fixture;

/// The plans, siblings of the harness's first context: CPU-adapter and hardware-GPU plans, each with f32
/// and with 8-bit decode activations, and the plan of a GPU without subgroups (the shared-memory
/// reductions).
pub struct Plans {
    pub cpu: Context,
    pub gpu: Context,
    pub cpu_q8: Context,
    pub gpu_q8: Context,
    pub gpu_shared: Context,
}

pub fn plans() -> &'static Plans {
    static PLANS: OnceLock<Plans> = OnceLock::new();
    PLANS.get_or_init(|| {
        let base = crate::harness::ctx();
        let sib = |plan, q8_activations, disable_subgroup| {
            base.sibling(&ContextOptions {
                plan,
                q8_activations,
                disable_subgroup,
                ..ContextOptions::default()
            })
            .unwrap()
        };
        Plans {
            cpu: sib(PlanAs::Cpu, false, false),
            gpu: sib(PlanAs::Gpu, false, false),
            cpu_q8: sib(PlanAs::Cpu, true, false),
            gpu_q8: sib(PlanAs::Gpu, true, false),
            gpu_shared: sib(PlanAs::Gpu, false, true),
        }
    })
}

fn model() -> Gguf {
    crate::llm::model()
}

/// The perplexity text's tokens: real prose, long enough for a 2,048-token prompt.
fn text_ids(g: &Gguf) -> Vec<u32> {
    GgufTokenizer::from_gguf(g)
        .unwrap()
        .encode(&fixture::text("perplexity_text.txt"))
        .unwrap()
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).max_by(|&i, &j| v[i].total_cmp(&v[j])).unwrap()
}

/// NMSE of `gpu` against `cpu` (rows of `vocab` logits) within `budget`, every value finite, and every
/// row's top token equal.
fn agree(what: &str, gpu: &[f32], cpu: &[f32], vocab: usize, budget: f64) -> f64 {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths");
    let nmse = compare(gpu, cpu, Tolerance::Nmse(budget))
        .unwrap_or_else(|e| panic!("{what}: GPU plan against CPU plan: {e}"));
    for (row, (a, b)) in gpu.chunks(vocab).zip(cpu.chunks(vocab)).enumerate() {
        assert_eq!(
            argmax(a),
            argmax(b),
            "{what}: the top token of row {row} differs"
        );
    }
    nmse
}

#[test]
fn plans_are_forced_and_reported() {
    let p = plans();
    assert!(!p.gpu.caps().software && !p.gpu_q8.caps().software);
    assert!(p.cpu.caps().software && p.cpu_q8.caps().software);
    assert!(
        p.gpu.info().plan_why.contains("GPU plan"),
        "{}",
        p.gpu.info().plan_why
    );
    assert!(
        p.cpu.info().plan_why.contains("CPU plan"),
        "{}",
        p.cpu.info().plan_why
    );
    assert_eq!(PlanAs::parse("GPU").unwrap(), PlanAs::Gpu);
    assert_eq!(PlanAs::parse("cpu").unwrap(), PlanAs::Cpu);
    assert_eq!(PlanAs::parse("auto").unwrap(), PlanAs::Adapter);
    let e = PlanAs::parse("fast").unwrap_err().to_string();
    assert!(
        e.contains("WRING_PLAN=fast") && e.contains("gpu, cpu, auto"),
        "{e}"
    );
    // The planners see it: one activation row of Q4_1 weights takes a 64-invocation workgroup per row
    // (reduced through subgroups where the adapter has them) under the GPU plan, lanes owning whole
    // rows under the CPU plan.
    use wring::kernels::quant::Qmatvec;
    use wring::kernels::{Choice, DType, Kernel as _};
    let unit = Qmatvec {
        format: wring::quant::BlockFormat::Q4_1,
        act: DType::F32,
        n: 576,
        k: 576,
        batch: 1,
    };
    let name = |c: &Context| {
        unit.plan(c.caps(), Choice::Auto)
            .unwrap()
            .variant
            .name
            .to_string()
    };
    let gpu = name(&p.gpu);
    let with_subgroups = if p.gpu.caps().subgroup {
        "_subgroup"
    } else {
        "_shared"
    };
    assert!(gpu.ends_with(with_subgroups), "{gpu}");
    assert!(
        name(&p.gpu_shared).ends_with("_shared"),
        "{}",
        name(&p.gpu_shared)
    );
    assert!(name(&p.cpu).ends_with("_lanes"), "{}", name(&p.cpu));
}

/// A model's first `layers` layers and its head: the same kernels at every shape, a fifteenth of the
/// whole model's work for SmolLM2's 30 layers, so that long prompts and the KV cache modes fit the test
/// suite's time. Layer 0's and 1's inputs do not depend on later layers, so their calibration statistics
/// are the whole model's.
struct FirstLayers<'a> {
    base: &'a dyn WeightSource,
    layers: usize,
}

impl WeightSource for FirstLayers<'_> {
    fn config(&self) -> Result<LlamaConfig, LlmError> {
        let mut cfg = self.base.config()?;
        cfg.n_layers = cfg.n_layers.min(self.layers);
        Ok(cfg)
    }

    fn matrix(&self, ctx: &Context, name: &str) -> Result<Weights, LlmError> {
        self.base.matrix(ctx, name)
    }

    fn vector(&self, ctx: &Context, name: &str) -> Result<Tensor, LlmError> {
        self.base.vector(ctx, name)
    }

    fn stacked(&self, ctx: &Context, names: &[&str]) -> Result<Option<Weights>, LlmError> {
        self.base.stacked(ctx, names)
    }
}

/// `base`'s first two layers and its head.
fn first_two_layers(base: &dyn WeightSource) -> FirstLayers<'_> {
    FirstLayers { base, layers: 2 }
}

/// A prompt under the GPU plan and under the CPU plan, and the decode step after it under each plan
/// from the same cache (the GPU plan's prompt, rewound between the two steps). Returns the NMSEs.
fn prompt_and_step(
    m: &mut Llama,
    gpu: &Context,
    cpu: &Context,
    ids: &[u32],
    n: usize,
    budgets: (f64, f64),
) -> (f64, f64) {
    let vocab = m.cfg.vocab;
    let all = n <= 64;
    m.reset();
    let gp = m.forward(gpu, &ids[..n], all).unwrap();
    let gs = m.forward(gpu, &[ids[n]], false).unwrap();
    let g_launches = m.last_launches();
    m.rewind(n).unwrap();
    let cs = m.forward(cpu, &[ids[n]], false).unwrap();
    let c_launches = m.last_launches();
    m.reset();
    let cp = m.forward(cpu, &ids[..n], all).unwrap();
    let what = format!("{} layers, {n}-token prompt", m.cfg.n_layers);
    let a = agree(&what, &gp, &cp, vocab, budgets.0);
    let b = agree(
        &format!("{what}: the step after it"),
        &gs,
        &cs,
        vocab,
        budgets.1,
    );
    eprintln!(
        "{what} ({}): prompt NMSE {a:.2e}, the step after it {b:.2e} ({g_launches} launches GPU plan, \
         {c_launches} CPU plan)",
        gpu.info().plan_why
    );
    // With 8-bit activations the CPU plan runs the SwiGLU gate in the gate/up product's epilogue, one
    // launch a layer fewer; the GPU plan keeps the gate's launch (its products give a workgroup one row).
    let epilogues = if cpu.q8_activations() {
        m.cfg.n_layers
    } else {
        0
    };
    assert_eq!(
        g_launches,
        c_launches + epilogues,
        "{what}: launches per decode step"
    );
    (a, b)
}

/// Prompts of 1, 7 and 64 tokens on the whole model and of 512 on its first two layers (the logits of
/// every position for the short ones, the last for 512), and a decode step after each, then a decode
/// step at depth 2,048 (first two layers), under both plans, with f32 and 8-bit activations, and a GPU
/// without subgroups for the 64-token prompt.
///
/// Measured on lavapipe: f32 prompts and steps 3e-12 to 2e-11. With 8-bit activations the CPU plan's
/// split norm is turned off (`set_norm_split(false)`; its own test bounds it against f32 activations),
/// so both plans round the same floats, which differ only by summation order; a code that lands on the
/// other side of a half step then moves the logits by up to NMSE 1e-3 (budget 1e-2 and the top token
/// equal). The GPU plan multiplies a prompt's rows with f32 activations even in an 8-bit context (the
/// tiled qmatmul), so its 8-bit prompts equal its f32 ones bit for bit.
#[test]
fn prompts_and_decode_steps_follow_the_cpu_plan() {
    let p = plans();
    let g = model();
    let ids = text_ids(&g);
    assert!(ids.len() > 2049, "the text has {} tokens", ids.len());
    let f32_budgets = (1e-8, 1e-8);
    let q8_budgets = (1e-2, 1e-2);
    let mut m = Llama::load(&p.gpu, &g, 80, |_, _| {}).unwrap();
    m.set_norm_split(false);
    for n in [1, 7, 64] {
        prompt_and_step(&mut m, &p.gpu, &p.cpu, &ids, n, f32_budgets);
        if n == 1 {
            prompt_and_step(&mut m, &p.gpu_q8, &p.cpu_q8, &ids, n, q8_budgets);
        }
        if n == 7 {
            let mut prompt = |c: &Context| {
                m.reset();
                m.forward(c, &ids[..n], true).unwrap()
            };
            let (q8, f32) = (prompt(&p.gpu_q8), prompt(&p.gpu));
            assert!(
                q8 == f32,
                "an 8-bit context's prompt differs from the f32 one's under the GPU plan"
            );
            // The step after it takes the 8-bit products under both plans.
            m.rewind(n).unwrap();
            let gs = m.forward(&p.gpu_q8, &[ids[n]], false).unwrap();
            m.rewind(n).unwrap();
            let cs = m.forward(&p.cpu_q8, &[ids[n]], false).unwrap();
            let b = agree("8-bit step after 7", &gs, &cs, m.cfg.vocab, q8_budgets.1);
            eprintln!("8-bit step after the 7-token prompt: NMSE {b:.2e}");
        }
        if n == 64 {
            prompt_and_step(&mut m, &p.gpu_shared, &p.cpu, &ids, n, f32_budgets);
        }
    }
    let first = first_two_layers(&g);
    let mut m = Llama::load_from(&p.gpu, &first, 2049, |_, _| {}).unwrap();
    m.set_norm_split(false);
    prompt_and_step(&mut m, &p.gpu, &p.cpu, &ids, 512, f32_budgets);
    // Depth 2,048: the prompt once (under the CPU plan, the faster here), then the step at position
    // 2,048 under each plan from the same cache.
    m.reset();
    m.forward(&p.cpu, &ids[..2048], false).unwrap();
    for (what, gpu, cpu, budget) in [
        ("f32", &p.gpu, &p.cpu, f32_budgets.1),
        ("8-bit", &p.gpu_q8, &p.cpu_q8, q8_budgets.1),
    ] {
        let gs = m.forward(gpu, &[ids[2048]], false).unwrap();
        m.rewind(2048).unwrap();
        let cs = m.forward(cpu, &[ids[2048]], false).unwrap();
        m.rewind(2048).unwrap();
        let b = agree(
            &format!("{what} step at depth 2048"),
            &gs,
            &cs,
            m.cfg.vocab,
            budget,
        );
        eprintln!("{what} step at depth 2,048 (2 layers): NMSE {b:.2e}");
    }
}

/// Under the GPU plan the logits follow the independent f32 reference as under the adapter's own plan
/// (llm.rs's test, budget NMSE 1e-4 and the top token at 99 % of positions), and the greedy ids equal
/// llama.cpp's on its six prompts: its CPU back end's on the F32 dequantization of the file, and its
/// Vulkan back end's on the Q4_1 file itself on lavapipe (`smollm2_greedy_vulkan.json`, recorded by
/// tools/fixtures/greedy_reference.py; the same 96 ids).
#[test]
fn the_gpu_plan_matches_the_reference_logits_and_llama_cpp_greedy_ids() {
    let p = plans();
    crate::llm::reference_logits_agree(&p.gpu);
    crate::llm::greedy_ids_equal(
        &p.gpu,
        &["smollm2_greedy.json", "smollm2_greedy_vulkan.json"],
    );
}

/// A 64-token prompt's logits (every position) and two decode steps', under the GPU plan and under the
/// CPU plan (f32 activations), agree within NMSE 1e-8 with every top token equal; returns the NMSE.
fn prompt_and_two_steps(m: &mut Llama, ids: &[u32], what: &str) -> f64 {
    let p = plans();
    let vocab = m.cfg.vocab;
    let mut run = |c: &Context| {
        m.reset();
        let mut out = m.forward(c, &ids[..64], true).unwrap();
        for &t in &ids[64..66] {
            out.extend(m.forward(c, &[t], false).unwrap());
        }
        out
    };
    let (gpu, cpu) = (run(&p.gpu), run(&p.cpu));
    agree(what, &gpu, &cpu, vocab, 1e-8)
}

/// Dense weights (the safetensors export: f32 matrices through matvec for one row and matmul for a
/// batch under the GPU plan, and their CPU-adapter forms) follow the CPU plan for a 64-token prompt and
/// two decode steps.
#[test]
fn dense_weights_follow_the_cpu_plan() {
    use wring::llm::hf::{HfModel, export};
    let p = plans();
    let g = model();
    let ids = text_ids(&g);
    let dir = std::env::temp_dir().join(format!("wring-gpu-plan-export-{}", std::process::id()));
    export(&g, &dir).unwrap();
    let hf = HfModel::open(&dir).unwrap();
    let mut m = Llama::load_from(&p.gpu, &hf, 128, |_, _| {}).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let e = prompt_and_two_steps(&mut m, &ids, "dense weights");
    eprintln!("dense weights: logits NMSE {e:.2e} between the plans");
}

/// Every KV cache mode under both plans, on the model's first two layers: a 96-token prompt in steps of
/// 16 (so the GPU plan's batch products and per-row attention run, and the compressed modes compress
/// from position 64 on and then read their codes), then two decode steps; the last position's logits of
/// every step agree between the plans, as do the positions compressed and the slots an EMS cache keeps.
/// The low-rank cache runs from identity factors. Measured on lavapipe: NMSE 2e-13 to 2.3e-11 (q4); the
/// budget, 1e-4 with every step's top token equal, leaves room for a quantized mode's code landing on
/// the other side of a rounding step on another adapter.
#[test]
fn every_kv_mode_follows_the_cpu_plan() {
    let p = plans();
    let g = model();
    let ids = text_ids(&g);
    let first = first_two_layers(&g);
    let mut m = Llama::load_from(&p.gpu, &first, 128, |_, _| {}).unwrap();
    let vocab = m.cfg.vocab;
    // Each code width once and the rotation once (q2h): the other rotated widths and GEAR's 4-bit form
    // differ from these only in kernel variants the harness compares with their twins on every adapter.
    let modes = [
        "f32", "f16", "q8", "q4", "q2", "q2h", "gear", "ems:64", "lowrank",
    ];
    for mode in modes {
        let mut run = |c: &Context| {
            if mode == "lowrank" {
                m.set_kv_mode(c, "f16".parse().unwrap()).unwrap();
                let factors = crate::kv::identity_factors(&g, &m.cfg);
                m.set_kv_lowrank(c, &factors).unwrap();
            } else {
                m.set_kv_mode(c, mode.parse().unwrap()).unwrap();
            }
            let mut out = Vec::new();
            for chunk in ids[..96].chunks(16) {
                out.extend(m.forward(c, chunk, false).unwrap());
            }
            for &t in &ids[96..98] {
                out.extend(m.forward(c, &[t], false).unwrap());
            }
            (out, m.kv_compressed(), m.kv_slots())
        };
        let ((gpu, g_packed, g_slots), (cpu, c_packed, c_slots)) = (run(&p.gpu), run(&p.cpu));
        assert_eq!(g_packed, c_packed, "KV {mode}: positions compressed");
        assert_eq!(g_slots, c_slots, "KV {mode}: slots kept");
        let e = agree(&format!("KV {mode}"), &gpu, &cpu, vocab, 1e-4);
        eprintln!(
            "KV {mode}: logits NMSE {e:.2e} between the plans ({g_packed} positions compressed, {g_slots} slots)"
        );
    }
}

/// The weights of every `wring quantize` method (group-quantized GPTQ/RTN, SpQR's bilevel statistics and
/// outliers, MixLLM's mixed row widths, GQSA's pruned groups, and SpQR with incoherence processing) in the
/// model's first two layers, run
/// alone with the head: a 64-token prompt (the GPU plan's tiled gmatmul, the CPU plan's 8-row gmatvec
/// tiles) and two decode steps (gmatvec under both) agree between the plans.
#[test]
fn quantized_weights_of_every_method_follow_the_cpu_plan() {
    use wring::llm::compress::{Quantized, calibrate, quantize_linears};
    use wring::quant::gptq::{Config, Method};
    let p = plans();
    let g = model();
    let ids = text_ids(&g);
    let first = first_two_layers(&g);
    let mut base = Llama::load_from(&p.cpu, &first, 128, |_, _| {}).unwrap();
    let calib = calibrate(&mut base, &p.cpu, &ids[..128], 64, |_, _| {}).unwrap();
    let two = base.cfg.clone();
    // Every method, then SpQR with incoherence processing (the rht kernel before each product).
    let configs = Method::ALL
        .iter()
        .map(|&method| match method {
            Method::Rtn => Config::plain(Method::Rtn, 4, 32),
            Method::Gptq => Config::plain(Method::Gptq, 3, 64),
            Method::Spqr => Config::spqr(3),
            Method::Mixllm => Config::mixllm(0.1),
            Method::Gqsa => Config::gqsa(0.25),
            Method::Trellis => Config::trellis(2, 10, 5),
        })
        .chain([Config {
            incoherence: Some(3),
            ..Config::spqr(3)
        }]);
    for cfg in configs {
        let (method, what) = (cfg.method, cfg.describe());
        let (matrices, _) = quantize_linears(&g, &two, Some(&calib), &cfg, |_, _, _| {}).unwrap();
        assert_eq!(matrices.len(), 14, "{what}");
        let src = Quantized {
            base: &g,
            matrices: &matrices,
        };
        let src = first_two_layers(&src);
        let mut m = Llama::load_from(&p.gpu, &src, 128, |_, _| {}).unwrap();
        let e = prompt_and_two_steps(&mut m, &ids, method.name());
        eprintln!("{what}: logits NMSE {e:.2e} between the plans");
    }
}

/// The codec (image and audio, encode and decode) and VQ (k-means training, search, residual and grouped
/// quantizers' encode and decode) give equal results under both plans: the VQ planners choose other
/// chunk sizes under each, and exact ties go to the lowest index either way.
#[test]
fn codec_and_vq_are_equal_under_both_plans() {
    use std::path::Path;
    use wring::codec::{Options, Rate, decode, encode_audio, encode_image, io};
    use wring::vq::{Init, KMeansOptions, Quantizer};
    let p = plans();
    let img = io::read_image(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/astronaut_96x128.png"
    )))
    .unwrap();
    let wav = io::read_wav(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/speech_12000.wav"
    )))
    .unwrap();
    let opts = Options {
        rate: Rate::Quality(60.0),
        ..Options::default()
    };
    let codec = |c: &Context| {
        let image = encode_image(c, &img, &opts).unwrap();
        let audio = encode_audio(c, &wav, &opts).unwrap();
        let decoded = (decode(c, &image).unwrap(), decode(c, &audio).unwrap());
        (image, audio, format!("{decoded:?}"))
    };
    let (gpu, cpu) = (codec(&p.gpu), codec(&p.cpu));
    assert!(gpu.0 == cpu.0, "the image streams differ");
    assert!(gpu.1 == cpu.1, "the audio streams differ");
    assert!(gpu.2 == cpu.2, "the decoded signals differ");

    let fx = fixture::load("vq_reference");
    let (data, shape) = fx.array(&fx.index["kmeans"]["data"]);
    let d = shape[1];
    let data = &data[..600 * d];
    let km = KMeansOptions {
        k: 16,
        iters: 4,
        seed: 5,
        init: Init::PlusPlus,
    };
    let vq = |c: &Context| {
        let q = Quantizer::train(c, data, d, 2, 2, &km, &mut |_, _, _| {}).unwrap();
        let codes = q.encode(c, data).unwrap();
        let back = q.decode(c, &codes).unwrap();
        let books: Vec<Vec<f32>> = (0..2)
            .flat_map(|g| (0..2).map(move |r| (g, r)))
            .map(|(g, r)| q.book(g, r).values().to_vec())
            .collect();
        (books, codes, back)
    };
    let (gpu, cpu) = (vq(&p.gpu), vq(&p.cpu));
    assert!(gpu.0 == cpu.0, "the trained codebooks differ");
    assert!(gpu.1 == cpu.1, "the codes differ");
    assert!(gpu.2 == cpu.2, "the decoded vectors differ");

    // f16 signals and codebooks where the planners see no SHADER_F16: typed errors naming the feature,
    // under either plan.
    use wring::codec::Packet;
    use wring::kernels::DType;
    use wring::kernels::wavelet::{Mode, Wavelet};
    use wring::vq::Codebook;
    for plan in [PlanAs::Gpu, PlanAs::Cpu] {
        let no_f16 = crate::harness::ctx()
            .sibling(&ContextOptions {
                plan,
                disable_f16: true,
                ..ContextOptions::default()
            })
            .unwrap();
        assert!(!no_f16.caps().f16);
        let packet = Packet::new(Wavelet::ALL[0], Mode::Periodization, 1, 1, &[64])
            .unwrap()
            .with_dtype(DType::F16)
            .unwrap();
        let e = packet
            .apply(&no_f16, &[0.0; 64], true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("SHADER_F16"), "{e}");
        let e = Codebook::new(&no_f16, vec![0.0; 8], 4, DType::F16)
            .unwrap_err()
            .to_string();
        assert!(e.contains("SHADER_F16") || e.contains("f16"), "{e}");
    }
}

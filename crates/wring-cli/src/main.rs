//! The `wring` command-line tool.

use std::process::ExitCode;

use clap::builder::TypedValueParser;
use clap::{Parser, Subcommand};
use wring_codec::{TreeShape, Tune};
use wring_quant::gptq::{Config, Method};
use wring_quant::group::Stats;
use wring_runtime::kernels::wavelet::{Mode, Wavelet};
use wring_runtime::{Context, ContextOptions, human_bytes};
use wring_vq::{Init, Metric};

#[derive(Parser, Debug)]
#[command(
    name = "wring",
    version,
    about = "Portable GPU compute for compressed inference and neural compression"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The model a command runs and how: the GGUF, compressed weights replacing its linears, and the KV cache.
#[derive(clap::Args, Debug)]
struct ModelArgs {
    /// A GGUF model (default: the local model cache, models/SmolLM2-135M-Instruct.Q4_1.gguf).
    #[arg(long)]
    model: Option<std::path::PathBuf>,
    /// Compressed weights made from this model by `wring quantize` (replacing its linear layers).
    #[arg(long)]
    weights: Option<std::path::PathBuf>,
    /// How the KV cache stores keys and values: f32 (exact), f16, q8, q4, q2 (KIVI codes: keys per
    /// channel over 32 tokens, values per token, the last 32 positions in f16), q8h, q4h, q2h (the
    /// same after a Hadamard rotation of queries and keys), lowrank:R (with --kv-factors), gear
    /// (GEAR: 2-bit codes + 2% outliers + a rank-2 error correction per 64-token block) or
    /// gear:BITS[:PARTS] (BITS 2 or 4; PARTS q, qs, ql or qls), or ems:B (EMS evict-then-merge:
    /// at most B f32 slots per head, B above 32).
    #[arg(long, default_value = "f32", value_parser = parse_kv_mode)]
    kv_cache: wring_llm::KvMode,
    /// The factors of a lowrank:R cache, made from this model by `wring kv-calibrate`.
    #[arg(long)]
    kv_factors: Option<std::path::PathBuf>,
}

/// A batch over many files: INPUT a directory (or with --list a file of paths) and OUTPUT a directory.
#[derive(clap::Args, Debug)]
struct BatchArgs {
    /// INPUT is a text file of input paths, one per line (relative to the list's directory).
    #[arg(long)]
    list: bool,
    /// With a directory or a list: run only shard I of N (every N-th input from the I-th, 0-based), so
    /// machines can split a dataset; finished outputs are skipped and written atomically.
    #[arg(long, default_value = "0/1")]
    shard: wring_io::batch::Shard,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the GPU adapters wgpu finds, the one wring chooses and why, and its limits and features.
    Info {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Generate text from a prompt, streaming tokens as they are produced.
    Generate {
        #[command(flatten)]
        src: ModelArgs,
        /// The prompt.
        #[arg(long, required_unless_present = "prompts", conflicts_with = "prompts")]
        prompt: Option<String>,
        /// Batch mode: a JSONL file of OpenAI completion (or chat) request objects, one per line, answered
        /// with continuous batching into --out (one answer or error object per line; a rerun resumes).
        #[arg(long, requires = "out")]
        prompts: Option<std::path::PathBuf>,
        /// Batch mode's output JSONL.
        #[arg(long, short = 'o')]
        out: Option<std::path::PathBuf>,
        /// Batch mode: run only lines I, I + N, ... of the input (0-based).
        #[arg(long, default_value = "0/1")]
        shard: wring_io::batch::Shard,
        /// Batch mode: requests decoded together.
        #[arg(long, default_value_t = 8)]
        parallel: usize,
        /// Positions of the KV cache (prompt and generated tokens together); in batch mode the positions a
        /// request may reach, and the paged cache's size unless --kv-budget sets it. A smaller cache takes
        /// less device memory.
        #[arg(long, default_value_t = 4096)]
        ctx: usize,
        /// Batch mode: MiB of paged KV cache the running requests share.
        #[arg(long)]
        kv_budget: Option<u64>,
        /// Tokens to generate at most.
        #[arg(long, default_value_t = 64)]
        max_tokens: usize,
        /// 0 is greedy.
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        #[arg(long, default_value_t = 40)]
        top_k: usize,
        #[arg(long, default_value_t = 0.95)]
        top_p: f32,
        #[arg(long, default_value_t = 0.05)]
        min_p: f32,
        #[arg(long, default_value_t = 1.0)]
        repeat_penalty: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// End the text at this string (not printed); may be given several times.
        #[arg(long)]
        stop: Vec<String>,
        /// Time every kernel launch with timestamp queries and print where decode time goes.
        #[arg(long)]
        profile: bool,
        /// Keep decode activations in f32. By default, products with Q4_0, Q4_1 and Q8_0 weights quantize
        /// each decode step's activations to 8 bits and use integer dot products, as llama.cpp's CPU back
        /// end does.
        #[arg(long)]
        f32_activations: bool,
    },
    /// Perplexity of a text file, as llama.cpp's llama-perplexity computes it (prints `PPL = x`).
    Perplexity {
        #[command(flatten)]
        src: ModelArgs,
        /// The text file.
        #[arg(long)]
        file: std::path::PathBuf,
        /// Tokens per chunk.
        #[arg(long, default_value_t = 512)]
        ctx: usize,
        /// Evaluate at most this many chunks.
        #[arg(long)]
        chunks: Option<usize>,
        /// With --weights: also run the base model and report, beside the perplexity, the mean KL divergence
        /// from the base's next-token distributions and how often the two agree on the most likely token
        /// (llama-perplexity's --kl-divergence measures, on the same scored positions).
        #[arg(long, requires = "weights")]
        kl_base: bool,
        /// Feed each chunk through the KV cache this many tokens at a time (the streaming protocol a
        /// compressed cache is measured with) instead of in one pass.
        #[arg(long, conflicts_with = "kl_base")]
        stream: Option<usize>,
        /// Quantize activations to 8 bits in the products with Q4_0, Q4_1 and Q8_0 weights (integer dot
        /// products, as llama.cpp's CPU back end and llama-perplexity on such a file do); by default they
        /// stay f32.
        #[arg(long)]
        q8_activations: bool,
    },
    /// Compress a model's linear layers below 4 bits (round to nearest, GPTQ, SpQR, MixLLM, GQSA or
    /// QTIP-style trellis codes) into a
    /// file of compressed weights for `--weights`, calibrating on a text with wring itself.
    Quantize {
        #[arg(long)]
        model: Option<std::path::PathBuf>,
        #[arg(long, value_parser = named(&Method::ALL, Method::name))]
        method: Method,
        /// Bits per weight code, 2 to 8 (trellis: 2 to 4; default: 4 for mixllm and gqsa, 2 for trellis, 3
        /// otherwise).
        #[arg(long)]
        bits: Option<u32>,
        /// Columns per group (default: 16 for spqr, 64 for mixllm, 32 otherwise).
        #[arg(long)]
        group: Option<usize>,
        /// SpQR's outlier threshold tau (relative to the layer's Hessian-weighted variance); 0 keeps none.
        #[arg(long, default_value_t = 0.2)]
        outlier_threshold: f64,
        /// Quantize columns in their original order instead of by decreasing Hessian diagonal.
        #[arg(long)]
        no_act_order: bool,
        /// mixllm: the fraction of the weights, in whole output rows ranked by salience over the model,
        /// kept at --high-bits.
        #[arg(long, default_value_t = 0.1)]
        high_precision_fraction: f64,
        /// mixllm: the code width of the promoted rows.
        #[arg(long, default_value_t = 8)]
        high_bits: u32,
        /// gqsa: the fraction of each row's groups pruned whole (0 to below 1).
        #[arg(long, default_value_t = 0.5)]
        sparsity: f64,
        /// Incoherence processing (QuIP#): quantize each layer in the basis of a seeded orthogonal
        /// transform of its input ((Walsh-Hadamard x DCT) with random signs), which spreads large weights
        /// over their rows; the products then transform their input first. The value is the seed.
        #[arg(long, num_args = 0..=1, default_missing_value = "1")]
        incoherence: Option<u64>,
        /// Choose each input site's width among 2, 3 and 4 bits (the other options as given) for the
        /// least measured error within this many bits per weight of the linear layers, everything
        /// counted; prints the chosen mix (rtn, gptq and spqr).
        #[arg(long)]
        target_bpw: Option<f64>,
        /// Calibration text (needed by gptq and spqr).
        #[arg(long)]
        calib: Option<std::path::PathBuf>,
        /// Calibration tokens at most.
        #[arg(long, default_value_t = 2048)]
        calib_tokens: usize,
        /// trellis: bits of each trellis state (QTIP's L, 8 to 16). Encoding costs 2^L operations per
        /// weight: 16 is QTIP's choice, 12 is 16 times faster and a few per cent worse in distortion.
        #[arg(long, default_value_t = 16)]
        trellis_state: u32,
        /// The file of compressed weights to write (.safetensors).
        #[arg(short, long)]
        output: std::path::PathBuf,
    },
    /// Low-rank KV factors for `--kv-cache lowrank:R` (CSKV): per layer, the projection of keys and of
    /// values onto R directions chosen on a calibration text, written as a safetensors file.
    KvCalibrate {
        #[arg(long)]
        model: Option<std::path::PathBuf>,
        /// Features per position for keys and for values (a multiple of 4, at most the key/value
        /// dimension; 96 halves SmolLM2's f16 cache).
        #[arg(long)]
        rank: usize,
        /// lsq: the exact layer-wise least-squares optimum on the calibration inputs; asvd: SVD of the
        /// weights scaled by the inputs' root mean square to the power 1/2; svd: of the weights alone.
        #[arg(long, default_value = "lsq", value_parser = ["lsq", "asvd", "svd"])]
        method: String,
        /// Calibration text.
        #[arg(long)]
        calib: std::path::PathBuf,
        /// Calibration tokens at most.
        #[arg(long, default_value_t = 2048)]
        calib_tokens: usize,
        /// The file of factors to write (.safetensors).
        #[arg(short, long)]
        output: std::path::PathBuf,
    },
    /// Chat with the model on the terminal, using the model's own chat template; an empty line ends.
    Chat {
        #[command(flatten)]
        src: ModelArgs,
        /// A system prompt (otherwise the template's default).
        #[arg(long)]
        system: Option<String>,
        /// Tokens per reply at most.
        #[arg(long, default_value_t = 256)]
        max_tokens: usize,
        /// Positions of the KV cache: the whole conversation fits in it. A smaller cache takes less device
        /// memory.
        #[arg(long, default_value_t = 4096)]
        ctx: usize,
        #[arg(long, default_value_t = 0.7)]
        temperature: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Serve the model over HTTP with the OpenAI API (chat and text completions, streaming or not), for chat
    /// UIs and the OpenAI SDKs; one model, up to --parallel requests decoded together (continuous batching
    /// over a paged KV cache), more waiting in a bounded queue.
    Serve {
        #[command(flatten)]
        src: ModelArgs,
        /// The address to listen on: loopback unless told otherwise.
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// The name `/v1/models` lists (default: the model file's stem).
        #[arg(long)]
        model_id: Option<String>,
        /// Positions of the KV cache: a request's prompt and generated tokens together fit in it. With a
        /// paged cache (f32, f16, q8, q4, q2) it is also the pool all running requests share, unless --kv-budget
        /// sizes the pool.
        #[arg(long, default_value_t = 4096)]
        ctx: usize,
        /// Requests decoded together in each step (continuous batching; f32, f16, q8, q4 and q2 KV caches,
        /// which are paged; other modes run one request at a time).
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        /// MiB of paged KV cache shared by the running requests (default: --ctx positions); when it runs
        /// out, the newest request is paused and recomputed later.
        #[arg(long)]
        kv_budget: Option<u64>,
        /// Requests that may wait while --parallel run; more are refused with 429.
        #[arg(long, default_value_t = 8)]
        queue: usize,
        /// Tokens one request may ask for at most.
        #[arg(long, default_value_t = 2048)]
        max_tokens_limit: usize,
        /// Require `Authorization: Bearer KEY` on /v1 (default: the WRING_API_KEY environment variable, if set).
        #[arg(long, env = "WRING_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
        /// Keep decode activations in f32 (by default Q4_0/Q4_1/Q8_0 products use 8-bit activations).
        #[arg(long)]
        f32_activations: bool,
    },
    /// Write the f32 logits [tokens, vocab] of every position of a prompt as a .npy file.
    Logits {
        #[arg(long)]
        model: Option<std::path::PathBuf>,
        #[arg(long)]
        prompt: String,
        /// Output .npy path.
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Convert a GGUF model to another layout (safetensors: config.json, model.safetensors, tokenizer.json).
    Convert {
        #[arg(long)]
        model: Option<std::path::PathBuf>,
        /// Target layout.
        #[arg(long, value_parser = ["safetensors"])]
        to: String,
        /// Output directory.
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Compress an image (PNG/JPEG) or a WAV file into a .wrg stream with the wavelet codec.
    Encode {
        /// The image or WAV file, or a directory of them (or a list, with --list).
        input: std::path::PathBuf,
        /// The .wrg file to write (a directory for a batch: one <stem>.wrg per input).
        #[arg(short, long)]
        output: std::path::PathBuf,
        #[command(flatten)]
        batch: BatchArgs,
        /// 1 (smallest) to 100 (best).
        #[arg(long, conflicts_with_all = ["bpp", "kbps"])]
        quality: Option<f32>,
        /// Target bits per pixel (images).
        #[arg(long, conflicts_with = "kbps")]
        bpp: Option<f64>,
        /// Target kilobits per second (audio).
        #[arg(long)]
        kbps: Option<f64>,
        /// The wavelet.
        #[arg(long, default_value = "bior4.4", value_parser = named(&Wavelet::ALL, Wavelet::name))]
        wavelet: Wavelet,
        /// The packet trees' deepest level (default: 6 for images, 9 for audio, fewer for small inputs).
        #[arg(long)]
        levels: Option<usize>,
        /// The packet trees: chosen per channel by rate-distortion cost (best), or fixed (dyadic, full).
        #[arg(long, default_value = "best", value_parser = named(&TreeShape::ALL, TreeShape::name))]
        tree: TreeShape,
        /// What the quantizer steps serve: PSNR; the eye (images: coarser fine scales and colour); the
        /// ear (audio: steps after the threshold of hearing and each band's loudness, noise-filled bands).
        #[arg(long, default_value = "psnr", value_parser = named(&Tune::ALL, Tune::name))]
        tune: Tune,
    },
    /// Decode a .wrg stream into a PNG (images) or WAV (audio).
    Decode {
        /// The .wrg file, or a directory of them (or a list, with --list).
        input: std::path::PathBuf,
        /// The image or WAV file to write (a directory for a batch).
        #[arg(short, long)]
        output: std::path::PathBuf,
        #[command(flatten)]
        batch: BatchArgs,
        /// A batch's output format: <stem>.png or <stem>.wav per input.
        #[arg(long, default_value = "png", value_parser = ["png", "wav"])]
        ext: String,
    },
    /// Wavelet packet transform of an image, a WAV or a .npy array [channels, ...], written as .npy.
    Wavelet {
        /// forward or inverse.
        #[arg(value_parser = ["forward", "inverse"])]
        direction: String,
        /// Input: an image or WAV (forward), or a .npy of coefficients (inverse) or of signals (forward).
        input: std::path::PathBuf,
        /// The .npy to write: [channels * subbands, ...] forward, [channels, ...] inverse.
        #[arg(short, long)]
        output: std::path::PathBuf,
        #[arg(long, default_value = "bior4.4", value_parser = named(&Wavelet::ALL, Wavelet::name))]
        wavelet: Wavelet,
        #[arg(long, default_value_t = 1)]
        levels: usize,
        /// The boundary mode.
        #[arg(long, default_value = "periodization", value_parser = named(&Mode::ALL, Mode::name))]
        mode: Mode,
        /// Channels of the original signal (inverse only; default 1).
        #[arg(long, default_value_t = 1)]
        channels: usize,
        /// The original signal's shape, e.g. 512x768 or 48000 (inverse only; default: the coefficients'
        /// shape doubled per level, exact for periodization and even sizes).
        #[arg(long)]
        size: Option<String>,
        /// Run the transform on f16 samples (adapters with SHADER_F16; f32 filters and sums, each level
        /// stored as f16). The .npy is still written as f32.
        #[arg(long)]
        f16: bool,
    },
    /// Print the token ids of a text as a JSON list.
    Tokenize {
        #[arg(long)]
        model: Option<std::path::PathBuf>,
        text: String,
    },
    /// Measure the chosen adapter's copy bandwidth with the copy kernel (GPU timestamps where available).
    Probe {
        /// Buffer size in MiB.
        #[arg(long, default_value_t = 64)]
        mib: u64,
        /// Timed repetitions.
        #[arg(long, default_value_t = 10)]
        reps: usize,
    },
    /// Vector quantization: train codebooks by k-means, encode, decode, search.
    #[command(subcommand)]
    Vq(VqCommand),
}

#[derive(Subcommand, Debug)]
enum VqCommand {
    /// Train a quantizer on DATA.npy ([n, d] f32) by k-means: plain VQ, residual (--stages), product
    /// (--groups) or group-residual (both).
    Train {
        data: std::path::PathBuf,
        /// The codebooks to write (.safetensors, or .npy [groups, stages, k, d / groups]).
        #[arg(short, long)]
        output: std::path::PathBuf,
        /// Codewords per codebook.
        #[arg(long)]
        k: usize,
        #[arg(long, default_value_t = 20)]
        iters: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Residual stages per group.
        #[arg(long, default_value_t = 1)]
        stages: usize,
        /// Groups of consecutive dimensions (product-quantizer subspaces).
        #[arg(long, default_value_t = 1)]
        groups: usize,
        /// plusplus (k-means++) or random.
        #[arg(long, default_value = "plusplus", value_parser = named(&Seeding::ALL, Seeding::name))]
        init: Seeding,
    },
    /// Encode DATA.npy ([n, d]) into codes ([n, groups * stages] u32 .npy).
    Encode {
        /// A .npy of vectors, or a directory of them (or a list, with --list).
        data: std::path::PathBuf,
        #[arg(long)]
        codebook: std::path::PathBuf,
        /// The codes .npy (a directory for a batch: one <stem>.codes.npy per input).
        #[arg(short, long)]
        output: std::path::PathBuf,
        #[command(flatten)]
        batch: BatchArgs,
        /// Keep the codebooks as f16 on the device.
        #[arg(long)]
        f16: bool,
    },
    /// Decode codes ([n, groups * stages] integer .npy) into vectors ([n, d] f32 .npy).
    Decode {
        codes: std::path::PathBuf,
        #[arg(long)]
        codebook: std::path::PathBuf,
        #[arg(short, long)]
        output: std::path::PathBuf,
        #[arg(long)]
        f16: bool,
    },
    /// The k nearest codewords of each query in QUERIES.npy ([n, d]) in a one-codebook quantizer, or with
    /// --codes the k nearest encoded database vectors of a product quantizer (asymmetric distances).
    /// Prints JSON, or writes OUT.ids.npy and OUT.distances.npy with -o OUT.
    Search {
        queries: std::path::PathBuf,
        #[arg(long)]
        codebook: std::path::PathBuf,
        #[arg(long, default_value_t = 10)]
        k: usize,
        /// The distance.
        #[arg(long, default_value = "l2", value_parser = named(&Metric::ALL, Metric::name))]
        metric: Metric,
        /// Product codes of a database ([n, groups]) to search instead of the codebook.
        #[arg(long)]
        codes: Option<std::path::PathBuf>,
        #[arg(short, long)]
        output: Option<std::path::PathBuf>,
        #[arg(long)]
        f16: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("WRING_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result: Result<(), String> = match cli.command {
        Command::Info { json } => info(json).map_err(|e| e.to_string()),
        Command::Probe { mib, reps } => probe(mib, reps).map_err(|e| e.to_string()),
        Command::Generate {
            src,
            prompts: Some(prompts),
            out: Some(out),
            shard,
            parallel,
            ctx,
            kv_budget,
            max_tokens,
            f32_activations,
            ..
        } => (|| {
            let kv_cache = src.kv_cache;
            let model_id = model_path(src.model.clone())
                .ok()
                .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "wring".into());
            let source = Source::open(src).map_err(|e| e.to_string())?;
            let options = ContextOptions {
                q8_activations: !f32_activations,
                ..Default::default()
            };
            let batch = Batching {
                parallel,
                kv_budget_mib: kv_budget,
                queue: 0,
            };
            let opts = wring_server::jsonl::JsonlOptions {
                shard,
                max_tokens_limit: max_tokens,
                model_id,
            };
            generate_jsonl(
                &source, &prompts, &out, ctx, &opts, batch, options, kv_cache,
            )
            .map_err(|e| e.to_string())
        })(),
        Command::Generate {
            src,
            prompt,
            max_tokens,
            ctx,
            temperature,
            top_k,
            top_p,
            min_p,
            repeat_penalty,
            seed,
            stop,
            profile,
            f32_activations,
            ..
        } => wring_llm::Sampler::new(temperature, top_k, top_p, min_p, repeat_penalty, seed)
            .and_then(|sampler| {
                let kv_cache = src.kv_cache;
                let source = Source::open(src)?;
                let options = ContextOptions {
                    profile,
                    q8_activations: !f32_activations,
                    ..Default::default()
                };
                let prompt = prompt.ok_or_else(|| {
                    wring_llm::LlmError::Request("give --prompt, or --prompts with --out".into())
                })?;
                let cache = Cache {
                    mode: kv_cache,
                    positions: ctx,
                };
                generate(&source, &prompt, max_tokens, sampler, &stop, options, cache)
            })
            .map_err(|e| e.to_string()),
        Command::Tokenize { model, text } => tokenize(model, &text).map_err(|e| e.to_string()),
        Command::Convert { model, to: _, out } => convert(model, &out).map_err(|e| e.to_string()),
        Command::Logits { model, prompt, out } => {
            logits(model, &prompt, &out).map_err(|e| e.to_string())
        }
        Command::Chat {
            src,
            system,
            max_tokens,
            ctx,
            temperature,
            seed,
        } => wring_llm::Sampler::new(temperature, 40, 0.95, 0.05, 1.1, seed)
            .and_then(|sampler| {
                let cache = Cache {
                    mode: src.kv_cache,
                    positions: ctx,
                };
                let source = Source::open(src)?;
                chat(&source, system, max_tokens, sampler, cache)
            })
            .map_err(|e| e.to_string()),
        Command::Serve {
            src,
            host,
            port,
            model_id,
            ctx,
            parallel,
            kv_budget,
            queue,
            max_tokens_limit,
            api_key,
            f32_activations,
        } => (|| {
            let kv_cache = src.kv_cache;
            let id = model_id.unwrap_or_else(|| {
                model_path(src.model.clone())
                    .ok()
                    .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                    .unwrap_or_else(|| "wring".into())
            });
            let source = Source::open(src).map_err(|e| e.to_string())?;
            let options = ContextOptions {
                q8_activations: !f32_activations,
                ..Default::default()
            };
            let mut opts = wring_server::ServeOptions::new(&id);
            opts.api_key = api_key;
            opts.max_tokens_limit = max_tokens_limit;
            let addr = std::net::SocketAddr::new(host, port);
            let batch = Batching {
                parallel,
                kv_budget_mib: kv_budget,
                queue,
            };
            serve(source, addr, opts, ctx, batch, options, kv_cache).map_err(|e| e.to_string())
        })(),
        Command::Encode {
            input,
            output,
            batch,
            quality,
            bpp,
            kbps,
            wavelet,
            levels,
            tree,
            tune,
        } => {
            let opts = wring_codec::Options {
                rate: wring_codec::Rate::choose(quality, bpp.or(kbps)),
                wavelet,
                levels,
                tree,
                tune,
            };
            encode(&input, &output, &batch, &opts)
        }
        Command::Decode {
            input,
            output,
            batch,
            ext,
        } => decode(&input, &output, &batch, &ext),
        Command::Vq(cmd) => vq_cmd(cmd).map_err(|e| e.to_string()),
        Command::Wavelet {
            direction,
            input,
            output,
            wavelet,
            levels,
            mode,
            channels,
            size,
            f16,
        } => wavelet_cmd(
            direction == "forward",
            &input,
            &output,
            wavelet,
            levels,
            mode,
            channels,
            size.as_deref(),
            f16,
        )
        .map_err(|e| e.to_string()),
        Command::Perplexity {
            src,
            file,
            ctx,
            chunks,
            kl_base,
            stream,
            q8_activations,
        } => {
            let kv_cache = src.kv_cache;
            Source::open(src)
                .and_then(|source| {
                    let options = ContextOptions {
                        q8_activations,
                        ..Default::default()
                    };
                    perplexity(
                        &source, &file, ctx, chunks, kl_base, stream, kv_cache, options,
                    )
                })
                .map_err(|e| e.to_string())
        }
        Command::KvCalibrate {
            model,
            rank,
            method,
            calib,
            calib_tokens,
            output,
        } => kv_calibrate(model, rank, &method, &calib, calib_tokens, &output)
            .map_err(|e| e.to_string()),
        Command::Quantize {
            model,
            method,
            bits,
            group,
            outlier_threshold,
            no_act_order,
            high_precision_fraction,
            high_bits,
            sparsity,
            incoherence,
            target_bpw,
            calib,
            calib_tokens,
            trellis_state,
            output,
        } => {
            let base = match method {
                Method::Spqr => Config::spqr(bits.unwrap_or(3)),
                // Trellis codes need incoherence processing: it is on unless a seed is given.
                Method::Trellis => {
                    Config::trellis(bits.unwrap_or(2), trellis_state, incoherence.unwrap_or(1))
                }
                Method::Mixllm => Config {
                    bits: bits.unwrap_or(4),
                    high_bits,
                    ..Config::mixllm(high_precision_fraction)
                },
                Method::Gqsa => Config {
                    bits: bits.unwrap_or(4),
                    ..Config::gqsa(sparsity)
                },
                m => Config::plain(m, bits.unwrap_or(3), 32),
            };
            let cfg = Config {
                group: group.unwrap_or(base.group),
                act_order: base.act_order && !no_act_order,
                outlier_threshold: (method == Method::Spqr && outlier_threshold > 0.0)
                    .then_some(outlier_threshold),
                incoherence: incoherence.or(base.incoherence),
                ..base
            };
            quantize(
                model,
                &cfg,
                target_bpw,
                calib.as_deref(),
                calib_tokens,
                &output,
            )
            .map_err(|e| e.to_string())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn info(json: bool) -> Result<(), wring_runtime::Error> {
    let (reports, chosen, why) = wring_runtime::adapter_reports()?;
    let ctx = Context::new(ContextOptions::default())?;
    let caps = ctx.caps();
    if json {
        let adapters: Vec<_> = reports
            .iter()
            .map(|r| {
                serde_json::json!({
                    "index": r.index,
                    "name": r.info.name,
                    "backend": format!("{:?}", r.info.backend),
                    "device_type": format!("{:?}", r.info.device_type),
                    "driver": r.info.driver,
                    "driver_info": r.info.driver_info,
                    "chosen": r.index == chosen,
                })
            })
            .collect();
        let l = &ctx.info().limits;
        let out = serde_json::json!({
            "adapters": adapters,
            "chosen": chosen,
            "why": why,
            "plan": { "as": if caps.software { "cpu" } else { "gpu" }, "why": ctx.info().plan_why },
            "features": { "shader_f16": caps.f16, "subgroup": caps.subgroup,
                           "subgroup_min_size": caps.subgroup_min_size,
                           "timestamp_query": reports[chosen].has_timestamps() },
            "limits": {
                "max_storage_buffer_binding_size": l.max_storage_buffer_binding_size,
                "max_buffer_size": l.max_buffer_size,
                "max_compute_workgroups_per_dimension": l.max_compute_workgroups_per_dimension,
                "max_compute_invocations_per_workgroup": l.max_compute_invocations_per_workgroup,
                "max_compute_workgroup_storage_size": l.max_compute_workgroup_storage_size,
                "min_storage_buffer_offset_alignment": l.min_storage_buffer_offset_alignment,
            }
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(());
    }
    println!("Adapters found:");
    for r in &reports {
        let mark = if r.index == chosen { "*" } else { " " };
        println!(
            " {mark} [{}] {} ({:?}, {:?}; driver {} {})",
            r.index,
            r.info.name,
            r.info.backend,
            r.info.device_type,
            r.info.driver,
            r.info.driver_info
        );
    }
    println!(
        "Chosen: [{chosen}] {} because {why}.",
        reports[chosen].info.name
    );
    let l = &ctx.info().limits;
    println!(
        "Plan: kernels chosen as for a {}, because {}; WRING_PLAN=gpu|cpu|auto chooses.",
        if caps.software {
            "CPU adapter"
        } else {
            "hardware GPU"
        },
        ctx.info().plan_why
    );
    println!("Features used by wring:");
    println!("  SHADER_F16       {}", yes(caps.f16));
    println!(
        "  SUBGROUP         {}{}",
        yes(caps.subgroup),
        if caps.subgroup {
            format!(" ({} lanes at least)", caps.subgroup_min_size)
        } else {
            String::new()
        }
    );
    println!(
        "  TIMESTAMP_QUERY  {}",
        yes(reports[chosen].has_timestamps())
    );
    println!("Limits:");
    println!(
        "  max storage buffer binding  {}",
        human_bytes(l.max_storage_buffer_binding_size)
    );
    println!(
        "  max buffer size             {}",
        human_bytes(l.max_buffer_size)
    );
    println!(
        "  max workgroups per dim      {}",
        l.max_compute_workgroups_per_dimension
    );
    println!(
        "  max invocations/workgroup   {}",
        l.max_compute_invocations_per_workgroup
    );
    println!(
        "  workgroup storage           {}",
        human_bytes(u64::from(l.max_compute_workgroup_storage_size))
    );
    println!(
        "  storage offset alignment    {}",
        l.min_storage_buffer_offset_alignment
    );
    Ok(())
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no (fallback variants are used)"
    }
}

fn probe(mib: u64, reps: usize) -> Result<(), wring_runtime::Error> {
    let p = wring_runtime::probe::copy_bandwidth(mib, reps)?;
    println!(
        "copy kernel on {}: {mib} MiB in {:.3} ms = {:.2} GB/s (read + write), result verified",
        p.adapter,
        p.seconds * 1e3,
        p.gb_per_s()
    );
    Ok(())
}

/// A model as the commands take it: the GGUF, and the compressed weights replacing its linear layers when
/// `--weights` names a file (checked against the GGUF it was made from).
struct Source {
    gguf: wring_gguf::Gguf,
    /// The replacements (none without `--weights`).
    matrices: std::collections::HashMap<String, wring_quant::group::GroupMatrix>,
    /// The factors of a low-rank KV cache (`--kv-factors`).
    kv_factors: Option<wring_io::kv_factors::KvFactors>,
}

impl Source {
    fn open(
        ModelArgs {
            model,
            weights,
            kv_factors,
            ..
        }: ModelArgs,
    ) -> Result<Source, wring_llm::LlmError> {
        let path = model_path(model)?;
        let gguf = wring_gguf::Gguf::open(&path)?;
        let matrices = match weights {
            Some(w) => {
                let file = wring_llm::compress::open(&w, &path)?;
                eprintln!(
                    "compressed weights: {} matrices ({})",
                    file.matrices.len(),
                    file.method
                );
                file.matrices
            }
            None => Default::default(),
        };
        let kv_factors = kv_factors
            .map(|f| wring_llm::kv::open_factors(&f, &path))
            .transpose()?;
        Ok(Source {
            gguf,
            matrices,
            kv_factors,
        })
    }

    /// Loads the model with its KV cache in `mode` (and the factors, for lowrank:R).
    fn load(
        &self,
        ctx: &Context,
        max_context: usize,
        mode: wring_llm::KvMode,
        progress: impl FnMut(usize, usize),
    ) -> Result<wring_llm::Llama, wring_llm::LlmError> {
        wring_llm::kv::load(
            ctx,
            &self.weights(),
            max_context,
            mode,
            self.kv_factors.as_ref(),
            progress,
        )
    }

    /// The weight source the model loads from.
    fn weights(&self) -> wring_llm::compress::Quantized<'_> {
        wring_llm::compress::Quantized {
            base: &self.gguf,
            matrices: &self.matrices,
        }
    }
}

fn kv_calibrate(
    model: Option<std::path::PathBuf>,
    rank: usize,
    method: &str,
    calib: &std::path::Path,
    calib_tokens: usize,
    output: &std::path::Path,
) -> Result<(), wring_llm::LlmError> {
    use wring_quant::lowrank::Init;
    let init = Init::ALL
        .into_iter()
        .find(|i| i.name() == method)
        .unwrap_or(Init::Lsq);
    let path = model_path(model)?;
    let g = wring_gguf::Gguf::open(&path)?;
    let text = std::fs::read_to_string(calib).map_err(|e| {
        wring_llm::LlmError::Request(format!("cannot read {}: {e}", calib.display()))
    })?;
    let ctx = Context::new(ContextOptions::default())?;
    let start = std::time::Instant::now();
    let (factors, kept) = wring_llm::kv::calibrate_factors(
        &ctx,
        &g,
        &path,
        rank,
        init,
        &text,
        calib_tokens,
        |done, total| eprint!("\rcalibrating {done}/{total}"),
    )?;
    eprintln!();
    wring_io::kv_factors::write(output, &factors)
        .map_err(|e| wring_llm::LlmError::Request(e.to_string()))?;
    let mean = |i: usize| kept.iter().map(|k| k[i]).sum::<f64>() / kept.len().max(1) as f64;
    println!(
        "{}: rank {rank} ({}), {} layers, in {:.1} s; mean share of the calibration energy kept: keys {:.2} %, values {:.2} %",
        output.display(),
        factors.method,
        factors.layers.len(),
        start.elapsed().as_secs_f64(),
        100.0 * mean(0),
        100.0 * mean(1)
    );
    Ok(())
}

fn quantize(
    model: Option<std::path::PathBuf>,
    cfg: &Config,
    target_bpw: Option<f64>,
    calib: Option<&std::path::Path>,
    calib_tokens: usize,
    output: &std::path::Path,
) -> Result<(), wring_llm::LlmError> {
    let path = model_path(model)?;
    let g = wring_gguf::Gguf::open(&path)?;
    let text = calib
        .map(|p| {
            std::fs::read_to_string(p).map_err(|e| {
                wring_llm::LlmError::Request(format!("cannot read {}: {e}", p.display()))
            })
        })
        .transpose()?;
    let ctx = Context::new(ContextOptions::default())?;
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{msg:>40} {bar:30} {pos}/{len}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let start = std::time::Instant::now();
    let (file, summary, choices) = wring_llm::compress::compress(
        &ctx,
        &g,
        &path,
        cfg,
        target_bpw,
        text.as_deref(),
        calib_tokens,
        |stage| match stage {
            wring_llm::compress::Stage::Calibrating { done, total } => {
                bar.set_message("calibrating");
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            }
            wring_llm::compress::Stage::Quantizing { name, done, total } => {
                bar.set_message(name.to_string());
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            }
        },
    )?;
    bar.finish_and_clear();
    wring_io::group_file::write(output, &file)
        .map_err(|e| wring_llm::LlmError::Request(e.to_string()))?;
    // The mix a target chose: each input site's width, with its bits per weight and error.
    for c in &choices {
        let w = file
            .matrices
            .iter()
            .filter(|(n, _)| {
                wring_llm::compress::site_of(n).is_some_and(|(b, s)| {
                    b == c.block && wring_llm::compress::SITES[s].join("+") == c.site
                })
            })
            .map(|(_, m)| m.layout.rows * m.layout.cols)
            .sum::<usize>();
        println!(
            "blk.{:<3} {:<24} {:.3} bpw  error {:.4e}  {}",
            c.block,
            c.site,
            c.bits / w.max(1) as f64,
            c.error,
            c.config
        );
    }
    let stats = match cfg.stats {
        Stats::Affine => "affine f16 statistics".to_string(),
        Stats::Bilevel { bits, rows } => format!("{bits}-bit statistics over {rows} rows"),
        Stats::Trellis { state } => format!("tiles of 16 x 16, {state}-bit trellis states"),
    };
    eprintln!(
        "{} matrices, {} weights, {} outliers ({:.3}%), {} groups pruned, proxy error {:.4e}, in {:.1} s",
        file.matrices.len(),
        summary.weights,
        summary.outliers,
        100.0 * summary.outliers as f64 / summary.weights as f64,
        summary.pruned_groups,
        summary.proxy_error,
        start.elapsed().as_secs_f64()
    );
    println!(
        "{}: {} {}-bit, groups of {}, {stats}: {:.4} bits per weight (linear layers, everything counted)",
        output.display(),
        cfg.method.name(),
        cfg.bits,
        cfg.group,
        summary.bits_per_weight()
    );
    Ok(())
}

/// The default model: the local model cache that `.ci/fetch-model.sh` fills.
const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

fn model_path(
    model: Option<std::path::PathBuf>,
) -> Result<std::path::PathBuf, wring_llm::LlmError> {
    let p = model.unwrap_or_else(|| DEFAULT_MODEL.into());
    if !p.exists() {
        return Err(wring_llm::LlmError::Request(format!(
            "model {} not found; pass --model, or fetch the default with `bash .ci/fetch-model.sh` \
             (see the guide's Getting started page, docs/src/getting-started.md)",
            p.display()
        )));
    }
    Ok(p)
}

fn tokenize(model: Option<std::path::PathBuf>, text: &str) -> Result<(), wring_llm::LlmError> {
    let g = wring_gguf::Gguf::open(model_path(model)?)?;
    let tok = wring_llm::GgufTokenizer::from_gguf(&g)?;
    let ids = tok.encode(text)?;
    println!("{}", serde_json::to_string(&ids).unwrap_or_default());
    Ok(())
}

fn generate(
    source: &Source,
    prompt: &str,
    max_tokens: usize,
    sampler: wring_llm::Sampler,
    stops: &[String],
    options: ContextOptions,
    cache: Cache,
) -> Result<(), wring_llm::LlmError> {
    use std::io::Write as _;
    let kv_cache = cache.mode;
    let tok = wring_llm::GgufTokenizer::from_gguf(&source.gguf)?;
    let profile = options.profile;
    let ctx = Context::new(options)?;
    let load = std::time::Instant::now();
    let mut llm = load_with_progress(&ctx, source, cache)?;
    eprintln!(
        "loaded {} layers in {:.2} s on {} ({kv_cache} KV cache)",
        llm.cfg.n_layers,
        load.elapsed().as_secs_f64(),
        ctx.label()
    );
    let ids = tok.encode(prompt)?;
    let prompt_len = ids.len();
    if prompt_len == 0 {
        return Err(wring_llm::LlmError::Request(
            "the prompt has no tokens".into(),
        ));
    }
    let t0 = std::time::Instant::now();
    // The library's streaming API: the prompt runs as one prefill step when the generation starts.
    let tokens = llm.generate(
        &ctx,
        &ids,
        sampler,
        &tok.stop_tokens,
        max_tokens,
        wring_llm::Cancel::new(),
    )?;
    let prefill = t0.elapsed().as_secs_f64();
    let mut stream = wring_llm::TextStream::with_stops(&tok, stops);
    let t1 = std::time::Instant::now();
    print!("{prompt}");
    for token in tokens {
        print!("{}", stream.push(token?)?);
        let _ = std::io::stdout().flush();
        if stream.stopped() {
            break;
        }
    }
    let generated = stream.tokens().len();
    println!("{}", stream.finish());
    let decode = t1.elapsed().as_secs_f64();
    if profile {
        print_profile(&llm.take_launch_times(), generated.saturating_sub(1).max(1));
        eprintln!("launches per decode step: {}", llm.last_launches());
        let mem = ctx.memory();
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        eprintln!(
            "device memory in tensors: {:.1} MiB live (KV cache {:.1} MiB), {:.1} MiB idle in the pool, peak {:.1} MiB",
            mib(mem.live_bytes),
            mib(llm.kv_bytes()),
            mib(mem.idle_bytes),
            mib(mem.peak_bytes)
        );
    }
    eprintln!(
        "prompt {prompt_len} tokens in {:.1} ms ({:.1} tokens/s); generated {generated} tokens in {:.2} s ({:.2} tokens/s)",
        prefill * 1e3,
        prompt_len as f64 / prefill,
        decode,
        generated as f64 / decode.max(1e-9)
    );
    Ok(())
}

/// Prints the GPU time per kernel variant over every launch recorded (prefill and decode), biggest first,
/// with the share of the total and the time per generated token, and beside it the CPU time each launch
/// cost to record and encode (see [`wring_runtime::LaunchTime::cpu_nanos`]).
fn print_profile(times: &[wring_runtime::LaunchTime], tokens: usize) {
    // Per kernel: launches, GPU nanoseconds, CPU nanoseconds.
    let mut by_kernel: std::collections::BTreeMap<&str, (usize, f64, f64)> =
        std::collections::BTreeMap::new();
    for t in times {
        let e = by_kernel.entry(t.kernel.as_str()).or_default();
        e.0 += 1;
        e.1 += t.nanos;
        e.2 += t.cpu_nanos;
    }
    let total: f64 = by_kernel.values().map(|v| v.1).sum();
    let cpu_total: f64 = by_kernel.values().map(|v| v.2).sum();
    let mut rows: Vec<_> = by_kernel.into_iter().collect();
    rows.sort_by(|a, b| b.1.1.total_cmp(&a.1.1));
    eprintln!(
        "{:<44} {:>9} {:>11} {:>7} {:>12} {:>9} {:>14}",
        "kernel/variant", "launches", "GPU ms", "share", "ms per token", "CPU ms", "CPU us/launch"
    );
    for (k, (n, ns, cpu)) in rows {
        eprintln!(
            "{k:<44} {n:>9} {:>11.2} {:>6.1}% {:>12.3} {:>9.2} {:>14.1}",
            ns / 1e6,
            100.0 * ns / total.max(1.0),
            ns / 1e6 / tokens as f64,
            cpu / 1e6,
            cpu / 1e3 / n as f64
        );
    }
    eprintln!(
        "{:<44} {:>9} {:>11.2} {:>7} {:>12} {:>9.2}",
        "total",
        times.len(),
        total / 1e6,
        "",
        "",
        cpu_total / 1e6
    );
}

#[allow(
    clippy::too_many_arguments,
    reason = "one argument per perplexity option of the command line"
)]
fn perplexity(
    source: &Source,
    file: &std::path::Path,
    n_ctx: usize,
    chunks: Option<usize>,
    kl_base: bool,
    stream: Option<usize>,
    kv_cache: wring_llm::KvMode,
    options: ContextOptions,
) -> Result<(), wring_llm::LlmError> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        wring_llm::LlmError::Request(format!("cannot read {}: {e}", file.display()))
    })?;
    let tok = wring_llm::GgufTokenizer::from_gguf(&source.gguf)?;
    let ids = tok.encode(&text)?;
    let ctx = Context::new(options)?;
    let mut llm = source.load(&ctx, n_ctx, kv_cache, |_, _| {})?;
    if kv_cache != wring_llm::KvMode::F32 && stream.is_none() {
        eprintln!(
            "note: each chunk runs in one pass, which attends to its own keys and values before they are stored, so the {kv_cache} cache is never read; --stream S measures it"
        );
    }
    let start = std::time::Instant::now();
    let bos = if tok.add_bos { tok.bos } else { None };
    if kl_base {
        let mut base = wring_llm::Llama::load(&ctx, &source.gguf, n_ctx, |_, _| {})?;
        let n = (ids.len() / n_ctx).min(chunks.unwrap_or(usize::MAX));
        let (q, base_ppl) =
            wring_llm::compress::quality_against(&mut base, &mut llm, &ctx, &ids, n_ctx, n, bos)?;
        eprintln!(
            "{n} chunks of {n_ctx} tokens, {} scored, in {:.1} s on {}",
            q.scored,
            start.elapsed().as_secs_f64(),
            ctx.label()
        );
        println!("PPL = {:.4}", q.ppl);
        println!("base PPL = {base_ppl:.4}");
        println!("mean KLD = {:.6}", q.kld);
        println!("same top = {:.2} %", 100.0 * q.top1);
        return Ok(());
    }
    let p = llm.perplexity_streaming(
        &ctx,
        &ids,
        n_ctx,
        chunks,
        bos,
        stream.unwrap_or(n_ctx),
        |_, _, _| Ok(()),
    )?;
    let running: Vec<String> = p
        .running
        .iter()
        .enumerate()
        .map(|(i, v)| format!("[{}]{v:.4}", i + 1))
        .collect();
    eprintln!("{}", running.join(","));
    eprintln!(
        "{} chunks of {n_ctx} tokens, {} scored, in {:.1} s on {}",
        p.chunks,
        p.scored,
        start.elapsed().as_secs_f64(),
        ctx.label()
    );
    println!("PPL = {:.4}", p.ppl);
    Ok(())
}

fn chat(
    source: &Source,
    system: Option<String>,
    max_tokens: usize,
    mut sampler: wring_llm::Sampler,
    cache: Cache,
) -> Result<(), wring_llm::LlmError> {
    use std::io::{BufRead as _, Write as _};
    use wring_llm::chat::{ChatMessage, render};
    let tok = wring_llm::GgufTokenizer::from_gguf(&source.gguf)?;
    let template = tok
        .chat_template
        .clone()
        .ok_or_else(|| wring_llm::LlmError::Unsupported("the model has no chat template".into()))?;
    let ctx = Context::new(ContextOptions::default())?;
    let mut llm = load_with_progress(&ctx, source, cache)?;
    let piece = |id: Option<u32>| id.and_then(|i| tok.decode(&[i]).ok()).unwrap_or_default();
    let (bos, eos) = (piece(tok.bos), piece(tok.eos));
    let mut messages: Vec<ChatMessage> = system
        .iter()
        .map(|s| ChatMessage::new("system", s))
        .collect();
    // The ids the KV cache holds, so each turn only runs what is new.
    let mut cached: Vec<u32> = Vec::new();
    eprintln!("chatting on {}; an empty line ends", ctx.label());
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| wring_llm::LlmError::Request(e.to_string()))?
            == 0
            || line.trim().is_empty()
        {
            return Ok(());
        }
        messages.push(ChatMessage::new("user", line.trim_end()));
        let prompt = render(&template, &messages, true, &bos, &eos)?;
        let ids = tok.encode(&prompt)?;
        let keep = cached.iter().zip(&ids).take_while(|(a, b)| a == b).count();
        if keep < cached.len() || keep == ids.len() {
            llm.reset();
            cached.clear();
        }
        let new = &ids[cached.len()..];
        let mut logits = llm.forward(&ctx, new, false)?;
        cached = ids.clone();
        let mut stream = wring_llm::TextStream::new(&tok);
        for _ in 0..max_tokens {
            let next = sampler.sample(&logits, &cached)?;
            if tok.stop_tokens.contains(&next) {
                break;
            }
            print!("{}", stream.push(next)?);
            let _ = std::io::stdout().flush();
            logits = llm.forward(&ctx, &[next], false)?;
            cached.push(next);
        }
        println!("{}", stream.finish());
        messages.push(ChatMessage::new("assistant", stream.text()));
    }
}

/// How the server batches: requests at once, the paged cache's size, and the queue behind them.
struct Batching {
    parallel: usize,
    kv_budget_mib: Option<u64>,
    queue: usize,
}

/// Pages `model`'s cache for `batch` where its mode has a paged form (f32, f16, q8, q4, q2): blocks of
/// the mode's size (`KvMode::paged_block`) for `--kv-budget` MiB, or `max_context` positions. Returns
/// what the cache is, for the log line.
fn page_cache(
    ctx: &Context,
    model: &mut wring_llm::Llama,
    kv_cache: wring_llm::KvMode,
    batch: &Batching,
) -> Result<String, wring_llm::LlmError> {
    if !kv_cache.paged() {
        return Ok(format!(
            "{kv_cache} KV cache, not paged: requests run one at a time ({} positions)",
            model.max_context
        ));
    }
    let block = kv_cache.paged_block();
    let blocks = match batch.kv_budget_mib {
        Some(mib) => model.paged_blocks_within(kv_cache, block, mib.saturating_mul(1 << 20)),
        None => model.max_context.div_ceil(block),
    };
    let shape = model.set_paged(ctx, kv_cache, blocks, block)?;
    Ok(format!(
        "paged {kv_cache} KV cache of {} positions shared by {} requests at once, {} positions each at most",
        shape.positions(),
        batch.parallel.max(1),
        model.max_context.min(shape.positions())
    ))
}

/// Batch mode of `wring generate`: the JSONL file's requests through continuous batching into `out`.
#[allow(
    clippy::too_many_arguments,
    reason = "the command's settings, each from its own flag"
)]
fn generate_jsonl(
    source: &Source,
    prompts: &std::path::Path,
    out: &std::path::Path,
    max_context: usize,
    opts: &wring_server::jsonl::JsonlOptions,
    batch: Batching,
    options: ContextOptions,
    kv_cache: wring_llm::KvMode,
) -> Result<(), Box<dyn std::error::Error>> {
    let ctx = Context::new(options)?;
    let mut model = source.load(&ctx, max_context, kv_cache, |_, _| {})?;
    let tokenizer = wring_llm::GgufTokenizer::from_gguf(&source.gguf)?;
    if !kv_cache.paged() {
        return Err(format!(
            "batch mode pages its KV cache, and {kv_cache} has no paged form: use --kv-cache f32, f16, q8, q4 or q2 (or q8h, q4h, q2h)"
        )
        .into());
    }
    let cache = page_cache(&ctx, &mut model, kv_cache, &batch)?;
    eprintln!("{} on {} ({cache})", prompts.display(), ctx.label());
    let shard = opts.shard;
    let start = std::time::Instant::now();
    let s = wring_server::jsonl::run(
        &ctx,
        &mut model,
        &tokenizer,
        batch.parallel,
        prompts,
        out,
        opts,
    )?;
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "shard {}/{}: {} answered, {} errors, {} answered before, of {} lines; {} tokens in {secs:.1} s ({:.1} tokens/s)",
        shard.index,
        shard.count,
        s.answered,
        s.failed,
        s.done_before,
        s.lines,
        s.tokens,
        s.tokens as f64 / secs.max(1e-9)
    );
    if s.failed > 0 {
        return Err(format!(
            "{} lines got error objects in {} (rerunning retries them)",
            s.failed,
            out.display()
        )
        .into());
    }
    Ok(())
}

/// Loads the model on the server's engine thread and serves until Ctrl-C.
fn serve(
    source: Source,
    addr: std::net::SocketAddr,
    opts: wring_server::ServeOptions,
    max_context: usize,
    batch: Batching,
    options: ContextOptions,
    kv_cache: wring_llm::KvMode,
) -> Result<(), Box<dyn std::error::Error>> {
    let load = std::time::Instant::now();
    let queue = batch.queue;
    let engine = wring_server::Engine::start(queue, move || {
        let ctx = Context::new(options)?;
        let mut model = source.load(&ctx, max_context, kv_cache, |_, _| {})?;
        let tokenizer = wring_llm::GgufTokenizer::from_gguf(&source.gguf)?;
        let cache = page_cache(&ctx, &mut model, kv_cache, &batch)?;
        eprintln!(
            "loaded {} layers on {} ({cache})",
            model.cfg.n_layers,
            ctx.label(),
        );
        Ok(wring_server::Loaded {
            ctx,
            model,
            tokenizer,
            parallel: batch.parallel,
        })
    })?;
    eprintln!("ready in {:.2} s", load.elapsed().as_secs_f64());
    wring_server::run_until_ctrl_c(addr, engine, opts)?;
    Ok(())
}

fn logits(
    model: Option<std::path::PathBuf>,
    prompt: &str,
    out: &std::path::Path,
) -> Result<(), wring_llm::LlmError> {
    let g = wring_gguf::Gguf::open(model_path(model)?)?;
    let tok = wring_llm::GgufTokenizer::from_gguf(&g)?;
    let ids = tok.encode(prompt)?;
    if ids.is_empty() {
        return Err(wring_llm::LlmError::Request(
            "the prompt has no tokens".into(),
        ));
    }
    let ctx = Context::new(ContextOptions::default())?;
    let mut llm = wring_llm::Llama::load(&ctx, &g, ids.len(), |_, _| {})?;
    let logits = llm.forward(&ctx, &ids, true)?;
    wring_codec::io::write_npy(out, &[ids.len(), llm.cfg.vocab], &logits)
        .map_err(|e| wring_llm::LlmError::Request(e.to_string()))?;
    eprintln!(
        "wrote {} ({} tokens x {} vocab)",
        out.display(),
        ids.len(),
        llm.cfg.vocab
    );
    Ok(())
}

fn convert(
    model: Option<std::path::PathBuf>,
    out: &std::path::Path,
) -> Result<(), wring_llm::LlmError> {
    let g = wring_gguf::Gguf::open(model_path(model)?)?;
    wring_llm::hf::export(&g, out)?;
    eprintln!(
        "wrote {}/config.json, model.safetensors (f32) and tokenizer.json",
        out.display()
    );
    Ok(())
}

/// `--kv-cache`'s parser (the library's, whose error lists the modes).
fn parse_kv_mode(s: &str) -> Result<wring_llm::KvMode, String> {
    s.parse().map_err(|e: wring_llm::LlmError| e.to_string())
}

/// Loads a model onto the device with a progress bar over its layers (on stderr, hidden when not a terminal).
/// The KV cache of a one-sequence command: its mode and its positions (`--kv-cache`, `--ctx`).
#[derive(Debug, Clone, Copy)]
struct Cache {
    mode: wring_llm::KvMode,
    positions: usize,
}

fn load_with_progress(
    ctx: &Context,
    source: &Source,
    cache: Cache,
) -> Result<wring_llm::Llama, wring_llm::LlmError> {
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("loading {bar:30} {pos}/{len} layers")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let llm = source.load(ctx, cache.positions, cache.mode, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    llm
}

/// Reads an [n, d] f32 .npy.
/// Codes per vector of a codes array: its last dimension ([n, width]; a 1-D array is one code per vector).
fn code_width(shape: &[usize]) -> usize {
    match shape {
        [_] => 1,
        [.., w] => *w,
        [] => 0,
    }
}

fn read_matrix(path: &std::path::Path) -> Result<(usize, usize, Vec<f32>), wring_vq::VqError> {
    let (shape, data) = wring_codec::io::read_npy(path)?;
    match shape[..] {
        [n, d] if d > 0 => Ok((n, d, data)),
        _ => Err(wring_vq::VqError::Request(format!(
            "{}: expected an [n, d] array, got {shape:?}",
            path.display()
        ))),
    }
}

fn vq_cmd(cmd: VqCommand) -> Result<(), wring_vq::VqError> {
    use wring_vq::{KMeansOptions, Metric, Quantizer, VqError};
    let ctx = Context::new(ContextOptions::default())?;
    let dtype = |f16: bool| {
        if f16 {
            wring_runtime::kernels::DType::F16
        } else {
            wring_runtime::kernels::DType::F32
        }
    };
    match cmd {
        VqCommand::Train {
            data,
            output,
            k,
            iters,
            seed,
            stages,
            groups,
            init,
        } => {
            let (n, d, values) = read_matrix(&data)?;
            let init = init.init();
            let opts = KMeansOptions {
                k,
                iters,
                seed,
                init,
            };
            let bar = indicatif::ProgressBar::new((groups * stages * iters) as u64).with_style(
                indicatif::ProgressStyle::with_template(
                    "k-means {bar:30} {pos}/{len} iterations {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let q = Quantizer::train(
                &ctx,
                &values,
                d,
                groups,
                stages,
                &opts,
                &mut |book, _, obj| {
                    bar.set_message(format!(
                        "codebook {book}: objective {:.4e}",
                        obj / n.max(1) as f64
                    ));
                    bar.inc(1);
                },
            )?;
            bar.finish();
            if output
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
            {
                q.save_npy(&output)
            } else {
                q.save_safetensors(&output)
            }
        }
        VqCommand::Encode {
            data,
            codebook,
            output,
            batch,
            f16,
        } => {
            let q = Quantizer::load(&ctx, &codebook, dtype(f16))?;
            each_file(
                &data,
                &output,
                &batch,
                &["npy"],
                "codes.npy",
                |data, output| {
                    let encode = || -> Result<usize, VqError> {
                        let (n, d, values) = read_matrix(data)?;
                        q.check_vectors(d)?;
                        let codes = q.encode(&ctx, &values)?;
                        wring_codec::io::write_npy_u32(output, &[n, q.code_len()], &codes)?;
                        Ok(n)
                    };
                    let n = encode().map_err(|e| e.to_string())?;
                    Ok(format!("{}: {n} vectors", data.display()))
                },
            )
            .map_err(VqError::Request)
        }
        VqCommand::Decode {
            codes,
            codebook,
            output,
            f16,
        } => {
            let q = Quantizer::load(&ctx, &codebook, dtype(f16))?;
            let (shape, c) = wring_codec::io::read_npy_u32(&codes)?;
            q.check_codes(code_width(&shape))?;
            let values = q.decode(&ctx, &c)?;
            Ok(wring_codec::io::write_npy(
                &output,
                &[c.len() / q.code_len().max(1), q.d],
                &values,
            )?)
        }
        VqCommand::Search {
            queries,
            codebook,
            k,
            metric,
            codes,
            output,
            f16,
        } => {
            let q = Quantizer::load(&ctx, &codebook, dtype(f16))?;
            let (n, d, values) = read_matrix(&queries)?;
            q.check_vectors(d)?;
            let nb = match codes {
                Some(path) => {
                    if metric != Metric::L2 {
                        return Err(VqError::Request("searches over product codes use l2".into()));
                    }
                    let (shape, c) = wring_codec::io::read_npy_u32(&path)?;
                    q.check_codes(code_width(&shape))?;
                    q.search_codes(&values, &c, k)?
                }
                None if q.groups == 1 && q.stages == 1 => wring_vq::search(&ctx, q.book(0, 0), &values, k, metric)?,
                None => return Err(VqError::Request("searching a codebook needs a one-codebook quantizer; give --codes to search product codes".into())),
            };
            match output {
                Some(out) => {
                    let with = |suffix: &str| out.with_extension(suffix);
                    wring_codec::io::write_npy_u32(&with("ids.npy"), &[n, k], &nb.ids)?;
                    Ok(wring_codec::io::write_npy(
                        &with("distances.npy"),
                        &[n, k],
                        &nb.distances,
                    )?)
                }
                None => {
                    let rows = |v: Vec<String>| {
                        v.chunks(k)
                            .map(|r| format!("[{}]", r.join(",")))
                            .collect::<Vec<_>>()
                            .join(",")
                    };
                    // A closed pipe (`| head`) ends the output quietly rather than as an error.
                    let text = format!(
                        "{{\"ids\":[{}],\"distances\":[{}]}}\n",
                        rows(nb.ids.iter().map(u32::to_string).collect()),
                        rows(nb.distances.iter().map(f32::to_string).collect())
                    );
                    std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes()).or_else(
                        |e| {
                            if e.kind() == std::io::ErrorKind::BrokenPipe {
                                Ok(())
                            } else {
                                Err(VqError::Io(e.to_string()))
                            }
                        },
                    )
                }
            }
        }
    }
}

/// Runs `one(input, output)` once, or over each input of a batch (INPUT a directory, or a list with
/// --list; OUTPUT a directory, one `<stem>.<ext>` per input, shard and skip rules of `wring_io::batch`),
/// printing what `one` reports for each file.
fn each_file(
    input: &std::path::Path,
    output: &std::path::Path,
    batch: &BatchArgs,
    accept: &[&str],
    ext: &str,
    mut one: impl FnMut(&std::path::Path, &std::path::Path) -> Result<String, String>,
) -> Result<(), String> {
    use wring_io::batch::{self, Outcome, Shard};
    if !batch.list && !input.is_dir() {
        if batch.shard != Shard::ALL {
            return Err("--shard needs a directory or a --list of inputs".into());
        }
        eprintln!("{}", one(input, output)?);
        return Ok(());
    }
    let (total, items) = batch::prepare(input, batch.list, output, accept, ext, batch.shard)
        .map_err(|e| e.to_string())?;
    eprintln!(
        "shard {}/{}: {} of {total} inputs",
        batch.shard.index,
        batch.shard.count,
        items.len(),
    );
    let summary = batch::run(
        &items,
        |item, tmp| one(&item.input, tmp).map(|line| eprintln!("{line}")),
        |item, outcome| match outcome {
            Outcome::Done => eprintln!("  -> {}", item.output.display()),
            Outcome::Skipped => eprintln!("skipped {} (exists)", item.output.display()),
            Outcome::Failed(e) => eprintln!("FAILED {}: {e}", item.input.display()),
        },
    );
    eprintln!(
        "{} written, {} skipped, {} failed",
        summary.done,
        summary.skipped,
        summary.failed.len()
    );
    if summary.failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} inputs failed (listed above); rerunning the shard retries only them",
            summary.failed.len(),
            items.len()
        ))
    }
}

fn encode(
    input: &std::path::Path,
    output: &std::path::Path,
    batch: &BatchArgs,
    opts: &wring_codec::Options,
) -> Result<(), String> {
    let ctx = Context::new(ContextOptions::default()).map_err(|e| e.to_string())?;
    each_file(
        input,
        output,
        batch,
        &wring_codec::ENCODABLE,
        "wrg",
        |input, output| encode_one(&ctx, input, output, opts).map_err(|e| e.to_string()),
    )
}

/// Encodes one file; returns the line to print.
fn encode_one(
    ctx: &Context,
    input: &std::path::Path,
    output: &std::path::Path,
    opts: &wring_codec::Options,
) -> Result<String, wring_codec::CodecError> {
    let start = std::time::Instant::now();
    let e = wring_codec::encode_file(ctx, input, opts)?;
    std::fs::write(output, &e.bytes)
        .map_err(|err| wring_codec::CodecError::Io(format!("{}: {err}", output.display())))?;
    Ok(format!(
        "{}: {} -> {} bytes in {:.1} ms on {}",
        input.display(),
        e.summary,
        e.bytes.len(),
        start.elapsed().as_secs_f64() * 1e3,
        ctx.label()
    ))
}

fn decode(
    input: &std::path::Path,
    output: &std::path::Path,
    batch: &BatchArgs,
    ext: &str,
) -> Result<(), String> {
    let ctx = Context::new(ContextOptions::default()).map_err(|e| e.to_string())?;
    each_file(input, output, batch, &["wrg"], ext, |input, output| {
        decode_one(&ctx, input, output).map_err(|e| e.to_string())
    })
}

fn decode_one(
    ctx: &Context,
    input: &std::path::Path,
    output: &std::path::Path,
) -> Result<String, wring_codec::CodecError> {
    let bytes = std::fs::read(input)
        .map_err(|e| wring_codec::CodecError::Io(format!("{}: {e}", input.display())))?;
    match wring_codec::decode(ctx, &bytes)? {
        wring_codec::Decoded::Image(img) => wring_codec::io::write_image(output, &img)?,
        wring_codec::Decoded::Audio(a) => wring_codec::io::write_wav(output, &a)?,
    }
    Ok(format!("{} -> {}", input.display(), output.display()))
}

#[allow(clippy::too_many_arguments, reason = "the command's options")]
fn wavelet_cmd(
    forward: bool,
    input: &std::path::Path,
    output: &std::path::Path,
    wavelet: Wavelet,
    levels: usize,
    mode: Mode,
    channels: usize,
    size: Option<&str>,
    f16: bool,
) -> Result<(), wring_codec::CodecError> {
    use wring_codec::CodecError;
    let is_npy = input
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    // Forward input as planes [channels][dims...].
    let (channels, dims, data) = if !forward {
        let (shape, data) = wring_codec::io::read_npy(input)?;
        let dims: Vec<usize> = match size {
            Some(s) => s
                .split('x')
                .map(|d| {
                    d.trim()
                        .parse()
                        .map_err(|_| CodecError::Request(format!("bad size `{s}`")))
                })
                .collect::<Result<_, _>>()?,
            None => shape
                .get(1..)
                .unwrap_or_default()
                .iter()
                .map(|d| d << levels)
                .collect(),
        };
        (channels, dims, data)
    } else if is_npy {
        let (shape, data) = wring_codec::io::read_npy(input)?;
        let (c, dims) = shape.split_first().ok_or_else(|| {
            CodecError::Request(
                "the .npy must be [channels, length] or [channels, height, width]".into(),
            )
        })?;
        (*c, dims.to_vec(), data)
    } else if wring_codec::is_wav(input) {
        let a = wring_codec::io::read_wav(input)?;
        (
            a.channels,
            vec![a.samples.len() / a.channels.max(1)],
            a.planes(),
        )
    } else {
        let img = wring_codec::io::read_image(input)?;
        (img.channels, vec![img.height, img.width], img.planes())
    };
    let ctx = Context::new(ContextOptions::default())?;
    let mut p = wring_codec::Packet::new(wavelet, mode, levels, channels, &dims)?;
    if f16 {
        p = p.with_dtype(wring_runtime::kernels::DType::F16)?;
    }
    let (shape, out) = p.apply(&ctx, &data, forward)?;
    Ok(wring_codec::io::write_npy(output, &shape, &out)?)
}

/// A clap value parser for one of the library's enums: the names it accepts are the library's own (`ALL`
/// and `name`), so the CLI cannot drift from what the library knows, and the kernel crates need no clap.
fn named<T: Copy + Send + Sync + 'static>(
    all: &'static [T],
    name: fn(T) -> &'static str,
) -> impl TypedValueParser<Value = T> {
    let names: Vec<&'static str> = all.iter().map(|&v| name(v)).collect();
    clap::builder::PossibleValuesParser::new(names).map(move |s| {
        *all.iter()
            .find(|&&v| name(v) == s)
            .expect("clap accepted only the library's names")
    })
}

/// k-means seeding as the CLI offers it (the library's `Init` also takes given centroids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seeding {
    PlusPlus,
    Random,
}

impl Seeding {
    const ALL: [Seeding; 2] = [Seeding::PlusPlus, Seeding::Random];

    fn name(self) -> &'static str {
        match self {
            Seeding::PlusPlus => "plusplus",
            Seeding::Random => "random",
        }
    }

    fn init(self) -> Init {
        match self {
            Seeding::PlusPlus => Init::PlusPlus,
            Seeding::Random => Init::Random,
        }
    }
}

//! Python bindings (`import wring`): the LLM (tokenize, streaming generation, logits, perplexity), the
//! wavelet codec on numpy arrays, and VQ (k-means training, nearest-codeword search). Every call that runs
//! on the GPU releases the GIL, so other Python threads go on meanwhile. Built by maturin
//! (`pip install .` at the repository root, or `pip install ./crates/wring-py`); tested by pytest (`tests/test_wring.py`).

#![warn(missing_docs)]

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};

use numpy::{
    IntoPyArray, PyArray2, PyArrayDyn, PyArrayMethods, PyReadonlyArray2, PyReadonlyArrayDyn,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use wring_llm::{Cancel, GgufTokenizer, Llama, Sampler, TextStream};
use wring_runtime::{Context, ContextOptions};

fn value_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

fn runtime_error(e: impl std::fmt::Display) -> PyErr {
    PyRuntimeError::new_err(e.to_string())
}

/// The device the codec and VQ functions share, opened on first use.
fn shared_context() -> PyResult<&'static Context> {
    static CTX: OnceLock<Result<Context, String>> = OnceLock::new();
    CTX.get_or_init(|| Context::new(ContextOptions::default()).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(runtime_error)
}

struct Inner {
    ctx: Context,
    model: Llama,
}

/// A GGUF language model on the GPU wring chooses.
#[pyclass(module = "wring")]
struct Model {
    inner: Arc<Mutex<Inner>>,
    tokenizer: Arc<GgufTokenizer>,
    /// Positions of the KV cache.
    context: usize,
}

fn lock(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    // A panic while holding the lock leaves the model usable: its next step resets what it needs.
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

#[pymethods]
impl Model {
    /// Loads `path` with a KV cache of `context` positions; `q8_activations` rounds activations to 8 bits
    /// in the Q4_0/Q4_1/Q8_0 products (faster; as `wring generate` does by default).
    #[new]
    #[pyo3(signature = (path, context = 2048, q8_activations = true))]
    fn new(
        py: Python<'_>,
        path: std::path::PathBuf,
        context: usize,
        q8_activations: bool,
    ) -> PyResult<Model> {
        py.allow_threads(|| {
            let g = wring_gguf::Gguf::open(&path).map_err(value_error)?;
            let tokenizer = GgufTokenizer::from_gguf(&g).map_err(value_error)?;
            let ctx = Context::new(ContextOptions {
                q8_activations,
                ..Default::default()
            })
            .map_err(runtime_error)?;
            let model = Llama::load(&ctx, &g, context, |_, _| {}).map_err(value_error)?;
            Ok(Model {
                context: model.max_context,
                inner: Arc::new(Mutex::new(Inner { ctx, model })),
                tokenizer: Arc::new(tokenizer),
            })
        })
    }

    /// Positions of the KV cache.
    #[getter]
    fn context(&self) -> usize {
        self.context
    }

    /// Tokens in the vocabulary.
    #[getter]
    fn vocab_size(&self) -> usize {
        self.tokenizer.vocab_size()
    }

    /// The model's chat template, if it has one.
    #[getter]
    fn chat_template(&self) -> Option<String> {
        self.tokenizer.chat_template.clone()
    }

    /// Token ids of `text`, as llama.cpp's tokenizer gives them.
    fn tokenize(&self, text: &str) -> PyResult<Vec<u32>> {
        self.tokenizer.encode(text).map_err(value_error)
    }

    /// The text of token ids.
    fn detokenize(&self, ids: Vec<u32>) -> PyResult<String> {
        self.tokenizer.decode(&ids).map_err(value_error)
    }

    /// Generates after `prompt`, returning an iterator over pieces of text as they are produced (whole
    /// characters; a stop string ends the text before it). Greedy at temperature 0. Dropping the iterator
    /// cancels the generation.
    #[pyo3(signature = (prompt, max_tokens = 64, temperature = 0.0, top_k = 0, top_p = 1.0, seed = 0, stop = Vec::new()))]
    #[allow(
        clippy::too_many_arguments,
        reason = "the sampling settings as Python keywords"
    )]
    fn generate(
        &self,
        prompt: &str,
        max_tokens: usize,
        temperature: f32,
        top_k: usize,
        top_p: f32,
        seed: u64,
        stop: Vec<String>,
    ) -> PyResult<TextIterator> {
        let sampler =
            Sampler::new(temperature, top_k, top_p, 0.0, 1.0, seed).map_err(value_error)?;
        let ids = self.tokenizer.encode(prompt).map_err(value_error)?;
        // The context is kept beside the model: a running generation holds the model's lock.
        wring_llm::check_generation(ids.len(), max_tokens, self.context).map_err(value_error)?;
        let (tx, rx) = sync_channel(64);
        let cancel = Cancel::new();
        let (inner, tok, c) = (self.inner.clone(), self.tokenizer.clone(), cancel.clone());
        std::thread::Builder::new()
            .name("wring-generate".into())
            .spawn(move || run_generation(&inner, &tok, &ids, sampler, max_tokens, &stop, &c, &tx))
            .map_err(runtime_error)?;
        Ok(TextIterator {
            rx: Mutex::new(rx),
            cancel,
        })
    }

    /// The whole continuation as one string (`generate` joined).
    #[pyo3(signature = (prompt, max_tokens = 64, temperature = 0.0, top_k = 0, top_p = 1.0, seed = 0, stop = Vec::new()))]
    #[allow(
        clippy::too_many_arguments,
        reason = "the sampling settings as Python keywords"
    )]
    fn complete(
        &self,
        py: Python<'_>,
        prompt: &str,
        max_tokens: usize,
        temperature: f32,
        top_k: usize,
        top_p: f32,
        seed: u64,
        stop: Vec<String>,
    ) -> PyResult<String> {
        let it = self.generate(prompt, max_tokens, temperature, top_k, top_p, seed, stop)?;
        let mut out = String::new();
        while let Some(piece) = it.next_piece(py)? {
            out.push_str(&piece);
        }
        Ok(out)
    }

    /// Continuations of every prompt at once (continuous batching over a paged KV cache, `parallel`
    /// sequences decoded in each step), in the prompts' order. Each prompt's sampler is seeded with
    /// `seed + its index`; a stop string ends a text before it. Greedy ids equal `complete`'s with
    /// `q8_activations=False` and the f32 cache. The model's cache is paged for the call, in its KV cache
    /// mode where that has a paged form (f32, f16, q8, q4, q2) and f32 otherwise, and then set back (its
    /// context is forgotten); the paged pool holds twice `context` positions, shared by the batch (a
    /// sequence that does not fit waits, or is paused and recomputed later).
    #[pyo3(signature = (prompts, max_tokens = 64, temperature = 0.0, top_k = 0, top_p = 1.0, seed = 0, stop = Vec::new(), parallel = 8))]
    #[allow(
        clippy::too_many_arguments,
        reason = "the sampling settings as Python keywords"
    )]
    fn generate_batch(
        &self,
        py: Python<'_>,
        prompts: Vec<String>,
        max_tokens: usize,
        temperature: f32,
        top_k: usize,
        top_p: f32,
        seed: u64,
        stop: Vec<String>,
        parallel: usize,
    ) -> PyResult<Vec<String>> {
        let mut requests = Vec::with_capacity(prompts.len());
        for (i, p) in prompts.iter().enumerate() {
            let ids = self.tokenizer.encode(p).map_err(value_error)?;
            wring_llm::check_generation(ids.len(), max_tokens, self.context)
                .map_err(|e| value_error(format!("prompt {i}: {e}")))?;
            let sampler = Sampler::new(
                temperature,
                top_k,
                top_p,
                0.0,
                1.0,
                seed.wrapping_add(i as u64),
            )
            .map_err(value_error)?;
            let req = wring_llm::batch::Request {
                prompt: ids,
                sampler,
                stop: self.tokenizer.stop_tokens.clone(),
                max_tokens,
                cancel: Cancel::new(),
            };
            requests.push((req, stop.clone()));
        }
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let (inner, tok, context) = (self.inner.clone(), self.tokenizer.clone(), self.context);
        py.allow_threads(move || {
            let mut g = lock(&inner);
            let Inner { ctx, model } = &mut *g;
            let mode = model.kv_mode();
            // The model's cache mode where it has a paged form, else f32.
            let paged = if mode.paged() {
                mode
            } else {
                wring_llm::KvMode::F32
            };
            let block = paged.paged_block();
            model
                .set_paged(ctx, paged, 2 * context.div_ceil(block), block)
                .map_err(value_error)?;
            let texts = wring_llm::batch::generate_texts(model, ctx, &tok, requests, parallel);
            // The one-sequence cache back, whatever happened.
            model.set_kv_mode(ctx, mode).map_err(runtime_error)?;
            Ok(texts
                .map_err(runtime_error)?
                .into_iter()
                .map(|t| t.text)
                .collect())
        })
    }

    /// The f32 logits of every position of `text` from an empty cache, shape [tokens, vocab].
    fn logits<'py>(&self, py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let ids = self.tokenizer.encode(text).map_err(value_error)?;
        if ids.is_empty() {
            return Err(value_error("the text has no tokens"));
        }
        let vocab = self.tokenizer.vocab_size();
        let inner = self.inner.clone();
        let flat = py.allow_threads(move || {
            let mut g = lock(&inner);
            let Inner { ctx, model } = &mut *g;
            model.reset();
            let r = model.forward(ctx, &ids, true);
            model.reset();
            r
        });
        let flat = flat.map_err(value_error)?;
        let rows = flat.len() / vocab.max(1);
        flat.into_pyarray(py).reshape([rows, vocab])
    }

    /// Perplexity of `text` as llama-perplexity computes it: chunks of `context` tokens, the second half
    /// of each scored; at most `chunks` chunks.
    #[pyo3(signature = (text, context = 512, chunks = None))]
    fn perplexity(
        &self,
        py: Python<'_>,
        text: &str,
        context: usize,
        chunks: Option<usize>,
    ) -> PyResult<f64> {
        let ids = self.tokenizer.encode(text).map_err(value_error)?;
        let bos = if self.tokenizer.add_bos {
            self.tokenizer.bos
        } else {
            None
        };
        let inner = self.inner.clone();
        py.allow_threads(move || {
            let mut g = lock(&inner);
            let Inner { ctx, model } = &mut *g;
            let r = model.perplexity(ctx, &ids, context, chunks, bos);
            model.reset();
            r
        })
        .map(|p| p.ppl)
        .map_err(value_error)
    }
}

/// Runs one generation on its own thread, sending text pieces (or the error) until done, cancelled or
/// the receiver is gone.
#[allow(clippy::too_many_arguments, reason = "one generation's inputs")]
fn run_generation(
    inner: &Mutex<Inner>,
    tok: &GgufTokenizer,
    ids: &[u32],
    sampler: Sampler,
    max_tokens: usize,
    stops: &[String],
    cancel: &Cancel,
    tx: &SyncSender<Result<String, String>>,
) {
    let mut g = lock(inner);
    let Inner { ctx, model } = &mut *g;
    let tokens = match model.generate(
        ctx,
        ids,
        sampler,
        &tok.stop_tokens,
        max_tokens,
        cancel.clone(),
    ) {
        Ok(t) => t,
        Err(e) => {
            let _ = tx.send(Err(e.to_string()));
            return;
        }
    };
    let mut stream = TextStream::with_stops(tok, stops);
    for t in tokens {
        let piece = t
            .map_err(|e| e.to_string())
            .and_then(|t| stream.push(t).map_err(|e| e.to_string()));
        match piece {
            Ok(p) if p.is_empty() => {}
            Ok(p) => {
                if tx.send(Ok(p)).is_err() {
                    cancel.cancel();
                    break;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
        if stream.stopped() {
            break;
        }
    }
    let tail = stream.finish();
    if !tail.is_empty() {
        let _ = tx.send(Ok(tail));
    }
}

/// The pieces of text of one running generation, as `Model.generate` returns them: iterate to receive
/// each piece as it is produced; `cancel()` or dropping the iterator stops the generation.
#[pyclass(module = "wring")]
struct TextIterator {
    rx: Mutex<Receiver<Result<String, String>>>,
    cancel: Cancel,
}

impl TextIterator {
    fn next_piece(&self, py: Python<'_>) -> PyResult<Option<String>> {
        let rx = &self.rx;
        match py.allow_threads(|| rx.lock().unwrap_or_else(|p| p.into_inner()).recv()) {
            Ok(Ok(piece)) => Ok(Some(piece)),
            Ok(Err(e)) => Err(runtime_error(e)),
            // The generation thread ended: the text is complete.
            Err(_) => Ok(None),
        }
    }
}

#[pymethods]
impl TextIterator {
    /// The iterator itself.
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// The next piece of text, waiting for it with the GIL released; the end of the text stops iteration.
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<String>> {
        self.next_piece(py)
    }

    /// Stops the generation before its next token.
    fn cancel(&self) {
        self.cancel.cancel();
    }
}

impl Drop for TextIterator {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The codec's settings at a quality (1-100, default 75) or a target rate (bpp or kbps, which wins).
fn codec_options(quality: Option<f32>, target: Option<f64>) -> wring_codec::Options {
    wring_codec::Options {
        rate: wring_codec::Rate::choose(quality, target),
        ..Default::default()
    }
}

/// Runs an encoder on the shared context with the GIL released, at a quality or a target rate, and
/// returns its stream as `bytes`.
fn encoded<'py>(
    py: Python<'py>,
    quality: Option<f32>,
    target: Option<f64>,
    encode: impl FnOnce(&Context, &wring_codec::Options) -> Result<Vec<u8>, wring_codec::CodecError>
    + Send,
) -> PyResult<Bound<'py, PyBytes>> {
    let opts = codec_options(quality, target);
    let ctx = shared_context()?;
    let bytes = py
        .allow_threads(|| encode(ctx, &opts))
        .map_err(value_error)?;
    Ok(PyBytes::new(py, &bytes))
}

/// Compresses an image, uint8 [height, width] (gray) or [height, width, 3] (RGB), into a .wrg stream;
/// `quality` 1-100 or a target `bpp`.
#[pyfunction]
#[pyo3(signature = (image, quality = None, bpp = None))]
fn encode_image<'py>(
    py: Python<'py>,
    image: PyReadonlyArrayDyn<'py, u8>,
    quality: Option<f32>,
    bpp: Option<f64>,
) -> PyResult<Bound<'py, PyBytes>> {
    let (height, width, channels) = match image.shape() {
        [h, w] => (*h, *w, 1),
        [h, w, c] => (*h, *w, *c),
        s => {
            return Err(value_error(format!(
                "an image is [h, w] or [h, w, 3], not {s:?}"
            )));
        }
    };
    let img = wring_codec::Image {
        width,
        height,
        channels,
        pixels: image.as_array().iter().copied().collect(),
    };
    encoded(py, quality, bpp, |ctx, opts| {
        wring_codec::encode_image(ctx, &img, opts)
    })
}

/// Compresses audio, int16 [samples, channels], into a .wrg stream; `quality` 1-100 or a target `kbps`.
#[pyfunction]
#[pyo3(signature = (samples, sample_rate, quality = None, kbps = None))]
fn encode_audio<'py>(
    py: Python<'py>,
    samples: PyReadonlyArray2<'py, i16>,
    sample_rate: u32,
    quality: Option<f32>,
    kbps: Option<f64>,
) -> PyResult<Bound<'py, PyBytes>> {
    let audio = wring_codec::Audio {
        sample_rate,
        channels: samples.shape()[1],
        samples: samples.as_array().iter().copied().collect(),
    };
    encoded(py, quality, kbps, |ctx, opts| {
        wring_codec::encode_audio(ctx, &audio, opts)
    })
}

/// Encodes shard `index` of `count` of the images and WAV files in `input` (a directory, or with
/// `list=True` a file of paths) into `output/<stem>.wrg`, as `wring encode DIR --shard I/N` does: every
/// count-th input in name order, each output written under a temporary name and renamed when complete,
/// finished outputs skipped, failed inputs listed while the rest go on. Returns {"done", "skipped",
/// "failed": [(path, message)]}. For schedulers that map shards to workers (Ray, Dask, multiprocessing).
#[pyfunction]
#[pyo3(signature = (input, output, index = 0, count = 1, list = false, quality = None, bpp = None))]
#[allow(
    clippy::too_many_arguments,
    reason = "the batch and rate settings as Python keywords"
)]
fn encode_shard<'py>(
    py: Python<'py>,
    input: std::path::PathBuf,
    output: std::path::PathBuf,
    index: usize,
    count: usize,
    list: bool,
    quality: Option<f32>,
    bpp: Option<f64>,
) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
    use wring_io::batch;
    let shard: batch::Shard = format!("{index}/{count}").parse().map_err(value_error)?;
    let (_, items) = batch::prepare(&input, list, &output, &wring_codec::ENCODABLE, "wrg", shard)
        .map_err(value_error)?;
    let opts = codec_options(quality, bpp);
    let ctx = shared_context()?;
    let summary = py.allow_threads(|| {
        batch::run(
            &items,
            |item, tmp| -> Result<(), wring_codec::CodecError> {
                let e = wring_codec::encode_file(ctx, &item.input, &opts)?;
                std::fs::write(tmp, e.bytes).map_err(|e| wring_codec::CodecError::Io(e.to_string()))
            },
            |_, _| {},
        )
    });
    let d = pyo3::types::PyDict::new(py);
    d.set_item("done", summary.done)?;
    d.set_item("skipped", summary.skipped)?;
    d.set_item("failed", summary.failed)?;
    Ok(d)
}

/// Decodes a .wrg stream: an image as uint8 [h, w, c], or audio as (int16 [samples, channels], rate).
#[pyfunction]
fn decode<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let ctx = shared_context()?;
    let bytes = data.to_vec();
    let decoded = py
        .allow_threads(move || wring_codec::decode(ctx, &bytes))
        .map_err(value_error)?;
    Ok(match decoded {
        wring_codec::Decoded::Image(img) => {
            let a: Bound<'py, PyArrayDyn<u8>> =
                img.pixels
                    .into_pyarray(py)
                    .reshape(vec![img.height, img.width, img.channels])?;
            a.into_any()
        }
        wring_codec::Decoded::Audio(a) => {
            let frames = a.samples.len() / a.channels.max(1);
            let arr = a.samples.into_pyarray(py).reshape([frames, a.channels])?;
            (arr, a.sample_rate).into_pyobject(py)?.into_any()
        }
    })
}

/// k-means on the GPU: `k` centroids of the rows of `data` (float32 [n, d]), k-means++ seeded.
#[pyfunction]
#[pyo3(signature = (data, k, iters = 25, seed = 0))]
fn vq_train<'py>(
    py: Python<'py>,
    data: PyReadonlyArray2<'py, f32>,
    k: usize,
    iters: usize,
    seed: u64,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let d = data.shape()[1];
    let values: Vec<f32> = data.as_array().iter().copied().collect();
    let opts = wring_vq::KMeansOptions {
        k,
        iters,
        seed,
        init: wring_vq::Init::PlusPlus,
    };
    let ctx = shared_context()?;
    let q = py
        .allow_threads(|| {
            wring_vq::Quantizer::train(ctx, &values, d, 1, 1, &opts, &mut |_, _, _| {})
        })
        .map_err(value_error)?;
    q.book(0, 0)
        .values()
        .to_vec()
        .into_pyarray(py)
        .reshape([k, d])
}

/// The `k` nearest codewords of each query: (ids uint32 [n, k], scores float32 [n, k]); `metric` is
/// "l2" (squared distance, smallest first), "ip" (inner product) or "cosine" (largest first).
#[pyfunction]
#[pyo3(signature = (codebook, queries, k = 1, metric = "l2"))]
#[allow(
    clippy::type_complexity,
    reason = "a pair of arrays, as numpy users expect"
)]
fn vq_search<'py>(
    py: Python<'py>,
    codebook: PyReadonlyArray2<'py, f32>,
    queries: PyReadonlyArray2<'py, f32>,
    k: usize,
    metric: &str,
) -> PyResult<(Bound<'py, PyArray2<u32>>, Bound<'py, PyArray2<f32>>)> {
    let metric = match metric {
        "l2" => wring_vq::Metric::L2,
        "ip" => wring_vq::Metric::InnerProduct,
        "cosine" => wring_vq::Metric::Cosine,
        m => return Err(value_error(format!("metric `{m}` is not l2, ip or cosine"))),
    };
    let d = codebook.shape()[1];
    if queries.shape()[1] != d {
        return Err(value_error(format!(
            "queries have {} dimensions, the codebook {d}",
            queries.shape()[1]
        )));
    }
    let book: Vec<f32> = codebook.as_array().iter().copied().collect();
    let q: Vec<f32> = queries.as_array().iter().copied().collect();
    let n = queries.shape()[0];
    let ctx = shared_context()?;
    let nb = py
        .allow_threads(|| {
            let cb = wring_vq::Codebook::new(ctx, book, d, wring_runtime::kernels::DType::F32)?;
            wring_vq::search(ctx, &cb, &q, k, metric)
        })
        .map_err(value_error)?;
    Ok((
        nb.ids.into_pyarray(py).reshape([n, k])?,
        nb.distances.into_pyarray(py).reshape([n, k])?,
    ))
}

/// wring on the GPU from Python: `Model` (a GGUF language model: tokenize, streaming generation, batched
/// generation, logits, perplexity), the wavelet codec on numpy arrays (`encode_image`, `encode_audio`,
/// `decode`, `encode_shard`) and vector quantisation (`vq_train`, `vq_search`). Every call that runs on
/// the GPU releases the GIL. The guide's Python page is docs/src/embedding-python.md.
#[pymodule]
#[pyo3(name = "wring")]
fn wring_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add_class::<TextIterator>()?;
    m.add_function(wrap_pyfunction!(encode_image, m)?)?;
    m.add_function(wrap_pyfunction!(encode_audio, m)?)?;
    m.add_function(wrap_pyfunction!(decode, m)?)?;
    m.add_function(wrap_pyfunction!(encode_shard, m)?)?;
    m.add_function(wrap_pyfunction!(vq_train, m)?)?;
    m.add_function(wrap_pyfunction!(vq_search, m)?)?;
    Ok(())
}

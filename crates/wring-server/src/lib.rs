//! `wring serve`: an OpenAI-compatible HTTP server over one wring model, so chat UIs and the OpenAI SDKs
//! work against it unchanged.
//!
//! One model per process. Requests are tokenized and checked by the async handlers, then queued (a bounded
//! queue: a full one answers 429) for the single engine thread that owns the device, which runs them in
//! order and streams text back. A client that disconnects from a stream cancels its generation before the
//! next token. Endpoints: `POST /v1/chat/completions`, `POST /v1/completions` (both with and without
//! server-sent events), `GET /v1/models`, `POST /v1/embeddings` (refused: a causal LM gives none),
//! `GET /health` and `GET /metrics` (Prometheus text). Every error is OpenAI's error object with a 4xx or
//! 5xx status.

#![warn(missing_docs)]

pub mod api;
pub mod engine;
pub mod jsonl;
pub mod metrics;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use wring_llm::{Cancel, Sampler};

pub use engine::{Engine, Event, Finish, FinishReason, Job, Loaded, Rejected};
pub use metrics::Metrics;

/// Settings of the HTTP side.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The id `/v1/models` lists and responses carry.
    pub model_id: String,
    /// When set, `/v1/*` requires `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// The most tokens one request may ask for.
    pub max_tokens_limit: usize,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
}

impl ServeOptions {
    /// Defaults for a model id: no key, 4,096 tokens per request at most, 1 MiB bodies.
    pub fn new(model_id: &str) -> ServeOptions {
        ServeOptions {
            model_id: model_id.into(),
            api_key: None,
            max_tokens_limit: 4096,
            max_body_bytes: 1 << 20,
        }
    }
}

/// An error as the OpenAI API reports it: a status and `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    param: Option<&'static str>,
    message: String,
}

impl ApiError {
    /// A 400 about one request field.
    pub fn invalid(param: &'static str, message: String) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            param: Some(param),
            message,
        }
    }

    fn new(status: StatusCode, kind: &'static str, message: String) -> ApiError {
        ApiError {
            status,
            kind,
            param: None,
            message,
        }
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// OpenAI's error object: `{"message", "type", "param", "code"}`.
    pub fn object(&self) -> Value {
        json!({
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": Value::Null,
        })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.param {
            Some(p) => write!(f, "{} ({p}): {}", self.kind, self.message),
            None => write!(f, "{}: {}", self.kind, self.message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.object()});
        let mut r = (self.status, Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

/// The body as a request, whatever its content type says (curl's `-d` sends a form type, and llama-server
/// accepts it too). A body over the limit, malformed JSON and a missing field or wrong type are all the
/// client's to fix: 400, with the parser's words (they name the field).
fn parse<T: api::Request>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| bad_request(e.body_text()))?;
    api::from_slice(&bytes).map_err(bad_request)
}

/// A 400 about the request as a whole.
fn bad_request(text: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", text)
}

#[derive(Debug, Clone)]
struct AppState {
    engine: Engine,
    opts: Arc<ServeOptions>,
    created: u64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The server's routes over a started engine.
pub fn router(engine: Engine, opts: ServeOptions) -> Router {
    let state = AppState {
        engine,
        opts: Arc::new(opts),
        created: unix_now(),
    };
    let v1 = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    Router::new()
        .merge(v1)
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/metrics", get(metrics_text))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "no such endpoint".into(),
            )
        })
        .layer(DefaultBodyLimit::max(state.opts.max_body_bytes))
        .with_state(state)
}

async fn require_key(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(key) = &st.opts.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(key.as_str()) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "a valid API key is required: Authorization: Bearer <key>".into(),
            )
            .into_response();
        }
    }
    next.run(req).await
}

async fn models(State(st): State<AppState>) -> Json<Value> {
    Json(json!({"object": "list", "data": [{
        "id": st.opts.model_id,
        "object": "model",
        "created": st.created,
        "owned_by": "wring",
    }]}))
}

async fn metrics_text(State(st): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.engine.metrics().render(),
    )
}

async fn embeddings(State(st): State<AppState>) -> ApiError {
    ApiError::invalid(
        "model",
        format!(
            "{} is a causal language model and gives no embeddings",
            st.opts.model_id
        ),
    )
}

/// Which API a request came through: the two differ only in how prompts are built and answers shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Text,
}

async fn chat_completions(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: api::ChatRequest = parse(body)?;
    let ids = chat_prompt(st.engine.tokenizer(), &req)?;
    run(st, Kind::Chat, ids, &req.params).await
}

/// A chat request's prompt: its messages rendered by the model's template, tokenized.
fn chat_prompt(
    tok: &wring_llm::GgufTokenizer,
    req: &api::ChatRequest,
) -> Result<Vec<u32>, ApiError> {
    let template = tok.chat_template.as_deref().ok_or_else(|| {
        ApiError::invalid(
            "messages",
            "the model has no chat template; use /v1/completions".into(),
        )
    })?;
    if req.messages.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "messages must not be empty".into(),
        ));
    }
    let messages = req
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| m.text(i))
        .collect::<Result<Vec<_>, _>>()?;
    let piece = |id: Option<u32>| id.and_then(|i| tok.decode(&[i]).ok()).unwrap_or_default();
    let prompt =
        wring_llm::chat::render(template, &messages, true, &piece(tok.bos), &piece(tok.eos))
            .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
    tok.encode(&prompt)
        .map_err(|e| ApiError::invalid("messages", e.to_string()))
}

async fn completions(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: api::CompletionRequest = parse(body)?;
    let ids = completion_prompt(st.engine.tokenizer(), &req)?;
    run(st, Kind::Text, ids, &req.params).await
}

/// A text completion's prompt: its text tokenized, or its token ids checked against the vocabulary.
fn completion_prompt(
    tok: &wring_llm::GgufTokenizer,
    req: &api::CompletionRequest,
) -> Result<Vec<u32>, ApiError> {
    let text = match &req.prompt {
        api::Prompt::Text(t) => t,
        api::Prompt::Texts(v) if v.len() == 1 => &v[0],
        api::Prompt::Texts(v) => {
            return Err(ApiError::invalid(
                "prompt",
                format!(
                    "this server completes one prompt per request, not {}",
                    v.len()
                ),
            ));
        }
        api::Prompt::Tokens(ids) => {
            let vocab = tok.vocab_size();
            if let Some(bad) = ids.iter().find(|&&t| t as usize >= vocab) {
                return Err(ApiError::invalid(
                    "prompt",
                    format!("token id {bad} is outside the {vocab}-token vocabulary"),
                ));
            }
            return Ok(ids.clone());
        }
    };
    tok.encode(text)
        .map_err(|e| ApiError::invalid("prompt", e.to_string()))
}

/// What a checked request asks the model for.
#[derive(Debug)]
struct Spec {
    checked: api::Checked,
    prompt: Vec<u32>,
    sampler: Sampler,
    max_tokens: usize,
}

/// Checks a request's settings and lengths against a model of `context` positions: `max_tokens` as
/// asked, or what is left of the context up to `max_tokens_limit`.
fn spec(
    prompt: Vec<u32>,
    params: &api::Params,
    context: usize,
    max_tokens_limit: usize,
) -> Result<Spec, ApiError> {
    let checked = params.check(max_tokens_limit)?;
    if prompt.is_empty() {
        return Err(ApiError::invalid(
            "prompt",
            "the prompt has no tokens".into(),
        ));
    }
    let room = context.saturating_sub(prompt.len());
    let max_tokens = match checked.max_tokens {
        Some(m) if m > room => {
            return Err(ApiError::invalid(
                "max_tokens",
                format!(
                    "the prompt has {} tokens and max_tokens is {m}: together more than the model's context of {context} tokens",
                    prompt.len()
                ),
            ));
        }
        Some(m) => m,
        None if room == 0 => {
            return Err(ApiError::invalid(
                "prompt",
                format!(
                    "the prompt has {} tokens, leaving no room in the model's context of {context} tokens",
                    prompt.len()
                ),
            ));
        }
        None => room.min(max_tokens_limit),
    };
    let sampler = Sampler::new(
        checked.temperature,
        0,
        checked.top_p,
        0.0,
        1.0,
        checked.seed,
    )
    .map_err(|e| ApiError::invalid("temperature", e.to_string()))?;
    Ok(Spec {
        checked,
        prompt,
        sampler,
        max_tokens,
    })
}

/// Cancels the job when dropped: the response (or its event stream) is dropped when the client goes away.
#[derive(Debug)]
struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Checks lengths, queues the job and answers as one body or as server-sent events.
async fn run(
    st: AppState,
    kind: Kind,
    prompt: Vec<u32>,
    params: &api::Params,
) -> Result<Response, ApiError> {
    let Spec {
        checked,
        prompt,
        sampler,
        max_tokens,
    } = spec(
        prompt,
        params,
        st.engine.context(),
        st.opts.max_tokens_limit,
    )?;
    let cancel = Cancel::new();
    let (tx, rx) = mpsc::unbounded_channel();
    st.engine
        .submit(Job {
            prompt,
            sampler,
            max_tokens,
            stops: checked.stops.clone(),
            cancel: cancel.clone(),
            events: tx,
            queued_at: Instant::now(),
        })
        .map_err(|e| match e {
            Rejected::Full(_) => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "server_busy", e.to_string())
            }
            Rejected::Stopped => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                e.to_string(),
            ),
        })?;
    let guard = CancelOnDrop(cancel);
    let shape = Shape::new(kind, checked.seed ^ st.created, &st.opts.model_id);
    if checked.stream {
        Ok(stream(shape, rx, guard, checked.include_usage).into_response())
    } else {
        whole(shape, rx, guard).await
    }
}

/// What every answer carries, and the two APIs' shapes.
#[derive(Debug)]
struct Shape {
    kind: Kind,
    id: String,
    created: u64,
    model: String,
}

impl Shape {
    /// The shape of one answer, its id made from `salt`.
    fn new(kind: Kind, salt: u64, model: &str) -> Shape {
        Shape {
            kind,
            id: format!(
                "{}-{salt:016x}",
                if kind == Kind::Chat {
                    "chatcmpl"
                } else {
                    "cmpl"
                }
            ),
            created: unix_now(),
            model: model.to_string(),
        }
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Text, _) => "text_completion",
        }
    }

    /// A choice holding `text`; `delta` for a chat stream's chunk.
    fn choice(&self, text: &str, finish: Option<&str>, chunk: bool) -> Value {
        match (self.kind, chunk) {
            (Kind::Chat, false) => json!({"index": 0, "finish_reason": finish,
                "message": {"role": "assistant", "content": text}, "logprobs": Value::Null}),
            (Kind::Chat, true) => json!({"index": 0, "finish_reason": finish,
                "delta": if text.is_empty() { json!({}) } else { json!({"content": text}) },
                "logprobs": Value::Null}),
            (Kind::Text, _) => json!({"index": 0, "finish_reason": finish, "text": text,
                "logprobs": Value::Null}),
        }
    }

    fn body(&self, choices: Vec<Value>, usage: Option<Value>, chunk: bool) -> Value {
        let mut v = json!({
            "id": self.id,
            "object": self.object(chunk),
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if let Some(u) = usage {
            v["usage"] = u;
        }
        v
    }
}

fn usage(f: &Finish) -> Value {
    json!({
        "prompt_tokens": f.prompt_tokens,
        "completion_tokens": f.completion_tokens,
        "total_tokens": f.prompt_tokens + f.completion_tokens,
    })
}

fn engine_error(message: String) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
}

/// Collects the whole answer. Dropped with the connection (the guard cancels the job).
async fn whole(
    shape: Shape,
    mut rx: mpsc::UnboundedReceiver<Event>,
    _guard: CancelOnDrop,
) -> Result<Response, ApiError> {
    let mut text = String::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Text(t) => text.push_str(&t),
            Event::Done(f) => {
                let choice = shape.choice(&text, Some(f.reason.as_str()), false);
                return Ok(Json(shape.body(vec![choice], Some(usage(&f)), false)).into_response());
            }
            Event::Error(e) => return Err(engine_error(e)),
        }
    }
    Err(engine_error("the engine dropped the request".into()))
}

/// The answer as server-sent events: OpenAI's chunks, then `data: [DONE]`. The guard lives in the stream,
/// which the server drops when the client disconnects.
fn stream(
    shape: Shape,
    rx: mpsc::UnboundedReceiver<Event>,
    guard: CancelOnDrop,
    include_usage: bool,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    struct St {
        shape: Shape,
        rx: mpsc::UnboundedReceiver<Event>,
        _guard: CancelOnDrop,
        pending: std::collections::VecDeque<SseEvent>,
        done: bool,
    }
    let data = |v: Value| SseEvent::default().data(v.to_string());
    let mut pending = std::collections::VecDeque::new();
    if shape.kind == Kind::Chat {
        // OpenAI opens a chat stream with the role.
        let mut first = shape.body(vec![shape.choice("", None, true)], None, true);
        first["choices"][0]["delta"] = json!({"role": "assistant", "content": ""});
        pending.push_back(data(first));
    }
    let st = St {
        shape,
        rx,
        _guard: guard,
        pending,
        done: false,
    };
    let events = futures_util::stream::unfold(st, move |mut st| async move {
        loop {
            if let Some(ev) = st.pending.pop_front() {
                return Some((Ok(ev), st));
            }
            if st.done {
                return None;
            }
            match st.rx.recv().await {
                Some(Event::Text(t)) => {
                    let chunk = st
                        .shape
                        .body(vec![st.shape.choice(&t, None, true)], None, true);
                    st.pending.push_back(data(chunk));
                }
                Some(Event::Done(f)) => {
                    let last = st.shape.body(
                        vec![st.shape.choice("", Some(f.reason.as_str()), true)],
                        None,
                        true,
                    );
                    st.pending.push_back(data(last));
                    if include_usage {
                        let u = st.shape.body(Vec::new(), Some(usage(&f)), true);
                        st.pending.push_back(data(u));
                    }
                    st.pending.push_back(SseEvent::default().data("[DONE]"));
                    st.done = true;
                }
                Some(Event::Error(e)) => {
                    st.pending.push_back(data(json!({"error": {
                        "message": e, "type": "server_error", "param": Value::Null, "code": Value::Null,
                    }})));
                    st.done = true;
                }
                None => st.done = true,
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// A server running on its own threads, for embedding and tests: stops when [`Running::stop`] is called or
/// the value is dropped.
#[derive(Debug)]
pub struct Running {
    /// The address it listens on (the port chosen by the system when 0 was asked for).
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl Running {
    /// Stops accepting, lets running responses finish, and waits.
    pub fn stop(mut self) -> std::io::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> std::io::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(std::io::Error::other("the server thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    // Two workers are plenty: handlers only parse, tokenize and relay; the model has its own thread.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("wring-http")
        .enable_all()
        .build()
}

/// Binds `addr` and serves on background threads.
pub fn spawn(addr: SocketAddr, engine: Engine, opts: ServeOptions) -> std::io::Result<Running> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("wring-server".into())
        .spawn(move || {
            let rt = runtime()?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                serve(listener, router(engine, opts), async {
                    let _ = stopped.await;
                })
                .await
            })
        })?;
    Ok(Running {
        addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// Binds `addr` and serves in the calling thread until Ctrl-C (the `wring serve` command).
pub fn run_until_ctrl_c(
    addr: SocketAddr,
    engine: Engine,
    opts: ServeOptions,
) -> std::io::Result<()> {
    let rt = runtime()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        eprintln!(
            "serving {} on http://{}/v1 (Ctrl-C stops)",
            opts.model_id,
            listener.local_addr()?
        );
        serve(listener, router(engine, opts), async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
    })
}

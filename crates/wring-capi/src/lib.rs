//! A C ABI for wring's LLM: open a GGUF model on the GPU wring chooses, generate from a prompt with a
//! callback per piece of text, cancel from any thread, free. The header is `include/wring.h` (made by
//! cbindgen from this file; a test keeps it current), and `examples/generate.c` is a complete program.
//!
//! Conventions: every function that can fail returns a `WringStatus` (0 is success) and leaves a message
//! for [`wring_last_error`] on the calling thread; no Rust panic crosses the boundary (each entry point
//! catches it and returns `WRING_STATUS_PANIC`); pointers the caller passes are checked for NULL, and
//! strings must be NUL-terminated UTF-8.

#![warn(missing_docs)]
// The ABI is raw pointers and foreign calls by nature; every unsafe block says what it relies on.
#![allow(
    unsafe_code,
    reason = "a C ABI dereferences the caller's pointers and calls its callback"
)]

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;

use wring_llm::{Cancel, GgufTokenizer, Llama, LlmError, Sampler, TextStream};
use wring_runtime::{Context, ContextOptions};

/// What a call returned.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WringStatus {
    /// Success.
    Ok = 0,
    /// A NULL pointer, a string that is not UTF-8, or an option out of range.
    InvalidArgument = 1,
    /// The model file could not be read or describes a model wring cannot run.
    Load = 2,
    /// The request cannot be served (an empty prompt, one longer than the context).
    Request = 3,
    /// The GPU failed or produced non-finite logits.
    Device = 4,
    /// `wring_cancel` stopped the generation.
    Cancelled = 5,
    /// A bug in wring: a panic was caught at the boundary.
    Panic = 6,
}

/// Sampling and length settings; `wring_default_options` fills them.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct WringOptions {
    /// Tokens to generate at most.
    pub max_tokens: u32,
    /// 0 is greedy.
    pub temperature: f32,
    /// Keep the k most likely tokens (0: all).
    pub top_k: u32,
    /// Nucleus mass in (0, 1].
    pub top_p: f32,
    /// Seed of the draw.
    pub seed: u64,
}

/// Called with each piece of generated text (UTF-8, whole characters, `len` bytes, not NUL-terminated) and
/// the caller's pointer; returning non-zero stops the generation (with `WRING_STATUS_OK`).
pub type WringTextCallback =
    Option<unsafe extern "C" fn(text: *const c_char, len: usize, user: *mut c_void) -> c_int>;

/// An open model: the device context, the model with its KV cache, and its tokenizer. Opaque to C.
pub struct WringModel {
    inner: Mutex<Inner>,
    /// The running generation's flag, swapped for a fresh one at each start; `wring_cancel` sets it.
    cancel: Mutex<Cancel>,
}

struct Inner {
    ctx: Context,
    model: Llama,
    tokenizer: GgufTokenizer,
}

impl std::fmt::Debug for WringModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WringModel")
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(message: &str) {
    // An interior NUL would cut the message; replace it rather than lose the message.
    let c = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

fn fail(status: WringStatus, message: &str) -> WringStatus {
    set_error(message);
    status
}

fn status_of(e: &LlmError) -> WringStatus {
    match e {
        LlmError::Gguf(_) | LlmError::Unsupported(_) | LlmError::Tokenizer(_) => WringStatus::Load,
        LlmError::Request(_) => WringStatus::Request,
        LlmError::Runtime(_) | LlmError::NonFinite(_) => WringStatus::Device,
    }
}

/// Runs an entry point's body with panics caught, so none unwinds into C.
fn guarded(body: impl FnOnce() -> WringStatus) -> WringStatus {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(s) => s,
        Err(_) => fail(WringStatus::Panic, "wring panicked; this is a bug"),
    }
}

/// A NUL-terminated UTF-8 argument as a `&str`.
///
/// # Safety
/// `p` is NULL or points at a NUL-terminated string that outlives the call.
unsafe fn arg_str<'a>(p: *const c_char, what: &str) -> Result<&'a str, WringStatus> {
    if p.is_null() {
        return Err(fail(
            WringStatus::InvalidArgument,
            &format!("{what} is NULL"),
        ));
    }
    // SAFETY: not NULL, and the caller promises a NUL-terminated string alive for the call.
    unsafe { CStr::from_ptr(p) }.to_str().map_err(|_| {
        fail(
            WringStatus::InvalidArgument,
            &format!("{what} is not UTF-8"),
        )
    })
}

/// The message of the last failed call on this thread (empty if none). The pointer stays valid until the
/// next wring call on this thread.
#[unsafe(no_mangle)]
pub extern "C" fn wring_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Greedy decoding of at most 256 tokens.
#[unsafe(no_mangle)]
pub extern "C" fn wring_default_options() -> WringOptions {
    WringOptions {
        max_tokens: 256,
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        seed: 0,
    }
}

/// Opens the GGUF model at `path` on the GPU wring chooses, with a KV cache of `max_context` positions
/// (0: the model's own context length, capped at 4,096), 8-bit activations where the weights allow, and
/// stores the handle in `*out`.
///
/// # Safety
/// `path` is a NUL-terminated string; `out` points at writable storage for one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wring_model_open(
    path: *const c_char,
    max_context: u32,
    out: *mut *mut WringModel,
) -> WringStatus {
    guarded(|| {
        if out.is_null() {
            return fail(WringStatus::InvalidArgument, "out is NULL");
        }
        // SAFETY: the caller passes a NUL-terminated path.
        let path = match unsafe { arg_str(path, "path") } {
            Ok(p) => p,
            Err(s) => return s,
        };
        let opened = (|| -> Result<WringModel, LlmError> {
            let g = wring_gguf::Gguf::open(path)?;
            let tokenizer = GgufTokenizer::from_gguf(&g)?;
            let ctx = Context::new(ContextOptions {
                q8_activations: true,
                ..Default::default()
            })?;
            let context = if max_context == 0 {
                4096
            } else {
                max_context as usize
            };
            let model = Llama::load(&ctx, &g, context, |_, _| {})?;
            Ok(WringModel {
                inner: Mutex::new(Inner {
                    ctx,
                    model,
                    tokenizer,
                }),
                cancel: Mutex::new(Cancel::new()),
            })
        })();
        match opened {
            Ok(m) => {
                // SAFETY: checked not NULL; the caller gives storage for one pointer.
                unsafe { *out = Box::into_raw(Box::new(m)) };
                WringStatus::Ok
            }
            Err(e) => fail(status_of(&e), &format!("{path}: {e}")),
        }
    })
}

/// Generates a continuation of `prompt` (raw text, tokenized with the model's tokenizer; no chat template),
/// calling `callback` with each piece of text as it is produced. Ends at an end-of-text token, after
/// `options->max_tokens`, when the callback returns non-zero (`WRING_STATUS_OK`), or when `wring_cancel`
/// is called (`WRING_STATUS_CANCELLED`). `options` may be NULL for the defaults; `generated` may be NULL,
/// otherwise it receives the number of tokens generated. One generation at a time per model: a second
/// call waits for the first.
///
/// # Safety
/// `model` comes from `wring_model_open` and is not freed; `prompt` is a NUL-terminated string; `options`
/// and `generated` are NULL or valid; `callback` is safe to call with `user` from this thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wring_generate(
    model: *mut WringModel,
    prompt: *const c_char,
    options: *const WringOptions,
    callback: WringTextCallback,
    user: *mut c_void,
    generated: *mut u32,
) -> WringStatus {
    guarded(|| {
        // SAFETY: the caller passes a live handle from wring_model_open or NULL.
        let Some(m) = (unsafe { model.as_ref() }) else {
            return fail(WringStatus::InvalidArgument, "model is NULL");
        };
        // SAFETY: a NUL-terminated prompt.
        let prompt = match unsafe { arg_str(prompt, "prompt") } {
            Ok(p) => p,
            Err(s) => return s,
        };
        // SAFETY: NULL or a valid options struct.
        let o = unsafe { options.as_ref() }
            .copied()
            .unwrap_or_else(|| wring_default_options());
        let sampler = match Sampler::new(o.temperature, o.top_k as usize, o.top_p, 0.0, 1.0, o.seed)
        {
            Ok(s) => s,
            Err(e) => return fail(WringStatus::InvalidArgument, &e.to_string()),
        };
        let cancel = Cancel::new();
        *m.cancel.lock().unwrap_or_else(|p| p.into_inner()) = cancel.clone();
        let mut inner = m.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Inner {
            ctx,
            model,
            tokenizer,
        } = &mut *inner;
        let mut count = 0u32;
        let result = (|| -> Result<WringStatus, LlmError> {
            let ids = tokenizer.encode(prompt)?;
            wring_llm::check_generation(ids.len(), o.max_tokens as usize, model.max_context)?;
            let stops = tokenizer.stop_tokens.clone();
            let tokens = model.generate(
                ctx,
                &ids,
                sampler,
                &stops,
                o.max_tokens as usize,
                cancel.clone(),
            )?;
            let mut stream = TextStream::new(tokenizer);
            let emit = |text: &str| -> bool {
                match callback {
                    // SAFETY: the caller's callback, with a pointer and length valid for the call.
                    Some(f) if !text.is_empty() => unsafe {
                        f(text.as_ptr().cast(), text.len(), user) == 0
                    },
                    _ => true,
                }
            };
            for t in tokens {
                count += 1;
                if !emit(&stream.push(t?)?) {
                    return Ok(WringStatus::Ok);
                }
            }
            emit(&stream.finish());
            Ok(if cancel.is_cancelled() {
                WringStatus::Cancelled
            } else {
                WringStatus::Ok
            })
        })();
        if !generated.is_null() {
            // SAFETY: checked not NULL; the caller gives storage for one u32.
            unsafe { *generated = count };
        }
        match result {
            Ok(WringStatus::Cancelled) => fail(WringStatus::Cancelled, "cancelled"),
            Ok(s) => s,
            Err(e) => fail(status_of(&e), &e.to_string()),
        }
    })
}

/// Asks the running generation on `model` to stop before its next token. Safe from any thread, and a no-op
/// when nothing runs.
///
/// # Safety
/// `model` is NULL or a live handle from `wring_model_open`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wring_cancel(model: *const WringModel) {
    let _ = catch_unwind(|| {
        // SAFETY: NULL or a live handle.
        if let Some(m) = unsafe { model.as_ref() } {
            m.cancel.lock().unwrap_or_else(|p| p.into_inner()).cancel();
        }
    });
}

/// Frees a model (NULL is ignored). No generation may be running on it.
///
/// # Safety
/// `model` is NULL or a handle from `wring_model_open` not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn wring_model_free(model: *mut WringModel) {
    if !model.is_null() {
        let _ = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: a handle from Box::into_raw in wring_model_open, freed once.
            drop(unsafe { Box::from_raw(model) });
        }));
    }
}

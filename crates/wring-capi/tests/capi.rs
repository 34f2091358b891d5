//! The C ABI: the committed header is cbindgen's output for the source; `examples/generate.c`, compiled by
//! the system's C compiler against the shared library, prints what the Rust API generates; errors come back
//! as codes with messages; cancellation from another thread stops a generation.

#![allow(
    unsafe_code,
    reason = "the tests call the C ABI's functions as C would"
)]

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use wring_capi::*;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn model_path() -> PathBuf {
    let p = std::env::var_os("WRING_TEST_MODEL").map_or_else(
        || crate_dir().join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf"),
        PathBuf::from,
    );
    assert!(
        p.exists(),
        "test model {} is missing: run `bash .ci/fetch-model.sh`",
        p.display()
    );
    p
}

#[test]
fn the_header_is_current() {
    let config = cbindgen::Config::from_file(crate_dir().join("cbindgen.toml")).unwrap();
    let mut made = Vec::new();
    cbindgen::Builder::new()
        .with_src(crate_dir().join("src/lib.rs"))
        .with_config(config)
        .generate()
        .unwrap()
        .write(&mut made);
    let path = crate_dir().join("include/wring.h");
    if std::env::var_os("WRING_BLESS").is_some() {
        std::fs::write(&path, &made).unwrap();
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == made,
        "include/wring.h differs from what cbindgen makes of src/lib.rs; rerun with WRING_BLESS=1"
    );
}

/// The text the library generates greedily after `prompt`, as the C ABI opens the model (8-bit activations).
fn library_text(prompt: &str, max_tokens: usize) -> String {
    let g = wring_gguf::Gguf::open(model_path()).unwrap();
    let tok = wring_llm::GgufTokenizer::from_gguf(&g).unwrap();
    let ctx = wring_runtime::Context::new(wring_runtime::ContextOptions {
        q8_activations: true,
        ..Default::default()
    })
    .unwrap();
    let mut m = wring_llm::Llama::load(&ctx, &g, 512, |_, _| {}).unwrap();
    let ids = tok.encode(prompt).unwrap();
    let mut s = wring_llm::TextStream::new(&tok);
    let mut text: String = m
        .generate(
            &ctx,
            &ids,
            wring_llm::Sampler::greedy(),
            &tok.stop_tokens,
            max_tokens,
            wring_llm::Cancel::new(),
        )
        .unwrap()
        .map(|t| s.push(t.unwrap()).unwrap())
        .collect();
    text += &s.finish();
    text
}

/// The directory holding the shared library cargo built for this test: beside it (target/<profile>/deps),
/// or one level up where cargo copies what it builds directly.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let name = format!(
        "{}wring_capi{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    [deps, deps.parent().unwrap_or(deps)]
        .into_iter()
        .find(|d| d.join(&name).exists())
        .unwrap_or_else(|| panic!("{name} is not beside {}", exe.display()))
        .to_path_buf()
}

#[test]
fn the_c_example_prints_what_the_library_generates() {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("wring-generate");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let lib = lib_dir();
    let status = Command::new(&cc)
        .arg(crate_dir().join("examples/generate.c"))
        .arg("-I")
        .arg(crate_dir().join("include"))
        .arg("-L")
        .arg(&lib)
        .args(["-lwring_capi", "-o"])
        .arg(&out)
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(["-Wall", "-Wextra", "-Werror"])
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}`: {e}"));
    assert!(status.success(), "compiling examples/generate.c failed");
    let prompt = "The capital of France is";
    let run = |args: &[&str]| {
        let o = Command::new(&out).args(args).output().unwrap();
        (
            o.status.code(),
            String::from_utf8(o.stdout).unwrap(),
            String::from_utf8(o.stderr).unwrap(),
        )
    };
    let model = model_path();
    let model = model.to_str().unwrap();
    let (code, stdout, stderr) = run(&[model, prompt, "12"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.strip_suffix('\n').unwrap(), library_text(prompt, 12));
    assert!(stderr.contains("status 0"), "{stderr}");
    // The callback stops it after two pieces.
    let (code, stdout, stderr) = run(&[model, prompt, "12", "2"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("2 pieces"), "{stderr}");
    assert!(library_text(prompt, 12).starts_with(stdout.trim_end_matches('\n')));
    // A missing model is an error code with the path in its message, not a crash.
    let (code, _, stderr) = run(&["/nonexistent/model.gguf", prompt]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("error 2:") && stderr.contains("/nonexistent/model.gguf"),
        "{stderr}"
    );
}

fn last_error() -> String {
    // SAFETY: wring_last_error returns a valid NUL-terminated string until the next call.
    unsafe { CStr::from_ptr(wring_last_error()) }
        .to_string_lossy()
        .into_owned()
}

unsafe extern "C" fn collect(text: *const c_char, len: usize, user: *mut c_void) -> c_int {
    // SAFETY: the ABI passes `len` valid bytes and our own String as `user`.
    unsafe {
        let s = &mut *(user as *mut String);
        s.push_str(std::str::from_utf8(std::slice::from_raw_parts(text.cast(), len)).unwrap());
    }
    STARTED.store(true, Ordering::SeqCst);
    0
}

static STARTED: AtomicBool = AtomicBool::new(false);

/// `wring_generate` with no callback: the status only.
///
/// # Safety
/// As `wring_generate`'s: `model` open or null, `prompt` a NUL-terminated string or null, `options` null or
/// valid.
unsafe fn status(
    model: *mut WringModel,
    prompt: *const c_char,
    options: *const WringOptions,
) -> WringStatus {
    let mut n = 0u32;
    // SAFETY: the caller's guarantees, and an out-pointer to a local.
    unsafe { wring_generate(model, prompt, options, None, std::ptr::null_mut(), &mut n) }
}

#[test]
fn errors_are_codes_with_messages_and_cancel_stops_a_generation() {
    let path = CString::new(model_path().to_str().unwrap()).unwrap();
    let prompt = CString::new("1, 2, 3, 4, 5,").unwrap();
    // SAFETY (all calls below): valid NUL-terminated strings, out-pointers to locals, and the model
    // handle used only while open.
    unsafe {
        let mut model: *mut WringModel = std::ptr::null_mut();
        assert_eq!(
            wring_model_open(std::ptr::null(), 0, &mut model),
            WringStatus::InvalidArgument
        );
        assert!(last_error().contains("path is NULL"));
        assert_eq!(
            wring_model_open(path.as_ptr(), 256, &mut model),
            WringStatus::Ok
        );
        assert!(!model.is_null());
        let mut n = 0u32;
        let mut text = String::new();
        let user = (&mut text as *mut String).cast::<c_void>();
        assert_eq!(
            status(std::ptr::null_mut(), prompt.as_ptr(), std::ptr::null()),
            WringStatus::InvalidArgument
        );
        let mut o = wring_default_options();
        o.temperature = -1.0;
        assert_eq!(
            status(model, prompt.as_ptr(), &o),
            WringStatus::InvalidArgument
        );
        assert!(last_error().contains("temperature"), "{}", last_error());
        let mut o = wring_default_options();
        o.max_tokens = 1000;
        assert_eq!(status(model, prompt.as_ptr(), &o), WringStatus::Request);
        assert!(last_error().contains("context"), "{}", last_error());
        let empty = CString::new("").unwrap();
        assert_eq!(
            status(model, empty.as_ptr(), std::ptr::null()),
            WringStatus::Request
        );
        // Cancelled from another thread once the first text has arrived.
        let handle = model as usize;
        let canceller = std::thread::spawn(move || {
            while !STARTED.load(Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            wring_cancel(handle as *const WringModel);
        });
        let mut o = wring_default_options();
        o.max_tokens = 200;
        let s = wring_generate(model, prompt.as_ptr(), &o, Some(collect), user, &mut n);
        canceller.join().unwrap();
        assert_eq!(s, WringStatus::Cancelled, "{}", last_error());
        assert!((1..200).contains(&n), "{n} tokens");
        assert!(!text.is_empty());
        // The model serves again after a cancel.
        let mut o = wring_default_options();
        o.max_tokens = 3;
        assert_eq!(
            wring_generate(
                model,
                prompt.as_ptr(),
                &o,
                None,
                std::ptr::null_mut(),
                &mut n
            ),
            WringStatus::Ok
        );
        assert_eq!(n, 3);
        wring_model_free(model);
        wring_model_free(std::ptr::null_mut());
    }
}

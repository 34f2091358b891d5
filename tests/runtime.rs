//! The runtime's contracts: limits refused with both numbers, bindings matched by name, buffers pooled,
//! whole steps submitted at once, timestamps where the adapter has them.

use wring::kernels::tensor::{Binary, BinaryOp, CopyWords, Fill, Matvec};
use wring::kernels::{Choice, DType, Kernel as _};
use wring::runtime::{Context, ContextOptions, Error, adapter};

use crate::harness::{contexts, ctx};

#[test]
fn buffer_above_the_binding_limit_is_refused_with_both_numbers() {
    let ctx = ctx();
    let limit = ctx.info().limits.max_storage_buffer_binding_size;
    let words = (limit / 4 + 1) as usize;
    let err = ctx.empty(&[words], DType::F32).unwrap_err();
    let Error::BufferTooLarge {
        bytes, limit: l, ..
    } = &err
    else {
        panic!("wrong error: {err}")
    };
    assert_eq!((*bytes, *l), (words as u64 * 4, limit));
    let msg = err.to_string();
    assert!(
        msg.contains(&limit.to_string()) && msg.contains(&(words * 4).to_string()),
        "{msg}"
    );
    assert!(msg.contains("split"), "says what to do: {msg}");
}

#[test]
fn absurd_shapes_are_errors_not_panics() {
    let ctx = ctx();
    assert!(matches!(
        ctx.empty(&[usize::MAX, 2], DType::F32),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        ctx.empty(&[1 << 40], DType::F32),
        Err(Error::BufferTooLarge { .. })
    ));
    assert!(matches!(
        ctx.upload(&[3], &[1.0f32, 2.0]),
        Err(Error::Shape(_))
    ));
    let t = ctx.empty(&[4, 4], DType::F32).unwrap();
    assert!(
        matches!(ctx.view(&t, 1, &[1], DType::F32), Err(Error::Shape(_))),
        "misaligned view"
    );
    assert!(
        matches!(ctx.view(&t, 0, &[5, 4], DType::F32), Err(Error::Shape(_))),
        "view past the end"
    );
}

#[test]
fn launch_arguments_are_matched_to_reflected_bindings() {
    let ctx = ctx();
    let t = ctx.empty(&[16], DType::U32).unwrap();
    let plan = Fill {
        words: 16,
        value: 7,
    }
    .plan(ctx.caps(), Choice::Auto)
    .unwrap();
    let mut s = ctx.step("bindings");
    let e = s.launch(&plan, &[("out", &t)]).unwrap_err();
    assert!(
        e.to_string().contains("no storage binding named `out`"),
        "{e}"
    );
    let e = s.launch(&plan, &[]).unwrap_err();
    assert!(
        e.to_string().contains("`dst` must be given exactly once"),
        "{e}"
    );
    let e = s.launch(&plan, &[("dst", &t), ("dst", &t)]).unwrap_err();
    assert!(e.to_string().contains("exactly once"), "{e}");
    // Reading and writing one buffer in a launch is refused before WebGPU would reject it.
    let a = ctx.empty(&[16], DType::F32).unwrap();
    let b = ctx.empty(&[16], DType::F32).unwrap();
    let add = Binary {
        op: BinaryOp::Add,
        dtype: DType::F32,
        n: 16,
        nb: 16,
    };
    let e = s.run(&add, &[("a", &a), ("b", &b), ("c", &a)]).unwrap_err();
    assert!(e.to_string().contains("shares its buffer"), "{e}");
    assert!(s.is_empty());
}

#[test]
fn a_whole_chain_is_one_submission_and_correct() {
    let ctx = ctx();
    let n = 3000;
    let a = ctx.empty(&[n], DType::F32).unwrap();
    let b = ctx.empty(&[n], DType::F32).unwrap();
    let c = ctx.empty(&[n], DType::F32).unwrap();
    let d = ctx.empty(&[n], DType::F32).unwrap();
    let mut s = ctx.step("chain");
    let fill = |value: f32| Fill {
        words: n,
        value: value.to_bits(),
    };
    let binary = |op| Binary {
        op,
        dtype: DType::F32,
        n,
        nb: n,
    };
    s.run(&fill(2.0), &[("dst", &a)]).unwrap();
    s.run(&fill(3.0), &[("dst", &b)]).unwrap();
    s.run(&binary(BinaryOp::Mul), &[("a", &a), ("b", &b), ("c", &c)])
        .unwrap();
    s.run(&binary(BinaryOp::Add), &[("a", &c), ("b", &a), ("c", &d)])
        .unwrap();
    s.copy(&d, &a).unwrap();
    assert_eq!(s.len(), 5);
    let report = s.submit().unwrap();
    assert_eq!(report.launches, 4);
    let out: Vec<f32> = ctx.read(&a).unwrap();
    assert!(
        out.iter().all(|&v| v == 8.0),
        "2 * 3 + 2 = 8, got {:?}",
        &out[..4]
    );
}

/// A context of its own on the first adapter, so that pool and memory counts see only this test's tensors.
fn own_context() -> Context {
    Context::from_adapter(
        &adapter::all_adapters().unwrap()[0],
        ContextOptions::default(),
    )
    .unwrap()
}

#[test]
fn pool_reuses_released_buffers() {
    let ctx = own_context();
    let before = ctx.pool_stats();
    drop(ctx.empty(&[1000], DType::F32).unwrap());
    let t = ctx.empty(&[1000], DType::F32).unwrap();
    let after = ctx.pool_stats();
    assert_eq!(after.1 - before.1, 1, "one fresh allocation");
    assert_eq!(
        after.0 - before.0,
        1,
        "the second tensor reused the first one's buffer"
    );
    // A view keeps the buffer alive: it is not handed out again while the view exists.
    let view = ctx.view(&t, 0, &[10], DType::F32).unwrap();
    drop(t);
    let u = ctx.empty(&[1000], DType::F32).unwrap();
    assert!(!u.shares_buffer(&view));
}

/// The context counts the device memory in its tensors: a tensor's size class is live while it exists,
/// idle in the pool once dropped, gone after a trim; the peak remembers the most.
#[test]
fn device_memory_follows_tensors_and_the_pool() {
    let ctx = own_context();
    let start = ctx.memory();
    let t = ctx.empty(&[3 << 20], DType::F32).unwrap();
    let class = 12u64 << 20;
    let m = ctx.memory();
    assert_eq!(m.live_bytes - start.live_bytes, class);
    drop(t);
    let m = ctx.memory();
    assert_eq!(m.live_bytes, start.live_bytes);
    assert_eq!(m.idle_bytes - start.idle_bytes, class);
    assert!(m.peak_bytes >= start.live_bytes + class);
    ctx.trim_pool();
    let m = ctx.memory();
    assert_eq!(m.idle_bytes, 0);
    assert!(m.peak_bytes >= class, "the peak stays");
}

/// Data whose length is not a whole number of words is written whole (the last partial word padded with
/// zeros inside the tensor's slack), for element writes and packed block uploads alike, and the bytes past
/// it are left as they were.
#[test]
fn writes_of_a_partial_last_word_land_whole() {
    use wring::quant::BlockFormat as Fmt;
    let ctx = own_context();
    let halves: Vec<half::f16> = (0..7)
        .map(|i| half::f16::from_f32(i as f32 - 3.5))
        .collect();
    let t = ctx.upload(&[7], &halves).unwrap();
    assert_eq!(ctx.read::<half::f16>(&t).unwrap(), halves);
    let raw = ctx.read_underlying_bytes(&t).unwrap();
    assert_eq!(&raw[14..16], &[0, 0], "the pad half is zero");
    // Q8_0: 34 bytes per block, so one block ends half way through a word.
    let block: Vec<u8> = (0..34u8).map(|b| b.wrapping_mul(7)).collect();
    let q = ctx.upload_blocks(&[32], Fmt::Q8_0, &block).unwrap();
    let raw = ctx.read_underlying_bytes(&q).unwrap();
    assert_eq!(&raw[..34], block.as_slice());
    assert_eq!(&raw[34..36], &[0, 0]);
}

#[test]
fn profiling_times_every_launch_where_timestamps_exist() {
    for a in adapter::all_adapters().unwrap() {
        let ctx = Context::from_adapter(
            &a,
            ContextOptions {
                profile: true,
                ..Default::default()
            },
        )
        .unwrap();
        let t = ctx.empty(&[1 << 16], DType::U32).unwrap();
        let u = ctx.empty(&[1 << 16], DType::U32).unwrap();
        let start = std::time::Instant::now();
        let mut s = ctx.step("timed");
        s.run(
            &Fill {
                words: 1 << 16,
                value: 1,
            },
            &[("dst", &t)],
        )
        .unwrap();
        s.run(&CopyWords::new(1 << 16), &[("src", &t), ("dst", &u)])
            .unwrap();
        let r = s.submit().unwrap();
        let step_nanos = start.elapsed().as_nanos() as f64;
        match r.times {
            Some(times) => {
                assert_eq!(times.len(), 2);
                assert_eq!(times[1].kernel, "copy/vec4");
                assert!(
                    times.iter().all(|t| t.nanos > 0.0 && t.nanos < 10e9),
                    "{times:?}"
                );
                // Recording and encoding a launch takes some CPU time, and far less than the whole step
                // (the pipelines' creation on first use is left out of it).
                assert!(
                    times
                        .iter()
                        .all(|t| t.cpu_nanos > 0.0 && t.cpu_nanos < step_nanos),
                    "{times:?} against a step of {step_nanos} ns"
                );
            }
            None => assert!(
                !ctx.info().timestamps,
                "an adapter with timestamps reported no times"
            ),
        }
        assert!(ctx.read::<u32>(&u).unwrap().iter().all(|&w| w == 1));
    }
}

#[test]
fn fallback_device_without_optional_features_runs_auto_choices() {
    let a = &adapter::all_adapters().unwrap()[0];
    let ctx = Context::from_adapter(
        a,
        ContextOptions {
            disable_f16: true,
            disable_subgroup: true,
            profile: false,
            max_binding_bytes: None,
            q8_activations: false,
            plan: wring::runtime::PlanAs::Auto,
        },
    )
    .unwrap();
    assert!(!ctx.caps().f16 && !ctx.caps().subgroup);
    let w = ctx
        .upload(&[2, 3], &[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0])
        .unwrap();
    let x = ctx.upload(&[3], &[1.0f32, 1.0, 1.0]).unwrap();
    let y = ctx.empty(&[2], DType::F32).unwrap();
    let mut s = ctx.step("fallback");
    let mv = Matvec {
        dtype: DType::F32,
        n: 2,
        k: 3,
    };
    s.run(&mv, &[("w", &w), ("x", &x), ("y", &y)]).unwrap();
    let e = s
        .run_with(
            &mv,
            Choice::Force("f32_subgroup"),
            &[("w", &w), ("x", &x), ("y", &y)],
        )
        .unwrap_err();
    assert!(e.to_string().contains("SUBGROUP"), "{e}");
    s.submit().unwrap();
    assert_eq!(ctx.read::<f32>(&y).unwrap(), vec![6.0, 15.0]);
}

#[test]
fn backend_names_are_parsed_or_refused() {
    assert!(adapter::parse_backend("Vulkan").is_ok());
    assert!(adapter::parse_backend("dx12").is_ok());
    assert!(matches!(
        adapter::parse_backend("glide"),
        Err(Error::UnknownBackend(_))
    ));
    // Either this build has OpenGL, or the error says how to get it.
    match adapter::parse_backend("gl") {
        Ok(b) => assert_eq!(format!("{b:?}"), "Backends(GL)"),
        Err(e) => assert!(e.to_string().contains("--features"), "{e}"),
    }
}

#[test]
fn every_adapter_found_is_tested() {
    // The harness opened a device on each adapter; CI fails here rather than skip when there is none.
    assert!(!contexts().is_empty());
    for c in contexts() {
        eprintln!("GPU tests run on {}", c.label());
    }
}

//! The shader build bites: invalid WGSL is rejected with its file name and naga's message, capabilities
//! a variant did not declare are refused, and a wrong kernel fails the harness.

use wring::kernels::check::Tolerance;
use wring::kernels::shader::{self as shader_build, Requires};
use wring::kernels::tensor::copy;
use wring::kernels::tensor::{CopyWords, Matvec};
use wring::kernels::{self as variant, Choice, DType, Kernel as _, Variant};

use crate::harness::{Case, Rng};

const INVALID: &str = include_str!("fixtures/invalid_type_mismatch.wgsl");
const OFF_BY_ONE: &str = include_str!("fixtures/copy_off_by_one.wgsl");

#[test]
fn invalid_shader_is_rejected_with_file_and_naga_message() {
    let file = "tests/fixtures/invalid_type_mismatch.wgsl";
    // The same two calls build.rs makes for every variant.
    let text =
        shader_build::preprocess(file, INVALID, &[], Requires::default(), &|_| None).unwrap();
    let err = shader_build::validate(file, &text, Requires::default()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with(file), "the error names the file: {msg}");
    assert!(
        msg.contains("out[id.x] = 1.5"),
        "the error quotes the offending line: {msg}"
    );
    assert!(
        msg.to_lowercase().contains("error"),
        "naga's message is included: {msg}"
    );
}

#[test]
fn undeclared_capabilities_are_refused() {
    let f16_src = "enable f16;\n@group(0) @binding(0) var<storage, read_write> o: array<f16>;\n\
                   @compute @workgroup_size(1) fn main() { o[0] = 1.0h; }";
    assert!(shader_build::validate("f16.wgsl", f16_src, Requires::default()).is_err());
    assert!(
        shader_build::validate(
            "f16.wgsl",
            f16_src,
            Requires {
                f16: true,
                subgroup: false
            }
        )
        .is_ok()
    );
    let sg_src = "@group(0) @binding(0) var<storage, read_write> o: array<f32>;\n\
                  @compute @workgroup_size(64) fn main(@builtin(local_invocation_index) i: u32) { o[i] = subgroupAdd(1.0); }";
    assert!(shader_build::validate("sg.wgsl", sg_src, Requires::default()).is_err());
    assert!(
        shader_build::validate(
            "sg.wgsl",
            sg_src,
            Requires {
                f16: false,
                subgroup: true
            }
        )
        .is_ok()
    );
}

#[test]
fn preprocessor_errors_name_the_line() {
    let import = |_: &str| None;
    let e = shader_build::preprocess(
        "a.wgsl",
        "#ifdef X\nfn f() {}\n",
        &[],
        Requires::default(),
        &import,
    )
    .unwrap_err();
    assert!(e.to_string().contains("without a matching `#endif`"), "{e}");
    let e = shader_build::preprocess(
        "a.wgsl",
        "fn f() {}\n#endif\n",
        &[],
        Requires::default(),
        &import,
    )
    .unwrap_err();
    assert_eq!(e.file, "a.wgsl:2");
    let e = shader_build::preprocess(
        "a.wgsl",
        "#import nothing\n",
        &[],
        Requires::default(),
        &import,
    )
    .unwrap_err();
    assert!(e.to_string().contains("shaders/common/nothing.wgsl"), "{e}");
    let e = shader_build::preprocess("a.wgsl", "#define X 1\n", &[], Requires::default(), &import)
        .unwrap_err();
    assert!(
        e.to_string().contains("unknown preprocessor directive"),
        "{e}"
    );
}

#[test]
fn preprocessor_selects_branches_and_declares_defines() {
    let src = "#ifdef A\nA_ON\n#else\nA_OFF\n#endif\n#ifndef B\nB_OFF\n#endif\n";
    let defs = vec![
        ("A".to_string(), String::new()),
        ("N".to_string(), "64".to_string()),
        ("T".to_string(), "f16".to_string()),
        ("S".to_string(), "0.5".to_string()),
    ];
    let out = shader_build::preprocess(
        "a.wgsl",
        src,
        &defs,
        Requires {
            f16: true,
            subgroup: false,
        },
        &|_| None,
    )
    .unwrap();
    assert!(out.starts_with("enable f16;\n"));
    assert!(
        out.contains("const N: u32 = 64u;")
            && out.contains("alias T = f16;")
            && out.contains("const S: f32 = 0.5;")
    );
    assert!(out.contains("A_ON") && !out.contains("A_OFF") && out.contains("B_OFF"));
}

#[test]
fn permutation_table_rejects_duplicates_and_unknown_requirements() {
    assert!(
        shader_build::parse_permutations("k v -\nk v -\n")
            .unwrap_err()
            .to_string()
            .contains("twice")
    );
    assert!(
        shader_build::parse_permutations("k v avx\n")
            .unwrap_err()
            .to_string()
            .contains("unknown requirement")
    );
    let p = shader_build::parse_permutations("# c\nb y f16,subgroup A=1 F\na x -\n").unwrap();
    let p = p.variants;
    assert_eq!(p[0].kernel, "a", "sorted");
    assert!(p[1].requires.f16 && p[1].requires.subgroup);
}

#[test]
fn every_built_variant_is_reflected_sensibly() {
    for v in variant::all() {
        assert_eq!(v.entry, "main", "{}", v.id());
        assert!(
            v.bindings.iter().any(|b| b.name == "params"),
            "{} has a params uniform",
            v.id()
        );
        assert!(
            v.bindings
                .iter()
                .any(|b| b.kind == wring::kernels::BindingKind::StorageReadWrite),
            "{} writes something",
            v.id()
        );
        if let Some(wg) = v.define("WG") {
            let wg: u32 = wg.parse().unwrap();
            assert!(
                wg.is_power_of_two(),
                "{}: the tree reductions need a power-of-two workgroup",
                v.id()
            );
            assert_eq!(
                v.workgroup_size,
                [wg, 1, 1],
                "{}: reflected size equals the define",
                v.id()
            );
        }
    }
}

fn off_by_one_variant() -> Variant {
    Variant::from_source(
        "copy_off_by_one",
        "fixture",
        "tests/fixtures/copy_off_by_one.wgsl",
        OFF_BY_ONE,
        &[("WG", "64")],
        Requires::default(),
    )
    .expect("the fixture is valid WGSL; only its indexing is wrong")
}

#[test]
fn harness_catches_an_off_by_one_kernel() {
    let words = 1000;
    let src: Vec<u32> = (0..words as u32)
        .map(|i| i.wrapping_mul(2_654_435_761))
        .collect();
    let mut expected = vec![0u32; words];
    copy::cpu(&src, &mut expected);
    let v = off_by_one_variant();
    let case = Case {
        name: "copy_off_by_one fixture".into(),
        tol: Tolerance::Exact,
        out_dtype: DType::U32,
        out_shape: vec![words],
        expected: expected.into_iter().map(f32::from_bits).collect(),
        record: Box::new(move |ctx, step, out| {
            let s = ctx.upload(&[words], &src)?;
            let params = copy::Params {
                n: words as u32,
                src_offset: 0,
                dst_offset: 0,
                pad: 0,
            };
            step.launch_variant(
                &v,
                bytemuck::bytes_of(&params),
                [words.div_ceil(64) as u32, 1, 1],
                &[("src", &s), ("dst", out)],
            )
        }),
        needs_f16: false,
        needs_subgroup: false,
    };
    let err = case
        .check()
        .expect_err("a wrong kernel must fail the comparison");
    assert!(
        err.contains("copy_off_by_one fixture") && err.contains("element 0"),
        "{err}"
    );
}

#[test]
fn harness_catches_a_wrong_float_kernel_by_nmse() {
    // The off-by-one kernel copying float bits, judged by an NMSE budget rather than exact bits.
    let n = 512;
    let src = Rng::new(9).vec(n, -1.0, 1.0);
    let v = off_by_one_variant();
    let case = Case {
        name: "copy_off_by_one as f32".into(),
        tol: Tolerance::Nmse(1e-3),
        out_dtype: DType::F32,
        out_shape: vec![n],
        expected: src.clone(),
        record: Box::new(move |ctx, step, out| {
            let s = ctx.upload(&[n], &src)?;
            let params = copy::Params {
                n: n as u32,
                src_offset: 0,
                dst_offset: 0,
                pad: 0,
            };
            step.launch_variant(
                &v,
                bytemuck::bytes_of(&params),
                [n.div_ceil(64) as u32, 1, 1],
                &[("src", &s), ("dst", out)],
            )
        }),
        needs_f16: false,
        needs_subgroup: false,
    };
    let err = case
        .check()
        .expect_err("a wrong kernel must fail the comparison");
    assert!(err.contains("NMSE"), "{err}");
}

#[test]
fn forced_variant_names_are_checked() {
    let e = CopyWords::new(8)
        .plan(&wring::kernels::Caps::BASELINE, Choice::Force("avx512"))
        .unwrap_err();
    assert!(
        e.to_string().contains("u32, vec4"),
        "lists what exists: {e}"
    );
    let e = Matvec {
        dtype: DType::F32,
        n: 4,
        k: 4,
    }
    .plan(
        &wring::kernels::Caps::BASELINE,
        Choice::Force("f32_subgroup"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("SUBGROUP"), "{e}");
}

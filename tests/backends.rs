//! Every built shader variant through naga's other back ends: MSL (what wgpu's Metal back end compiles),
//! HLSL (DX12) and SPIR-V (Vulkan), the SPIR-V checked by `spirv-val`. CI runs the variants only on Vulkan
//! (lavapipe) and OpenGL ES (llvmpipe); Metal and DX12 would otherwise see a wring shader first on a user's
//! machine. A variant that does not translate fails this test; none is skipped.
//!
//! The options are those wgpu 30's back ends pass for an adapter that has the variant's features: MSL 2.4
//! (macOS 12 / iOS 15, which every SUBGROUP- or SHADER_F16-capable Apple GPU runs), HLSL shader model 6.2
//! (the lowest at which wgpu's DX12 back end offers SHADER_F16; SUBGROUP needs 6.0) with its index
//! clamping, and SPIR-V 1.3 (Vulkan 1.1, the lowest version with subgroup operations) with the checked
//! buffer accesses wgpu emits where a driver lacks robust buffer access. The translated MSL and HLSL are
//! not compiled here (neither compiler runs on Linux); the SPIR-V is validated for the Vulkan 1.1
//! environment, the strictest one every Vulkan adapter wgpu accepts provides.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use naga::back::{hlsl, msl, spv};
use naga::proc::{BoundsCheckPolicies, BoundsCheckPolicy};
use naga::valid::{Capabilities, ValidationFlags, Validator};

use wring::kernels::Variant;

/// The capabilities a device with the variant's features grants (as `shader::validate` does at build time).
fn capabilities(v: &Variant) -> Capabilities {
    let mut caps = Capabilities::SHADER_FLOAT16_IN_FLOAT32;
    if v.requires.f16 {
        caps |= Capabilities::SHADER_FLOAT16;
    }
    if v.requires.subgroup {
        caps |= Capabilities::SUBGROUP | Capabilities::SUBGROUP_BARRIER;
    }
    caps
}

/// The three translations of one variant, or the first back end's error.
fn translate(v: &Variant) -> Result<(String, String, Vec<u32>), String> {
    let module = naga::front::wgsl::parse_str(&v.source).map_err(|e| format!("WGSL: {e}"))?;
    let info = Validator::new(ValidationFlags::all(), capabilities(v))
        .validate(&module)
        .map_err(|e| format!("validation: {e:?}"))?;
    let entry = v.entry.to_string();

    let msl_options = msl::Options {
        lang_version: (2, 4),
        bounds_check_policies: BoundsCheckPolicies {
            buffer: BoundsCheckPolicy::ReadZeroSkipWrite,
            ..BoundsCheckPolicies::default()
        },
        ..msl::Options::default()
    };
    let msl_pipeline = msl::PipelineOptions {
        entry_point: Some((naga::ShaderStage::Compute, entry.clone())),
        ..msl::PipelineOptions::default()
    };
    let (msl_text, _) = msl::write_string(&module, &info, &msl_options, &msl_pipeline)
        .map_err(|e| format!("MSL: {e}"))?;

    let hlsl_options = hlsl::Options {
        shader_model: hlsl::ShaderModel::V6_2,
        restrict_indexing: true,
        ..hlsl::Options::default()
    };
    let hlsl_pipeline = hlsl::PipelineOptions {
        entry_point: Some((naga::ShaderStage::Compute, entry.clone())),
    };
    let mut hlsl_text = String::new();
    hlsl::Writer::new(&mut hlsl_text, &hlsl_options, &hlsl_pipeline)
        .write(&module, &info, None)
        .map_err(|e| format!("HLSL: {e}"))?;

    let spv_options = spv::Options {
        lang_version: (1, 3),
        flags: spv::WriterFlags::empty(),
        bounds_check_policies: BoundsCheckPolicies {
            index: BoundsCheckPolicy::Restrict,
            buffer: BoundsCheckPolicy::Restrict,
            ..BoundsCheckPolicies::default()
        },
        ..spv::Options::default()
    };
    let spv_pipeline = spv::PipelineOptions {
        shader_stage: naga::ShaderStage::Compute,
        entry_point: entry,
    };
    let words = spv::write_vec(&module, &info, &spv_options, Some(&spv_pipeline))
        .map_err(|e| format!("SPIR-V: {e}"))?;
    Ok((msl_text, hlsl_text, words))
}

/// `spirv-val` on PATH (Debian's `spirv-tools`, which .ci/install-vulkan.sh installs); the test fails
/// without it rather than skip the validation.
fn spirv_val() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("spirv-val"))
            .find(|f| f.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("spirv-val is not on PATH: install Debian's spirv-tools (bash .ci/install-vulkan.sh does)")
    })
}

#[test]
fn every_variant_translates_to_metal_dx12_and_validated_spirv() {
    let validator = spirv_val();
    let dir = std::env::temp_dir().join(format!("wring-backends-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut failures = String::new();
    let mut count = 0;
    let mut spv_files = Vec::new();
    for v in wring::runtime::kernels::all() {
        count += 1;
        match translate(v) {
            Ok((msl_text, hlsl_text, words)) => {
                // The entry point is in each translation under its own name (naga keeps it where the
                // target allows, as wgpu's back ends look it up).
                if !msl_text.contains("kernel void") {
                    let _ = writeln!(failures, "{}: the MSL has no kernel function", v.id());
                }
                if !hlsl_text.contains("[numthreads(") {
                    let _ = writeln!(failures, "{}: the HLSL has no [numthreads] entry", v.id());
                }
                let file = dir.join(format!("{}.spv", v.id().replace('/', "__")));
                std::fs::write(&file, bytemuck::cast_slice::<u32, u8>(&words)).unwrap();
                spv_files.push((v.id(), file));
            }
            Err(e) => {
                let _ = writeln!(failures, "{}: {e}", v.id());
            }
        }
    }
    // The validator bites: a module cut in half is refused.
    if let Some((_, first)) = spv_files.first() {
        let bytes = std::fs::read(first).unwrap();
        let cut = dir.join("cut.spv");
        std::fs::write(&cut, &bytes[..bytes.len() / 8 * 4]).unwrap();
        let out = Command::new(&validator)
            .args(["--target-env", "vulkan1.1"])
            .arg(&cut)
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "spirv-val accepted a truncated module"
        );
    }
    for (id, file) in &spv_files {
        let out = Command::new(&validator)
            .args(["--target-env", "vulkan1.1"])
            .arg(file)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", validator.display()));
        if !out.status.success() {
            let _ = writeln!(
                failures,
                "{id}: spirv-val: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "{count} variants translated to MSL, HLSL and SPIR-V; {} SPIR-V modules validated",
        spv_files.len()
    );
    assert!(count > 100, "only {count} variants in the catalogue");
    assert!(
        failures.is_empty(),
        "variants that do not translate:\n{failures}"
    );
}

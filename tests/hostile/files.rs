//! Hostile files of the other kinds wring reads, and the numbers a command line hands the library: `.npy`
//! arrays, safetensors codebooks, `.wrg` streams, WAV and PNG files, chat templates, VQ codebooks and codes,
//! and sampling and encoder settings. Files go through the same path-taking functions the commands call.

use super::{Case, typed};
use std::path::PathBuf;
use wring::codec::{Options, Rate};
use wring::kernels::DType;
use wring::llm::chat::{ChatMessage, MAX_OUTPUT, render};
use wring::llm::{LlmError, Sampler};
use wring::vq::Quantizer;

/// Writes `bytes` to a fresh file under the test's temporary directory and returns its path.
fn file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wring-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("temporary file");
    path
}

/// A `.npy` file (version 1) with this header text, padded as numpy pads it, and `data`.
fn npy(header: &str, data: &[u8]) -> Vec<u8> {
    let mut h = header.to_string();
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(h.len() as u16).to_le_bytes());
    b.extend_from_slice(h.as_bytes());
    b.extend_from_slice(data);
    b
}

fn npy_cases() -> Vec<Case> {
    let f32s = |n: usize| vec![0u8; 4 * n];
    let mut c = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>, expect: &[&'static str]| {
        let n = bytes.len();
        let path = file(&format!("{}.npy", c.len()), &bytes);
        let run = move || wring::codec::io::read_npy(&path).map(|_| ()).map_err(typed);
        c.push(if expect.is_empty() {
            Case::control("npy", name, n, run)
        } else {
            Case::new("npy", name, n, expect, run)
        });
    };
    let ok = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    add("a valid [2, 3] f32 array (control)", npy(ok, &f32s(6)), &[]);
    add("no magic", b"NUMPY\x01\x00".to_vec(), &["IoError"]);
    add("an empty file", vec![], &["IoError"]);
    add(
        "a header length past the file",
        b"\x93NUMPY\x01\x00\xff\xff{".to_vec(),
        &["IoError"],
    );
    add(
        "format version 9",
        {
            let mut b = npy(ok, &f32s(6));
            b[6] = 9;
            b
        },
        &["IoError", "version"],
    );
    for (what, header) in [
        (
            "an unclosed shape tuple",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, }",
        ),
        (
            "fortran_order:True without a space",
            "{'descr': '<f4', 'fortran_order':True, 'shape': (2, 3), }",
        ),
        (
            "a decoy 'descr' inside another value",
            "{'shape': (6,), 'fortran_order': False, 'x': \"'descr': '<f4'\", 'descr': '>f8', }",
        ),
        (
            "Fortran order",
            "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }",
        ),
        (
            "big-endian floats",
            "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }",
        ),
        (
            "f8 where f4 is read",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }",
        ),
        (
            "an object array",
            "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }",
        ),
        (
            "a structured dtype",
            "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }",
        ),
        (
            "a negative dimension",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 6), }",
        ),
        (
            "a shape whose product overflows",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 16), }",
        ),
        (
            "a shape far larger than the data",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000,), }",
        ),
        (
            "a missing shape",
            "{'descr': '<f4', 'fortran_order': False, }",
        ),
        (
            "a repeated key",
            "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (6,), }",
        ),
        (
            "an unknown key",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), 'x': 1, }",
        ),
        ("not a dictionary", "['descr', '<f4']"),
        (
            "a header that is not text",
            "{'descr': '\u{fffd}', 'fortran_order': False, 'shape': (6,), }",
        ),
    ] {
        add(what, npy(header, &f32s(6)), &["IoError"]);
    }
    add(
        "data shorter than the shape",
        npy(ok, &f32s(5)),
        &["IoError"],
    );
    add(
        "data longer than the shape",
        npy(ok, &f32s(7)),
        &["IoError"],
    );
    c
}

/// A safetensors file with this JSON header and `data`.
fn safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

fn safetensors_cases() -> Vec<Case> {
    let mut c = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>, expect: &[&'static str]| {
        let n = bytes.len();
        let path = file(&format!("{}.safetensors", c.len()), &bytes);
        // The VQ commands load codebooks through this; it reads, checks shapes and builds on the device.
        let run = move || {
            Quantizer::load(crate::harness::ctx(), &path, DType::F32)
                .map(|_| ())
                .map_err(typed)
        };
        c.push(if expect.is_empty() {
            Case::control("safetensors", name, n, run)
        } else {
            Case::new("safetensors", name, n, expect, run)
        });
    };
    let book = |dtype: &str, shape: &str, end: usize| {
        format!(r#"{{"codebooks":{{"dtype":"{dtype}","shape":{shape},"data_offsets":[0,{end}]}}}}"#)
    };
    let data = vec![0u8; 64];
    add(
        "a valid [1, 1, 4, 4] codebook (control)",
        safetensors(&book("F32", "[1,1,4,4]", 64), &data),
        &[],
    );
    add(
        "a header length of 2^63",
        {
            let mut b = (1u64 << 63).to_le_bytes().to_vec();
            b.extend_from_slice(b"{}");
            b
        },
        &["Io"],
    );
    add(
        "a header length past the file",
        safetensors(&book("F32", "[4,4]", 64), &data)[..20].to_vec(),
        &["Io"],
    );
    add(
        "a header that is not JSON",
        safetensors("{codebooks", &data),
        &["Io"],
    );
    add(
        "a header that is JSON but not an object",
        safetensors("[1,2,3]", &data),
        &["Io"],
    );
    add(
        "no codebooks tensor",
        safetensors(
            r#"{"other":{"dtype":"F32","shape":[4,4],"data_offsets":[0,64]}}"#,
            &data,
        ),
        &["codebooks"],
    );
    add(
        "F16 codebooks where F32 is read",
        safetensors(&book("F16", "[4,8]", 64), &data),
        &["Io"],
    );
    add(
        "I64 codebooks",
        safetensors(&book("I64", "[2,4]", 64), &data),
        &["Io"],
    );
    add(
        "a shape that does not match the bytes",
        safetensors(&book("F32", "[4,5]", 64), &data),
        &["Io"],
    );
    add(
        "a shape whose product overflows",
        safetensors(&book("F32", "[4294967296,4294967296,4]", 64), &data),
        &["Io"],
    );
    add(
        "data offsets past the file",
        safetensors(&book("F32", "[4,4]", 6400), &data),
        &["Io"],
    );
    add(
        "data offsets reversed",
        safetensors(
            r#"{"codebooks":{"dtype":"F32","shape":[4,4],"data_offsets":[64,0]}}"#,
            &data,
        ),
        &["Io"],
    );
    add(
        "a rank-3 codebook",
        safetensors(&book("F32", "[2,2,4]", 64), &data),
        &["Request", "codebooks must be"],
    );
    add(
        "a codebook of zero codewords",
        safetensors(&book("F32", "[0,4]", 0), &[]),
        &["Request"],
    );
    add(
        "a codebook of zero width",
        safetensors(&book("F32", "[4,0]", 0), &[]),
        &["Request"],
    );
    let nan: Vec<u8> = [f32::NAN; 16]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    add(
        "NaN codewords",
        safetensors(&book("F32", "[4,4]", 64), &nan),
        &["Request", "NaN"],
    );
    c
}

/// A `.wrg` stream of an 8 x 8 gray image (a one-level packet tree), made by the encoder, and one of 64
/// samples of mono audio.
fn streams() -> (Vec<u8>, Vec<u8>) {
    let ctx = crate::harness::ctx();
    let img = wring::codec::Image {
        width: 8,
        height: 8,
        channels: 1,
        pixels: (0..64).map(|i| (i * 4) as u8).collect(),
    };
    // The dyadic tree, so that the cases below know where its flag and the band headers lie.
    let opts = Options {
        tree: wring::codec::TreeShape::Dyadic,
        ..Options::default()
    };
    let image = wring::codec::encode_image(ctx, &img, &opts).expect("an 8 x 8 image encodes");
    let a = wring::codec::Audio {
        sample_rate: 8000,
        channels: 1,
        samples: (0..64).map(|i| (i * 300) as i16).collect(),
    };
    let audio =
        wring::codec::encode_audio(ctx, &a, &Options::default()).expect("64 samples encode");
    (image, audio)
}

/// `s` with `edit` applied and the checksum recomputed, so the edit reaches the checks behind the CRC.
fn resealed(s: &[u8], edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut b = s[..s.len() - 4].to_vec();
    edit(&mut b);
    let crc = crate::codec::crc32(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

fn wrg_cases() -> Vec<Case> {
    let (image, audio) = streams();
    let mut c = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>, expect: &[&'static str]| {
        let n = bytes.len();
        let run = move || {
            wring::codec::decode(crate::harness::ctx(), &bytes)
                .map(|_| ())
                .map_err(typed)
        };
        c.push(if expect.is_empty() {
            Case::control("wrg", name, n, run)
        } else {
            Case::new("wrg", name, n, expect, run)
        });
    };
    // Header layout: magic 0..4, version 4, kind 5, channels 6, wavelet 7, mode 8, levels 9, tune 10,
    // width 11..15, height 15..19, sample rate 19..23, step 23..27, then the packet trees' split flags, the
    // band headers and the payload.
    let put =
        |at: usize, v: u32| move |b: &mut Vec<u8>| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    add("a valid 8 x 8 image (control)", image.clone(), &[]);
    add(
        "a valid 64-sample audio stream (control)",
        audio.clone(),
        &[],
    );
    add("an empty stream", vec![], &["Corrupt"]);
    add(
        "a bad magic",
        {
            let mut b = image.clone();
            b[0] ^= 1;
            b
        },
        &["Corrupt", "magic"],
    );
    add(
        "a flipped payload bit",
        {
            let mut b = image.clone();
            let n = b.len();
            b[n - 6] ^= 4;
            b
        },
        &["Corrupt", "checksum"],
    );
    add(
        "the stream cut short",
        image[..image.len() - 3].to_vec(),
        &["Corrupt"],
    );
    add(
        "format version 99",
        resealed(&image, |b| b[4] = 99),
        &["Unsupported", "version"],
    );
    add(
        "format version 1 (the first codec's streams)",
        resealed(&image, |b| b[4] = 1),
        &["Unsupported", "version 1"],
    );
    add(
        "tuning 9",
        resealed(&image, |b| b[10] = 9),
        &["Corrupt", "tuning"],
    );
    add(
        "an image tuned for hearing",
        resealed(&image, |b| b[10] = 2),
        &["Corrupt", "does not apply"],
    );
    add(
        "a packet tree cut off by the end of the stream",
        resealed(&image, |b| {
            b[9] = 12;
            b.truncate(27);
        }),
        &["Corrupt"],
    );
    add(
        "a band header's reconstruction offset above half a step",
        resealed(&image, |b| {
            // The 8 x 8 image's one-level tree is one flag byte (split), then the lowpass band's header:
            // a bound varint and two offsets.
            b[29] = 200;
        }),
        &["Corrupt", "offset"],
    );
    add(
        "a band bound above the format's largest magnitude",
        resealed(&image, |b| {
            b.splice(28..29, [0xff, 0xff, 0xff, 0x7f]);
        }),
        &["Corrupt", "bound"],
    );
    add(
        "signal kind 7",
        resealed(&image, |b| b[5] = 7),
        &["Corrupt", "kind"],
    );
    add(
        "an image of 2 channels",
        resealed(&image, |b| b[6] = 2),
        &["Corrupt", "channels"],
    );
    add(
        "an image of 0 channels",
        resealed(&image, |b| b[6] = 0),
        &["Corrupt", "channels"],
    );
    add(
        "audio of 255 channels",
        resealed(&audio, |b| b[6] = 255),
        &["Corrupt", "channels"],
    );
    add(
        "wavelet 200",
        resealed(&image, |b| b[7] = 200),
        &["Corrupt", "wavelet"],
    );
    add(
        "boundary mode 200",
        resealed(&image, |b| b[8] = 200),
        &["Corrupt", "mode"],
    );
    add("13 levels", resealed(&image, |b| b[9] = 13), &["Corrupt"]);
    add(
        "a 1 x 1 image declaring 12 levels (subbands outgrow the samples)",
        resealed(&image, |b| {
            b[9] = 12;
            put(11, 1)(b);
            put(15, 1)(b);
        }),
        &["Corrupt", "levels"],
    );
    add(
        "width 0",
        resealed(&image, put(11, 0)),
        &["Corrupt", "shape"],
    );
    add(
        "a 2^32 - 1 square image",
        resealed(&image, |b| {
            put(11, u32::MAX)(b);
            put(15, u32::MAX)(b);
        }),
        &["Corrupt", "limit"],
    );
    add(
        "three channels of 2^32 - 1 squared (overflows u64; found by fuzzing)",
        resealed(&image, |b| {
            b[6] = 3;
            put(11, u32::MAX)(b);
            put(15, u32::MAX)(b);
        }),
        &["Corrupt", "limit"],
    );
    add(
        "a width the payload does not hold",
        resealed(&image, put(11, 4096)),
        &["Corrupt"],
    );
    add(
        "a 2048 x 2048 image with coded subbands in a 50-byte stream",
        resealed(&image, |b| {
            put(11, 2048)(b);
            put(15, 2048)(b);
        }),
        &["Corrupt", "cannot fit"],
    );
    add(
        "an 8192 x 8192 image (above the decoder's sample limit)",
        resealed(&image, |b| {
            put(11, 8192)(b);
            put(15, 8192)(b);
        }),
        &["Request", "limit"],
    );
    add(
        "audio at 0 Hz",
        resealed(&audio, put(19, 0)),
        &["Corrupt", "sample rate"],
    );
    add(
        "audio at 2^32 - 1 Hz",
        resealed(&audio, put(19, u32::MAX)),
        &["Corrupt", "sample rate"],
    );
    add(
        "a NaN step",
        resealed(&image, put(23, f32::NAN.to_bits())),
        &["Corrupt", "step"],
    );
    add(
        "a negative step",
        resealed(&image, put(23, (-1f32).to_bits())),
        &["Corrupt", "step"],
    );
    add(
        "a step of 3e38 (coefficients overflow to infinity; found by fuzzing)",
        resealed(&image, put(23, 3e38f32.to_bits())),
        &["Corrupt", "step"],
    );
    add(
        "a zero step",
        resealed(&image, put(23, 0)),
        &["Corrupt", "step"],
    );
    add(
        "audio of height 2",
        resealed(&audio, put(15, 2)),
        &["Corrupt", "shape"],
    );
    add(
        "a payload with a word appended",
        resealed(&image, |b| b.extend_from_slice(&[0, 0, 0, 0])),
        &["Corrupt"],
    );
    add(
        "a payload word changed (other values decode; the check value tells)",
        resealed(&image, |b| {
            // The last word's low bits can lie past what the range decoder needs; the word before it
            // carries symbols.
            let n = b.len();
            b[n - 5] ^= 0x40;
        }),
        &["Corrupt"],
    );
    c
}

/// A WAV with a header as given and a few bytes of data.
fn wav(channels: u16, rate: u32, bits: u16, data_len: u32) -> Vec<u8> {
    let block = channels * bits / 8;
    let mut fmt = Vec::new();
    for v in [1u16, channels] {
        fmt.extend_from_slice(&v.to_le_bytes());
    }
    fmt.extend_from_slice(&rate.to_le_bytes());
    fmt.extend_from_slice(&(rate.wrapping_mul(u32::from(block))).to_le_bytes());
    fmt.extend_from_slice(&block.to_le_bytes());
    fmt.extend_from_slice(&bits.to_le_bytes());
    let mut body = b"WAVEfmt ".to_vec();
    body.extend_from_slice(&(fmt.len() as u32).to_le_bytes());
    body.extend_from_slice(&fmt);
    body.extend_from_slice(b"data");
    body.extend_from_slice(&data_len.to_le_bytes());
    body.extend_from_slice(&[0, 1].repeat(8));
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// A PNG whose header declares `w` x `h` pixels of this colour type and depth, with almost no data.
fn png(w: u32, h: u32, colour: u8, depth: u8) -> Vec<u8> {
    let chunk = |out: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crate::codec::crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[depth, colour, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    // A stored (uncompressed) zlib block of ten zero bytes.
    chunk(
        &mut out,
        b"IDAT",
        &[
            0x78, 0x01, 0x01, 10, 0, 0xF5, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0A, 0, 0x01,
        ],
    );
    chunk(&mut out, b"IEND", &[]);
    out
}

/// Audio and image files: a WAV whose data chunk claims 4 GB (read lazily, so nothing is sized by the
/// claim), zero channels or bits, a rate of 0 (read, then refused by the encoder, which hound would panic
/// on), a PNG declaring 100,000 x 100,000 pixels (the image crate's allocation limit).
fn media_cases() -> Vec<Case> {
    let mut c = Vec::new();
    for (name, bytes, expect) in [
        (
            "huge-data.wav",
            wav(1, 16_000, 16, 0xFFFF_FF00),
            &["Io", "enough bytes"][..],
        ),
        (
            "no-channels.wav",
            wav(0, 16_000, 16, 16),
            &["zero channels"],
        ),
        ("zero-bits.wav", wav(1, 16_000, 0, 16), &["bits per sample"]),
        ("float-bits.wav", wav(1, 16_000, 7, 16), &["bits"]),
        ("not-riff.wav", b"RIFX\0\0\0\0WAVE".to_vec(), &["Io"]),
        ("empty.wav", vec![], &["Io"]),
    ] {
        let n = bytes.len();
        let path = file(name, &bytes);
        c.push(Case::new("wav", name, n, expect, move || {
            wring::codec::io::read_wav(&path).map(|_| ()).map_err(typed)
        }));
    }
    let zero_rate = file("zero-rate.wav", &wav(1, 0, 16, 16));
    c.push(Case::new(
        "wav",
        "zero-rate.wav encoded",
        60,
        &["Request", "sample rate"],
        move || {
            let a = wring::codec::io::read_wav(&zero_rate).map_err(typed)?;
            wring::codec::encode_audio(crate::harness::ctx(), &a, &Options::default())
                .map(|_| ())
                .map_err(typed)
        },
    ));
    for (name, bytes, expect) in [
        (
            "huge.png",
            png(100_000, 100_000, 2, 8),
            &["Memory limit"][..],
        ),
        ("zero-width.png", png(0, 16, 2, 8), &["Io"]),
        ("bad-depth.png", png(4, 4, 2, 3), &["Io"]),
        ("short-data.png", png(64, 64, 2, 8), &["Io"]),
        ("truncated.png", png(4, 4, 2, 8)[..30].to_vec(), &["Io"]),
    ] {
        let n = bytes.len();
        let path = file(name, &bytes);
        c.push(Case::new("png", name, n, expect, move || {
            wring::codec::io::read_image(&path)
                .map(|_| ())
                .map_err(typed)
        }));
    }
    c
}

/// Chat templates from model files: bounded by fuel and an output cap. A render may build up to the
/// output cap plus minijinja's own intermediate strings, so these cases' allocation bound is 4x the cap.
fn template_cases() -> Vec<Case> {
    let msgs = || [ChatMessage::new("user", "Hi")];
    let mut c = vec![Case::control(
        "chat template",
        "ChatML (control)",
        200,
        move || {
            render(
            "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}",
            &msgs(),
            true,
            "",
            "",
        )
        .map(|_| ())
        .map_err(typed)
        },
    )];
    for (what, template, expect) in [
        (
            "nested range(100000) loops",
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            &["Request", "fuel"][..],
        ),
        (
            "a string times 13 billion",
            "{{ 'x' * 13000000000 }}",
            &["Request", "too large"],
        ),
        (
            "output past 16 MiB",
            "{% for i in range(1000) %}{{ 'x' * 100000 }}{% endfor %}",
            &["Request", "16 MiB"],
        ),
        (
            "recursion through a macro",
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
            &["Request"],
        ),
        (
            "unclosed block",
            "{% for m in messages %}",
            &["Request", "chat template"],
        ),
        (
            "raise_exception",
            "{{ raise_exception('no system role') }}",
            &["Request", "no system role"],
        ),
        ("an unknown filter", "{{ messages | shell }}", &["Request"]),
        (
            "an include of a file",
            "{% include '/etc/passwd' %}",
            &["Request"],
        ),
    ] {
        c.push(
            Case::new("chat template", what, template.len(), expect, move || {
                render(template, &msgs(), true, "", "")
                    .map(|_| ())
                    .map_err(typed)
            })
            .with_cap(4 * MAX_OUTPUT),
        );
    }
    c
}

/// VQ shapes checked against each other.
fn vq_cases() -> Vec<Case> {
    let q = |d: usize, groups: usize| {
        let dg = d / groups;
        let books = (0..groups)
            .map(|g| (0..4 * dg).map(|i| (i + g) as f32).collect())
            .collect();
        Quantizer::from_books(crate::harness::ctx(), d, groups, 1, books, DType::F32)
    };
    let mut c = vec![Case::control(
        "vq",
        "4-dim data with a 4-dim codebook (control)",
        64,
        move || {
            q(4, 1)
                .and_then(|q| q.encode(crate::harness::ctx(), &[0.0; 16]))
                .map(|_| ())
                .map_err(typed)
        },
    )];
    let mut add = |what: &str,
                   expect: &[&'static str],
                   run: Box<dyn Fn() -> Result<(), wring::vq::VqError>>| {
        c.push(Case::new("vq", what, 64, expect, move || {
            run().map_err(typed)
        }));
    };
    add(
        "8-dim data with a 4-dim codebook",
        &["Request"],
        Box::new(move || q(4, 1)?.check_vectors(8)),
    );
    add(
        "data not a whole number of vectors",
        &["Request"],
        Box::new(move || {
            q(4, 1)?
                .encode(crate::harness::ctx(), &[0.0; 10])
                .map(|_| ())
        }),
    );
    add(
        "codes of the wrong width for a product quantizer",
        &["Request"],
        Box::new(move || q(8, 2)?.check_codes(3)),
    );
    add(
        "codes past the codebook",
        &["Request"],
        Box::new(move || {
            q(4, 1)?
                .decode(crate::harness::ctx(), &[4, 0, 99])
                .map(|_| ())
        }),
    );
    add(
        "groups that do not divide the width",
        &["Request"],
        Box::new(move || q(6, 4).map(|_| ())),
    );
    add(
        "zero groups",
        &["Request"],
        Box::new(move || {
            Quantizer::from_books(crate::harness::ctx(), 4, 0, 1, vec![], DType::F32).map(|_| ())
        }),
    );
    add(
        "codebooks of different sizes",
        &["Request"],
        Box::new(move || {
            Quantizer::from_books(
                crate::harness::ctx(),
                4,
                2,
                1,
                vec![vec![0.0; 8], vec![0.0; 6]],
                DType::F32,
            )
            .map(|_| ())
        }),
    );
    c
}

/// Values a command line passes to the library (clap parses `nan` and `inf` as numbers).
fn argument_cases() -> Vec<Case> {
    let mut c = Vec::new();
    for (what, args) in [
        ("--temperature nan", (f32::NAN, 1.0, 0.0, 1.0)),
        ("--temperature -1", (-1.0, 1.0, 0.0, 1.0)),
        ("--temperature inf", (f32::INFINITY, 1.0, 0.0, 1.0)),
        ("--top-p 0", (1.0, 0.0, 0.0, 1.0)),
        ("--top-p nan", (1.0, f32::NAN, 0.0, 1.0)),
        ("--top-p 2", (1.0, 2.0, 0.0, 1.0)),
        ("--min-p -0.5", (1.0, 1.0, -0.5, 1.0)),
        ("--min-p nan", (1.0, 1.0, f32::NAN, 1.0)),
        ("--repeat-penalty 0", (1.0, 1.0, 0.0, 0.0)),
        ("--repeat-penalty nan", (1.0, 1.0, 0.0, f32::NAN)),
    ] {
        c.push(Case::new(
            "cli arguments",
            what,
            16,
            &["Request", "sampling"],
            move || {
                let (t, p, m, r) = args;
                Sampler::new(t, 40, p, m, r, 0)
                    .map(|_| ())
                    .map_err(|e: LlmError| typed(e))
            },
        ));
    }
    let img = wring::codec::Image {
        width: 4,
        height: 4,
        channels: 1,
        pixels: vec![0; 16],
    };
    for (what, opts) in [
        (
            "--quality nan",
            Options {
                rate: Rate::Quality(f32::NAN),
                ..Options::default()
            },
        ),
        (
            "--quality 0",
            Options {
                rate: Rate::Quality(0.0),
                ..Options::default()
            },
        ),
        (
            "--quality 101",
            Options {
                rate: Rate::Quality(101.0),
                ..Options::default()
            },
        ),
        (
            "--bpp 0",
            Options {
                rate: Rate::Target(0.0),
                ..Options::default()
            },
        ),
        (
            "--bpp -1",
            Options {
                rate: Rate::Target(-1.0),
                ..Options::default()
            },
        ),
        (
            "--kbps inf",
            Options {
                rate: Rate::Target(f64::INFINITY),
                ..Options::default()
            },
        ),
        (
            "--levels 13",
            Options {
                levels: Some(13),
                ..Options::default()
            },
        ),
        (
            "--levels 18446744073709551615",
            Options {
                levels: Some(usize::MAX),
                ..Options::default()
            },
        ),
    ] {
        let img = img.clone();
        c.push(Case::new(
            "cli arguments",
            what,
            16,
            &["Request"],
            move || {
                wring::codec::encode_image(crate::harness::ctx(), &img, &opts)
                    .map(|_| ())
                    .map_err(typed)
            },
        ));
    }
    c
}

pub fn cases() -> Vec<Case> {
    let mut c = npy_cases();
    c.extend(safetensors_cases());
    c.extend(wrg_cases());
    c.extend(media_cases());
    c.extend(template_cases());
    c.extend(vq_cases());
    c.extend(argument_cases());
    c.extend(group_file_cases());
    c.extend(kv_factor_cases());
    c
}

/// A safetensors file from a raw JSON header and data (for headers the library's writer would refuse).
fn raw_safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut h = header.to_string();
    while !(8 + h.len()).is_multiple_of(8) {
        h.push(' ');
    }
    let mut b = (h.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(h.as_bytes());
    b.extend_from_slice(data);
    b
}

/// Files of compressed weights (`wring quantize`'s output), through what `--weights` runs: the file read
/// and checked, then its base compared with the model it is loaded over.
fn group_file_cases() -> Vec<Case> {
    use wring::io::group_file::{Base, GroupFile, to_bytes};
    use wring::quant::gptq::{Config, Hessian, Method, quantize, quantize_rows};
    let base_path = file("base.gguf", b"a stand-in for the base model's bytes");
    let base = Base::of(&base_path).expect("the base file");
    let (rows, cols) = (16, 32);
    let w: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 37) % 23) as f32 * 0.01 - 0.1)
        .collect();
    let mut h = Hessian::new(cols);
    h.add(
        &(0..8 * cols * cols)
            .map(|i| ((i * 101) % 97) as f32 * 0.01 - 0.5)
            .collect::<Vec<_>>(),
    );
    let mut spqr = quantize(&w, rows, cols, &h, &Config::spqr(3)).unwrap().0;
    // One outlier at least, so the outlier cases have an entry to corrupt.
    if spqr.outlier_count() == 0 {
        let mut rows_out: Vec<Vec<(u16, half::f16)>> = vec![Vec::new(); rows];
        rows_out[0].push((3, half::f16::from_f32(0.5)));
        let mut offsets = vec![(rows + 1) as u32];
        for r in &rows_out {
            offsets.push(offsets.last().unwrap() + r.len() as u32);
        }
        offsets.push(3 | (u32::from(half::f16::from_f32(0.5).to_bits()) << 16));
        spqr.outliers = offsets;
    }
    let rtn = quantize(&w, rows, cols, &h, &Config::plain(Method::Rtn, 4, 32))
        .unwrap()
        .0;
    let valid = |m: &wring::quant::group::GroupMatrix| GroupFile {
        base: base.clone(),
        method: "test".into(),
        matrices: [("blk.0.attn_q.weight".to_string(), m.clone())].into(),
    };
    let mut c = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>, expect: &[&'static str]| {
        let n = bytes.len();
        let path = file(&format!("group-{}.safetensors", c.len()), &bytes);
        let base_path = base_path.clone();
        let run = move || {
            wring::llm::compress::open(&path, &base_path)
                .map(|_| ())
                .map_err(typed)
        };
        c.push(if expect.is_empty() {
            Case::control("group file", name, n, run)
        } else {
            Case::new("group file", name, n, expect, run)
        });
    };
    add(
        "a valid SpQR file (control)",
        to_bytes(&valid(&spqr)).unwrap(),
        &[],
    );
    add(
        "a valid RTN file (control)",
        to_bytes(&valid(&rtn)).unwrap(),
        &[],
    );
    add(
        "not a safetensors file",
        b"GGUF\x03\0\0\0 is not safetensors".to_vec(),
        &["Request"],
    );
    add(
        "a header length of 2^63",
        (1u64 << 63).to_le_bytes().to_vec(),
        &["Request"],
    );
    add(
        "no metadata",
        raw_safetensors("{}", &[]),
        &["Request", "metadata"],
    );
    let meta = |extra: &str| {
        format!(
            r#"{{"__metadata__":{{"format":"wring-group","version":"1","base":"base.gguf","base_bytes":"{}","base_crc32":"{}","method":"x"{extra}}}}}"#,
            base.bytes, base.crc32
        )
    };
    add(
        "another format",
        raw_safetensors(&meta("").replace("wring-group", "gguf"), &[]),
        &["Request", "format"],
    );
    add(
        "version 6",
        raw_safetensors(
            &meta("").replace(r#""version":"1""#, r#""version":"6""#),
            &[],
        ),
        &["Request", "version"],
    );
    // MixLLM's per-row widths (version 2): a valid file, then its widths corrupted in place.
    let widths: Vec<u8> = (0..rows).map(|r| if r % 4 == 0 { 8 } else { 4 }).collect();
    let mixed_cfg = Config {
        group: 32,
        ..Config::mixllm(0.25)
    };
    let mixed = quantize_rows(&w, rows, cols, &h, &mixed_cfg, &widths)
        .unwrap()
        .0;
    let mixed_file = to_bytes(&valid(&mixed)).unwrap();
    add("a valid MixLLM file (control)", mixed_file.clone(), &[]);
    // The row widths' bytes: the header's data offsets for the one U8 tensor.
    let header_len = u64::from_le_bytes(mixed_file[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&mixed_file[8..8 + header_len]).unwrap();
    let start = header["blk.0.attn_q.weight.row_bits"]["data_offsets"][0]
        .as_u64()
        .unwrap() as usize
        + 8
        + header_len;
    let with_width = |row: usize, bits: u8| {
        let mut b = mixed_file.clone();
        b[start + row] = bits;
        b
    };
    add(
        "a row of 9-bit codes",
        with_width(1, 9),
        &["Request", "9-bit"],
    );
    add(
        "a row of 0-bit codes",
        with_width(2, 0),
        &["Request", "0-bit"],
    );
    add(
        "row widths that do not match the codes",
        with_width(1, 5),
        &["Request", "codes has shape"],
    );
    let text = |b: &[u8]| -> Vec<u8> {
        let h = String::from_utf8_lossy(&b[8..8 + header_len]).replace(r#""U8""#, r#""I8""#);
        [&b[..8], h.as_bytes(), &b[8 + header_len..]].concat()
    };
    add(
        "row widths stored as I8",
        text(&mixed_file),
        &["Request", "must be U8"],
    );
    add(
        "row widths in a version-1 file",
        {
            let mut b = mixed_file.clone();
            let at = b
                .windows(13)
                .position(|w| w == br#""version":"2""#)
                .unwrap();
            b[at + 11] = b'1';
            b
        },
        &["Request", "version-1"],
    );
    // GQSA's pruned groups (version 3): a valid file, then its mask corrupted in place or its header edited.
    let gqsa_cfg = Config {
        group: 8,
        ..Config::gqsa(0.5)
    };
    let gqsa = quantize(&w, rows, cols, &h, &gqsa_cfg).unwrap().0;
    let gqsa_file = to_bytes(&valid(&gqsa)).unwrap();
    add("a valid GQSA file (control)", gqsa_file.clone(), &[]);
    let gqsa_header_len = u64::from_le_bytes(gqsa_file[..8].try_into().unwrap()) as usize;
    let gqsa_header: serde_json::Value =
        serde_json::from_slice(&gqsa_file[8..8 + gqsa_header_len]).unwrap();
    let mask_at = gqsa_header["blk.0.attn_q.weight.mask"]["data_offsets"][0]
        .as_u64()
        .unwrap() as usize
        + 8
        + gqsa_header_len;
    // Row 0's mask word (4 groups: bits 0 to 3), with `f` applied.
    let with_mask = |f: &dyn Fn(u32) -> u32| {
        let mut b = gqsa_file.clone();
        let word = u32::from_le_bytes(b[mask_at..mask_at + 4].try_into().unwrap());
        b[mask_at..mask_at + 4].copy_from_slice(&f(word).to_le_bytes());
        b
    };
    // The file with its header edited and re-serialized (the data is unchanged).
    let edit_header = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut h = gqsa_header.clone();
        f(&mut h);
        raw_safetensors(&h.to_string(), &gqsa_file[8 + gqsa_header_len..])
    };
    add(
        "a mask bit past the last group",
        with_mask(&|w| w | 1 << 31),
        &["Request", "past group"],
    );
    add(
        "a mask that keeps a group the codes do not hold",
        with_mask(&|w| w | 0xF),
        &["Request", "codes has shape"],
    );
    add(
        "a mask that keeps fewer groups than the codes hold",
        with_mask(&|w| w & (w - 1)),
        &["Request", "codes has shape"],
    );
    add(
        "a mask that keeps no group of any row",
        {
            let mut b = gqsa_file.clone();
            b[mask_at..mask_at + 4 * rows].fill(0);
            b
        },
        &["Request", "keeps no group"],
    );
    add(
        "a mask in a version-2 file",
        edit_header(&|h| h["__metadata__"]["version"] = "2".into()),
        &["Request", "version-2"],
    );
    add(
        "a mask with bilevel statistics",
        edit_header(&|h| {
            let l = h["__metadata__"]["blk.0.attn_q.weight"]
                .as_str()
                .unwrap()
                .replace("stats=affine", "stats=bilevel:3:16");
            h["__metadata__"]["blk.0.attn_q.weight"] = l.into();
        }),
        &["Request", "bilevel"],
    );
    add(
        "a mask stored as I32",
        edit_header(&|h| h["blk.0.attn_q.weight.mask"]["dtype"] = "I32".into()),
        &["Request", "must be U32"],
    );
    add(
        "a mask of the wrong shape",
        edit_header(&|h| h["blk.0.attn_q.weight.mask"]["shape"] = serde_json::json!([1, 16])),
        &["Request", "mask has shape"],
    );
    // Incoherence processing (version 4): the signs of the input transform, then the same file with its
    // header edited, its signs corrupted, or signs given to a width that has no transform.
    let signed_file = |m: &wring::quant::group::GroupMatrix, signs: Vec<u32>, version: &str| {
        // Serialized without signs, then the signs appended as a tensor by hand, so that signs
        // `GroupMatrix::check` would refuse can still be written.
        let bytes = to_bytes(&valid(m)).unwrap();
        let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
        let mut data = bytes[8 + len..].to_vec();
        let start = data.len();
        data.extend(signs.iter().flat_map(|w| w.to_le_bytes()));
        header["blk.0.attn_q.weight.signs"] = serde_json::json!({
            "dtype": "U32", "shape": [signs.len()], "data_offsets": [start, data.len()]
        });
        header["__metadata__"]["version"] = version.into();
        (header, data)
    };
    let write = |(h, d): (serde_json::Value, Vec<u8>)| raw_safetensors(&h.to_string(), &d);
    let signs32 = wring::quant::rht::signs_from_seed(cols, 7);
    add(
        "a valid incoherence-processed file (control)",
        write(signed_file(&rtn, signs32.clone(), "4")),
        &[],
    );
    add(
        "signs in a version-3 file",
        write(signed_file(&rtn, signs32.clone(), "3")),
        &["Request", "version-3"],
    );
    add(
        "signs of the wrong shape",
        write(signed_file(&rtn, vec![signs32[0], 0], "4")),
        &["Request", "signs has shape"],
    );
    add(
        "signs stored as I32",
        write({
            let (mut h, d) = signed_file(&rtn, signs32.clone(), "4");
            h["blk.0.attn_q.weight.signs"]["dtype"] = "I32".into();
            (h, d)
        }),
        &["Request", "must be U32"],
    );
    // 20 columns (4 x 5): one word of signs with 12 bits past the last column.
    let w20: Vec<f32> = w.iter().take(rows * 20).copied().collect();
    let mut h20 = Hessian::new(20);
    h20.add(
        &(0..8 * 20 * 20)
            .map(|i| ((i * 13) % 29) as f32 * 0.01)
            .collect::<Vec<_>>(),
    );
    let rtn20 = quantize(&w20, rows, 20, &h20, &Config::plain(Method::Rtn, 4, 4))
        .unwrap()
        .0;
    let signs20 = wring::quant::rht::signs_from_seed(20, 3);
    add(
        "a valid incoherence-processed file of 20 columns (control)",
        write(signed_file(&rtn20, signs20.clone(), "4")),
        &[],
    );
    add(
        "a sign bit past the last column",
        write(signed_file(&rtn20, vec![signs20[0] | 1 << 31], "4")),
        &["Request", "past the last column"],
    );
    // 268 columns are 4 x 67: the odd factor exceeds the transform's 64.
    let w268: Vec<f32> = (0..rows * 268)
        .map(|i| ((i * 37) % 23) as f32 * 0.01 - 0.1)
        .collect();
    let rtn268 = quantize(
        &w268,
        rows,
        268,
        &Hessian::identity(268),
        &Config::plain(Method::Rtn, 4, 4),
    )
    .unwrap()
    .0;
    add(
        "signs for a width with no transform",
        write(signed_file(&rtn268, vec![0; 9], "4")),
        &["Request", "no incoherence transform"],
    );
    // Trellis-coded weights (version 5): a valid file, then its header edited or its scales corrupted.
    let trellis = quantize(&w, rows, cols, &h, &Config::trellis(3, 10, 1))
        .unwrap()
        .0;
    let trellis_file = to_bytes(&valid(&trellis)).unwrap();
    add("a valid trellis file (control)", trellis_file.clone(), &[]);
    let t_len = u64::from_le_bytes(trellis_file[..8].try_into().unwrap()) as usize;
    let t_header: serde_json::Value = serde_json::from_slice(&trellis_file[8..8 + t_len]).unwrap();
    let edit_trellis = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut h = t_header.clone();
        f(&mut h);
        raw_safetensors(&h.to_string(), &trellis_file[8 + t_len..])
    };
    let relayout = |from: &'static str, to: &'static str| {
        edit_trellis(&move |h| {
            let l = h["__metadata__"]["blk.0.attn_q.weight"]
                .as_str()
                .unwrap()
                .replace(from, to);
            h["__metadata__"]["blk.0.attn_q.weight"] = l.into();
        })
    };
    add(
        "trellis statistics in a version-4 file",
        edit_trellis(&|h| h["__metadata__"]["version"] = "4".into()),
        &["Request", "version-4"],
    );
    add(
        "a trellis state of 20 bits",
        relayout("trellis:10", "trellis:20"),
        &["Request", "trellis state"],
    );
    add(
        "a trellis state that is not a number",
        relayout("trellis:10", "trellis:x"),
        &["Request", "trellis:STATE_BITS"],
    );
    add(
        "trellis tiles of 32 columns",
        relayout("group=16", "group=32"),
        &["Request", "tiles"],
    );
    add(
        "5-bit trellis codes",
        relayout("bits=3", "bits=5"),
        &["Request", "2 to 4"],
    );
    add(
        "trellis codes of the wrong shape",
        edit_trellis(&|h| h["blk.0.attn_q.weight.codes"]["shape"] = serde_json::json!([8, 6])),
        &["Request", "codes has shape"],
    );
    let scales_at = t_header["blk.0.attn_q.weight.stats"]["data_offsets"][0]
        .as_u64()
        .unwrap() as usize
        + 8
        + t_len;
    add(
        "a non-finite trellis scale",
        {
            let mut b = trellis_file.clone();
            b[scales_at..scales_at + 4].copy_from_slice(&f32::NAN.to_bits().to_le_bytes());
            b
        },
        &["Request", "non-finite trellis scale"],
    );
    add(
        "a trellis scale of 1e30 (its weights would overflow f32 in a product)",
        {
            let mut b = trellis_file.clone();
            b[scales_at + 8..scales_at + 12].copy_from_slice(&1e30f32.to_bits().to_le_bytes());
            b
        },
        &["Request", "above 2^64"],
    );
    add(
        "an infinite trellis scale",
        {
            let mut b = trellis_file.clone();
            b[scales_at + 4..scales_at + 8].copy_from_slice(&f32::INFINITY.to_bits().to_le_bytes());
            b
        },
        &["Request", "non-finite trellis scale"],
    );
    add(
        "base_bytes not a number",
        raw_safetensors(
            &meta("").replace(
                &format!(r#""base_bytes":"{}""#, base.bytes),
                r#""base_bytes":"-1""#,
            ),
            &[],
        ),
        &["Request", "base_bytes"],
    );
    add(
        "made from another model",
        raw_safetensors(
            &meta("").replace(
                &format!(r#""base_crc32":"{}""#, base.crc32),
                r#""base_crc32":"1""#,
            ),
            &[],
        ),
        &["Request", "made from"],
    );
    add(
        "a layout of 9-bit codes",
        raw_safetensors(
            &meta(r#","m":"rows=16 cols=32 bits=9 group=16 stats=affine""#),
            &[],
        ),
        &["Request", "bits"],
    );
    add(
        "a layout of 2^32 - 1 rows with no data",
        raw_safetensors(
            &meta(r#","m":"rows=4294967295 cols=65536 bits=2 group=16 stats=affine""#),
            &[],
        ),
        &["Request", "missing"],
    );
    add(
        "a layout with a field twice",
        raw_safetensors(
            &meta(r#","m":"rows=16 rows=16 bits=2 group=16 stats=affine""#),
            &[],
        ),
        &["Request", "twice"],
    );
    let many: String = (0..20_000).map(|i| format!(r#","m{i}":"x""#)).collect();
    add(
        "20,000 matrices declared",
        raw_safetensors(&meta(&many), &[]),
        &["Request", "at most"],
    );
    // Valid files with one buffer corrupted: each refused by the contents check.
    let corrupt = |f: &dyn Fn(&mut wring::quant::group::GroupMatrix)| {
        let mut m = spqr.clone();
        f(&mut m);
        // to_bytes checks too, so the file is assembled from a valid one with the buffer swapped in.
        let good = to_bytes(&valid(&spqr)).unwrap();
        let mut out = good.clone();
        let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
        let old: Vec<u8> = spqr.outliers.iter().flat_map(|w| w.to_le_bytes()).collect();
        let new: Vec<u8> = m.outliers.iter().flat_map(|w| w.to_le_bytes()).collect();
        if let Some(at) = find(&out, &old) {
            out[at..at + new.len()].copy_from_slice(&new);
        }
        for (old, new) in [(&spqr.perm, &m.perm), (&spqr.second, &m.second)] {
            let old: Vec<u8> = old.iter().flat_map(|w| w.to_le_bytes()).collect();
            let new: Vec<u8> = new.iter().flat_map(|w| w.to_le_bytes()).collect();
            if let Some(at) = find(&out, &old) {
                out[at..at + new.len()].copy_from_slice(&new);
            }
        }
        out
    };
    add(
        "outlier offsets that fall",
        corrupt(&|m| m.outliers[1] = m.outliers[2] + 1),
        &["Request", "offsets"],
    );
    add(
        "an outlier past the last column",
        corrupt(&|m| {
            let last = m.outliers.len() - 1;
            m.outliers[last] = (m.outliers[last] & 0xFFFF_0000) | 40;
        }),
        &["Request", "column"],
    );
    add(
        "a NaN outlier",
        corrupt(&|m| {
            let last = m.outliers.len() - 1;
            m.outliers[last] = (m.outliers[last] & 0xFFFF) | (0x7E00 << 16);
        }),
        &["Request", "non-finite"],
    );
    add(
        "a permutation with a repeated column",
        corrupt(&|m| m.perm[1] = m.perm[0]),
        &["Request", "permutation"],
    );
    add(
        "an infinite second-order scale (decodes to infinite weights; found by fuzzing)",
        corrupt(&|m| m.second[0] = (m.second[0] & 0xFFFF_0000) | 0x7C00),
        &["Request", "non-finite statistic"],
    );
    let good = to_bytes(&valid(&spqr)).unwrap();
    add(
        "the file cut short",
        good[..good.len() - 5].to_vec(),
        &["Request"],
    );
    c
}

/// One raw tensor: name, safetensors dtype, shape, little-endian data.
type RawTensor = (String, &'static str, Vec<usize>, Vec<u8>);

/// A safetensors file from metadata and (name, dtype, shape, data) tensors, laid out by hand so that a
/// case can hold what the library's writer would refuse (a shape that does not match the data's use).
fn safetensors_with(
    meta: &[(&str, String)],
    tensors: &[(String, &str, Vec<usize>, Vec<u8>)],
) -> Vec<u8> {
    let mut entries = vec![format!(
        r#""__metadata__":{{{}}}"#,
        meta.iter()
            .map(|(k, v)| format!(r#""{k}":"{v}""#))
            .collect::<Vec<_>>()
            .join(",")
    )];
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let shape: Vec<String> = shape.iter().map(usize::to_string).collect();
        entries.push(format!(
            r#""{name}":{{"dtype":"{dtype}","shape":[{}],"data_offsets":[{},{}]}}"#,
            shape.join(","),
            data.len(),
            data.len() + bytes.len()
        ));
        data.extend_from_slice(bytes);
    }
    raw_safetensors(&format!("{{{}}}", entries.join(",")), &data)
}

/// Files of low-rank KV factors (`wring kv-calibrate`'s output), through what `--kv-factors` runs: the
/// file read and checked, then its base compared with the model it is loaded with. (Factors whose shapes
/// do not match the model are refused by `Llama::set_kv_lowrank`, tests/kv.rs.)
fn kv_factor_cases() -> Vec<Case> {
    let base_path = file("kv-base.gguf", b"a stand-in for the base model's bytes");
    let base = wring::io::group_file::Base::of(&base_path).expect("the base file");
    let (rank, hidden, kv, layers) = (2usize, 8usize, 4usize, 2usize);
    let meta = |rank: &str, layers: &str| {
        vec![
            ("format", "wring-kv-lowrank".to_string()),
            ("version", "1".to_string()),
            ("rank", rank.to_string()),
            ("layers", layers.to_string()),
            ("method", "lsq".to_string()),
            ("base", "kv-base.gguf".to_string()),
            ("base_bytes", base.bytes.to_string()),
            ("base_crc32", base.crc32.to_string()),
        ]
    };
    let f32s = |n: usize, v: f32| v.to_le_bytes().repeat(n);
    // Every tensor of `layers` layers; `edit` may change one (name, dtype, shape, data).
    let tensors = |layers: usize, edit: &dyn Fn(&mut RawTensor)| {
        let mut t = Vec::new();
        for l in 0..layers {
            for part in ["attn_k", "attn_v"] {
                t.push((
                    format!("blk.{l}.{part}.a"),
                    "F32",
                    vec![rank, hidden],
                    f32s(rank * hidden, 0.5),
                ));
                t.push((
                    format!("blk.{l}.{part}.b"),
                    "F32",
                    vec![kv, rank],
                    f32s(kv * rank, 0.25),
                ));
            }
        }
        for x in &mut t {
            edit(x);
        }
        t
    };
    let none = |_: &mut RawTensor| {};
    let valid = || safetensors_with(&meta("2", "2"), &tensors(layers, &none));
    let mut c = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>, expect: &[&'static str]| {
        let n = bytes.len();
        let path = file(&format!("kv-factors-{}.safetensors", c.len()), &bytes);
        let base_path = base_path.clone();
        let run = move || {
            wring::llm::kv::open_factors(&path, &base_path)
                .map(|_| ())
                .map_err(typed)
        };
        c.push(if expect.is_empty() {
            Case::control("kv factors", name, n, run)
        } else {
            Case::new("kv factors", name, n, expect, run)
        });
    };
    add("a valid file of 2 layers at rank 2 (control)", valid(), &[]);
    add(
        "not a safetensors file",
        b"GGUF\x03\0\0\0".to_vec(),
        &["Request"],
    );
    add(
        "no metadata",
        raw_safetensors("{}", &[]),
        &["Request", "metadata"],
    );
    let with = |k: &str, v: &str| {
        let m: Vec<(&str, String)> = meta("2", "2")
            .into_iter()
            .map(|(key, val)| (key, if key == k { v.to_string() } else { val }))
            .collect();
        safetensors_with(&m, &tensors(layers, &none))
    };
    add(
        "another format",
        with("format", "wring-group"),
        &["Request", "format"],
    );
    add("version 2", with("version", "2"), &["Request", "version"]);
    add("a rank of 0", with("rank", "0"), &["Request", "rank of 0"]);
    add(
        "a rank that is not a number",
        with("rank", "two"),
        &["Request", "not a number"],
    );
    add(
        "a rank of 2^70",
        with("rank", "1180591620717411303424"),
        &["Request", "not a number"],
    );
    add("0 layers", with("layers", "0"), &["Request", "layers"]);
    add(
        "a million layers",
        with("layers", "1000000"),
        &["Request", "layers"],
    );
    add(
        "3 layers claimed, 2 stored",
        with("layers", "3"),
        &["Request", "tensors"],
    );
    add(
        "another base model",
        with("base_crc32", &(base.crc32 ^ 1).to_string()),
        &["Request", "made from"],
    );
    add(
        "a rank above the key/value dimension",
        safetensors_with(
            &meta("5", "1"),
            &[
                (
                    "blk.0.attn_k.a".into(),
                    "F32",
                    vec![5, hidden],
                    f32s(5 * hidden, 0.5),
                ),
                (
                    "blk.0.attn_k.b".into(),
                    "F32",
                    vec![kv, 5],
                    f32s(kv * 5, 0.5),
                ),
                (
                    "blk.0.attn_v.a".into(),
                    "F32",
                    vec![5, hidden],
                    f32s(5 * hidden, 0.5),
                ),
                (
                    "blk.0.attn_v.b".into(),
                    "F32",
                    vec![kv, 5],
                    f32s(kv * 5, 0.5),
                ),
            ],
        ),
        &["Request", "above the key/value dimension"],
    );
    let edited = |target: &'static str, f: &'static dyn Fn(&mut RawTensor)| {
        safetensors_with(
            &meta("2", "2"),
            &tensors(layers, &|t: &mut (
                String,
                &'static str,
                Vec<usize>,
                Vec<u8>,
            )| {
                if t.0 == target {
                    f(t)
                }
            }),
        )
    };
    add(
        "an a factor of the wrong rank",
        edited("blk.1.attn_v.a", &|t| {
            t.2 = vec![4, 4];
        }),
        &["Request", "blk.1.attn_v.a", "shape"],
    );
    add(
        "a b factor of another kv dimension than the others",
        edited("blk.1.attn_k.b", &|t| {
            t.2 = vec![2, 2];
            t.3.truncate(16);
        }),
        &["Request", "blk.1.attn_k.b", "same kv"],
    );
    add(
        "a 3-D factor",
        edited("blk.0.attn_k.a", &|t| {
            t.2 = vec![2, 2, 4];
        }),
        &["Request", "2-D"],
    );
    add(
        "an F16 factor",
        edited("blk.0.attn_v.b", &|t| {
            t.1 = "F16";
            t.2 = vec![4, 4];
        }),
        &["Request", "F32"],
    );
    add(
        "a NaN in a factor",
        edited("blk.0.attn_k.b", &|t| {
            t.3[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
        }),
        &["Request", "NaN"],
    );
    add(
        "a tensor renamed (layer 2 of 2)",
        edited("blk.1.attn_v.b", &|t| {
            t.0 = "blk.2.attn_v.b".into();
        }),
        &["Request", "blk.1.attn_v.b"],
    );
    c
}

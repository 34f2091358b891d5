//! The 32-value formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0. Each function handles one block and mirrors
//! llama.cpp's `ggml-quants.c` statement for statement (float operations in the same order).

use crate::{f16_at, put_f16};

pub(crate) fn dequant_q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for j in 0..16 {
        let x0 = i32::from(b[2 + j] & 0x0F) - 8;
        let x1 = i32::from(b[2 + j] >> 4) - 8;
        y[j] = x0 as f32 * d;
        y[j + 16] = x1 as f32 * d;
    }
}

pub(crate) fn dequant_q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for j in 0..16 {
        y[j] = f32::from(b[4 + j] & 0x0F) * d + m;
        y[j + 16] = f32::from(b[4 + j] >> 4) * d + m;
    }
}

fn qh_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn dequant_q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = qh_at(b, 2);
    for j in 0..16 {
        let xh0 = (((qh >> j) << 4) & 0x10) as u8;
        let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
        let x0 = i32::from((b[6 + j] & 0x0F) | xh0) - 16;
        let x1 = i32::from((b[6 + j] >> 4) | xh1) - 16;
        y[j] = x0 as f32 * d;
        y[j + 16] = x1 as f32 * d;
    }
}

pub(crate) fn dequant_q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qh = qh_at(b, 4);
    for j in 0..16 {
        let xh0 = (((qh >> j) << 4) & 0x10) as u8;
        let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
        y[j] = f32::from((b[8 + j] & 0x0F) | xh0) * d + m;
        y[j + 16] = f32::from((b[8 + j] >> 4) | xh1) * d + m;
    }
}

pub(crate) fn dequant_q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for j in 0..32 {
        y[j] = f32::from(b[2 + j] as i8) * d;
    }
}

/// The value of largest magnitude (first one on ties), as the reference quantizers pick it.
fn signed_absmax(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

fn inverse(d: f32) -> f32 {
    if d != 0.0 { 1.0 / d } else { 0.0 }
}

/// C's `(int8_t)(v)` for the small non-negative values these quantizers produce, then `MIN(hi, ...)`.
fn trunc_min(v: f32, hi: u8) -> u8 {
    ((v as i32) as i8 as u8).min(hi)
}

pub(crate) fn quant_q4_0(x: &[f32], b: &mut [u8]) {
    let d = signed_absmax(x) / -8.0;
    let id = inverse(d);
    put_f16(b, 0, d);
    for j in 0..16 {
        let xi0 = trunc_min(x[j] * id + 8.5, 15);
        let xi1 = trunc_min(x[16 + j] * id + 8.5, 15);
        b[2 + j] = xi0 | (xi1 << 4);
    }
}

pub(crate) fn quant_q4_1(x: &[f32], b: &mut [u8]) {
    let (min, max) = min_max(x);
    let d = (max - min) / 15.0;
    let id = inverse(d);
    put_f16(b, 0, d);
    put_f16(b, 2, min);
    for j in 0..16 {
        let xi0 = trunc_min((x[j] - min) * id + 0.5, 15);
        let xi1 = trunc_min((x[16 + j] - min) * id + 0.5, 15);
        b[4 + j] = xi0 | (xi1 << 4);
    }
}

pub(crate) fn quant_q5_0(x: &[f32], b: &mut [u8]) {
    let d = signed_absmax(x) / -16.0;
    let id = inverse(d);
    put_f16(b, 0, d);
    let mut qh = 0u32;
    for j in 0..16 {
        let xi0 = trunc_min(x[j] * id + 16.5, 31);
        let xi1 = trunc_min(x[16 + j] * id + 16.5, 31);
        b[6 + j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
        qh |= u32::from((xi0 & 0x10) >> 4) << j;
        qh |= u32::from((xi1 & 0x10) >> 4) << (j + 16);
    }
    b[2..6].copy_from_slice(&qh.to_le_bytes());
}

pub(crate) fn quant_q5_1(x: &[f32], b: &mut [u8]) {
    let (min, max) = min_max(x);
    let d = (max - min) / 31.0;
    let id = inverse(d);
    put_f16(b, 0, d);
    put_f16(b, 2, min);
    let mut qh = 0u32;
    for j in 0..16 {
        // llama.cpp casts straight to uint8_t here, without MIN(31, ...); values never exceed 31.
        let xi0 = ((x[j] - min) * id + 0.5) as u8;
        let xi1 = ((x[16 + j] - min) * id + 0.5) as u8;
        b[8 + j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
        qh |= u32::from((xi0 & 0x10) >> 4) << j;
        qh |= u32::from((xi1 & 0x10) >> 4) << (j + 16);
    }
    b[4..8].copy_from_slice(&qh.to_le_bytes());
}

pub(crate) fn quant_q8_0(x: &[f32], b: &mut [u8]) {
    let mut amax = 0.0f32;
    for &v in x {
        amax = amax.max(v.abs());
    }
    let d = amax / 127.0;
    let id = inverse(d);
    put_f16(b, 0, d);
    for j in 0..32 {
        // roundf: half away from zero, which is what f32::round does.
        b[2 + j] = ((x[j] * id).round() as i8) as u8;
    }
}

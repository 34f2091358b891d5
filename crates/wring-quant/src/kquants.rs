//! The K-quants: Q4_K, Q5_K, Q6_K, in 256-value super-blocks. Each function mirrors llama.cpp's
//! `ggml-quants.c` (`dequantize_row_q*_K`, `quantize_row_q*_K_ref` and the scale searches they call)
//! statement for statement, so float operations happen in the same order.

use crate::{QK_K, f16_at, nearest_int, put_f16};

/// Below this a group is treated as all zeros (llama.cpp's GROUP_MAX_EPS).
const GROUP_MAX_EPS: f32 = 1e-15;

/// The 6-bit scale and min of sub-block `j` from the 12 packed bytes `q` (`get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// llama.cpp's `d1 = d * sc; m1 = min * m` for sub-block `j` of a Q4_K/Q5_K block.
fn sub_block_scale(d: f32, min: f32, j: usize, scales: &[u8]) -> (f32, f32) {
    let (sc, m) = scale_min_k4(j, scales);
    (d * f32::from(sc), min * f32::from(m))
}

// Q4_K: d f16 | dmin f16 | scales[12] | qs[128]
pub(crate) fn dequant_q4_k(b: &[u8], y: &mut [f32]) {
    let (d, min) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let mut q = &b[16..144];
    let mut out = 0;
    let mut is = 0;
    for _ in (0..QK_K).step_by(64) {
        let (d1, m1) = sub_block_scale(d, min, is, scales);
        let (d2, m2) = sub_block_scale(d, min, is + 1, scales);
        for l in 0..32 {
            y[out + l] = d1 * f32::from(q[l] & 0xF) - m1;
        }
        for l in 0..32 {
            y[out + 32 + l] = d2 * f32::from(q[l] >> 4) - m2;
        }
        out += 64;
        q = &q[32..];
        is += 2;
    }
}

// Q5_K: d f16 | dmin f16 | scales[12] | qh[32] | qs[128]
pub(crate) fn dequant_q5_k(b: &[u8], y: &mut [f32]) {
    let (d, min) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let qh = &b[16..48];
    let mut ql = &b[48..176];
    let (mut u1, mut u2) = (1u8, 2u8);
    let mut out = 0;
    let mut is = 0;
    for _ in (0..QK_K).step_by(64) {
        let (d1, m1) = sub_block_scale(d, min, is, scales);
        let (d2, m2) = sub_block_scale(d, min, is + 1, scales);
        for l in 0..32 {
            let hi = if qh[l] & u1 != 0 { 16 } else { 0 };
            y[out + l] = d1 * f32::from((ql[l] & 0xF) + hi) - m1;
        }
        for l in 0..32 {
            let hi = if qh[l] & u2 != 0 { 16 } else { 0 };
            y[out + 32 + l] = d2 * f32::from((ql[l] >> 4) + hi) - m2;
        }
        out += 64;
        ql = &ql[32..];
        is += 2;
        u1 <<= 2;
        u2 <<= 2;
    }
}

// Q6_K: ql[128] | qh[64] | scales[16] (i8) | d f16
pub(crate) fn dequant_q6_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 208);
    for half in 0..2 {
        let ql = &b[64 * half..];
        let qh = &b[128 + 32 * half..];
        let sc = &b[192 + 8 * half..];
        let out = &mut y[128 * half..];
        for l in 0..32 {
            let is = l / 16;
            let q1 = (((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8) - 32;
            let q2 = (((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8) - 32;
            let q3 = (((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8) - 32;
            let q4 = (((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8) - 32;
            // `d * sc[i] * q` in C: (d * sc) first, both promoted to float.
            out[l] = d * f32::from(sc[is] as i8) * f32::from(q1);
            out[l + 32] = d * f32::from(sc[is + 2] as i8) * f32::from(q2);
            out[l + 64] = d * f32::from(sc[is + 4] as i8) * f32::from(q3);
            out[l + 96] = d * f32::from(sc[is + 6] as i8) * f32::from(q4);
        }
    }
}

/// `make_qkx2_quants`: a scale and (negated) min for `x` with weights, searching `nstep + 1` candidate
/// scales around the min-max fit and keeping the one of least weighted error. Returns (scale, -min).
#[expect(
    clippy::too_many_arguments,
    reason = "mirrors llama.cpp's signature so the two read side by side"
)]
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out[..n].fill(0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min));
        l_out[i] = l.clamp(0, nmax) as u8;
        let diff = scale * f32::from(l_out[i]) + min - x[i];
        let diff = if use_mad { diff.abs() } else { diff * diff };
        best_error += weights[i] * diff;
    }
    if nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = l as u8;
            let w = weights[i];
            let lf = l as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * f32::from(laux[i]) + this_min - x[i];
                let diff = if use_mad { diff.abs() } else { diff * diff };
                cur_error += weights[i] * diff;
            }
            if cur_error < best_error {
                l_out[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// `make_qx_quants` with `rmse_type = 1` and no importance weights, as `quantize_row_q6_K_ref` calls it:
/// a symmetric scale for `x`, searched over 19 candidates. `l_out` receives values in 0..2*nmax.
fn make_qx_quants(nmax: i32, x: &[f32], l_out: &mut [i8]) -> f32 {
    let n = x.len();
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out[..n].fill(0);
        return 0.0;
    }
    let mut iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l_out[i] = (l + nmax) as i8;
        let w = x[i] * x[i];
        sumlx += w * x[i] * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for i in 0..n {
            let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
            let w = x[i] * x[i];
            sumlx += w * x[i] * l as f32;
            suml2 += w * l as f32 * l as f32;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for i in 0..n {
                let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
                l_out[i] = (nmax + l) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Packs 8 six-bit scales and mins into the 12 bytes of a Q4_K/Q5_K block.
fn pack_scales(scales_out: &mut [u8], ls: &[u8; 8], lm: &[u8; 8]) {
    scales_out[..12].fill(0);
    for j in 0..8 {
        if j < 4 {
            scales_out[j] = ls[j];
            scales_out[j + 4] = lm[j];
        } else {
            scales_out[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4);
            scales_out[j - 4] |= (ls[j] >> 4) << 6;
            scales_out[j] |= (lm[j] >> 4) << 6;
        }
    }
}

/// The part of `quantize_row_q4_K_ref` and `quantize_row_q5_K_ref` they share: per-sub-block scale search,
/// 6-bit scales and mins, then requantization of every value against the stored scales. Writes d, dmin and
/// the scales into `b[0..16]` and returns the levels.
fn quant_k_scales(
    x: &[f32],
    b: &mut [u8],
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> [u8; QK_K] {
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 32];
    let mut weights = [0f32; 32];
    let mut mins = [0f32; 8];
    let mut scales = [0f32; 8];
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (s, m) = make_qkx2_quants(
            nmax,
            xs,
            &weights,
            &mut l[32 * j..32 * j + 32],
            &mut laux,
            rmin,
            rdelta,
            nstep,
            false,
        );
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    for j in 0..8 {
        // C stores nearest_int's int into a uint8_t before MIN(63, ...): keep the wrap.
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    pack_scales(&mut b[4..16], &ls, &lm);
    put_f16(b, 0, max_scale / 63.0);
    put_f16(b, 2, max_min / 63.0);
    let (d_all, dmin_all) = (f16_at(b, 0), f16_at(b, 2));
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &b[4..16]);
        let d = d_all * f32::from(sc);
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * f32::from(m);
        for ii in 0..32 {
            let q = nearest_int((x[32 * j + ii] + dm) / d);
            l[32 * j + ii] = q.clamp(0, nmax) as u8;
        }
    }
    l
}

pub(crate) fn quant_q4_k(x: &[f32], b: &mut [u8]) {
    let l = quant_k_scales(x, b, 15, -1.0, 0.1, 20);
    let q = &mut b[16..144];
    for (c, j) in (0..QK_K).step_by(64).enumerate() {
        for i in 0..32 {
            q[32 * c + i] = l[j + i] | (l[j + i + 32] << 4);
        }
    }
}

pub(crate) fn quant_q5_k(x: &[f32], b: &mut [u8]) {
    let l = quant_k_scales(x, b, 31, -0.5, 0.1, 15);
    b[16..48].fill(0);
    let (mut m1, mut m2) = (1u8, 2u8);
    for (c, n) in (0..QK_K).step_by(64).enumerate() {
        for j in 0..32 {
            let mut l1 = l[n + j];
            if l1 > 15 {
                l1 -= 16;
                b[16 + j] |= m1;
            }
            let mut l2 = l[n + j + 32];
            if l2 > 15 {
                l2 -= 16;
                b[16 + j] |= m2;
            }
            b[48 + 32 * c + j] = l1 | (l2 << 4);
        }
        m1 <<= 2;
        m2 <<= 2;
    }
}

pub(crate) fn quant_q6_k(x: &[f32], b: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
    for ib in 0..16 {
        let scale = make_qx_quants(32, &x[16 * ib..16 * ib + 16], &mut l[16 * ib..16 * ib + 16]);
        scales[ib] = scale;
        if scale.abs() > max_abs_scale {
            max_abs_scale = scale.abs();
            max_scale = scale;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        b[..210].fill(0);
        return;
    }
    let iscale = -128.0 / max_scale;
    put_f16(b, 208, 1.0 / iscale);
    for ib in 0..16 {
        b[192 + ib] = nearest_int(iscale * scales[ib]).min(127) as i8 as u8;
    }
    let d_all = f16_at(b, 208);
    for j in 0..16 {
        let d = d_all * f32::from(b[192 + j] as i8);
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / d).clamp(-32, 31);
            l[16 * j + ii] = (q + 32) as i8;
        }
    }
    for half in 0..2 {
        let j = 128 * half;
        for i in 0..32 {
            let lv = |o: usize| l[j + i + o] as u8;
            let (q1, q2, q3, q4) = (lv(0) & 0xF, lv(32) & 0xF, lv(64) & 0xF, lv(96) & 0xF);
            b[64 * half + i] = q1 | (q3 << 4);
            b[64 * half + i + 32] = q2 | (q4 << 4);
            b[128 + 32 * half + i] =
                (lv(0) >> 4) | ((lv(32) >> 4) << 2) | ((lv(64) >> 4) << 4) | ((lv(96) >> 4) << 6);
        }
    }
}

// One level of the discrete wavelet transform along one axis of a batch, as pywavelets computes it
// (crates/wring-kernels/src/wavelet.rs documents the layout). The forward variant computes both bands of
// each coefficient position from the same extended input samples; the INVERSE variant gathers each output
// sample from both bands. Filters arrive as a
// storage buffer [dec_lo, dec_hi, rec_lo, rec_hi], each `taps` long, so one variant serves every wavelet.
#import invocation

struct Params {
    n: u32,
    m: u32,
    inner: u32,
    outer_lo: u32,
    total: u32,
    taps: u32,
    mode: u32,
    _pad0: u32,
    // Banded side: band, outer_hi, outer_lo, coefficient.
    strides: vec4<u32>,
}

const PERIODIZATION: u32 = 0u;
const SYMMETRIC: u32 = 1u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> filters: array<f32>;
@group(0) @binding(2) var<storage, read> src: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

fn banded(band: u32, hi: u32, lo: u32, k: u32, r: u32) -> u32 {
    return band * params.strides.x + hi * params.strides.y + lo * params.strides.z + k * params.strides.w + r;
}

fn contiguous(hi: u32, lo: u32, k: u32, r: u32) -> u32 {
    return ((hi * params.outer_lo + lo) * params.n + k) * params.inner + r;
}

// The position in the signal that extended index `idx` reads, or -1 for a zero.
fn extended(idx: i32) -> i32 {
    let n = i32(params.n);
    if (params.mode == PERIODIZATION) {
        // An odd signal is first extended by its last sample.
        let np = n + (n & 1);
        return min(((idx % np) + np) % np, n - 1);
    }
    if (params.mode == SYMMETRIC) {
        let m = ((idx % (2 * n)) + 2 * n) % (2 * n);
        return select(m, 2 * n - 1 - m, m >= n);
    }
    return select(-1, idx, idx >= 0 && idx < n);
}

// One invocation per line (an outer index and an inner offset) walks every position of its line, so the
// index decomposition's integer divisions (slow on CPU adapters, which scalarize them) happen once per
// line rather than once per sample; neighbouring invocations take neighbouring inner offsets or lines.
@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let id = linear_workgroup(inv) * WG + inv.lid;
    if (id >= params.total) {
        return;
    }
    let taps = params.taps;
    let r = id % params.inner;
    let outer = id / params.inner;
    let lo = outer % params.outer_lo;
    let hi = outer / params.outer_lo;
#ifdef INVERSE
    let m = i32(params.m);
    let shift = select(0, 1, (taps / 2u) % 2u == 0u);
    for (var t = 0u; t < params.n; t++) {
        // Which filter phase output sample t takes and the coefficient its tap 0 reads (see
        // synthesis_position in wavelet.rs).
        var p: i32;
        var i: i32;
        if (params.mode == PERIODIZATION) {
            p = ((i32(t) - shift) % 2 + 2) % 2;
            i = i32(taps / 4u) + (i32(t) - p - shift) / 2;
        } else {
            p = i32(t % 2u);
            i = i32(t / 2u) + i32(taps / 2u) - 1;
        }
        var acc = 0.0;
        // Away from the ends no index wraps, and the loop skips the modulo.
        let interior = i - i32(taps / 2u) + 1 >= 0 && i < m;
        for (var j = 0u; j < taps / 2u; j++) {
            // A branch, not select(): select evaluates both operands.
            var kk = u32(i - i32(j));
            if (!interior) {
                kk = u32(((i - i32(j)) % m + m) % m);
            }
            let tap = 2u * j + u32(p);
            acc += filters[2u * taps + tap] * src[banded(0u, hi, lo, kk, r)] + filters[3u * taps + tap] * src[banded(1u, hi, lo, kk, r)];
        }
        dst[contiguous(hi, lo, t, r)] = acc;
    }
#else
    for (var k = 0u; k < params.m; k++) {
        let i = i32(select(1u + 2u * k, taps / 2u + 2u * k, params.mode == PERIODIZATION));
        var a = 0.0;
        var b = 0.0;
        // Away from the ends the extension is the identity, and the loop skips its modulo arithmetic.
        let interior = i - i32(taps) + 1 >= 0 && i < i32(params.n);
        for (var j = 0u; j < taps; j++) {
            // A branch, not select(): select evaluates both operands.
            var at = i - i32(j);
            if (!interior) {
                at = extended(at);
            }
            if (at >= 0) {
                let x = src[contiguous(hi, lo, u32(at), r)];
                a += filters[j] * x;
                b += filters[taps + j] * x;
            }
        }
        dst[banded(0u, hi, lo, k, r)] = a;
        dst[banded(1u, hi, lo, k, r)] = b;
    }
#endif
}

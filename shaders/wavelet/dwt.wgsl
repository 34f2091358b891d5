// One level of the discrete wavelet transform along one axis of a batch, as pywavelets computes it
// (crates/wring-kernels/src/wavelet.rs documents the layout). The forward variant computes both bands of
// each coefficient position from the same extended input samples; the INVERSE variant gathers each output
// sample from both bands. Filters arrive as a
// storage buffer [dec_lo, dec_hi, rec_lo, rec_hi], each TAPS long, so one variant serves every wavelet of
// that length.
// Samples are ELEM (f32 or f16); filters and accumulation stay f32 in both, so the f16 variants lose
// precision only where they store.
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

const HALF: u32 = TAPS / 2u;
const PERIODIZATION: u32 = 0u;
const SYMMETRIC: u32 = 1u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> filters: array<f32>;
@group(0) @binding(2) var<storage, read> src: array<ELEM>;
@group(0) @binding(3) var<storage, read_write> dst: array<ELEM>;

fn banded(band: u32, hi: u32, lo: u32, k: u32, r: u32) -> u32 {
    return band * params.strides.x + hi * params.strides.y + lo * params.strides.z + k * params.strides.w + r;
}

fn contiguous(hi: u32, lo: u32, k: u32, r: u32) -> u32 {
    return ((hi * params.outer_lo + lo) * params.n + k) * params.inner + r;
}

// The remainder of a by m (m > 0) in 0..m. WGSL's % truncates toward zero, and GLSL, which naga's OpenGL
// backend emits, leaves % undefined for a negative operand (llvmpipe's GL returned garbage), so a negative
// a is reflected onto non-negative operands: -1 -> m - 1, -m -> 0.
fn wrap(a: i32, m: i32) -> i32 {
    if (a >= 0) {
        return a % m;
    }
    return m - 1 - ((-a - 1) % m);
}

// The position in the signal that extended index `idx` reads, or -1 for a zero.
fn extended(idx: i32) -> i32 {
    let n = i32(params.n);
    if (params.mode == PERIODIZATION) {
        // An odd signal is first extended by its last sample.
        let np = n + (n & 1);
        return min(wrap(idx, np), n - 1);
    }
    if (params.mode == SYMMETRIC) {
        let m = wrap(idx, 2 * n);
        return select(m, 2 * n - 1 - m, m >= n);
    }
    return select(-1, idx, idx >= 0 && idx < n);
}

// One invocation per line (an outer index and an inner offset) walks every position of its line, so the
// index decomposition's integer divisions (slow on CPU adapters, which scalarize them) happen once per
// line rather than once per sample; neighbouring invocations take neighbouring inner offsets or lines.
// TAPS is fixed per variant, so the filters and a sliding window of samples live in registers: each step
// along the line loads only the samples that enter the window (two per coefficient pair forward, one per
// band inverse) instead of re-reading all TAPS of them.

// Sample `at` of the contiguous line starting at `base`, extended past the ends as the mode says.
fn signal_at(base: u32, at: i32) -> f32 {
    // A branch, not select(): select evaluates both operands.
    if (at >= 0 && at < i32(params.n)) {
        return f32(src[base + u32(at) * params.inner]);
    }
    let e = extended(at);
    if (e < 0) {
        return 0.0;
    }
    return f32(src[base + u32(e) * params.inner]);
}

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let id = linear_workgroup(inv) * WG + inv.lid;
    if (id >= params.total) {
        return;
    }
    let r = id % params.inner;
    let outer = id / params.inner;
    let lo = outer % params.outer_lo;
    let hi = outer / params.outer_lo;
    let kstride = params.strides.w;
#ifdef INVERSE
    // Output samples come in pairs (an even-phase and an odd-phase one) that read the same coefficients
    // a[i - j], d[i - j], j < TAPS / 2; the next pair reads one coefficient further along (see
    // synthesis_position in wavelet.rs). Periodization wraps coefficient indices modulo the band length.
    var g0: array<f32, TAPS>;
    var g1: array<f32, TAPS>;
    for (var j = 0u; j < TAPS; j++) {
        g0[j] = filters[2u * TAPS + j];
        g1[j] = filters[3u * TAPS + j];
    }
    let m = i32(params.m);
    let per = params.mode == PERIODIZATION;
    // Periodization starts at TAPS / 4 and shifts the output right by one when TAPS / 2 is even; the
    // other modes start at TAPS / 2 - 1 with no shift.
    let shift = select(0, 1, per && HALF % 2u == 0u);
    let first = select(i32(HALF) - 1, i32(TAPS / 4u), per);
    let a_base = banded(0u, hi, lo, 0u, r);
    let d_base = banded(1u, hi, lo, 0u, r);
    let out_base = contiguous(hi, lo, 0u, r);
    // The window holds a[i - j] and d[i - j] for the current pair's i.
    var wa: array<f32, HALF>;
    var wd: array<f32, HALF>;
    let s0 = -shift;
    var i = first + s0;
    // Before the first shift by one, wa[j] holds a[i - j - 1].
    for (var j = 0u; j < HALF - 1u; j++) {
        let kk = u32(wrap(i - i32(j) - 1, m));
        wa[j] = f32(src[a_base + kk * kstride]);
        wd[j] = f32(src[d_base + kk * kstride]);
    }
    let n = i32(params.n);
    for (var t = 2 * s0 + shift; t < n; t += 2) {
        // Shift the window one coefficient along and load the one that enters it.
        for (var q = 1u; q < HALF; q++) {
            let j = HALF - q;
            wa[j] = wa[j - 1u];
            wd[j] = wd[j - 1u];
        }
        var kk = u32(i);
        if (i >= m) {
            kk = u32(i % m);
        }
        wa[0] = f32(src[a_base + kk * kstride]);
        wd[0] = f32(src[d_base + kk * kstride]);
        var even = 0.0;
        var odd = 0.0;
        for (var j = 0u; j < HALF; j++) {
            even += g0[2u * j] * wa[j] + g1[2u * j] * wd[j];
            odd += g0[2u * j + 1u] * wa[j] + g1[2u * j + 1u] * wd[j];
        }
        if (t >= 0) {
            dst[out_base + u32(t) * params.inner] = ELEM(even);
        }
        if (t + 1 < n) {
            dst[out_base + u32(t + 1) * params.inner] = ELEM(odd);
        }
        i += 1;
    }
#else
    var h0: array<f32, TAPS>;
    var h1: array<f32, TAPS>;
    for (var j = 0u; j < TAPS; j++) {
        h0[j] = filters[j];
        h1[j] = filters[TAPS + j];
    }
    let base = contiguous(hi, lo, 0u, r);
    let a_base = banded(0u, hi, lo, 0u, r);
    let b_base = banded(1u, hi, lo, 0u, r);
    // Coefficient k reads samples i - j, j < TAPS, with i = first + 2k; the window holds x[i - j].
    var i = select(1, i32(TAPS / 2u), params.mode == PERIODIZATION);
    // Before the first shift by two, w[j] holds x[i - j - 2].
    var w: array<f32, TAPS>;
    for (var j = 0u; j < TAPS - 2u; j++) {
        w[j] = signal_at(base, i - i32(j) - 2);
    }
    for (var k = 0u; k < params.m; k++) {
        // Counting up with a constant bound lets the compiler unroll the loop and keep w in registers.
        for (var q = 2u; q < TAPS; q++) {
            let j = TAPS + 1u - q;
            w[j] = w[j - 2u];
        }
        w[1] = signal_at(base, i - 1);
        w[0] = signal_at(base, i);
        var a = 0.0;
        var b = 0.0;
        for (var j = 0u; j < TAPS; j++) {
            a += h0[j] * w[j];
            b += h1[j] * w[j];
        }
        dst[a_base + k * kstride] = ELEM(a);
        dst[b_base + k * kstride] = ELEM(b);
        i += 2;
    }
#endif
}

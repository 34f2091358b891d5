// y[row][i] = silu(a[row][i]) * b[row][i], the gate of a SwiGLU feed-forward block, with
// silu(x) = x / (1 + exp(-x)). For x far below zero exp(-x) overflows to +inf and the quotient is -0, the
// correct limit. With `gate` 1 the activation is GELU's tanh form (ggml_gelu), Gemma's GeGLU; the
// branch is uniform.
//
// a and b are read through a row stride and an offset, so they may be the two halves of one fused
// gate/up projection output [row][gate | up] (the same buffer bound twice, read-only) or two tensors.
//
// The Q8OUT variant writes y as 8-bit activation units (q8_unit) for the down projection's qmatvec_q8:
// the quantize_q8 launch folded in, one invocation per 32-value unit (cols a multiple of 32).
#import invocation
#ifdef Q8OUT
#import q8
#endif

struct Params {
    cols: u32,
    total: u32,
    a_stride: u32,
    a_off: u32,
    b_stride: u32,
    b_off: u32,
    gate: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
#ifdef Q8OUT
@group(0) @binding(3) var<storage, read_write> q: array<vec4<u32>>;
#else
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
#endif

fn act(x: f32) -> f32 {
    if (params.gate == 1u) {
        return 0.5 * x * (1.0 + tanh(0.7978846 * x * (1.0 + 0.044715 * x * x)));
    }
    return x / (1.0 + exp(-x));
}

fn gated(row: u32, col: u32) -> f32 {
    let x = a[row * params.a_stride + params.a_off + col];
    return act(x) * b[row * params.b_stride + params.b_off + col];
}

#ifdef Q8OUT
@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let unit = linear_workgroup(inv) * WG + inv.lid;
    if (unit >= params.total / 32u) {
        return;
    }
    // A row holds whole units, so the unit's 32 values share one row.
    let row = (32u * unit) / params.cols;
    let col0 = (32u * unit) % params.cols;
    var v: array<vec4<f32>, 8>;
    for (var j = 0u; j < 8u; j++) {
        let c = col0 + 4u * j;
        v[j] = vec4<f32>(gated(row, c), gated(row, c + 1u), gated(row, c + 2u), gated(row, c + 3u));
    }
    let u = q8_unit(v);
    for (var j = 0u; j < 3u; j++) {
        q[3u * unit + j] = u[j];
    }
}
#else
@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let base = linear_workgroup(inv) * (WG * ITEMS) + inv.lid;
    for (var item = 0u; item < ITEMS; item++) {
        let i = base + item * WG;
        if (i < params.total) {
            y[i] = gated(i / params.cols, i % params.cols);
        }
    }
}
#endif

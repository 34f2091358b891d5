// y[row][i] = silu(a[row][i]) * b[row][i], the gate of a SwiGLU feed-forward block, with
// silu(x) = x / (1 + exp(-x)). For x far below zero exp(-x) overflows to +inf and the quotient is -0, the
// correct limit.
//
// a and b are read through a row stride and an offset, so they may be the two halves of one fused
// gate/up projection output [row][gate | up] (the same buffer bound twice, read-only) or two tensors.
#import invocation

struct Params {
    cols: u32,
    total: u32,
    a_stride: u32,
    a_off: u32,
    b_stride: u32,
    b_off: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let base = linear_workgroup(inv) * (WG * ITEMS) + inv.lid;
    for (var item = 0u; item < ITEMS; item++) {
        let i = base + item * WG;
        if (i < params.total) {
            let row = i / params.cols;
            let col = i % params.cols;
            let x = a[row * params.a_stride + params.a_off + col];
            y[i] = x / (1.0 + exp(-x)) * b[row * params.b_stride + params.b_off + col];
        }
    }
}

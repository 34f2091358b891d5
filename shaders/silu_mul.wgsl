// y[i] = silu(a[i]) * b[i], the gate of a SwiGLU feed-forward block, with silu(x) = x / (1 + exp(-x)).
// For x far below zero exp(-x) overflows to +inf and the quotient is -0, the correct limit.
#import invocation

struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
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
        if (i < params.n) {
            let x = a[i];
            y[i] = x / (1.0 + exp(-x)) * b[i];
        }
    }
}

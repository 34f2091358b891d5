// Rotary position embedding over x[token][head][dim], as llama.cpp applies it. Each invocation rotates one
// pair of dimensions by theta = pos[token] * freq_scale * theta_scale^p, theta_scale = base^(-2/n_dims).
// The default ("normal") mode pairs adjacent dimensions (2p, 2p+1), as llama.cpp does for llama-family
// GGUFs; NEOX pairs (p, p + n_dims/2). Dimensions at and past n_dims pass through unchanged.
#import invocation

struct Params {
    head_dim: u32,
    n_heads: u32,
    n_dims: u32,
    total_pairs: u32,
    theta_scale: f32,
    freq_scale: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> pos: array<i32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let idx = linear_workgroup(inv) * WG + inv.lid;
    if (idx >= params.total_pairs) {
        return;
    }
    let half_dim = params.head_dim / 2u;
    let p = idx % half_dim;
    let token_head = idx / half_dim;
    let token = token_head / params.n_heads;
    let base = token_head * params.head_dim;
    if (2u * p < params.n_dims) {
#ifdef NEOX
        let i0 = base + p;
        let i1 = base + p + params.n_dims / 2u;
#else
        let i0 = base + 2u * p;
        let i1 = base + 2u * p + 1u;
#endif
        let theta = f32(pos[token]) * params.freq_scale * pow(params.theta_scale, f32(p));
        let c = cos(theta);
        let s = sin(theta);
        let x0 = x[i0];
        let x1 = x[i1];
        y[i0] = x0 * c - x1 * s;
        y[i1] = x0 * s + x1 * c;
    } else {
        y[base + 2u * p] = x[base + 2u * p];
        y[base + 2u * p + 1u] = x[base + 2u * p + 1u];
    }
}

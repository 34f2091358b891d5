// Rotary position embedding over x[token][head][dim], as llama.cpp applies it (see common/rope.wgsl). Each
// invocation rotates one pair of dimensions of one head.
#import invocation
#import rope

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
    let d = rope_dims(p, params.n_dims);
    let r = rope_values(vec2<f32>(x[base + d.x], x[base + d.y]), pos[token], p, params.n_dims, params.theta_scale, params.freq_scale);
    y[base + d.x] = r.x;
    y[base + d.y] = r.y;
}

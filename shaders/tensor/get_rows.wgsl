// out[t][:] = table[ids[t]][:]: the token-embedding lookup. The table stays in its stored format; block
// formats are dequantized four values at a time with shaders/common/quant.wgsl, so a quantized embedding
// table never exists in f32 on the device. One invocation per quad (4 values) of one output row. Every
// value is multiplied by `scale` (1, or Gemma's sqrt(n_embd)).
#import invocation
#ifdef QUANT
#import quant
#endif

struct Params {
    tokens: u32,
    k: u32,
    rows: u32,
    row_bytes: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
#ifdef QUANT
@group(0) @binding(1) var<storage, read> w: array<u32>;
#else
@group(0) @binding(1) var<storage, read> w: array<vec4<f32>>;
#endif
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let idx = linear_workgroup(inv) * WG + inv.lid;
    let k4 = params.k / 4u;
    if (idx >= params.tokens * k4) {
        return;
    }
    let t = idx / k4;
    let q = idx % k4;
    // The host checks ids against the table; the clamp only keeps a bad id from reading out of bounds.
    let row = min(ids[t], params.rows - 1u);
#ifdef QUANT
    let units_per_block = BLOCK_LEN / 32u;
    let u = q / 8u;
    let h = unit_head(row * params.row_bytes + (u / units_per_block) * BLOCK_BYTES, u % units_per_block);
    let x = quad(h, q % 8u);
#else
    let x = w[row * k4 + q];
#endif
    // Multiplying by 1 leaves every value as it was, so the llama path is unchanged bit for bit.
    out[idx] = x * params.scale;
}

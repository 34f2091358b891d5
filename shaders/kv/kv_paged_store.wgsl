// A step's keys and values, [token][kv head][head_dim] f32 (after RoPE), written into a paged cache's
// pools at each token's slot (`slots`, from its sequence's block table): vLLM's reshape_and_cache. One
// invocation per four channels of one token, keys and values both. F16POOL: the pools hold f16 pairs,
// rounded by f16_round so that every adapter stores the same bits; otherwise f32. A code pool (KIVI's) is
// written by kv_paged_seal when a block is full; until then its positions go to f16 tails through this
// kernel's F16POOL form, and a token whose slot is NONE (a position of a block the step seals) is not
// written.
#import invocation
#ifdef F16POOL
#import f16
#endif

struct Params {
    kv: u32,
    tokens: u32,
    head_dim: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> slots: array<u32>;

// A slot that stores nothing.
const NONE: u32 = 0xFFFFFFFFu;
#ifdef F16POOL
@group(0) @binding(4) var<storage, read_write> kp: array<vec2<u32>>;
@group(0) @binding(5) var<storage, read_write> vp: array<vec2<u32>>;

fn pack4(x: vec4<f32>) -> vec2<u32> {
    let c = clamp(x, vec4<f32>(-F16_MAX), vec4<f32>(F16_MAX));
    return vec2<u32>(
        pack2x16float(vec2<f32>(f16_round(c.x), f16_round(c.y))),
        pack2x16float(vec2<f32>(f16_round(c.z), f16_round(c.w))),
    );
}
#else
@group(0) @binding(4) var<storage, read_write> kp: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> vp: array<vec4<f32>>;
#endif

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let i = linear_workgroup(inv) * WG + inv.lid;
    let d4 = params.kv / 4u;
    if (i >= params.tokens * d4) {
        return;
    }
    let t = i / d4;
    if (slots[t] == NONE) {
        return;
    }
    let at = slots[t] * d4 + i % d4;
#ifdef F16POOL
    kp[at] = pack4(k[i]);
    vp[at] = pack4(v[i]);
#else
    kp[at] = k[i];
    vp[at] = v[i];
#endif
}

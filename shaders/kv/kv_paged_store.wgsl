// A step's keys and values, [token][kv head][head_dim] f32 (after RoPE), written into a paged cache's
// pools at each token's slot (`slots`, from its sequence's block table): vLLM's reshape_and_cache. One
// invocation per four channels of one token, keys and values both. F16POOL: the pools hold f16 pairs,
// rounded by f16_round so that every adapter stores the same bits; otherwise f32. CODES: each slot holds
// BITS-bit codes of its channels and one (scale, minimum) pair per head (kvquant.wgsl's quantizer over the
// head's head_dim values, keys and values alike), one invocation per (token, head).
#import invocation
#ifdef F16POOL
#import f16
#endif
#ifdef CODES
#import f16
#import kvquant
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
#ifdef CODES
@group(0) @binding(4) var<storage, read_write> kp: array<u32>;
@group(0) @binding(5) var<storage, read_write> vp: array<u32>;

// One head's head_dim values of `src` (a step's keys or values, from vec4 `first`) into the slot's codes
// at word `codes` and its pair at word `stat`.
fn quantize_head(src: u32, first: u32, codes: u32, stat: u32) {
    let d4 = params.head_dim / 4u;
    var mn = F16_MAX;
    var mx = -F16_MAX;
    for (var i = 0u; i < d4; i++) {
        var x: vec4<f32>;
        if (src == 0u) {
            x = k[first + i];
        } else {
            x = v[first + i];
        }
        mn = min(mn, min(min(x.x, x.y), min(x.z, x.w)));
        mx = max(mx, max(max(x.x, x.y), max(x.z, x.w)));
    }
    let st = stat_of(mn, mx);
    // A word holds CPW codes: 8 / BITS vec4s of channels.
    for (var w = 0u; w < params.head_dim / CPW; w++) {
        var word = 0u;
        for (var q = 0u; q < 8u / BITS; q++) {
            var x: vec4<f32>;
            if (src == 0u) {
                x = k[first + w * (8u / BITS) + q];
            } else {
                x = v[first + w * (8u / BITS) + q];
            }
            let shift = q * 4u * BITS;
            word |= (code_of(x.x, st) | (code_of(x.y, st) << BITS) | (code_of(x.z, st) << (2u * BITS))
                | (code_of(x.w, st) << (3u * BITS))) << shift;
        }
        if (src == 0u) {
            kp[codes + w] = word;
        } else {
            vp[codes + w] = word;
        }
    }
    let pair = pack2x16float(st);
    if (src == 0u) {
        kp[stat] = pair;
    } else {
        vp[stat] = pair;
    }
}
#else
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
#endif

#ifdef CODES
@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let i = linear_workgroup(inv) * WG + inv.lid;
    let heads = params.kv / params.head_dim;
    if (i >= params.tokens * heads) {
        return;
    }
    let t = i / heads;
    let h = i % heads;
    let first = (t * params.kv + h * params.head_dim) / 4u;
    let base = slots[t] * (params.kv / CPW + heads);
    quantize_head(0u, first, base + h * params.head_dim / CPW, base + params.kv / CPW + h);
    quantize_head(1u, first, base + h * params.head_dim / CPW, base + params.kv / CPW + h);
}
#else
@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let i = linear_workgroup(inv) * WG + inv.lid;
    let d4 = params.kv / 4u;
    if (i >= params.tokens * d4) {
        return;
    }
    let t = i / d4;
    let at = slots[t] * d4 + i % d4;
#ifdef F16POOL
    kp[at] = pack4(k[i]);
    vp[at] = pack4(v[i]);
#else
    kp[at] = k[i];
    vp[at] = v[i];
#endif
}
#endif

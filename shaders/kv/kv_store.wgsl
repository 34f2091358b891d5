// Writes one layer's step into its compressed cache from the f32 keys and values the step attended to:
// the complete groups of positions [compressed, upto) become codes (keys per channel over the group's
// tokens, values per token over `value_group` channels), and the positions from max(pos0, upto) to pos go
// into the f16 ring. One launch: the first `items_k` invocations take one key group's word of channels
// each, the next `items_v` one value group each, the rest 4 channels of a ring position each.
#import invocation
#import kv

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> store: array<u32>;

#ifdef CODES
// The key codes of one word of channels (CPW of them) for every token of one group: each channel's
// statistics over the group's tokens first, then one word per token.
fn store_key_group(i: u32) {
    let kv = params.kv;
    let words = kv / CPW;
    let g = params.compressed / params.group + i / words;
    let c0 = (i % words) * CPW;
    let p0 = g * params.group;
    var st: array<vec2<f32>, CPW>;
    for (var j = 0u; j < CPW; j++) {
        var mn = k[p0 * kv + c0 + j];
        var mx = mn;
        for (var t = 1u; t < params.group; t++) {
            let x = k[(p0 + t) * kv + c0 + j];
            mn = min(mn, x);
            mx = max(mx, x);
        }
        st[j] = stat_of(mn, mx);
        store[params.k_stats + g * kv + c0 + j] = pack2x16float(st[j]);
    }
    for (var t = 0u; t < params.group; t++) {
        let row = (p0 + t) * kv + c0;
        var word = 0u;
        for (var j = 0u; j < CPW; j++) {
            word |= code_of(k[row + j], st[j]) << (j * BITS);
        }
        store[params.k_codes + row / CPW] = word;
    }
}

// The value codes of one position over one group of channels.
fn store_value_group(i: u32) {
    let per = params.kv / params.value_group;
    let p = params.compressed + i / per;
    let base = p * params.kv + (i % per) * params.value_group;
    var mn = v[base];
    var mx = mn;
    for (var c = 1u; c < params.value_group; c++) {
        mn = min(mn, v[base + c]);
        mx = max(mx, v[base + c]);
    }
    let s = stat_of(mn, mx);
    store[params.v_stats + p * per + i % per] = pack2x16float(s);
    for (var w = 0u; w < params.value_group / CPW; w++) {
        var word = 0u;
        for (var j = 0u; j < CPW; j++) {
            word |= code_of(v[base + w * CPW + j], s) << (j * BITS);
        }
        store[params.v_codes + base / CPW + w] = word;
    }
}
#endif

fn pack_pair(a: f32, b: f32) -> u32 {
    return pack2x16float(vec2<f32>(f16_round(a), f16_round(b)));
}

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    var i = linear_workgroup(inv) * WG + inv.lid;
#ifdef CODES
    if (i < params.items_k) {
        store_key_group(i);
        return;
    }
    i -= params.items_k;
    if (i < params.items_v) {
        store_value_group(i);
        return;
    }
    i -= params.items_v;
#endif
    let q4 = params.kv / 4u;
    let first = max(params.pos0, params.upto);
    if (i >= (params.pos - first) * q4) {
        return;
    }
    let p = first + i / q4;
    let c = (i % q4) * 4u;
    let a = p * params.kv + c;
    let slot = ((p % params.ring) * params.kv + c) / 2u;
    // Rounded by f16_round first, so that the packing is exact and every adapter stores the same bits.
    store[params.ring_k + slot] = pack_pair(k[a], k[a + 1u]);
    store[params.ring_k + slot + 1u] = pack_pair(k[a + 2u], k[a + 3u]);
    store[params.ring_v + slot] = pack_pair(v[a], v[a + 1u]);
    store[params.ring_v + slot + 1u] = pack_pair(v[a + 2u], v[a + 3u]);
}

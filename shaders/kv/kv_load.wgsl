// Materializes the first `upto` positions of one layer's compressed cache as f32 keys and values
// [position][channel] for the attention kernels: positions before `compressed` decoded from their codes
// (left alone by the f16 variant), the rest read from the f16 ring. One invocation per 4 channels of a
// position.
#import invocation
#import kv

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> store: array<u32>;
@group(0) @binding(2) var<storage, read_write> k: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> v: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let q4 = params.kv / 4u;
    let idx = linear_workgroup(inv) * WG + inv.lid;
    if (idx >= params.upto * q4) {
        return;
    }
    let p = idx / q4;
    let c = (idx % q4) * 4u;
#ifdef CODES
    if (p < params.compressed) {
        let at = (p * params.kv + c) / CPW;
        let word_k = store[params.k_codes + at];
        let word_v = store[params.v_codes + at];
        let shift = (c % CPW) * BITS;
        let ks = params.k_stats + (p / params.group) * params.kv + c;
        let vs = unpack2x16float(store[params.v_stats + p * (params.kv / params.value_group) + c / params.value_group]);
        var kk = vec4<f32>(0.0);
        var vv = vec4<f32>(0.0);
        for (var i = 0u; i < 4u; i++) {
            let sh = shift + i * BITS;
            let s = unpack2x16float(store[ks + i]);
            kk[i] = s.y + s.x * f32((word_k >> sh) & MASK);
            vv[i] = vs.y + vs.x * f32((word_v >> sh) & MASK);
        }
        k[idx] = kk;
        v[idx] = vv;
        return;
    }
#else
    // A 16-bit layout whose older positions are kept in another form (low-rank features) leaves them to
    // the kernels that rebuild them.
    if (p < params.compressed) {
        return;
    }
#endif
    let slot = (p % params.ring) * params.kv + c;
    let rk = params.ring_k + slot / 2u;
    let rv = params.ring_v + slot / 2u;
    k[idx] = vec4<f32>(unpack2x16float(store[rk]), unpack2x16float(store[rk + 1u]));
    v[idx] = vec4<f32>(unpack2x16float(store[rv]), unpack2x16float(store[rv + 1u]));
}

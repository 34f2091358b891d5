// Completes kv_load's decoding of GEAR blocks (kv_gear.wgsl): adds the low-rank correction L to the
// dequantized Q of every entry and puts back the outliers S exactly. One workgroup per block of `group`
// positions, head and tensor, over the f32 keys and values [position][channel] kv_load wrote.
#import invocation
#import kv

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> store: array<u32>;
@group(0) @binding(2) var<storage, read_write> k: array<f32>;
@group(0) @binding(3) var<storage, read_write> v: array<f32>;

var<workgroup> mark: array<atomic<u32>, MARK_WORDS>;

// The f16 at index f of a run of f16 pairs starting at word `base`.
fn half_at(base: u32, f: u32) -> f32 {
    return unpack2x16float(store[base + f / 2u])[f % 2u];
}

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let heads = params.kv / params.value_group;
    let w = linear_workgroup(inv);
    if (w >= params.blocks * 2u * heads) {
        return;
    }
    let tensor = w % 2u;
    let head = (w / 2u) % heads;
    let g = params.block0 + w / (2u * heads);
    let unit = (params.block0 * heads) * 2u + w;
    let nt = params.group;
    let nc = params.value_group;
    let r = params.rank;
    for (var i = inv.lid; i < MARK_WORDS; i += WG) {
        atomicStore(&mark[i], 0u);
    }
    workgroupBarrier();
    let outs = params.out_off + unit * 2u * params.outliers;
    for (var i = inv.lid; i < 2u * params.outliers; i += WG) {
        let e = store[outs + i] >> 16u;
        atomicOr(&mark[e / 32u], 1u << (e % 32u));
    }
    workgroupBarrier();
    let fac = params.fac_off + unit * (nt + nc) * r / 2u;
    for (var e = inv.lid; e < nt * nc; e += WG) {
        if (((atomicLoad(&mark[e / 32u]) >> (e % 32u)) & 1u) == 1u) {
            continue;
        }
        let t = e / nc;
        let c = e % nc;
        var l = 0.0;
        for (var j = 0u; j < r; j++) {
            l += half_at(fac, t * r + j) * half_at(fac, nt * r + c * r + j);
        }
        let i = (g * nt + t) * params.kv + head * nc + c;
        if (tensor == 0u) {
            k[i] += l;
        } else {
            v[i] += l;
        }
    }
    for (var i = inv.lid; i < 2u * params.outliers; i += WG) {
        let word = store[outs + i];
        let e = word >> 16u;
        let x = unpack2x16float(word & 0xffffu).x;
        let at = (g * nt + e / nc) * params.kv + head * nc + e % nc;
        if (tensor == 0u) {
            k[at] = x;
        } else {
            v[at] = x;
        }
    }
}

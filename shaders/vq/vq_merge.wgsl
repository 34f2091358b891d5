// Reduces vq_search's per-invocation lists to each query's final top-k, and turns keys into distances:
// L2 adds |x|^2 (clamped at 0, as rounding can take an exact match below it), inner product negates,
// cosine divides by |x|. Ties between lists are broken by the lower codeword index, so the result does
// not depend on how the codebook was split.
#import invocation

struct Params {
    nq: u32,
    lists: u32,
    k: u32,
    metric: u32,
    d: u32,
    x_stride: u32,
    x_offset: u32,
    _pad0: u32,
}

const L2: u32 = 0u;
const IP: u32 = 1u;
const NONE: u32 = 0xffffffffu;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> keys: array<f32>;
@group(0) @binding(3) var<storage, read> ids: array<u32>;
@group(0) @binding(4) var<storage, read_write> dist: array<f32>;
@group(0) @binding(5) var<storage, read_write> idx: array<u32>;

var<private> kd: array<f32, KMAX>;
var<private> ki: array<u32, KMAX>;

fn before(ka: f32, ia: u32, kb: f32, ib: u32) -> bool {
    return ka < kb || (ka == kb && ia < ib);
}

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let q = linear_workgroup(inv) * WG + inv.lid;
    if (q >= params.nq) {
        return;
    }
    let inf = bitcast<f32>(0x7f800000u);
    for (var j = 0u; j < KMAX; j++) {
        kd[j] = inf;
        ki[j] = NONE;
    }
    let last = params.k - 1u;
    for (var l = 0u; l < params.lists; l++) {
        let at = (q * params.lists + l) * params.k;
        for (var e = 0u; e < params.k; e++) {
            let key = keys[at + e];
            let id = ids[at + e];
            // Lists are sorted: once an entry cannot enter, neither can the rest of its list.
            if (id == NONE || !before(key, id, kd[last], ki[last])) {
                break;
            }
            var j = last;
            while (j > 0u && before(key, id, kd[j - 1u], ki[j - 1u])) {
                kd[j] = kd[j - 1u];
                ki[j] = ki[j - 1u];
                j--;
            }
            kd[j] = key;
            ki[j] = id;
        }
    }
    var xn = 0.0;
    if (params.metric != IP) {
        let row = q * params.x_stride + params.x_offset;
        for (var i = 0u; i < params.d; i++) {
            let v = x[row + i];
            xn += v * v;
        }
    }
    for (var j = 0u; j < params.k; j++) {
        var v = -kd[j];
        if (params.metric == L2) {
            v = max(kd[j] + xn, 0.0);
        } else if (params.metric != IP) {
            v = -kd[j] / max(sqrt(xn), 1e-30);
        }
        dist[q * params.k + j] = v;
        idx[q * params.k + j] = ki[j];
    }
}

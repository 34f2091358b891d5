// GEAR (Kang et al., 2024) compression of whole groups of positions: each block of `group` tokens x one
// head's `value_group` channels, for keys and for values, becomes K = Q + L + S. S: the `outliers`
// largest and `outliers` smallest entries of the block, kept exactly (f16 value and index); Q: KIVI codes
// of the rest at BITS bits (keys per channel over the block's tokens, values per token over the head),
// written where kv_load decodes them; L: a rank-`rank` approximation of the quantization error Q + S
// leaves, by GEAR's power iteration (three rounds, the factors orthonormalized by Gram-Schmidt in the
// last), kept as an f16 token factor and an f16 channel factor. One workgroup per block, head and tensor.
//
// Selection is exact and the same on every adapter: each entry gets a unique 29-bit key (its f16 value's
// order, then its index, lower first) and a radix select over four digits finds the key of the
// `outliers`-th largest (`shaders/common/radix.wgsl`), so that exactly `outliers` entries are taken from
// each side, ties included.
#import invocation
#import kv
#import radix

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> store: array<u32>;

var<workgroup> mark: array<atomic<u32>, MARK_WORDS>;
var<workgroup> stat: array<vec2<f32>, MAX_SIDE>;
// The token factor [group][rank] at 0, the channel factor [value_group][rank] at MAX_FACTOR.
var<workgroup> fac: array<f32, 2 * MAX_FACTOR>;
const CHAN: u32 = MAX_FACTOR;

struct Block {
    tensor: u32,
    head: u32,
    group: u32,
    unit: u32,
}

fn block_of(w: u32) -> Block {
    let heads = params.kv / params.value_group;
    let unit = (params.block0 * heads) * 2u + w;
    return Block(w % 2u, (w / 2u) % heads, params.block0 + w / (2u * heads), unit);
}

// Entry e = t * value_group + c of the block, as the f16 value the ring would have kept.
fn entry(b: Block, e: u32) -> f32 {
    let t = e / params.value_group;
    let c = e % params.value_group;
    let i = (b.group * params.group + t) * params.kv + b.head * params.value_group + c;
    var x = 0.0;
    if (b.tensor == 0u) {
        x = k[i];
    } else {
        x = v[i];
    }
    return f16_round(clamp(x, -F16_MAX, F16_MAX));
}

// The unique selection key of entry e on one side (0: largest first, 1: smallest first).
// Side 1 orders exactly the other way round (smallest value, then highest index), so that the two sides
// never share an entry while 2 x outliers <= the block's entries.
fn key_of(x: f32, e: u32, side: u32) -> u32 {
    let key = (f16_order(x) << 13u) | (8191u - e);
    return select(key, 0x1fffffffu - key, side == 1u);
}

// The selection keys radix_select ranks: those of the block and side being selected.
var<private> selecting: Block;
var<private> selecting_side: u32;

fn radix_key(e: u32) -> u32 {
    return key_of(entry(selecting, e), e, selecting_side);
}

// The `outliers`-th largest key of one side.
fn select_side(b: Block, side: u32, inv: Invocation) -> u32 {
    selecting = b;
    selecting_side = side;
    return radix_select(params.group * params.value_group, params.outliers, inv);
}

fn marked(e: u32) -> bool {
    return ((atomicLoad(&mark[e / 32u]) >> (e % 32u)) & 1u) == 1u;
}

// The residual Q + S leaves at entry (t, c): zero at an outlier (S holds it exactly).
fn residual(b: Block, t: u32, c: u32) -> f32 {
    let e = t * params.value_group + c;
    if (marked(e)) {
        return 0.0;
    }
    let x = entry(b, e);
    var s = stat[t];
    if (b.tensor == 0u) {
        s = stat[c];
    }
    return x - (s.y + s.x * f32(code_of(x, s)));
}

// A deterministic start for the power iteration in [0, 1) (GEAR draws it at random).
fn start(c: u32, j: u32) -> f32 {
    var h = (c * 0x9e3779b1u) ^ (j * 0x85ebca77u) ^ 0x27d4eb2fu;
    h ^= h >> 15u;
    h *= 0x2c1b3c6du;
    h ^= h >> 12u;
    return f32(h >> 8u) / 16777216.0;
}

// Gram-Schmidt over the `rank` columns of the [n][rank] factor at `f` in `fac`, by one invocation
// (n x rank is small), a column of norm below 1e-20 set to zero rather than divided into infinities.
fn orthonormalize(f: u32, n: u32) {
    let r = params.rank;
    for (var j = 0u; j < r; j++) {
        for (var i = 0u; i < j; i++) {
            var dot = 0.0;
            for (var t = 0u; t < n; t++) {
                dot += fac[f + t * r + i] * fac[f + t * r + j];
            }
            for (var t = 0u; t < n; t++) {
                fac[f + t * r + j] -= dot * fac[f + t * r + i];
            }
        }
        var nn = 0.0;
        for (var t = 0u; t < n; t++) {
            nn += fac[f + t * r + j] * fac[f + t * r + j];
        }
        let inv_norm = select(0.0, 1.0 / sqrt(nn), nn > 1e-20);
        for (var t = 0u; t < n; t++) {
            fac[f + t * r + j] *= inv_norm;
        }
    }
}

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let w = linear_workgroup(inv);
    if (w >= params.blocks * 2u * (params.kv / params.value_group)) {
        return;
    }
    let b = block_of(w);
    let nt = params.group;
    let nc = params.value_group;
    let n = nt * nc;
    for (var i = inv.lid; i < MARK_WORDS; i += WG) {
        atomicStore(&mark[i], 0u);
    }
    workgroupBarrier();
    // S: the outliers of both sides, marked, then listed in index order by one invocation.
    if (params.outliers > 0u) {
        let hi = select_side(b, 0u, inv);
        let lo = select_side(b, 1u, inv);
        for (var e = inv.lid; e < n; e += WG) {
            let x = entry(b, e);
            if (key_of(x, e, 0u) >= hi || key_of(x, e, 1u) >= lo) {
                atomicOr(&mark[e / 32u], 1u << (e % 32u));
            }
        }
        workgroupBarrier();
        if (inv.lid == 0u) {
            var slot = params.out_off + b.unit * 2u * params.outliers;
            let end = slot + 2u * params.outliers;
            for (var m = 0u; m < (n + 31u) / 32u; m++) {
                var bits = atomicLoad(&mark[m]);
                while (bits != 0u && slot < end) {
                    let e = m * 32u + countTrailingZeros(bits);
                    bits &= bits - 1u;
                    store[slot] = (pack2x16float(vec2<f32>(entry(b, e), 0.0)) & 0xffffu) | (e << 16u);
                    slot++;
                }
            }
        }
        workgroupBarrier();
    }
    // Q: statistics of what is not an outlier (keys per channel, values per token), then the codes.
    let vectors = select(nt, nc, b.tensor == 0u);
    let len = select(nc, nt, b.tensor == 0u);
    for (var i = inv.lid; i < vectors; i += WG) {
        var mn = F16_MAX;
        var mx = -F16_MAX;
        var seen = false;
        for (var j = 0u; j < len; j++) {
            var e = i * nc + j;
            if (b.tensor == 0u) {
                e = j * nc + i;
            }
            if (!marked(e)) {
                let x = entry(b, e);
                mn = min(mn, x);
                mx = max(mx, x);
                seen = true;
            }
        }
        if (!seen) {
            mn = 0.0;
            mx = 0.0;
        }
        let s = stat_of(mn, mx);
        stat[i] = s;
        if (b.tensor == 0u) {
            store[params.k_stats + b.group * params.kv + b.head * nc + i] = pack2x16float(s);
        } else {
            let p = b.group * nt + i;
            store[params.v_stats + p * (params.kv / nc) + b.head] = pack2x16float(s);
        }
    }
    workgroupBarrier();
    let words = nc / CPW;
    for (var i = inv.lid; i < nt * words; i += WG) {
        let t = i / words;
        let c0 = (i % words) * CPW;
        var word = 0u;
        for (var j = 0u; j < CPW; j++) {
            let x = entry(b, t * nc + c0 + j);
            var s = stat[t];
            if (b.tensor == 0u) {
                s = stat[c0 + j];
            }
            word |= code_of(x, s) << (j * BITS);
        }
        let at = ((b.group * nt + t) * params.kv + b.head * nc + c0) / CPW;
        if (b.tensor == 0u) {
            store[params.k_codes + at] = word;
        } else {
            store[params.v_codes + at] = word;
        }
    }
    // L: power iteration on the residual, into `fac`'s token factor [nt][rank] and channel factor [nc][rank].
    let r = params.rank;
    if (r == 0u) {
        return;
    }
    for (var i = inv.lid; i < nc * r; i += WG) {
        fac[CHAN + i] = start(i / r, i % r);
    }
    workgroupBarrier();
    for (var it = 0u; it < POWER_ROUNDS; it++) {
        let last = it == POWER_ROUNDS - 1u;
        if (last && inv.lid == 0u) {
            orthonormalize(CHAN, nc);
        }
        workgroupBarrier();
        for (var t = inv.lid; t < nt; t += WG) {
            for (var j = 0u; j < r; j++) {
                var acc = 0.0;
                for (var c = 0u; c < nc; c++) {
                    acc += residual(b, t, c) * fac[CHAN + c * r + j];
                }
                fac[t * r + j] = acc;
            }
        }
        workgroupBarrier();
        if (last && inv.lid == 0u) {
            orthonormalize(0u, nt);
        }
        workgroupBarrier();
        for (var c = inv.lid; c < nc; c += WG) {
            for (var j = 0u; j < r; j++) {
                var acc = 0.0;
                for (var t = 0u; t < nt; t++) {
                    acc += residual(b, t, c) * fac[t * r + j];
                }
                fac[CHAN + c * r + j] = acc;
            }
        }
        workgroupBarrier();
    }
    // Stored as f16 pairs: the token factor, then the channel factor.
    let base = params.fac_off + b.unit * (nt + nc) * r / 2u;
    for (var i = inv.lid; i < (nt + nc) * r / 2u; i += WG) {
        let a = 2u * i;
        var x = vec2<f32>(0.0);
        for (var h = 0u; h < 2u; h++) {
            let f = a + h;
            if (f < nt * r) {
                x[h] = fac[f];
            } else {
                x[h] = fac[CHAN + f - nt * r];
            }
        }
        store[base + i] = pack2x16float(vec2<f32>(
            f16_round(clamp(x.x, -F16_MAX, F16_MAX)),
            f16_round(clamp(x.y, -F16_MAX, F16_MAX)),
        ));
    }
}

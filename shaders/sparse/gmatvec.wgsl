// y[b][row] = sum_j W[row][j] x[b][j] for W in wring's group layout (wring_quant::group): `bits`-bit codes
// packed along each row, statistics per (row, group of `group` stored columns), the columns stored in the
// order `perm` (stored column j multiplies x[perm[j]]), and a sparse part of f16 corrections per row.
// Activation rows are taken BATCH at a time (the grid's y dimension), so each weight is decoded once per
// tile of BATCH rows.
//
// Statistics: affine (f16 d and m per (row, group): w = d q + m), or, in the BILEVEL variants, SpQR's
// quantized scale and zero per (row, group) with f16 second-order parameters per block of `stat_rows`
// rows: s = ss (qs - sz), z = zs (qz - zz), w = s (q - z).
//
// Codes: `rowcodes` holds each row's first code word, code width and first statistics word (rows may
// differ in width: MixLLM's mixed precision; and in kept groups), so a row's data is found without summing
// the rows before it.
//
// Pruned groups, in the MASKED variants (GQSA's group sparsity, affine statistics): `mask` holds a bit per
// (row, group); only kept groups store codes and statistics, in order, so a kept group's position among
// its row's kept groups (its slot) is the count of mask bits below it.
//
// Outliers: `outliers` starts with rows + 1 offsets; a row's entries hold the stored column in the low 16
// bits and the f16 correction in the high 16. They are added by the same lanes after the dense part.
#import reduce

struct Params {
    rows: u32,
    cols: u32,
    group: u32,
    _unused: u32,
    stat_words: u32,
    stat_bits: u32,
    stat_rows: u32,
    batch: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    _pad3: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> codes: array<u32>;
@group(0) @binding(2) var<storage, read> stats: array<u32>;
#ifdef BILEVEL
@group(0) @binding(3) var<storage, read> second: array<u32>;
#endif
@group(0) @binding(4) var<storage, read> perm: array<u32>;
@group(0) @binding(5) var<storage, read> outliers: array<u32>;
@group(0) @binding(6) var<storage, read> x: array<f32>;
@group(0) @binding(7) var<storage, read_write> y: array<f32>;
@group(0) @binding(8) var<storage, read> rowcodes: array<u32>;
#ifdef MASKED
@group(0) @binding(9) var<storage, read> mask: array<u32>;
#endif

// The n-bit field starting at bit s of w0, continued in w1 when it straddles the word boundary.
fn field(w0: u32, w1: u32, s: u32, n: u32) -> u32 {
    var v = w0 >> s;
    if (s + n > 32u) {
        v |= w1 << (32u - s);
    }
    return v & ((1u << n) - 1u);
}

// The code at position j of a row's stored codes (`bits`-bit codes starting at word `base`).
fn code_at(base: u32, bits: u32, j: u32) -> f32 {
    let at = j * bits;
    let w = base + at / 32u;
    let s = at % 32u;
    var w1 = 0u;
    if (s + bits > 32u) {
        w1 = codes[w + 1u];
    }
    return f32(field(codes[w], w1, s, bits));
}

// A group's statistics as (a, b) with w = a (q - b): affine d q + m is d (q - (-m / d)), but it is
// evaluated as d q + m to match the reference bit for bit, so the affine case returns (d, m) and
// `weight` tells the two apart. `stat0` is the row's first statistics word, `slot` the group's position
// among the row's kept groups (its index g when nothing is pruned).
fn group_stats(row: u32, stat0: u32, slot: u32, g: u32) -> vec2<f32> {
#ifdef BILEVEL
    let groups = params.cols / params.group;
    let base = 2u * ((row / params.stat_rows) * groups + g);
    let a = unpack2x16float(second[base]);
    let b = unpack2x16float(second[base + 1u]);
    let fb = 2u * params.stat_bits;
    let at = g * fb;
    let w = stat0 + at / 32u;
    let s = at % 32u;
    var w1 = 0u;
    if (s + fb > 32u) {
        w1 = stats[w + 1u];
    }
    let f = field(stats[w], w1, s, fb);
    let qs = f32(f & ((1u << params.stat_bits) - 1u));
    let qz = f32(f >> params.stat_bits);
    return vec2<f32>(a.x * (qs - a.y), b.x * (qz - b.y));
#else
    return unpack2x16float(stats[stat0 + slot]);
#endif
}

fn weight(st: vec2<f32>, q: f32) -> f32 {
#ifdef BILEVEL
    return st.x * (q - st.y);
#else
    return st.x * q + st.y;
#endif
}

// The activation of tile row b at input column c (rows past the batch are clamped; their sums are not
// stored).
fn act(b0: u32, b: u32, c: u32) -> f32 {
    return x[min(b0 + b, params.batch - 1u) * params.cols + c];
}

// Adds row `row`'s products for the groups lane, lane + lanes, ... and then its outliers lane,
// lane + lanes, ... to sums.
fn row_sums(row: u32, b0: u32, lane: u32, lanes: u32) -> array<f32, BATCH> {
    var sums: array<f32, BATCH>;
    let groups = params.cols / params.group;
    let base = rowcodes[3u * row];
    let bits = rowcodes[3u * row + 1u];
    let stat0 = rowcodes[3u * row + 2u];
    for (var g = lane; g < groups; g += lanes) {
#ifdef MASKED
        let mw = (groups + 31u) / 32u;
        let word = mask[row * mw + g / 32u];
        let bit = g % 32u;
        if (((word >> bit) & 1u) == 0u) {
            continue;
        }
        var slot = countOneBits(word & ((1u << bit) - 1u));
        for (var i = 0u; i < g / 32u; i++) {
            slot += countOneBits(mask[row * mw + i]);
        }
#else
        let slot = g;
#endif
        let st = group_stats(row, stat0, slot, g);
        for (var t = 0u; t < params.group; t++) {
            let w = weight(st, code_at(base, bits, slot * params.group + t));
            let c = perm[g * params.group + t];
            for (var b = 0u; b < BATCH; b++) {
                sums[b] += w * act(b0, b, c);
            }
        }
    }
    let end = outliers[row + 1u];
    for (var e = outliers[row] + lane; e < end; e += lanes) {
        let word = outliers[e];
        let v = unpack2x16float(word).y;
        let c = perm[word & 0xFFFFu];
        for (var b = 0u; b < BATCH; b++) {
            sums[b] += v * act(b0, b, c);
        }
    }
    return sums;
}

#ifdef ROW_PER_LANE
@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let row = inv.wid.x * WG + inv.lid;
    let b0 = inv.wid.y * BATCH;
    if (row >= params.rows) {
        return;
    }
    let sums = row_sums(row, b0, 0u, 1u);
    for (var b = 0u; b < BATCH; b++) {
        if (b0 + b < params.batch) {
            y[(b0 + b) * params.rows + row] = sums[b];
        }
    }
}
#else
@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let row = inv.wid.x;
    let b0 = inv.wid.y * BATCH;
    if (row >= params.rows) {
        return;
    }
    let sums = row_sums(row, b0, inv.lid, WG);
    for (var b = 0u; b < BATCH; b++) {
        let total = reduce_sum(sums[b], inv);
        if (inv.lid == 0u && b0 + b < params.batch) {
            y[(b0 + b) * params.rows + row] = total;
        }
    }
}
#endif

// wring's group layout (wring_quant::group) as the sparse family's kernels bind it, and its decoding one
// weight at a time. The including kernel binds its activations at binding 6 and its output at binding 7.
// `rowcodes` holds each row's first code word, code width and first statistics word.

// The shaders' Params (wring_kernels_sparse::gmatvec::Params): `batch` is the number of activation rows.
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
@group(0) @binding(8) var<storage, read> rowcodes: array<u32>;
#ifdef MASKED
@group(0) @binding(9) var<storage, read> mask: array<u32>;
#endif

// The n-bit field starting at bit s of w0, continued in w1 when it straddles the word boundary.
fn field(w0: u32, w1: u32, s: u32, n: u32) -> u32 {
    return funnel(w0, w1, s) & ((1u << n) - 1u);
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
    return bilevel_stats(group_second(row, g), stat0, g);
#else
    return unpack2x16float(stats[stat0 + slot]);
#endif
}

#ifdef BILEVEL
// Group g's second-order parameters for row `row`'s block of rows: (ss, sz, zs, zz).
fn group_second(row: u32, g: u32) -> vec4<f32> {
    let base = 2u * ((row / params.stat_rows) * (params.cols / params.group) + g);
    return vec4<f32>(unpack2x16float(second[base]), unpack2x16float(second[base + 1u]));
}

// Group g's (s, z) from its second-order parameters `sec` and the row's quantized scale and zero, read
// with one branch-free funnel shift (a field of 2 x 8 bits at most straddles at most two words).
fn bilevel_stats(sec: vec4<f32>, stat0: u32, g: u32) -> vec2<f32> {
    let at = g * 2u * params.stat_bits;
    let w = stat0 + at / 32u;
    let f = funnel(stats[w], stats[min(w + 1u, arrayLength(&stats) - 1u)], at % 32u);
    let m = (1u << params.stat_bits) - 1u;
    let qs = f32(f & m);
    let qz = f32((f >> params.stat_bits) & m);
    return vec2<f32>(sec.x * (qs - sec.y), sec.z * (qz - sec.w));
}
#endif

// Statistics in the form w = a q + c, evaluated once per group by the decode products (for bilevel
// statistics a = s and c = -s z, so w differs from s (q - z) by a rounding).
fn ac_of(st: vec2<f32>) -> vec2<f32> {
#ifdef BILEVEL
    return vec2<f32>(st.x, -st.x * st.y);
#else
    return st;
#endif
}

// The field of 32 bits starting at bit s (0 to 31) of lo, continued in hi. `(hi << 1) << (31 - s)` is
// `hi << (32 - s)` without a shift by 32 when s is 0.
fn funnel(lo: u32, hi: u32, s: u32) -> u32 {
    return (lo >> s) | ((hi << 1u) << (31u - s));
}

// `bits`-bit codes packed in f, four of them, as f32.
fn split4(f: u32, bits: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(f) >> (vec4<u32>(0u, 1u, 2u, 3u) * bits)) & vec4<u32>((1u << bits) - 1u));
}

// The four codes at bits at, at + bits, at + 2 bits and at + 3 bits of a row's codes (which start at word
// `base`): one funnel shift over the two words that hold all four (4 x 8 bits fit in 32). The second word
// is clamped to the buffer: when the four codes end in the first word it is never used. (A reader that
// keeps the two words between calls and loads each word once measured 1.4-2x slower on lavapipe: its
// refill is a branch that diverges between lanes.)
fn codes4(base: u32, bits: u32, at: u32) -> vec4<f32> {
    let w = base + (at >> 5u);
    let last = arrayLength(&codes) - 1u;
    return split4(funnel(codes[w], codes[min(w + 1u, last)], at & 31u), bits);
}

// The eight codes from bit `at` (the last four are garbage when the row has fewer). When all eight lie
// in one word (2- and 4-bit codes in groups of a multiple of 8 always do) that word alone is loaded;
// otherwise one funnel shift over two words gives the first four, or all eight up to 4 bits, and wider
// codes take a second shift, over a third word when they reach it. Rows of one width in groups of one
// size all take the same branch, so it does not diverge between lanes.
fn codes8(base: u32, bits: u32, at: u32) -> array<vec4<f32>, 2> {
    let w = base + (at >> 5u);
    let s = at & 31u;
    let lo = codes[w];
    var f0 = lo >> s;
    var f1 = f0 >> (4u * bits);
    if (s + 8u * bits > 32u) {
        let last = arrayLength(&codes) - 1u;
        let hi = codes[min(w + 1u, last)];
        f0 = funnel(lo, hi, s);
        f1 = f0 >> (4u * bits);
        if (bits > 4u) {
            let s1 = s + 4u * bits;
            if (s1 >= 32u) {
                f1 = funnel(hi, codes[min(w + 2u, last)], s1 - 32u);
            } else {
                f1 = funnel(lo, hi, s1);
            }
        }
    }
    return array<vec4<f32>, 2>(split4(f0, bits), split4(f1, bits));
}

fn weight(st: vec2<f32>, q: f32) -> f32 {
#ifdef BILEVEL
    return st.x * (q - st.y);
#else
    return st.x * q + st.y;
#endif
}

// The slot of group g of row `row` among the row's kept groups, or 0xFFFFFFFF when the group is pruned:
// the count of mask bits below it (MASKED), or g itself.
fn group_slot(row: u32, g: u32) -> u32 {
#ifdef MASKED
    let mw = (params.cols / params.group + 31u) / 32u;
    let word = mask[row * mw + g / 32u];
    let bit = g % 32u;
    if (((word >> bit) & 1u) == 0u) {
        return 0xFFFFFFFFu;
    }
    var slot = countOneBits(word & ((1u << bit) - 1u));
    for (var i = 0u; i < g / 32u; i++) {
        slot += countOneBits(mask[row * mw + i]);
    }
    return slot;
#else
    return g;
#endif
}

// The dense part's weight at stored column j of row `row` (0 in a pruned group).
fn dense_weight(row: u32, j: u32) -> f32 {
    let g = j / params.group;
    let slot = group_slot(row, g);
    if (slot == 0xFFFFFFFFu) {
        return 0.0;
    }
    let st = group_stats(row, rowcodes[3u * row + 2u], slot, g);
    let q = code_at(rowcodes[3u * row], rowcodes[3u * row + 1u], slot * params.group + j % params.group);
    return weight(st, q);
}

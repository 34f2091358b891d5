// y[b][row] = sum_k W[row][k] * x[b][k] for activation rows already quantized by quantize_q8 (8-bit codes,
// an f32 scale d and s = d * sum(codes) per 32-value unit) and W in Q4_0, Q4_1 or Q8_0 blocks: the decode
// product of llama.cpp's CPU back end, with packed integer dot products (dot4I8Packed) in place of
// dequantized floats. A unit's 32 products are summed exactly in i32, and only then scaled:
//   Q8_0: dw * d * acc;  Q4_0: dw * (d * acc - 8 s);  Q4_1: dw * d * acc + mw * s.
// Its error against the f32-activation qmatvec is the activations' 8-bit rounding (NMSE about 5e-5 on
// unit-scale inputs), stated and tested with the twins.
//
// The `lanes` variants (CPU adapters) give each of 8 invocations ROWS whole rows, as qmatvec's do, so the
// activation unit is loaded once for ROWS rows (and, in the b8 variants, each weight unit once for 8
// activation rows); the `swar` variants do the same for one activation row of 4-bit weights with two
// products per 32-bit multiply (see SWAR below); the GPU variants give a 64-invocation workgroup one row,
// invocations taking its units in turn, then reduce.
//
// RMSNorm between two products in two halves, so that no launch of its own is needed (one activation row,
// lanes and SWAR forms, where a workgroup owns whole 32-row units of the output):
// - RESIDUAL: the product before the norm adds the residual stream res to its output and writes the sum
//   s = res + y, then the next norm's input units: q8 units of s * nw (the norm's weight, not yet its
//   scale) and each unit's sum of squares ss, built by the unit's four lanes through subgroup shuffles.
// - SCALED: the product after it reads those units and applies the norm's scale, 1 / sqrt(sum(ss) / k +
//   eps), to its sums: the scale is one number for the whole row, and every term of a unit's scaled dot
//   product is linear in the unit's d, so scaling the sums equals scaling the units. The units quantize
//   s * nw rather than s * nw * scale; the codes are the same up to a rounding at a half step.
//
// SWIGLU (with or without SCALED): the SwiGLU gate in the gate/up product's epilogue. W is the stacked
// [gate; up] matrix (n = 2 n_ff), a workgroup takes 32 gate rows and the matching 32 up rows, and writes
// the 8-bit units of silu(gate) * up for the down product instead of y: silu_mul's launch folded in.
#import reduce
#import quant
#ifdef UNITS_OUT
#import q8
#endif

struct Params {
    n: u32,
    k: u32,
    batch: u32,
    row_bytes: u32,
    // The norm's epsilon (SCALED; unused otherwise).
    eps: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<vec4<u32>>;
#ifdef RESIDUAL
@group(0) @binding(4) var<storage, read> res: array<f32>;
@group(0) @binding(5) var<storage, read> nw: array<f32>;
@group(0) @binding(6) var<storage, read_write> s: array<f32>;
@group(0) @binding(7) var<storage, read_write> nq: array<u32>;
@group(0) @binding(8) var<storage, read_write> ss: array<f32>;
#else
#ifdef SWIGLU
@group(0) @binding(7) var<storage, read_write> nq: array<u32>;
#else
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
#endif
#endif
#ifdef SCALED
@group(0) @binding(9) var<storage, read> ss_in: array<f32>;
#endif

#ifdef UNITS_OUT
// Output unit u, 8 of whose values (8 part .. 8 part + 7) this lane holds in v, quantized by q8_unit's
// rule (q8_scale, q8_codes), with the three lanes that hold the rest: lanes differing in their two lowest bits,
// which combine the unit's maximum and code sum by butterfly shuffles (so every lane of the subgroup
// calls this, from uniform control flow). Only lanes with `store` write; part 0 writes d and s.
fn store_unit(v: array<f32, 8>, u: u32, part: u32, store: bool) {
    var amax = 0.0;
    for (var i = 0u; i < 8u; i++) {
        amax = max(amax, abs(v[i]));
    }
    amax = max(amax, subgroupShuffleXor(amax, 1u));
    amax = max(amax, subgroupShuffleXor(amax, 2u));
    let d = q8_scale(amax);
    let c0 = q8_codes(vec4<f32>(v[0], v[1], v[2], v[3]), d.y);
    let c1 = q8_codes(vec4<f32>(v[4], v[5], v[6], v[7]), d.y);
    var total = c0.x + c0.y + c0.z + c0.w + c1.x + c1.y + c1.z + c1.w;
    total += subgroupShuffleXor(total, 1u);
    total += subgroupShuffleXor(total, 2u);
    if (store) {
        nq[12u * u + 2u * part] = pack4xI8(c0);
        nq[12u * u + 2u * part + 1u] = pack4xI8(c1);
        if (part == 0u) {
            nq[12u * u + 8u] = bitcast<u32>(d.x);
            nq[12u * u + 9u] = bitcast<u32>(d.x * f32(total));
            nq[12u * u + 10u] = 0u;
            nq[12u * u + 11u] = 0u;
        }
    }
}
#endif

// One weight unit, read once: 8 words of 4 signed bytes (values 0-15 in q[0..3], 16-31 in q[4..7]) and
// the block's scale d and minimum m (Q4_1).
struct WUnit {
    q: array<u32, 8>,
    d: f32,
    m: f32,
}

fn load_unit(bb: u32) -> WUnit {
    var wu: WUnit;
#ifdef FMT_Q8_0
    wu.d = f16_at(bb);
    // d f16, then 32 signed bytes.
    for (var i = 0u; i < 8u; i++) {
        wu.q[i] = u32_at(bb + 2u + 4u * i);
    }
#else
    // Q4_0 (d f16) and Q4_1 (d, m f16): 16 bytes whose low nibbles are values 0-15 and high nibbles values
    // 16-31; masked to bytes, each word's nibbles are 4 non-negative signed bytes.
    let h = unit_head(bb, 0u);
    wu.d = h.d;
    wu.m = h.m;
    for (var i = 0u; i < 4u; i++) {
        let word = u32_at(h.base + 4u * i);
        wu.q[i] = word & 0x0F0F0F0Fu;
        wu.q[i + 4u] = (word >> 4u) & 0x0F0F0F0Fu;
    }
#endif
    return wu;
}

// A weight unit against an activation unit (codes a, b; d and s): the 32 products summed exactly in i32,
// then scaled as the format needs.
fn unit_dot(wu: WUnit, a: vec4<u32>, b: vec4<u32>, ds: vec2<f32>) -> f32 {
    var acc = 0;
    for (var i = 0u; i < 4u; i++) {
        acc += dot4I8Packed(wu.q[i], a[i]);
        acc += dot4I8Packed(wu.q[i + 4u], b[i]);
    }
    return scaled(wu, acc, ds);
}

// A unit's exact integer dot product scaled as the format needs.
fn scaled(wu: WUnit, acc: i32, ds: vec2<f32>) -> f32 {
    return scaled_dm(wu.d, wu.m, acc, ds);
}

// The same from the weight block's scale d and minimum m (Q4_1; unused otherwise).
fn scaled_dm(d: f32, m: f32, acc: i32, ds: vec2<f32>) -> f32 {
#ifdef FMT_Q8_0
    return d * ds.x * f32(acc);
#endif
#ifdef FMT_Q4_0
    return d * (ds.x * f32(acc) - 8.0 * ds.y);
#endif
#ifdef FMT_Q4_1
    return d * ds.x * f32(acc) + m * ds.y;
#endif
}

#ifdef ROW_PER_LANE
#ifdef FMT_Q8_0
// Two consecutive Q8_0 blocks (68 bytes) that start on a word boundary, from 17 aligned words: a lone
// 34-byte block sits at an offset of 2 mod 4 every other unit, where each of its code words would need two
// loads. Whether a block is aligned depends only on the unit index (a row is k / 32 * 34 bytes, a multiple
// of 4 when the unit count is even), which is the same for every invocation, so the choice costs no
// divergence.
fn load_pair(bb: u32) -> array<WUnit, 2> {
    let w0 = bb >> 2u;
    var words: array<u32, 17>;
    for (var i = 0u; i < 17u; i++) {
        words[i] = w[w0 + i];
    }
    var p: array<WUnit, 2>;
    p[0].d = unpack2x16float(words[0] & 0xFFFFu).x;
    for (var i = 0u; i < 8u; i++) {
        p[0].q[i] = (words[i] >> 16u) | (words[i + 1u] << 16u);
    }
    p[1].d = unpack2x16float(words[8] >> 16u).x;
    for (var i = 0u; i < 8u; i++) {
        p[1].q[i] = words[9u + i];
    }
    return p;
}
#endif

#ifdef SWAR
// Two products per 32-bit multiply within one weight row (the SWAR variants, batch 1 on CPU adapters, where
// dot4I8Packed is emulated byte by byte: four extracts, four multiplies and adds per word). A weight word
// masked with 0x000F000F holds two 4-bit values w0 (bits 0-3) and w1 (bits 16-19); the matching activation
// codes are packed as A = a1 + a0 * 65536 (i32). Modulo 2^32 their product is
//   w0 a1 + (w0 a0 + w1 a1) * 65536,
// the w1 a0 * 2^32 term falling off the word: the upper half holds the two-value dot product, the lower
// the cross term w0 a1. Over 8 such products (16 values) the cross sum stays within 8 * 15 * 127 = 15240 and
// the dot within 16 * 15 * 127 = 30480, both inside 16 signed bits, so the dot comes back exactly: the low
// half sign-extended is the cross sum, and what is left, shifted down arithmetically, is the dot. Q8_0's
// signed bytes are offset to w + 128 (0..255) and split into two nibbles, each summed this way; the offset
// is taken back as 128 * sum(a), summed exactly from the same pairs.
//
// The activation unit's 32 codes as 16 pairs: for code word j (values 4j .. 4j + 3),
// p[2j] = a[4j + 2] + a[4j] * 65536 and p[2j + 1] = a[4j + 3] + a[4j + 1] * 65536, the pairs a weight word
// masked at shifts 0 and 8 meets.
fn act_pairs(a: vec4<u32>, b: vec4<u32>) -> array<i32, 16> {
    var p: array<i32, 16>;
    for (var j = 0u; j < 8u; j++) {
        var word: u32;
        if (j < 4u) {
            word = a[j];
        } else {
            word = b[j - 4u];
        }
        let c = bitcast<i32>(word);
        // Byte 2 sign-extended, plus byte 0 sign-extended into the upper half (its lower half zero).
        p[2u * j] = ((c << 8u) >> 24u) + ((c << 24u) >> 8u);
        // Byte 3, plus byte 1 into the upper half.
        p[2u * j + 1u] = (c >> 24u) + (((c >> 8u) << 24u) >> 8u);
    }
    return p;
}

// The dot product held in the upper half of a packed sum (see above).
fn swar_dot(t: i32) -> i32 {
    let cross = (t << 16u) >> 16u;
    return (t - cross) >> 16u;
}

// The weight word's two values at `shift` (bits shift .. shift + 3 of bytes 0 and 2 after the shift).
fn nibble_pair(word: u32, shift: u32) -> i32 {
    return bitcast<i32>((word >> shift) & 0x000F000Fu);
}

// One weight unit (block at byte bb) against the activation pairs: the exact integer dot product, scaled.
// `csum` is the sum of the unit's codes (Q8_0's offset; unused otherwise).
fn swar_unit(bb: u32, p: ptr<function, array<i32, 16>>, csum: i32, ds: vec2<f32>) -> f32 {
#ifdef FMT_Q8_0
    // Words 0-3 and 4-7 summed apart, each 8 products per nibble half within the bound.
    var lo = vec2<i32>(0);
    var hi = vec2<i32>(0);
    for (var i = 0u; i < 8u; i++) {
        let word = u32_at(bb + 2u + 4u * i) ^ 0x80808080u;
        let half = i >> 2u;
        lo[half] += nibble_pair(word, 0u) * (*p)[2u * i] + nibble_pair(word, 8u) * (*p)[2u * i + 1u];
        hi[half] += nibble_pair(word, 4u) * (*p)[2u * i] + nibble_pair(word, 12u) * (*p)[2u * i + 1u];
    }
    let acc = 16 * (swar_dot(hi.x) + swar_dot(hi.y)) + swar_dot(lo.x) + swar_dot(lo.y) - 128 * csum;
    return scaled_dm(f16_at(bb), 0.0, acc, ds);
#else
    // Low nibbles are values 0-15 (code words 0-3), high nibbles values 16-31 (code words 4-7).
    let h = unit_head(bb, 0u);
    let q0 = h.base;
    var lo = 0;
    var hi = 0;
    for (var i = 0u; i < 4u; i++) {
        let word = u32_at(q0 + 4u * i);
        lo += nibble_pair(word, 0u) * (*p)[2u * i] + nibble_pair(word, 8u) * (*p)[2u * i + 1u];
        hi += nibble_pair(word, 4u) * (*p)[2u * i + 8u] + nibble_pair(word, 12u) * (*p)[2u * i + 9u];
    }
    return scaled_dm(h.d, h.m, swar_dot(lo) + swar_dot(hi), ds);
#endif
}

// The sum of a unit's 32 codes from its pairs: the lower halves sum to at most 16 * 127 in magnitude, so
// the packed sum splits as the dot products do.
fn pair_sum(p: ptr<function, array<i32, 16>>) -> i32 {
    var t = 0;
    for (var i = 0u; i < 16u; i++) {
        t += (*p)[i];
    }
    return swar_dot(t) + ((t << 16u) >> 16u);
}
#endif

// A tile's activation unit u: codes and (d, s) for each of its BATCH rows.
struct ActUnit {
    a: array<vec4<u32>, BATCH>,
    b: array<vec4<u32>, BATCH>,
    ds: array<vec2<f32>, BATCH>,
}

fn act_unit(b0: u32, u: u32, units: u32) -> ActUnit {
    var r: ActUnit;
    for (var i = 0u; i < BATCH; i++) {
        // Activation rows past the batch are clamped to the last one; their sums are not stored.
        let at = 3u * (min(b0 + i, params.batch - 1u) * units + u);
        r.a[i] = x[at];
        r.b[i] = x[at + 1u];
        r.ds[i] = bitcast<vec2<f32>>(x[at + 2u].xy);
    }
    return r;
}

#ifdef PAIRS
// Two activation rows' products in one 32-bit multiply (the PAIRS variants, over tiles of 8 rows): an
// 8-bit code pair packed as c0 + c1 * 65536 (i32), times a 4-bit weight w, accumulated over 16
// values of a unit, is S0 + S1 * 65536 with |S0|, |S1| <= 16 * 15 * 127 = 30480 < 32768 and the whole
// within i32, so both sums come back exactly: S0 as the low 16 bits sign-extended, S1 as the rest shifted
// down. Q8_0's 8-bit weights would overflow that bound, so they are split into two 4-bit halves, each
// packed product summed apart. That halves the multiplies of the tile's 8 rows, which bound this product
// on CPU adapters, where the lanes of one invocation hold different rows and no packed dot-product
// instruction applies.
//
// The unit's pairs, once per tile: pc[j][p] packs value j of activation rows 2p and 2p + 1. PV holds the
// tile's BATCH / 2 pairs (vec4<i32> for tiles of 8 rows, vec2<i32> for 4), so a tile of 4 does half the
// multiplies of one of 8: a step of 2-4 decode rows does not pay for 8.
const NP = BATCH / 2u;

fn pair_codes(xu: ActUnit) -> array<PV, 32> {
    var pc: array<PV, 32>;
    for (var word = 0u; word < 4u; word++) {
        for (var byte = 0u; byte < 4u; byte++) {
            let shift = 24u - 8u * byte;
            var lo: PV;
            var hi: PV;
            for (var p = 0u; p < NP; p++) {
                let a0 = bitcast<i32>(xu.a[2u * p][word] << shift) >> 24u;
                let a1 = bitcast<i32>(xu.a[2u * p + 1u][word] << shift) >> 24u;
                lo[p] = a0 + (a1 << 16u);
                let b0 = bitcast<i32>(xu.b[2u * p][word] << shift) >> 24u;
                let b1 = bitcast<i32>(xu.b[2u * p + 1u][word] << shift) >> 24u;
                hi[p] = b0 + (b1 << 16u);
            }
            pc[4u * word + byte] = lo;
            pc[16u + 4u * word + byte] = hi;
        }
    }
    return pc;
}

// The tile's BATCH exact integer dot products with one weight unit: out[0][p] for activation row 2p,
// out[1][p] for row 2p + 1.
fn pair_dots(wu: WUnit, pc: ptr<function, array<PV, 32>>) -> array<PV, 2> {
    var acc0 = PV(0);
    var acc1 = PV(0);
#ifdef FMT_Q8_0
    // 8-bit weights split as w = 16 wh + wl (wl in 0..15, wh in -8..7), each half within the packing's
    // bound (16 * 8 * 127 = 16256 for wh), summed apart and joined after the split.
    var high0 = PV(0);
    var high1 = PV(0);
#endif
    for (var word = 0u; word < 4u; word++) {
        let q0 = wu.q[word];
        let q1 = wu.q[word + 4u];
        for (var byte = 0u; byte < 4u; byte++) {
            let j = 4u * word + byte;
#ifdef FMT_Q8_0
            let w0 = bitcast<i32>(q0 << (24u - 8u * byte)) >> 24u;
            let w1 = bitcast<i32>(q1 << (24u - 8u * byte)) >> 24u;
            acc0 += (w0 & 15) * (*pc)[j];
            acc1 += (w1 & 15) * (*pc)[16u + j];
            high0 += (w0 >> 4u) * (*pc)[j];
            high1 += (w1 >> 4u) * (*pc)[16u + j];
#else
            acc0 += bitcast<i32>((q0 >> (8u * byte)) & 0xFFu) * (*pc)[j];
            acc1 += bitcast<i32>((q1 >> (8u * byte)) & 0xFFu) * (*pc)[16u + j];
#endif
        }
    }
    var out = split_pairs(acc0, acc1);
#ifdef FMT_Q8_0
    let high = split_pairs(high0, high1);
    out[0] += 16 * high[0];
    out[1] += 16 * high[1];
#endif
    return out;
}

// Two packed sums over a unit's halves, each S0 + S1 * 65536, back to (S0 of both, S1 of both).
fn split_pairs(acc0: PV, acc1: PV) -> array<PV, 2> {
    var out: array<PV, 2>;
    for (var p = 0u; p < NP; p++) {
        let lo0 = (acc0[p] << 16u) >> 16u;
        let lo1 = (acc1[p] << 16u) >> 16u;
        out[0][p] = lo0 + lo1;
        out[1][p] = ((acc0[p] - lo0) >> 16u) + ((acc1[p] - lo1) >> 16u);
    }
    return out;
}
#endif

// The grid's y dimension walks tiles of BATCH activation rows (1 for decode, 8 for prefill on CPU
// adapters, where each weight unit is read once for the tile's 8 rows).
@compute @workgroup_size(WG)
fn main(inv: Invocation) {
#ifdef SWIGLU
    // Of the stacked [gate; up] matrix, lanes 0-3 take gate rows 32w .. 32w + 31 (8 each) and lanes 4-7
    // the up rows n / 2 + 32w ..: both halves of the gate's output unit w in one workgroup.
    let row0 = select(0u, params.n / 2u, inv.lid >= 4u) + 32u * col_workgroup(inv) + 8u * (inv.lid % 4u);
#else
    let row0 = (col_workgroup(inv) * WG + inv.lid) * ROWS;
#endif
    let b0 = inv.wid.y * BATCH;
    let units = params.k / 32u;
    var sums: array<array<f32, BATCH>, ROWS>;
#ifdef SWAR
    // Rows inner: the activation unit's pairs are built once for the lane's ROWS rows.
    for (var u = 0u; u < units; u++) {
        let xu = act_unit(b0, u, units);
        var p = act_pairs(xu.a[0], xu.b[0]);
#ifdef FMT_Q8_0
        let csum = pair_sum(&p);
#else
        let csum = 0;
#endif
        for (var r = 0u; r < ROWS; r++) {
            let row = min(row0 + r, params.n - 1u);
            sums[r][0] += swar_unit(row * params.row_bytes + u * BLOCK_BYTES, &p, csum, xu.ds[0]);
        }
    }
#else
#ifdef ROW_OUTER
    // One row at a time, all of its units before the next row: each invocation streams one row through
    // memory at a time, so a workgroup has WG streams in flight rather than WG * ROWS (more than a CPU's
    // prefetchers follow when the weights come from DRAM). The activation units are reloaded per row; they
    // are the same for every invocation and small enough to stay in the nearest cache.
    for (var r = 0u; r < ROWS; r++) {
        let row = min(row0 + r, params.n - 1u);
        var u = 0u;
#ifdef FMT_Q8_0
        if (units % 2u == 0u) {
            for (; u < units; u += 2u) {
                let x0 = act_unit(b0, u, units);
                let x1 = act_unit(b0, u + 1u, units);
                let p = load_pair(row * params.row_bytes + u * BLOCK_BYTES);
                for (var i = 0u; i < BATCH; i++) {
                    sums[r][i] += unit_dot(p[0], x0.a[i], x0.b[i], x0.ds[i]);
                    sums[r][i] += unit_dot(p[1], x1.a[i], x1.b[i], x1.ds[i]);
                }
            }
        }
#endif
        for (; u < units; u++) {
            let xu = act_unit(b0, u, units);
            let wu = load_unit(row * params.row_bytes + u * BLOCK_BYTES);
            for (var i = 0u; i < BATCH; i++) {
                sums[r][i] += unit_dot(wu, xu.a[i], xu.b[i], xu.ds[i]);
            }
        }
    }
#else
#ifdef PAIRS
    for (var u = 0u; u < units; u++) {
        let xu = act_unit(b0, u, units);
        var pc = pair_codes(xu);
        for (var r = 0u; r < ROWS; r++) {
            let row = min(row0 + r, params.n - 1u);
            let wu = load_unit(row * params.row_bytes + u * BLOCK_BYTES);
            let dots = pair_dots(wu, &pc);
            for (var p = 0u; p < NP; p++) {
                sums[r][2u * p] += scaled(wu, dots[0][p], xu.ds[2u * p]);
                sums[r][2u * p + 1u] += scaled(wu, dots[1][p], xu.ds[2u * p + 1u]);
            }
        }
    }
#else
    for (var u = 0u; u < units; u++) {
        let xu = act_unit(b0, u, units);
        for (var r = 0u; r < ROWS; r++) {
            // Rows past the end are clamped to the last one; their sums are not stored.
            let row = min(row0 + r, params.n - 1u);
            let wu = load_unit(row * params.row_bytes + u * BLOCK_BYTES);
            for (var i = 0u; i < BATCH; i++) {
                sums[r][i] += unit_dot(wu, xu.a[i], xu.b[i], xu.ds[i]);
            }
        }
    }
#endif
#endif
#endif
#ifdef RESIDUAL
    // One activation row. Lane l's ROWS = 8 rows are values 8 (l % 4) .. 8 (l % 4) + 7 of the output unit
    // row0 / 32, whose four lanes are neighbours in a subgroup (the planner asks for subgroups of at
    // least 4 lanes): they combine the unit's maximum, code sum and sum of squares by butterfly shuffles.
    // A workgroup barrier and workgroup memory in their place made lavapipe run these products at 0.4x
    // the rate of the plain ones. Rows past the end are clamped onto the last one for the loads; they
    // are neither stored nor part of a unit (n is a whole number of units).
    var v: array<f32, 8>;
    var sq = 0.0;
    for (var i = 0u; i < 8u; i++) {
        let row = min(row0 + i, params.n - 1u);
        let sum = res[row] + sums[i][0];
        if (row0 + i < params.n) {
            s[row] = sum;
        }
        sq += sum * sum;
        v[i] = sum * nw[row];
    }
    sq += subgroupShuffleXor(sq, 1u);
    sq += subgroupShuffleXor(sq, 2u);
    let u = row0 / 32u;
    let part = (row0 / 8u) % 4u;
    let whole = 32u * u < params.n;
    store_unit(v, u, part, whole);
    if (whole && part == 0u) {
        ss[u] = sq;
    }
#else
#ifdef SCALED
    // The norm's scale, from the units' sums of squares in order (every lane the same).
    var total = 0.0;
    for (var u = 0u; u < units; u++) {
        total += ss_in[u];
    }
    let scale = 1.0 / sqrt(total / f32(params.k) + params.eps);
#else
    let scale = 1.0;
#endif
#ifdef SWIGLU
    // One activation row. Lane l < 4 holds gate values 8l .. 8l + 7 of output unit w (the workgroup's
    // index) and lane l + 4 the matching up values: the gate lanes take their partners' sums by shuffle,
    // gate them as silu_mul does, and store the unit.
    var v: array<f32, 8>;
    for (var i = 0u; i < 8u; i++) {
        let g = sums[i][0] * scale;
        let up = subgroupShuffleXor(g, 4u);
        v[i] = g / (1.0 + exp(-g)) * up;
    }
    store_unit(v, col_workgroup(inv), inv.lid % 4u, inv.lid < 4u);
#else
    for (var r = 0u; r < ROWS; r++) {
        for (var i = 0u; i < BATCH; i++) {
            if (row0 + r < params.n && b0 + i < params.batch) {
                y[(b0 + i) * params.n + row0 + r] = sums[r][i] * scale;
            }
        }
    }
#endif
#endif
}
#else
// One workgroup per row and activation row (the grid's y dimension); the model sends batches on GPUs to
// the tiled qmatmul instead.
@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let row = col_workgroup(inv);
    let bi = inv.wid.y;
    if (row >= params.n || bi >= params.batch) {
        return;
    }
    let units = params.k / 32u;
    var sum = 0.0;
    for (var u = inv.lid; u < units; u += WG) {
        let at = 3u * (bi * units + u);
        let ds = bitcast<vec2<f32>>(x[at + 2u].xy);
        sum += unit_dot(load_unit(row * params.row_bytes + u * BLOCK_BYTES), x[at], x[at + 1u], ds);
    }
    let total = reduce_sum(sum, inv);
    if (inv.lid == 0u) {
        y[bi * params.n + row] = total;
    }
}
#endif

// y[b][row] = sum_j W[row][j] x[b][j] for W in wring's group layout (wring_quant::group): `bits`-bit codes
// packed along each row, statistics per (row, group of `group` stored columns), the columns stored in the
// order `perm` (stored column j multiplies x[perm[j]]), and a sparse part of f16 corrections per row.
// Activation rows are taken BATCH at a time (the grid's y dimension), so each weight is decoded once per
// tile of BATCH rows.
//
// Statistics: affine (f16 d and m per (row, group): w = d q + m), or, in the BILEVEL variants, SpQR's
// quantized scale and zero per (row, group) with f16 second-order parameters per block of `stat_rows`
// rows: s = ss (qs - sz), z = zs (qz - zz), w = s (q - z). Either is turned into w = a q + c once per
// group (group.wgsl's ac_of), so a weight costs one multiply-add to rebuild.
//
// Codes: `rowcodes` holds each row's first code word, code width and first statistics word (rows may
// differ in width: MixLLM's mixed precision; and in kept groups), so a row's data is found without summing
// the rows before it. Codes are read four at a time with one funnel shift (group.wgsl's codes4),
// whatever the width, so 3-bit codes that straddle words cost no more than 4-bit ones.
//
// Pruned groups, in the MASKED variants (GQSA's group sparsity, affine statistics): `mask` holds a bit per
// (row, group); only kept groups store codes and statistics, in order, so a kept group's position among
// its row's kept groups (its slot) is the count of mask bits below it.
//
// Outliers: `outliers` starts with rows + 1 offsets; a row's entries hold the stored column in the low 16
// bits and the f16 correction in the high 16. They are added by the same lanes in a second pass over the
// row after the dense part.
#import reduce
#import group

@group(0) @binding(6) var<storage, read> x: array<f32>;
@group(0) @binding(7) var<storage, read_write> y: array<f32>;

// The input columns of stored columns j0 .. j0 + 3 (groups are whole multiples of 4 columns).
fn perm4(j0: u32) -> vec4<u32> {
    return vec4<u32>(perm[j0], perm[j0 + 1u], perm[j0 + 2u], perm[j0 + 3u]);
}

// The activations of tile row b at columns c. Rows past the batch are clamped; their sums are not stored.
fn acts4(b0: u32, b: u32, c: vec4<u32>) -> vec4<f32> {
    let at = min(b0 + b, params.batch - 1u) * params.cols;
    return vec4<f32>(x[at + c.x], x[at + c.y], x[at + c.z], x[at + c.w]);
}

// Adds row `row`'s outliers e0, e0 + step, ... (below its end) to sums.
fn add_outliers(sums: ptr<function, array<f32, BATCH>>, row: u32, b0: u32, e0: u32, step: u32) {
    let end = outliers[row + 1u];
    for (var e = outliers[row] + e0; e < end; e += step) {
        let word = outliers[e];
        let v = unpack2x16float(word).y;
        let at = perm[word & 0xFFFFu];
        for (var b = 0u; b < BATCH; b++) {
            (*sums)[b] += v * x[min(b0 + b, params.batch - 1u) * params.cols + at];
        }
    }
}

#ifdef ROW_PER_LANE
// CPU adapters: each invocation owns ROWS whole rows and walks their groups together, so each chunk of
// four (permuted) activations is gathered once for ROWS rows, as qmatvec's lanes variants share theirs.
@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let row0 = (col_workgroup(inv) * WG + inv.lid) * ROWS;
    let b0 = inv.wid.y * BATCH;
    if (row0 >= params.rows) {
        return;
    }
    let groups = params.cols / params.group;
    // What stays live across a group is kept small (a lane holds all of it for ROWS rows, and on a CPU
    // adapter spilled registers cost loads): each row's next code as an absolute bit position, its
    // statistics as w = a q + c, its sums. Where a row starts is read again from `rowcodes` at each group.
    var bits: array<u32, ROWS>;
    var slot: array<u32, ROWS>;
    var sums: array<array<f32, BATCH>, ROWS>;
    for (var g = 0u; g < groups; g++) {
#ifdef BILEVEL
        // The lane's rows share their blocks of second-order parameters unless a block boundary falls
        // among them: the first row's are loaded once per group, and a row in another block loads its own.
        let second0 = group_second(row0, g);
#endif
        var ac: array<vec2<f32>, ROWS>;
        var pos: array<u32, ROWS>;
        var kept: array<bool, ROWS>;
        for (var r = 0u; r < ROWS; r++) {
            // Rows past the end are clamped to the last one; their sums are not stored.
            let row = min(row0 + r, params.rows - 1u);
#ifdef BITS
            // Every row has the variant's width: a constant, so the decode's shifts and masks are too.
            bits[r] = u32(BITS);
#else
            bits[r] = rowcodes[3u * row + 1u];
#endif
            let stat0 = rowcodes[3u * row + 2u];
#ifdef MASKED
            // Lanes walk a row's groups in order, so a kept group's slot is a running count.
            let mw = (groups + 31u) / 32u;
            kept[r] = ((mask[row * mw + g / 32u] >> (g % 32u)) & 1u) != 0u;
#else
            kept[r] = true;
            slot[r] = g;
#endif
            if (kept[r]) {
#ifdef BILEVEL
                var sec = second0;
                if (row / params.stat_rows != row0 / params.stat_rows) {
                    sec = group_second(row, g);
                }
                ac[r] = ac_of(bilevel_stats(sec, stat0, g));
#else
                ac[r] = ac_of(group_stats(row, stat0, slot[r], g));
#endif
                // Bit positions fit u32: a binding holds at most 2^27 words.
                pos[r] = 32u * rowcodes[3u * row] + slot[r] * params.group * bits[r];
            }
        }
        // Eight columns at a time (a group's last four alone when it is not a multiple of 8).
        for (var t = 0u; t < params.group; t += 8u) {
            let j = g * params.group + t;
            let whole = t + 8u <= params.group;
            let c0 = perm4(j);
            let c1 = perm4(min(j + 4u, params.cols - 4u));
            var x0: array<vec4<f32>, BATCH>;
            var x1: array<vec4<f32>, BATCH>;
            for (var b = 0u; b < BATCH; b++) {
                x0[b] = acts4(b0, b, c0);
                x1[b] = select(vec4<f32>(0.0), acts4(b0, b, c1), whole);
            }
            for (var r = 0u; r < ROWS; r++) {
#ifdef MASKED
                if (!kept[r]) {
                    continue;
                }
#endif
                let q = codes8(0u, bits[r], pos[r]);
                pos[r] += 8u * bits[r];
                let w0 = ac[r].x * q[0] + ac[r].y;
                let w1 = ac[r].x * q[1] + ac[r].y;
                for (var b = 0u; b < BATCH; b++) {
                    sums[r][b] += dot(w0, x0[b]) + dot(w1, x1[b]);
                }
            }
        }
#ifdef MASKED
        for (var r = 0u; r < ROWS; r++) {
            slot[r] += select(0u, 1u, kept[r]);
        }
#endif
    }
    for (var r = 0u; r < ROWS; r++) {
        let row = row0 + r;
        if (row >= params.rows) {
            break;
        }
        var s = sums[r];
        add_outliers(&s, row, b0, 0u, 1u);
        for (var b = 0u; b < BATCH; b++) {
            if (b0 + b < params.batch) {
                y[(b0 + b) * params.rows + row] = s[b];
            }
        }
    }
}
#else
// GPUs: one workgroup per row, its lanes over the row's groups (lane, lane + WG, ...) and then over its
// outliers, reduced.
@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let row = col_workgroup(inv);
    let b0 = inv.wid.y * BATCH;
    if (row >= params.rows) {
        return;
    }
    let groups = params.cols / params.group;
    let base = rowcodes[3u * row];
    let bits = rowcodes[3u * row + 1u];
    let stat0 = rowcodes[3u * row + 2u];
    var sums: array<f32, BATCH>;
    for (var g = inv.lid; g < groups; g += WG) {
        let slot = group_slot(row, g);
        if (slot == 0xFFFFFFFFu) {
            continue;
        }
        let ac = ac_of(group_stats(row, stat0, slot, g));
        let at = slot * params.group * bits;
        for (var t = 0u; t < params.group; t += 4u) {
            let c = perm4(g * params.group + t);
            let w = ac.x * codes4(base, bits, at + t * bits) + ac.y;
            for (var b = 0u; b < BATCH; b++) {
                sums[b] += dot(w, acts4(b0, b, c));
            }
        }
    }
    add_outliers(&sums, row, b0, inv.lid, WG);
    for (var b = 0u; b < BATCH; b++) {
        let total = reduce_sum(sums[b], inv);
        if (inv.lid == 0u && b0 + b < params.batch) {
            y[(b0 + b) * params.rows + row] = total;
        }
    }
}
#endif

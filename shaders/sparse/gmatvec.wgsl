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
#import group

@group(0) @binding(6) var<storage, read> x: array<f32>;
@group(0) @binding(7) var<storage, read_write> y: array<f32>;

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
        let slot = group_slot(row, g);
        if (slot == 0xFFFFFFFFu) {
            continue;
        }
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

// y[b][row] = sum_k W[row][k] * x[b][k] for a weight matrix W kept in its packed GGUF block format (one
// variant per format) and any number of activation rows b, taken BATCH at a time: the grid's y dimension
// walks tiles of BATCH rows (1 for decoding; 8 for batches and prefill, where each weight is dequantized
// once for the tile's 8 rows). The dequantized weights never exist in device memory: each
// invocation dequantizes its units of the row four values at a time, in registers, and multiplies them
// with x.
//
// One workgroup per row. Invocations take the row's units in turn (unit u to invocation u % WG) and the
// workgroup reduces their partial sums, through subgroups or shared memory per variant. Units are 32
// values: a whole block of the legacy formats, one sub-block of a K-quant super-block.
#import reduce
#import quant

struct Params {
    n: u32,
    k: u32,
    batch: u32,
    row_bytes: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;
// Activations are f32, or f16 in the ACT=f16 variants (half the activation bytes; products and sums stay
// in f32).
@group(0) @binding(2) var<storage, read> x: array<vec4<ACT>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

#ifdef ROW_PER_LANE
// Each invocation owns ROWS whole rows and walks all of their units, so every lane reads the same
// activations at the same time and each activation load serves ROWS rows. On CPU adapters activation
// loads, not dequantization, are what this kernel spends most of its time on.
@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let row0 = (col_workgroup(inv) * WG + inv.lid) * ROWS;
    let b0 = inv.wid.y * BATCH;
    let units = params.k / 32u;
    let units_per_block = BLOCK_LEN / 32u;
    let k4 = params.k / 4u;
    var sums: array<array<f32, BATCH>, ROWS>;
    for (var u = 0u; u < units; u++) {
        var heads: array<Head, ROWS>;
        for (var r = 0u; r < ROWS; r++) {
            // Rows past the end are clamped to the last one; their sums are not stored.
            let row = min(row0 + r, params.n - 1u);
            heads[r] = unit_head(row * params.row_bytes + (u / units_per_block) * BLOCK_BYTES, u % units_per_block);
        }
        for (var j = 0u; j < 8u; j++) {
            for (var b = 0u; b < BATCH; b++) {
                let xv = vec4<f32>(x[min(b0 + b, params.batch - 1u) * k4 + u * 8u + j]);
                for (var r = 0u; r < ROWS; r++) {
                    sums[r][b] += dot(quad(heads[r], j), xv);
                }
            }
        }
    }
    for (var r = 0u; r < ROWS; r++) {
        for (var b = 0u; b < BATCH; b++) {
            if (row0 + r < params.n && b0 + b < params.batch) {
                y[(b0 + b) * params.n + row0 + r] = sums[r][b];
            }
        }
    }
}
#else
@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let row = col_workgroup(inv);
    let b0 = inv.wid.y * BATCH;
    if (row >= params.n) {
        return;
    }
    let units = params.k / 32u;
    let units_per_block = BLOCK_LEN / 32u;
    let k4 = params.k / 4u;
    var sums: array<f32, BATCH>;
    for (var u = inv.lid; u < units; u += WG) {
        let h = unit_head(row * params.row_bytes + (u / units_per_block) * BLOCK_BYTES, u % units_per_block);
        for (var j = 0u; j < 8u; j++) {
            let q = quad(h, j);
            for (var b = 0u; b < BATCH; b++) {
                // Activation rows past the batch are clamped to the last one; their sums are not stored.
                sums[b] += dot(q, vec4<f32>(x[min(b0 + b, params.batch - 1u) * k4 + u * 8u + j]));
            }
        }
    }
    for (var b = 0u; b < BATCH; b++) {
        let total = reduce_sum(sums[b], inv);
        if (inv.lid == 0u && b0 + b < params.batch) {
            y[(b0 + b) * params.n + row] = total;
        }
    }
}
#endif

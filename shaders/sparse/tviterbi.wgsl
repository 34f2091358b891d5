// The trellis encoder (wring_quant::trellis::Encoder) on the device: one workgroup per 16 x 16 tile runs
// the tail-biting Viterbi search twice (once on the tile rotated by half, which fixes the L - K bits the
// stream's end shares with its start, then constrained to them) and writes the tile's stream of
// TILE_WORDS words. Values arrive on the encoder's fixed-point grid (i32, 1/256 of a unit) and costs are
// u32 sums of squared differences: exact, so every device finds the twin's path bit for bit.
//
// A step of the search: for each of the 2^(L-K) shared states u, the least cost among the 2^K states
// (u << K) | j (a contiguous run) and its j (4 bits, eight to a word of `trace`, so each lane writes whole
// words and no two lanes share one); then each state s costs best[s & low] plus its squared difference.
// Costs, the step's minima and the traceback live in storage scratch (2^L + 2^(L-K) words and
// 256 * 2^(L-K) / 8 words per tile); storage barriers order the lanes' steps.
#import invocation

struct Params {
    // Bits of each state (QTIP's L).
    state: u32,
    tiles: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<i32>;
@group(0) @binding(2) var<storage, read_write> cost: array<u32>;
@group(0) @binding(3) var<storage, read_write> best: array<u32>;
@group(0) @binding(4) var<storage, read_write> trace: array<u32>;
@group(0) @binding(5) var<storage, read_write> stream: array<u32>;

const SEQ: u32 = 256u;
const TILE_WORDS: u32 = 8u * BITS;
const EXCLUDED: u32 = 0xFFFFFFFFu;

var<workgroup> path: array<u32, 256>;
var<workgroup> red_cost: array<u32, WG>;
var<workgroup> red_state: array<u32, WG>;
var<workgroup> overlap: u32;

// QTIP's 3INST code of a state, on the encoder's grid (round: ties to even, as the twin's).
fn code_fixed(s: u32) -> i32 {
    let h = ((s * 89226354u + 64248484u) & 0x8FFF8FFFu) ^ 0x3B603B60u;
    let v = unpack2x16float(h);
    return i32(round((v.x + v.y) * 256.0));
}

fn sq(d: i32) -> u32 {
    return u32(d * d);
}

// One pass over the tile's values (rotated by half when `rolled`), constrained to `ov` unless it is
// EXCLUDED; leaves the path in `path`.
fn search(lid: u32, tile: u32, rolled: bool, ov: u32) {
    let l = params.state;
    let n = 1u << l;
    let shared_n = 1u << (l - BITS);
    let low = shared_n - 1u;
    let c0 = tile * n;
    let b0 = tile * shared_n;
    let f0 = tile * SEQ * (shared_n / 8u);
    let x0 = tile * SEQ;
    let shift = select(0u, SEQ / 2u, rolled);
    let first = x[x0 + shift % SEQ];
    for (var s = lid; s < n; s += WG) {
        var c = sq(first - code_fixed(s));
        if (ov != EXCLUDED && (s & low) != ov) {
            c = EXCLUDED;
        }
        cost[c0 + s] = c;
    }
    storageBarrier();
    for (var p = 1u; p < SEQ; p++) {
        for (var w = lid; w < shared_n / 8u; w += WG) {
            var word = 0u;
            for (var e = 0u; e < 8u; e++) {
                let u = 8u * w + e;
                var m = cost[c0 + (u << BITS)];
                var arg = 0u;
                for (var j = 1u; j < (1u << BITS); j++) {
                    let c = cost[c0 + ((u << BITS) | j)];
                    if (c < m) {
                        m = c;
                        arg = j;
                    }
                }
                best[b0 + u] = m;
                word |= arg << (4u * e);
            }
            trace[f0 + p * (shared_n / 8u) + w] = word;
        }
        storageBarrier();
        let xp = x[x0 + (p + shift) % SEQ];
        for (var s = lid; s < n; s += WG) {
            let b = best[b0 + (s & low)];
            var c = EXCLUDED;
            if (b != EXCLUDED) {
                c = b + sq(xp - code_fixed(s));
            }
            cost[c0 + s] = c;
        }
        storageBarrier();
    }
    // The least final cost (the lowest state among equals), the last state sharing its high L - K bits
    // with `ov` when constrained.
    var mc = EXCLUDED;
    var ms = 0xFFFFFFFFu;
    for (var s = lid; s < n; s += WG) {
        let c = cost[c0 + s];
        if ((ov == EXCLUDED || (s >> BITS) == ov) && c < mc) {
            mc = c;
            ms = s;
        }
    }
    red_cost[lid] = mc;
    red_state[lid] = ms;
    workgroupBarrier();
    for (var span = WG / 2u; span > 0u; span /= 2u) {
        if (lid < span) {
            let oc = red_cost[lid + span];
            let os = red_state[lid + span];
            if (oc < red_cost[lid] || (oc == red_cost[lid] && os < red_state[lid])) {
                red_cost[lid] = oc;
                red_state[lid] = os;
            }
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        // Every final state excluded cannot happen (each start reaches every state in L / K steps);
        // state 0 keeps the walk in range regardless.
        var s = select(red_state[0], 0u, red_state[0] == 0xFFFFFFFFu);
        path[SEQ - 1u] = s;
        for (var p = SEQ - 1u; p > 0u; p--) {
            let u = s & low;
            let j = (trace[f0 + p * (shared_n / 8u) + u / 8u] >> (4u * (u % 8u))) & 0xFu;
            s = (u << BITS) | j;
            path[p - 1u] = s;
        }
    }
    workgroupBarrier();
}

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let tile = inv.wid.x;
    if (tile >= params.tiles) {
        return;
    }
    let low = (1u << (params.state - BITS)) - 1u;
    search(inv.lid, tile, true, EXCLUDED);
    if (inv.lid == 0u) {
        overlap = path[SEQ / 2u] & low;
    }
    workgroupBarrier();
    let ov = workgroupUniformLoad(&overlap);
    search(inv.lid, tile, false, ov);
    // Each state's low K bits are its symbol; lane w writes word w of the stream.
    for (var w = inv.lid; w < TILE_WORDS; w += WG) {
        var word = 0u;
        // Every symbol that overlaps the word (3-bit symbols may straddle two).
        for (var p = (32u * w) / BITS; p < SEQ && p * BITS < 32u * (w + 1u); p++) {
            let sym = path[p] & ((1u << BITS) - 1u);
            let at = i32(p * BITS) - i32(32u * w);
            if (at >= 0) {
                word |= sym << u32(at);
            } else {
                word |= sym >> u32(-at);
            }
        }
        stream[tile * TILE_WORDS + w] = word;
    }
}

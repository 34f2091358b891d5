// Causal grouped-query attention over a paged KV cache (vLLM's PagedAttention), in one launch with an
// online softmax, for a step that holds rows of several sequences (continuous batching). The cache is a
// pool of blocks of 2^block_shift positions, [slot][kv head][head_dim] with slot = block x size + offset;
// each sequence's positions live in the blocks its block table lists, so position j of a sequence whose
// table starts at `table[toff]` is slot (table[toff + j >> shift] << shift) | (j & (size - 1)).
//
// Query rows are (token, query head) pairs; within one key/value head hk, row u = token x group + head in
// the group. The host cuts each sequence's rows into tiles of at most QR rows (`tiles`: first row, rows),
// so that a tile never spans two sequences and its rows share every key and value load; `seqs` gives each
// token its table's offset and its position (it sees positions 0..=position of its own sequence). One
// workgroup per (tile, key/value head).
//
// TILED (CPU adapters, as attn_fused's tiled form, whose comment has the measurements): the WG = 8 lanes
// are one subgroup; each lane scores one key of a block of 8 against the tile's rows, the block's maxima
// and sums come from subgroup operations, and each lane accumulates HD / WG output columns of every row,
// taking each key's probability (and its slot) from its lane by a shuffle. A block of 8 keys never crosses
// a cache block (blocks are at least 8 positions), but the lanes look their slots up independently anyway.
// Otherwise each lane owns one row of the tile and walks its keys alone (attn_fused's per-row form).
//
// F16POOL: the pool holds f16 pairs (one u32 per two channels; four channels are a vec2<u32>), decoded to
// f32 as they are loaded. Otherwise f32, except KIVI.
//
// KIVI (BITS-bit codes as KIVI lays them out, read where they lie: no f32 copy of the cache): a block's
// keys are quantized per channel over its positions (codes [position][kv x BITS / 32 words], CPW channels
// a word, then one f16 (scale, minimum) pair per channel), its values per (position, head) (each slot's
// codes, then one pair per head); a value is dequantized in registers as it is loaded. A sequence's newest
// positions are also in f16 tails (`tk`, `tv`: a ring of two blocks per running sequence, position p at
// ring slot p mod 2 x size, kv_paged_store's F16POOL layout), and kv_paged_seal quantizes a block when it
// is full. `kivi` gives each token its sequence's first ring slot and the first position it reads from the
// ring (that of its last full block, or the first it computed itself if later: a prefix taken from the
// cache is in the pool only); such a position's slot carries TAIL, so that a key's slot says where it
// lies. The newest 32 to 63 positions are thus read at full precision, as the contiguous cache's window.
//
// Scores go through `score` (the scale, and Gemma 2's soft-capping where asked), and a sliding-window
// layer's query sees only its last `window` positions, as in attn_fused: the row form starts its walk
// there, the tiled form starts at the block of its first row's first key and gives each row's earlier
// keys a probability of exactly 0.
#import invocation
#import score
#ifdef KIVI
#import f16
#import kvquant
#endif

struct Params {
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    block_shift: u32,
    tiles: u32,
    tokens: u32,
    scale: f32,
    softcap: f32,
    window: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
#ifdef KIVI
@group(0) @binding(2) var<storage, read> k: array<u32>;
@group(0) @binding(3) var<storage, read> v: array<u32>;
#else
#ifdef F16POOL
@group(0) @binding(2) var<storage, read> k: array<vec2<u32>>;
@group(0) @binding(3) var<storage, read> v: array<vec2<u32>>;
#else
@group(0) @binding(2) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<f32>>;
#endif
#endif
@group(0) @binding(4) var<storage, read> table: array<u32>;
@group(0) @binding(5) var<storage, read> seqs: array<vec2<u32>>;
@group(0) @binding(6) var<storage, read> tiles: array<vec2<u32>>;
@group(0) @binding(7) var<storage, read_write> o: array<vec4<f32>>;
#ifdef KIVI
@group(0) @binding(8) var<storage, read> tk: array<vec2<u32>>;
@group(0) @binding(9) var<storage, read> tv: array<vec2<u32>>;
@group(0) @binding(10) var<storage, read> kivi: array<vec2<u32>>;
#endif

// Marks a slot in the tails (KIVI); slots in the pool stay below it (their words are indexed in u32).
const TAIL: u32 = 0x80000000u;

const NEG_MAX_F32: f32 = -3.40282347e+38;

// The vec4 of channels 4i..4i+3 of key/value head hk at `slot` of a [slot][kv head][head_dim] array of
// vec4s (an f32 pool, or an f16 pool's or ring's vec2<u32> pairs).
fn vec4_at(slot: u32, hk: u32, i: u32) -> u32 {
    let d4 = params.head_dim / 4u;
    return (slot * params.n_kv_heads + hk) * d4 + i;
}

#ifdef KIVI
fn widen(w: vec2<u32>) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
}

// The four codes of vec4 `c` of a position's channels, from the word holding them.
fn codes4(word: u32, c: u32) -> vec4<f32> {
    let chunk = word >> ((c % (8u / BITS)) * 4u * BITS);
    return vec4<f32>(
        f32(chunk & MASK),
        f32((chunk >> BITS) & MASK),
        f32((chunk >> (2u * BITS)) & MASK),
        f32((chunk >> (3u * BITS)) & MASK),
    );
}

// Channels 4i..4i+3 of key head hk at `slot`: from the tail, or from the slot's block, whose codes
// ([position][words]) precede one (scale, minimum) word per channel.
fn load_k(slot: u32, hk: u32, i: u32) -> vec4<f32> {
    let d4 = params.head_dim / 4u;
    let c = hk * d4 + i;
    if (slot >= TAIL) {
        return widen(tk[vec4_at(slot - TAIL, hk, i)]);
    }
    let kv = 4u * params.n_kv_heads * d4;
    let words = kv / CPW;
    let size = 1u << params.block_shift;
    let base = (slot >> params.block_shift) * (size * words + kv);
    let codes = codes4(k[base + (slot & (size - 1u)) * words + c * BITS / 8u], c);
    let st = base + size * words + 4u * c;
    let s0 = unpack2x16float(k[st]);
    let s1 = unpack2x16float(k[st + 1u]);
    let s2 = unpack2x16float(k[st + 2u]);
    let s3 = unpack2x16float(k[st + 3u]);
    return vec4<f32>(s0.y, s1.y, s2.y, s3.y) + vec4<f32>(s0.x, s1.x, s2.x, s3.x) * codes;
}

// Channels 4i..4i+3 of value head hk at `slot`: from the tail, or from the slot's codes and its head's
// (scale, minimum).
fn load_v(slot: u32, hk: u32, i: u32) -> vec4<f32> {
    let d4 = params.head_dim / 4u;
    let c = hk * d4 + i;
    if (slot >= TAIL) {
        return widen(tv[vec4_at(slot - TAIL, hk, i)]);
    }
    let words = 4u * params.n_kv_heads * d4 / CPW;
    let base = slot * (words + params.n_kv_heads);
    let s = unpack2x16float(v[base + words + hk]);
    return s.y + s.x * codes4(v[base + c * BITS / 8u], c);
}
#else
#ifdef F16POOL
fn widen(w: vec2<u32>) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
}

fn load_k(slot: u32, hk: u32, i: u32) -> vec4<f32> {
    return widen(k[vec4_at(slot, hk, i)]);
}

fn load_v(slot: u32, hk: u32, i: u32) -> vec4<f32> {
    return widen(v[vec4_at(slot, hk, i)]);
}
#else
fn load_k(slot: u32, hk: u32, i: u32) -> vec4<f32> {
    return k[vec4_at(slot, hk, i)];
}

fn load_v(slot: u32, hk: u32, i: u32) -> vec4<f32> {
    return v[vec4_at(slot, hk, i)];
}
#endif
#endif

// Token t's sequence's tail: its first ring slot and the first position read from the ring (KIVI);
// elsewhere no position is in a tail.
fn tail_of(t: u32) -> vec2<u32> {
#ifdef KIVI
    return kivi[t];
#else
    return vec2<u32>(0u, 0xFFFFFFFFu);
#endif
}

// The slot of position j of the sequence whose block table starts at toff and whose tail is `tail`.
fn slot_of(toff: u32, tail: vec2<u32>, j: u32) -> u32 {
    if (j >= tail.y) {
        return TAIL | (tail.x + (j & ((2u << params.block_shift) - 1u)));
    }
    let size_mask = (1u << params.block_shift) - 1u;
    return (table[toff + (j >> params.block_shift)] << params.block_shift) | (j & size_mask);
}

// The workgroup's key/value head and its tile (first row, rows). A head past the last marks a workgroup
// of a grid that spilled into y beyond the last tile, which leaves at once.
fn workgroup_tile(inv: Invocation) -> vec3<u32> {
    let wg = linear_workgroup(inv);
    return vec3<u32>(wg / params.tiles, tiles[wg % params.tiles]);
}

#ifdef TILED
// Output columns (vec4) each lane owns per row: lane i holds columns i, i + WG, ...
const C: u32 = HD / (4u * WG);
const D4: u32 = HD / 4u;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let group = params.n_heads / params.n_kv_heads;
    let wt = workgroup_tile(inv);
    let hk = wt.x;
    // Workgroups past the last tile leave together, before any subgroup operation.
    if (hk >= params.n_kv_heads) {
        return;
    }
    let u0 = wt.y;
    let n = wt.z;
    let lane = inv.sg_lane;
    let toff = seqs[u0 / group].x;
    let tail = tail_of(u0 / group);
    // Rows past the tile's last are clamped onto it, so every load stays in bounds; they are not stored.
    var qbase: array<u32, QR>;
    var first: array<u32, QR>;
    var limit: array<u32, QR>;
    var m: array<f32, QR>;
    var l: array<f32, QR>;
    var acc: array<vec4<f32>, QR * C>;
#ifdef KIVI
    // A pool block's key is min_c + scale_c x code_c per channel c, so q . k = sum_c q_c min_c +
    // sum_c (q_c scale_c) code_c: per block, each row's query scaled channel by channel (qd) and its dot
    // with the minima (qm), after which a key costs its codes' dot with qd alone, with no statistics to
    // load and widen per key (load_k's way, which the ring's f16 keys and the row-per-lane form keep).
    // The WG keys of a step lie in one block (blocks are at least WG positions and aligned, and a key
    // clamped past `seen` falls in the same WG-aligned group), so qd changes every size / WG steps.
    var qd: array<vec4<f32>, QR * D4>;
    var qm: array<f32, QR>;
    var held = TAIL;
#endif
    for (var r = 0u; r < QR; r++) {
        let u = u0 + min(r, n - 1u);
        let t = u / group;
        qbase[r] = (t * params.n_heads + hk * group + u % group) * D4;
        limit[r] = seqs[t].y + 1u;
        first[r] = window_start(seqs[t].y);
        m[r] = NEG_MAX_F32;
        l[r] = 0.0;
        for (var c = 0u; c < C; c++) {
            acc[r * C + c] = vec4<f32>(0.0);
        }
    }
    // The tile's rows are in token order, so the last sees the most keys.
    let seen = limit[QR - 1u];
    for (var j0 = first[0] / WG * WG; j0 < seen; j0 += WG) {
        let j = j0 + lane;
        // Keys past `seen` are clamped for the load and masked below.
        let slot = slot_of(toff, tail, min(j, seen - 1u));
        var s: array<f32, QR>;
        for (var r = 0u; r < QR; r++) {
            s[r] = 0.0;
        }
#ifdef KIVI
        if (slot < TAIL) {
            let size = 1u << params.block_shift;
            let kv = params.n_kv_heads * HD;
            let words = kv / CPW;
            let blk = slot >> params.block_shift;
            let base = blk * (size * words + kv);
            if (blk != held) {
                held = blk;
                for (var r = 0u; r < QR; r++) {
                    qm[r] = 0.0;
                }
                for (var i = 0u; i < D4; i++) {
                    let st = base + size * words + 4u * (hk * D4 + i);
                    let s0 = unpack2x16float(k[st]);
                    let s1 = unpack2x16float(k[st + 1u]);
                    let s2 = unpack2x16float(k[st + 2u]);
                    let s3 = unpack2x16float(k[st + 3u]);
                    let d = vec4<f32>(s0.x, s1.x, s2.x, s3.x);
                    let mn = vec4<f32>(s0.y, s1.y, s2.y, s3.y);
                    for (var r = 0u; r < QR; r++) {
                        let qv = q[qbase[r] + i];
                        qd[r * D4 + i] = qv * d;
                        qm[r] += dot(qv, mn);
                    }
                }
            }
            let at = base + (slot & (size - 1u)) * words;
            for (var i = 0u; i < D4; i++) {
                let c = hk * D4 + i;
                let codes = codes4(k[at + c * BITS / 8u], c);
                for (var r = 0u; r < QR; r++) {
                    s[r] += dot(qd[r * D4 + i], codes);
                }
            }
            for (var r = 0u; r < QR; r++) {
                s[r] += qm[r];
            }
        } else {
            for (var i = 0u; i < D4; i++) {
                let kv = load_k(slot, hk, i);
                for (var r = 0u; r < QR; r++) {
                    s[r] += dot(q[qbase[r] + i], kv);
                }
            }
        }
#else
        for (var i = 0u; i < D4; i++) {
            let kv = load_k(slot, hk, i);
            for (var r = 0u; r < QR; r++) {
                s[r] += dot(q[qbase[r] + i], kv);
            }
        }
#endif
        // A masked key's probability is set to 0 outright: with a window, a row may see no key of a
        // block, and its maximum may still be NEG_MAX there.
        var p: array<f32, QR>;
        for (var r = 0u; r < QR; r++) {
            let seen_r = j < limit[r] && j >= first[r];
            let sr = select(NEG_MAX_F32, score(s[r]), seen_r);
            let mx = max(m[r], subgroupMax(sr));
            p[r] = select(0.0, exp(sr - mx), seen_r);
            let corr = exp(m[r] - mx);
            m[r] = mx;
            l[r] = l[r] * corr + subgroupAdd(p[r]);
            for (var c = 0u; c < C; c++) {
                acc[r * C + c] *= corr;
            }
        }
        for (var jj = 0u; jj < WG; jj++) {
            // A masked key's probability is 0, so its clamped value row adds nothing.
            let vslot = subgroupShuffle(slot, jj);
            for (var c = 0u; c < C; c++) {
                let vv = load_v(vslot, hk, lane + c * WG);
                for (var r = 0u; r < QR; r++) {
                    acc[r * C + c] += subgroupShuffle(p[r], jj) * vv;
                }
            }
        }
    }
    for (var r = 0u; r < QR; r++) {
        if (r < n) {
            for (var c = 0u; c < C; c++) {
                o[qbase[r] + lane + c * WG] = acc[r * C + c] / l[r];
            }
        }
    }
}
#else
const MAX_D4: u32 = 32u;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let group = params.n_heads / params.n_kv_heads;
    let wt = workgroup_tile(inv);
    let hk = wt.x;
    // Lane r owns row r of the tile; there are no barriers, so lanes past the tile leave at once.
    if (hk >= params.n_kv_heads || inv.lid >= wt.z) {
        return;
    }
    let u = wt.y + inv.lid;
    let t = u / group;
    let th = t * params.n_heads + hk * group + u % group;
    let d4 = params.head_dim / 4u;
    let toff = seqs[t].x;
    let tail = tail_of(t);
    var qv: array<vec4<f32>, MAX_D4>;
    var acc: array<vec4<f32>, MAX_D4>;
    for (var i = 0u; i < d4; i++) {
        qv[i] = q[th * d4 + i];
        acc[i] = vec4<f32>(0.0);
    }
    var m = NEG_MAX_F32;
    var l = 0.0;
    let seen = seqs[t].y + 1u;
    for (var j = window_start(seqs[t].y); j < seen; j++) {
        let slot = slot_of(toff, tail, j);
        var dp = 0.0;
        for (var i = 0u; i < d4; i++) {
            dp += dot(qv[i], load_k(slot, hk, i));
        }
        let s = score(dp);
        // The first key sets m (exp(NEG_MAX - s) is exactly 0, so the empty accumulator stays 0).
        let m_new = max(m, s);
        let c = exp(m - m_new);
        let p = exp(s - m_new);
        l = l * c + p;
        for (var i = 0u; i < d4; i++) {
            acc[i] = acc[i] * c + p * load_v(slot, hk, i);
        }
        m = m_new;
    }
    // Every query sees at least its own key, so l >= 1.
    for (var i = 0u; i < d4; i++) {
        o[th * d4 + i] = acc[i] / l;
    }
}
#endif

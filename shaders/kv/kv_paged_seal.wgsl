// Seals full blocks of the paged KIVI cache (BITS-bit codes, KIVI's layout): each job is a block whose last
// position this step computes. Its keys are quantized per channel over the block's positions (KIVI's
// per-channel key groups, which need every position of the group, hence the f16 tail until the block is
// full), its values per (position, head), each slot's codes then one pair per head. A job is (block, the
// ring slot of its first position in the sequence's f16 tail, the positions staged there by earlier
// steps, the step's token holding the first position after them): position o of the block comes from
// ring slot ring + o when o < staged, else from the step's token first + o - staged, rounded to f16, so
// that a block's codes are the same however its positions were split between steps. The ring's old
// contents are read here before kv_paged_store writes the step's positions over them (the model runs
// this launch first).
//
// Key block layout (u32 words): codes [position][kv / CPW] (CPW = 32 / BITS channels a word, the first in
// the low bits), then one f16 (scale, minimum) pair per channel. One invocation per (job, CPW key
// channels) quantizes a word column, and one per (job, position, head) a value group.
#import invocation
#import f16
#import kvquant

struct Params {
    kv: u32,
    head_dim: u32,
    block_shift: u32,
    jobs: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read> tk: array<u32>;
@group(0) @binding(4) var<storage, read> tv: array<u32>;
@group(0) @binding(5) var<storage, read> jobs: array<vec4<u32>>;
@group(0) @binding(6) var<storage, read_write> kp: array<u32>;
@group(0) @binding(7) var<storage, read_write> vp: array<u32>;

// Channel c of position o of the job's block, keys (side 0) or values, as f16 stores it.
fn source(side: u32, job: vec4<u32>, o: u32, c: u32) -> f32 {
    if (o < job.z) {
        let at = (job.y + o) * params.kv + c;
        var word: u32;
        if (side == 0u) {
            word = tk[at / 2u];
        } else {
            word = tv[at / 2u];
        }
        return unpack2x16float(word)[at % 2u];
    }
    let at = (job.w + o - job.z) * params.kv + c;
    var x: f32;
    if (side == 0u) {
        x = k[at];
    } else {
        x = v[at];
    }
    return f16_round(clamp(x, -F16_MAX, F16_MAX));
}

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let i = linear_workgroup(inv) * WG + inv.lid;
    let size = 1u << params.block_shift;
    let words = params.kv / CPW;
    let heads = params.kv / params.head_dim;
    let per_job = words + size * heads;
    if (i >= params.jobs * per_job) {
        return;
    }
    let job = jobs[i / per_job];
    let r = i % per_job;
    if (r < words) {
        // Key channels CPW r .. CPW r + CPW - 1 over the block's positions (at most 16, at 2 bits).
        var mn: array<f32, 16>;
        var mx: array<f32, 16>;
        for (var ch = 0u; ch < CPW; ch++) {
            mn[ch] = F16_MAX;
            mx[ch] = -F16_MAX;
        }
        for (var o = 0u; o < size; o++) {
            for (var ch = 0u; ch < CPW; ch++) {
                let x = source(0u, job, o, CPW * r + ch);
                mn[ch] = min(mn[ch], x);
                mx[ch] = max(mx[ch], x);
            }
        }
        let base = job.x * (size * words + params.kv);
        var st: array<vec2<f32>, 16>;
        for (var ch = 0u; ch < CPW; ch++) {
            st[ch] = stat_of(mn[ch], mx[ch]);
            kp[base + size * words + CPW * r + ch] = pack2x16float(st[ch]);
        }
        for (var o = 0u; o < size; o++) {
            var word = 0u;
            for (var ch = 0u; ch < CPW; ch++) {
                word |= code_of(source(0u, job, o, CPW * r + ch), st[ch]) << (BITS * ch);
            }
            kp[base + o * words + r] = word;
        }
        return;
    }
    // Value group: head h of position o, at its slot as the code pools lay a slot out.
    let g = r - words;
    let o = g / heads;
    let h = g % heads;
    var lo = F16_MAX;
    var hi = -F16_MAX;
    for (var c = 0u; c < params.head_dim; c++) {
        let x = source(1u, job, o, h * params.head_dim + c);
        lo = min(lo, x);
        hi = max(hi, x);
    }
    let s = stat_of(lo, hi);
    let base = ((job.x << params.block_shift) + o) * (words + heads);
    for (var w = 0u; w < params.head_dim / CPW; w++) {
        var word = 0u;
        for (var ch = 0u; ch < CPW; ch++) {
            word |= code_of(source(1u, job, o, h * params.head_dim + CPW * w + ch), s) << (BITS * ch);
        }
        vp[base + h * params.head_dim / CPW + w] = word;
    }
    vp[base + words + h] = pack2x16float(s);
}

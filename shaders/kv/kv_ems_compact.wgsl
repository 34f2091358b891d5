// EMS's evict-then-merge (Li et al., 2024) of one layer's f32 cache back to `budget` slots per key/value
// head, after a step left `n` > budget. The last `window` slots are kept as they are; of the older ones
// the `budget - window` best scored are kept as class centers, the next tier (half of the rest, rounded
// up) is merged into the center whose key is most similar (cosine), and the rest go to the zero class and
// are dropped. A merge is attention-weighted: keys are normalized first, the center's key becomes its
// norm times the direction of the weighted sum of the normalized keys (key norms are kept), its value
// the weighted mean of the values, and the merged slots' accumulated attention is added to the center's.
// The kept slots then move down in order (slot order stays chronological). One workgroup per key/value
// head; every phase writes only that head's channels and state.
#import invocation
#import ems
#import radix

@group(0) @binding(0) var<uniform> params: EmsParams;
@group(0) @binding(1) var<storage, read_write> k: array<f32>;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> state: array<u32>;

var<private> head: u32;

fn f32_at(off: u32, j: u32) -> f32 {
    return bitcast<f32>(state[off + head * params.capacity + j]);
}

fn score_of(j: u32) -> f32 {
    return ems_score(f32_at(params.acc, j), f32_at(params.seen, j), f32_at(params.obs, j));
}

fn radix_key(j: u32) -> u32 {
    return ems_key(score_of(j), j);
}

fn row(j: u32) -> u32 {
    return (j * params.n_kv_heads + head) * params.head_dim;
}

fn norm_of(j: u32) -> f32 {
    var s = 0.0;
    for (var d = 0u; d < params.head_dim; d++) {
        let x = k[row(j) + d];
        s += x * x;
    }
    return sqrt(s);
}

// Weights of a merge: the score, kept positive so that a group of unattended slots still averages.
fn weight_of(j: u32) -> f32 {
    return score_of(j) + 1e-6;
}

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    head = linear_workgroup(inv);
    if (head >= params.n_kv_heads) {
        return;
    }
    let n = params.n;
    let n_old = n - params.window;
    let kept = params.budget - params.window;
    let merged = (n - params.budget + 1u) / 2u;
    let base = head * params.capacity;
    let hi = radix_select(n_old, kept, inv);
    let lo = radix_select(n_old, kept + merged, inv);
    // Classes, in slot order by one invocation (a prefix count; n is at most a few thousand).
    if (inv.lid == 0u) {
        var next = 0u;
        var centers = 0u;
        var merges = 0u;
        for (var j = 0u; j < n; j++) {
            var dest = ZERO_CLASS;
            if (j >= n_old) {
                dest = next;
                next++;
            } else {
                let key = radix_key(j);
                if (key >= hi) {
                    dest = next;
                    next++;
                    state[params.centers + base + centers] = j;
                    centers++;
                } else if (key >= lo) {
                    state[params.merges + base + merges] = j;
                    merges++;
                }
            }
            state[params.dest + base + j] = dest;
        }
    }
    storageBarrier();
    workgroupBarrier();
    // Each slot to merge finds its center: the largest cosine, the first center on a tie.
    for (var i = inv.lid; i < merged; i += WG) {
        let j = state[params.merges + base + i];
        let nj = max(norm_of(j), 1e-30);
        var best = 0u;
        var best_cos = -2.0;
        for (var m = 0u; m < kept; m++) {
            let c = state[params.centers + base + m];
            var dot = 0.0;
            for (var d = 0u; d < params.head_dim; d++) {
                dot += k[row(j) + d] * k[row(c) + d];
            }
            let cs = dot / (nj * max(norm_of(c), 1e-30));
            if (cs > best_cos) {
                best_cos = cs;
                best = m;
            }
        }
        state[params.route + base + i] = best;
    }
    storageBarrier();
    workgroupBarrier();
    // Each center takes in what was routed to it.
    for (var m = inv.lid; m < kept; m += WG) {
        let c = state[params.centers + base + m];
        let nc = norm_of(c);
        let wc = weight_of(c);
        var dir: array<f32, MAX_DIM>;
        var val: array<f32, MAX_DIM>;
        for (var d = 0u; d < params.head_dim; d++) {
            dir[d] = wc * k[row(c) + d] / max(nc, 1e-30);
            val[d] = wc * v[row(c) + d];
        }
        var wsum = wc;
        var acc = f32_at(params.acc, c);
        var took = false;
        for (var i = 0u; i < merged; i++) {
            if (state[params.route + base + i] != m) {
                continue;
            }
            let j = state[params.merges + base + i];
            let wj = weight_of(j);
            let nj = max(norm_of(j), 1e-30);
            for (var d = 0u; d < params.head_dim; d++) {
                dir[d] += wj * k[row(j) + d] / nj;
                val[d] += wj * v[row(j) + d];
            }
            wsum += wj;
            acc += f32_at(params.acc, j);
            took = true;
        }
        if (!took) {
            continue;
        }
        var s = 0.0;
        for (var d = 0u; d < params.head_dim; d++) {
            s += dir[d] * dir[d];
        }
        let scale = nc / max(sqrt(s), 1e-30);
        for (var d = 0u; d < params.head_dim; d++) {
            k[row(c) + d] = dir[d] * scale;
            v[row(c) + d] = val[d] / wsum;
        }
        state[params.acc + base + c] = bitcast<u32>(acc);
    }
    storageBarrier();
    workgroupBarrier();
    // The kept slots move down in order: each invocation moves its channels, in increasing slot order,
    // so no slot is overwritten before it is read (a destination is never above its source).
    for (var d = inv.lid; d < params.head_dim; d += WG) {
        for (var j = 0u; j < n; j++) {
            let dest = state[params.dest + base + j];
            if (dest != ZERO_CLASS && dest != j) {
                k[row(dest) + d] = k[row(j) + d];
                v[row(dest) + d] = v[row(j) + d];
            }
        }
    }
    if (inv.lid == 0u) {
        for (var j = 0u; j < n; j++) {
            let dest = state[params.dest + base + j];
            if (dest != ZERO_CLASS && dest != j) {
                for (var a = 0u; a < 3u; a++) {
                    let off = params.acc + a * params.n_kv_heads * params.capacity + base;
                    state[off + dest] = state[off + j];
                }
            }
        }
    }
}

// EMS's Global-Local score, accumulated after each layer's attention: for every key/value head and cache
// slot, the attention the step's queries gave it (summed over the query heads of its group, read from the
// softmax output [token][head][slot]), added to `acc`, with `seen` counting the query heads that could see
// it (so that acc / seen is the normalized accumulated attention, which does not favour early tokens for
// having been seen longer), and `obs`, an exponential moving average over queries with a horizon of
// about `1 / (1 - decay)` (32) queries: the local observation window. Slots of this step start from zero.
// One invocation per head and slot.
#import invocation
#import ems

@group(0) @binding(0) var<uniform> params: EmsParams;
@group(0) @binding(1) var<storage, read> probs: array<f32>;
@group(0) @binding(2) var<storage, read_write> state: array<u32>;

@compute @workgroup_size(WG)
fn main(inv: Invocation) {
    let idx = linear_workgroup(inv) * WG + inv.lid;
    if (idx >= params.n_kv_heads * params.n) {
        return;
    }
    let h = idx / params.n;
    let j = idx % params.n;
    let group = params.n_heads / params.n_kv_heads;
    let at = h * params.capacity + j;
    var acc = 0.0;
    var seen = 0.0;
    var obs = 0.0;
    if (j < params.cache_pos) {
        acc = bitcast<f32>(state[params.acc + at]);
        seen = bitcast<f32>(state[params.seen + at]);
        obs = bitcast<f32>(state[params.obs + at]);
    }
    for (var t = 0u; t < params.tokens; t++) {
        if (j > params.cache_pos + t) {
            continue;
        }
        var p = 0.0;
        for (var g = 0u; g < group; g++) {
            p += probs[(t * params.n_heads + h * group + g) * params.n + j];
        }
        acc += p;
        seen += f32(group);
        obs = params.decay * obs + (1.0 - params.decay) * (p / f32(group));
    }
    state[params.acc + at] = bitcast<u32>(acc);
    state[params.seen + at] = bitcast<u32>(seen);
    state[params.obs + at] = bitcast<u32>(obs);
}

// Exact selection of the `need`-th largest of n unique u32 keys by one workgroup: a radix select over four
// 8-bit digits from the top, each found by a histogram of the keys that match the digits above it. The
// shader that imports this defines `fn radix_key(i: u32) -> u32` (unique keys make the result exact: exactly
// `need` keys are at least the one returned). Every invocation must call it from uniform control flow.
#import invocation

var<workgroup> radix_hist: array<atomic<u32>, 256>;
var<workgroup> radix_chosen: array<u32, 2>;

fn radix_select(n: u32, need: u32, inv: Invocation) -> u32 {
    var prefix = 0u;
    var left = need;
    for (var d = 0u; d < 4u; d++) {
        let shift = 24u - 8u * d;
        for (var i = inv.lid; i < 256u; i += WG) {
            atomicStore(&radix_hist[i], 0u);
        }
        workgroupBarrier();
        for (var i = inv.lid; i < n; i += WG) {
            let key = radix_key(i);
            if (d == 0u || (key >> (shift + 8u)) == (prefix >> (shift + 8u))) {
                atomicAdd(&radix_hist[(key >> shift) & 255u], 1u);
            }
        }
        workgroupBarrier();
        if (inv.lid == 0u) {
            var cum = 0u;
            var digit = 0u;
            for (var j = 255; j >= 0; j--) {
                let h = atomicLoad(&radix_hist[j]);
                if (cum + h >= left) {
                    digit = u32(j);
                    break;
                }
                cum += h;
            }
            radix_chosen[0] = prefix | (digit << shift);
            radix_chosen[1] = left - cum;
        }
        workgroupBarrier();
        prefix = radix_chosen[0];
        left = radix_chosen[1];
        workgroupBarrier();
    }
    return prefix;
}

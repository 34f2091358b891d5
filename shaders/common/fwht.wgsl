// The unnormalized Walsh-Hadamard transform of the first n values (a power of two) of the including
// shader's workgroup array `fwht_buf`, in place: butterflies of stride 1, 2, 4, ..., each stage shared out
// over the WG invocations and closed by a barrier. Call it from uniform control flow, after a barrier that
// makes the values visible; the last stage's barrier makes the result visible.
fn fwht_workgroup(n: u32, lid: u32) {
    for (var h = 1u; h < n; h *= 2u) {
        for (var i = lid; i < n / 2u; i += WG) {
            let j = (i / h) * 2u * h + i % h;
            let x = fwht_buf[j];
            let y = fwht_buf[j + h];
            fwht_buf[j] = x + y;
            fwht_buf[j + h] = x - y;
        }
        workgroupBarrier();
    }
}

//! Preprocesses, validates and reflects every variant in `shaders/kv/permutations` and writes the
//! family's typed catalogue (see `wring_kernels_core::codegen`).

fn main() {
    wring_kernels_core::codegen::build_family("kv");
}

pub use wring_kernels as kernels; pub use wring_runtime as runtime;

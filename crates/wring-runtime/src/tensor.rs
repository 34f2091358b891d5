//! Device tensors and the buffer pool they come from.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use wring_kernels_core::DType;

/// The usages every pooled storage buffer has, so any buffer can serve any tensor.
pub(crate) const STORAGE_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// Free buffers by capacity. Capacities are rounded to size classes so that tensors of similar sizes
/// share buffers: powers of two up to 64 KiB, then eight classes per doubling (see [`size_class`]).
#[derive(Debug, Default)]
pub(crate) struct Pool {
    free: HashMap<u64, Vec<wgpu::Buffer>>,
    /// Bytes held in `free`.
    pub(crate) held: u64,
    /// Allocations served from `free` and fresh ones, for statistics.
    pub(crate) hits: u64,
    pub(crate) misses: u64,
    /// Bytes of buffers held by live tensors.
    pub(crate) live: u64,
    /// The most bytes live and idle together at any time.
    pub(crate) peak: u64,
}

/// The pool keeps at most this many idle bytes; more are released to the driver.
const POOL_MAX_HELD: u64 = 512 << 20;

pub(crate) fn size_class(bytes: u64) -> u64 {
    let bytes = bytes.max(16).next_multiple_of(4);
    if bytes <= 64 << 10 {
        return bytes.next_power_of_two();
    }
    // Eight classes per doubling above 64 KiB, so a buffer is at most 1/8 larger than its tensor. Powers of
    // two there would nearly double a model's weights: SmolLM2's 553 KB and 1.1 MB projections would take
    // 1 and 2 MiB (about 45 MiB of slack beside its 94 MiB), device memory a GPU really spends.
    let step = (1u64 << (63 - bytes.leading_zeros())) / 8;
    bytes.next_multiple_of(step)
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_waste_at_most_an_eighth_above_64_kib() {
        for bytes in [
            65_537u64,
            69_120,
            207_360,
            552_960,
            1_105_920,
            30_081_024,
            3 << 20,
        ] {
            let c = size_class(bytes);
            assert!(c >= bytes && c - bytes <= bytes / 8, "{bytes} -> {c}");
        }
        assert_eq!(size_class(1), 16);
        assert_eq!(size_class(1000), 1024);
        assert_eq!(size_class(64 << 10), 64 << 10);
        // Sizes that repeat land in the same class, so the pool reuses them.
        assert_eq!(size_class(552_960), size_class(552_960 - 100));
    }
}

impl Pool {
    pub(crate) fn take(&mut self, class: u64) -> Option<wgpu::Buffer> {
        let b = self.free.get_mut(&class)?.pop()?;
        self.held -= class;
        self.hits += 1;
        Some(b)
    }

    /// Counts a buffer of `class` bytes handed to a tensor (fresh or taken from `free`).
    pub(crate) fn lend(&mut self, class: u64) {
        self.live += class;
        self.peak = self.peak.max(self.live + self.held);
    }

    fn give(&mut self, class: u64, buffer: wgpu::Buffer) {
        self.live = self.live.saturating_sub(class);
        if self.held + class > POOL_MAX_HELD {
            buffer.destroy();
            return;
        }
        self.held += class;
        self.free.entry(class).or_default().push(buffer);
    }

    pub(crate) fn clear(&mut self) {
        for b in self.free.drain().flat_map(|(_, v)| v) {
            b.destroy();
        }
        self.held = 0;
    }
}

/// A buffer that goes back to its pool when the last tensor using it is dropped.
#[derive(Debug)]
pub(crate) struct PooledBuffer {
    pub(crate) buffer: wgpu::Buffer,
    pub(crate) class: u64,
    pub(crate) pool: Weak<Mutex<Pool>>,
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade()
            && let Ok(mut p) = pool.lock()
        {
            p.give(self.class, self.buffer.clone());
        }
    }
}

/// A typed, shaped view of device memory. Cloning shares the memory.
#[derive(Debug, Clone)]
pub struct Tensor {
    pub(crate) buf: Arc<PooledBuffer>,
    pub(crate) offset: u64,
    pub(crate) shape: Vec<usize>,
    pub(crate) dtype: DType,
}

impl Tensor {
    /// The shape, outermost dimension first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of data (for block formats, the packed blocks).
    pub fn bytes(&self) -> u64 {
        // Shapes are checked against the format when a tensor or view is made, so this cannot fail.
        self.dtype.bytes_for(self.len()).unwrap_or(0) as u64
    }

    /// Bytes as bound to a shader: at least 4 and a multiple of 4, as WebGPU requires.
    pub(crate) fn bound_bytes(&self) -> u64 {
        self.bytes().max(4).next_multiple_of(4)
    }

    /// Byte offset into the underlying buffer.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether two tensors share an underlying buffer.
    pub fn shares_buffer(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.buf, &other.buf)
    }

    /// The same memory with another shape of equal element count.
    pub fn reshape(&self, shape: &[usize]) -> Option<Tensor> {
        (shape.iter().product::<usize>() == self.len()).then(|| Tensor {
            shape: shape.to_vec(),
            ..self.clone()
        })
    }
}

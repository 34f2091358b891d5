//! Device tensors and the buffer pool they come from.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use wring_kernels_core::DType;

/// The usages every pooled storage buffer has, so any buffer can serve any tensor.
pub(crate) const STORAGE_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// Free buffers by capacity. Capacities are rounded to size classes so that tensors of similar sizes
/// share buffers: powers of two up to 1 MiB, multiples of 1 MiB above.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    free: HashMap<u64, Vec<wgpu::Buffer>>,
    /// Bytes held in `free`.
    held: u64,
    /// Allocations served from `free` and fresh ones, for statistics.
    pub(crate) hits: u64,
    pub(crate) misses: u64,
}

/// The pool keeps at most this many idle bytes; more are released to the driver.
const POOL_MAX_HELD: u64 = 512 << 20;

pub(crate) fn size_class(bytes: u64) -> u64 {
    let bytes = bytes.max(16).next_multiple_of(4);
    if bytes <= 1 << 20 {
        bytes.next_power_of_two()
    } else {
        bytes.next_multiple_of(1 << 20)
    }
}

impl Pool {
    pub(crate) fn take(&mut self, class: u64) -> Option<wgpu::Buffer> {
        let b = self.free.get_mut(&class)?.pop()?;
        self.held -= class;
        self.hits += 1;
        Some(b)
    }

    fn give(&mut self, class: u64, buffer: wgpu::Buffer) {
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

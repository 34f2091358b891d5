//! A counting global allocator for the test binary: each thread can ask for the peak number of bytes it
//! held above where it started, so the hostile corpus can check that no input makes wring allocate far
//! more than the input's own size. Only the measuring thread's allocations count: work the library hands
//! to other threads (the GPU driver's, rayon's) is not seen, which is why the corpus also runs each case
//! under a time limit.
#![allow(
    unsafe_code,
    reason = "a global allocator is an unsafe trait; this one only forwards to System"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    // Const-initialised cells without destructors: reading them never allocates, so the allocator can.
    static ON: Cell<bool> = const { Cell::new(false) };
    static NOW: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn grew(n: usize) {
    let _ = ON.try_with(|on| {
        if on.get() {
            let now = NOW.with(|c| {
                let v = c.get() + n;
                c.set(v);
                v
            });
            PEAK.with(|p| p.set(p.get().max(now)));
        }
    });
}

fn shrank(n: usize) {
    let _ = ON.try_with(|on| {
        if on.get() {
            NOW.with(|c| c.set(c.get().saturating_sub(n)));
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: the caller's obligations are System's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrank(layout.size());
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as holding both blocks for a moment, as a moving realloc does.
        grew(new_size);
        shrank(layout.size());
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Runs `f` on this thread and returns its result with the peak bytes it held at once beyond what was
/// allocated before it began.
pub fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    NOW.with(|c| c.set(0));
    PEAK.with(|p| p.set(0));
    ON.with(|on| on.set(true));
    let out = f();
    ON.with(|on| on.set(false));
    (out, PEAK.with(Cell::get))
}

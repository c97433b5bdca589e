//! Heap used by a piece of work, counted by a global allocator that a program installs:
//!
//! ```no_run
//! #[global_allocator]
//! static HEAP: onnx_shallow::runtime::memory::CountingAllocator =
//!     onnx_shallow::runtime::memory::CountingAllocator;
//! ```
//!
//! It counts bytes asked of Rust's allocator, which is where tract keeps its tensors,
//! packed weights and plans; not the stack, the code, nor what the C library keeps cached
//! after a free (so not the resident set size). Counting costs one relaxed atomic load
//! per allocation outside [`heap_growth`] windows. Without the allocator installed,
//! [`heap_growth`] reports `None`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};

use serde::Serialize;

/// The system allocator, counting while a [`heap_growth`] window is open.
pub struct CountingAllocator;

static COUNTING: AtomicBool = AtomicBool::new(false);
/// Bytes allocated minus bytes freed since the window opened (negative when the work
/// frees what was allocated before).
static NET: AtomicI64 = AtomicI64::new(0);
static PEAK: AtomicI64 = AtomicI64::new(0);
/// One window at a time.
static WINDOW: Mutex<()> = Mutex::new(());

fn count(bytes: i64) {
    if COUNTING.load(Relaxed) {
        let now = NET.fetch_add(bytes, Relaxed) + bytes;
        PEAK.fetch_max(now, Relaxed);
    }
}

// SAFETY: every call is forwarded to `System` unchanged; counting only reads sizes.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            count(layout.size() as i64);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            count(layout.size() as i64);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as i64));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let moved = unsafe { System.realloc(ptr, layout, new_size) };
        if !moved.is_null() {
            count(new_size as i64 - layout.size() as i64);
        }
        moved
    }
}

/// Heap that a piece of work took, in bytes.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct HeapGrowth {
    /// The most it held at once beyond what was allocated before it started.
    pub peak_bytes: u64,
    /// What it still held when it returned (what its result keeps alive).
    pub retained_bytes: u64,
}

/// Runs `work` and measures its heap growth; `None` when the program did not install
/// [`CountingAllocator`].
pub fn heap_growth<R>(work: impl FnOnce() -> R) -> (R, Option<HeapGrowth>) {
    let _window = WINDOW
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    NET.store(0, Relaxed);
    PEAK.store(0, Relaxed);
    COUNTING.store(true, Relaxed);
    let installed = {
        let probe = std::hint::black_box(Box::new(0u64));
        let counted = NET.load(Relaxed) > 0;
        drop(probe);
        counted
    };
    let result = work();
    COUNTING.store(false, Relaxed);
    let growth = installed.then(|| HeapGrowth {
        peak_bytes: PEAK.load(Relaxed).max(0) as u64,
        retained_bytes: NET.load(Relaxed).max(0) as u64,
    });
    (result, growth)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_reported_without_the_allocator() {
        // The library's unit tests run on the system allocator.
        let (vec, growth) = heap_growth(|| vec![0u8; 1 << 20]);
        assert_eq!((vec.len(), growth), (1 << 20, None));
    }
}

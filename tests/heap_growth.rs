//! The heap counter `bench` reports plan memory with, installed as this test binary's
//! allocator (as the command-line tool installs it).

use onnx_shallow::runtime::memory::{CountingAllocator, heap_growth};

#[global_allocator]
static HEAP: CountingAllocator = CountingAllocator;

const MIB: u64 = 1 << 20;

#[test]
fn peak_and_retained_heap_are_counted() {
    let (kept, growth) = heap_growth(|| {
        let scratch = vec![1u8; 4 * MIB as usize];
        let mut kept = Vec::with_capacity(MIB as usize);
        kept.extend_from_slice(&scratch[..MIB as usize]);
        kept.reserve_exact(MIB as usize); // a reallocation to 2 MiB
        kept
    });
    let growth = growth.expect("the allocator is installed");
    assert_eq!(kept.capacity(), 2 * MIB as usize);
    // 4 MiB of scratch and the 2 MiB kept, at once; then the scratch is freed.
    assert!(
        (6 * MIB..6 * MIB + 4096).contains(&growth.peak_bytes),
        "{growth:?}"
    );
    assert!(
        (2 * MIB..2 * MIB + 4096).contains(&growth.retained_bytes),
        "{growth:?}"
    );
}

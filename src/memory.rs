//! Keeping freed memory for reuse. Training and measuring allocate and free the same large
//! tensors over and over; glibc returns blocks past its mmap threshold, and the free top
//! of its heap, to the system, so each reuse faults every page in again (a MobileNetV2
//! run spent about a tenth of its CPU time in the kernel doing so).

/// Makes glibc keep freed memory for reuse: blocks up to 32 MiB come from the heap, whose
/// top grows 64 MiB at a time and is trimmed only past 1 GiB free. Process-wide, so the
/// library never calls it on its own: a program calls it once at startup (the CLI does).
/// Does nothing where the C library is not glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const GIB: libc::c_int = 1 << 30;
        for (param, value) in [
            (libc::M_MMAP_THRESHOLD, 32 << 20),
            (libc::M_TRIM_THRESHOLD, GIB),
            (libc::M_TOP_PAD, 64 << 20),
        ] {
            // SAFETY: mallopt only sets allocator parameters; a value it refuses is
            // ignored (it returns 0) and the default stays.
            unsafe { libc::mallopt(param, value) };
        }
    }
}

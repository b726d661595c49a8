//! Hands the heap pages freed by a config load back to the kernel.

/// Returns the free pages of every malloc arena to the kernel.
///
/// Decoding a config allocates far more than the built config keeps (the
/// text, the protos, the intermediate model), and glibc keeps those freed
/// chunks mapped. After a bootstrap of 1,000 clusters they were about 6 MiB
/// of the proxy's resident memory (glibc 2.36, measured with
/// `/proc/PID/smaps_rollup`). `malloc_trim` walks the free lists, so it
/// belongs after a config load, never on the request path. On other libcs
/// this does nothing.
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the arena locks itself and only releases
    // pages that hold no allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

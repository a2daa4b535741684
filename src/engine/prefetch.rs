//! Asking the CPU for a cache line ahead of its use: for the keydir's
//! buckets ([`super::keydir::KeyDir::prefetch`]) and for records in the
//! mapped log ([`super::files::FileTable::prefetch`]).

/// Asks the CPU to load the cache line holding the first byte of `at`,
/// and returns without waiting for it; nothing on CPUs other than x86-64.
pub fn prefetch<T: ?Sized>(at: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing the program sees and never faults,
    // even for an address that is not mapped; SSE, which it needs, is part
    // of every x86-64 CPU.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((at as *const T).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

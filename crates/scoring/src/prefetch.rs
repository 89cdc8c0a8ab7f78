//! Asking the CPU to load memory before the code reads it.
//!
//! A recompute encodes a million scores in the cache's bulk-write order
//! (Redis hashes), which is random against the order the scores, the ids
//! and the currencies lie in memory. Each score then waited for about eight
//! cache misses (its four lines, its id's place and bytes, its churn
//! reasons, its currency), one after the other: two thirds of the encoding
//! thread's time at a million customers, on the cores PostgreSQL's `COPY`
//! and Redis needed meanwhile (BENCHMARKS.md, session 29). Loading them a
//! few scores ahead overlaps those misses with the encoding.

/// Starts loading every cache line of `value` into the CPU's caches.
/// Nothing else changes: a prefetch reads nothing the program sees and
/// cannot fault, so this is a hint the CPU may drop.
#[inline(always)]
pub(crate) fn prefetch<T: ?Sized>(value: &T) {
    let start = std::ptr::from_ref(value).cast::<u8>();
    let len = std::mem::size_of_val(value);
    if len == 0 {
        return;
    }
    // Every 64 bytes, then the last byte: `value` need not start a line.
    let mut offset = 0;
    while offset < len {
        line(start.wrapping_add(offset));
        offset += 64;
    }
    line(start.wrapping_add(len - 1));
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(unsafe_code)]
fn line(at: *const u8) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    // SAFETY: `prefetch` is a hint: it does not access memory as the
    // program sees it and never faults, whatever the address (here always
    // inside a live value). The intrinsic is `unsafe` only for its target
    // feature, SSE, which every x86-64 CPU has.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(at.cast::<i8>()) }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn line(_at: *const u8) {}

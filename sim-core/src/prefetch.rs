//! Cache prefetch hints: ask the processor to start loading memory that is about to be
//! read, so that its latency overlaps the work before the read.
//!
//! At scale a simulation's cost is memory latency, not work: each event lands on the
//! state of some tunnel that has gone cold since its last event. The engine knows the
//! next event before it runs the current one, so the model can name the state that
//! event will touch (see `Simulation::peek_event`) and have it on its way meanwhile. A
//! hint never changes what a program computes: only when its memory arrives.

/// Cache lines hinted at most per object (a kilobyte).
const MAX_LINES: usize = 16;
const LINE: usize = 64;

/// Hints the processor to load the cache lines of `r` (at most its first kilobyte: the
/// head of a large object is what is read first).
#[inline(always)]
pub fn prefetch<T: ?Sized>(r: &T) {
    prefetch_range(r as *const T as *const u8, std::mem::size_of_val(r));
}

#[inline(always)]
fn line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: SSE is part of x86_64; a prefetch dereferences nothing and never
        // faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p as *const i8) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Hints the processor to load `len` bytes from `start` (at most the first kilobyte).
#[inline(always)]
pub fn prefetch_range(start: *const u8, len: usize) {
    for i in 0..len.div_ceil(LINE).min(MAX_LINES) {
        line(start.wrapping_add(i * LINE));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_never_fault_and_change_nothing() {
        let v = vec![7u8; 10_000];
        prefetch(&v[..]);
        prefetch(&v);
        prefetch(&());
        // Addresses nothing lives at: a hint is dropped, never a fault.
        prefetch_range(std::ptr::null(), 4096);
        prefetch_range(usize::MAX as *const u8, 64);
        assert!(v.iter().all(|&b| b == 7));
    }
}

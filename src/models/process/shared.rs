//! The process model's counters: a [`Stats`] in a shared anonymous
//! mapping, created before the first fork.

use std::io;
use std::mem;
use std::ptr::{self, NonNull};

use crate::stats::Stats;

/// A [`Stats`] in a shared anonymous mapping: created before the first
/// fork, so every child adds to the same counters the parent reads.
pub(super) struct SharedStats(NonNull<Stats>);

impl SharedStats {
    pub(super) fn new() -> io::Result<SharedStats> {
        // SAFETY: an anonymous mapping with no address hint touches no
        // existing memory; failure is checked below.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                mem::size_of::<Stats>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let p = NonNull::new(p.cast::<Stats>())
            .ok_or_else(|| io::Error::other("mmap returned null"))?;
        // SAFETY: the mapping is page aligned (more than AtomicU64 needs),
        // large enough, writable and not yet shared with anyone.
        unsafe { p.as_ptr().write(Stats::default()) };
        Ok(SharedStats(p))
    }
}

impl std::ops::Deref for SharedStats {
    type Target = Stats;

    fn deref(&self) -> &Stats {
        // SAFETY: the mapping lives until `drop` and holds an initialised
        // Stats; it is only ever accessed through shared references to
        // atomics, which is sound across processes too.
        unsafe { self.0.as_ref() }
    }
}

impl Drop for SharedStats {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` created; no reference
        // into it outlives `self`.
        unsafe {
            libc::munmap(self.0.as_ptr().cast(), mem::size_of::<Stats>())
        };
    }
}

//! `--max-connections-per-ip` with `--proxy-protocol` in the process
//! model: the client a PROXY header names is known only in the child
//! that read it, so the count per address lives in a shared anonymous
//! mapping, made before the first fork, that every child writes to.
//!
//! One slot per child: the parent gives each child a free slot before
//! it forks and clears it when it reaps the child (so a child killed
//! with SIGKILL leaks nothing). The child writes its client's address
//! key into its slot and then counts the slots that hold the same key;
//! over the limit, it clears its slot and rejects. Two children of one
//! address deciding at the same moment both count both: at the limit
//! one may reject a client it could have served, never the other way,
//! so the limit is never exceeded.

use std::io;
use std::mem;
use std::net::{IpAddr, SocketAddr};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::models::blocking::AddressTable;

/// A slot: the address family (0: free, 4, 6) and the address key (an
/// IPv4 address, or an IPv6 /64 prefix).
#[derive(Debug, Default)]
struct Slot {
    family: AtomicU64,
    key: AtomicU64,
}

/// The slots, in a shared anonymous mapping.
#[derive(Debug)]
pub(super) struct SharedSlots {
    base: NonNull<Slot>,
    len: usize,
}

// SAFETY: the mapping holds only atomics, which any thread (or process)
// may read and write through shared references.
#[allow(unsafe_code)]
unsafe impl Send for SharedSlots {}
#[allow(unsafe_code)]
unsafe impl Sync for SharedSlots {}

impl SharedSlots {
    /// `len` free slots.
    pub(super) fn new(len: usize) -> io::Result<SharedSlots> {
        let len = len.max(1);
        let bytes = len * mem::size_of::<Slot>();
        // SAFETY: an anonymous mapping with no address hint touches no
        // existing memory; failure is checked below. Zeroed pages are
        // free slots (zero atomics).
        #[allow(unsafe_code)]
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<Slot>())
            .ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(SharedSlots { base, len })
    }

    /// How many slots there are.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    fn slots(&self) -> &[Slot] {
        // SAFETY: the mapping holds `len` zero-initialised slots (valid
        // atomics) until `drop`, and is only accessed through shared
        // references to atomics.
        #[allow(unsafe_code)]
        unsafe {
            std::slice::from_raw_parts(self.base.as_ptr(), self.len)
        }
    }

    /// Frees slot `n` (the parent, when it reaps its child).
    pub(super) fn clear(&self, n: usize) {
        if let Some(slot) = self.slots().get(n) {
            slot.family.store(0, Ordering::SeqCst);
        }
    }
}

impl Drop for SharedSlots {
    fn drop(&mut self) {
        let bytes = self.len * mem::size_of::<Slot>();
        // SAFETY: unmaps exactly the mapping `new` created; no reference
        // into it outlives `self`.
        #[allow(unsafe_code)]
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), bytes)
        };
    }
}

/// A child's slot: what it admits its client with.
#[derive(Debug)]
pub(super) struct Claim {
    pub(super) slots: Arc<SharedSlots>,
    pub(super) index: usize,
    pub(super) max: usize,
}

impl AddressTable for Claim {
    fn admit(&self, peer: SocketAddr) -> bool {
        if self.max == 0 {
            return true;
        }
        let (family, key) = address_key(peer.ip());
        let slots = self.slots.slots();
        let Some(mine) = slots.get(self.index) else { return true };
        mine.key.store(key, Ordering::SeqCst);
        mine.family.store(family, Ordering::SeqCst);
        let same = slots
            .iter()
            .filter(|s| {
                s.family.load(Ordering::SeqCst) == family
                    && s.key.load(Ordering::SeqCst) == key
            })
            .count();
        if same > self.max {
            mine.family.store(0, Ordering::SeqCst);
            return false;
        }
        true
    }

    fn release(&self, _peer: SocketAddr) {
        self.slots.clear(self.index);
    }
}

/// An address as the per-address limit counts it: IPv4 (an IPv4-mapped
/// IPv6 address as its IPv4 one), or the /64 prefix of an IPv6 address.
fn address_key(ip: IpAddr) -> (u64, u64) {
    match ip {
        IpAddr::V4(v4) => (4, u64::from(u32::from(v4))),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => (4, u64::from(u32::from(v4))),
            None => (6, (u128::from(v6) >> 64) as u64),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_counts_slots_of_one_address_and_frees_them() {
        let slots = Arc::new(SharedSlots::new(4).unwrap());
        let claim = |index| Claim { slots: Arc::clone(&slots), index, max: 2 };
        let a: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:2".parse().unwrap();
        let b: SocketAddr = "[2001:db8::1]:3".parse().unwrap();
        let b_same_64: SocketAddr = "[2001:db8::2]:4".parse().unwrap();
        assert!(claim(0).admit(a));
        assert!(claim(1).admit(mapped), "the same address, mapped");
        assert!(!claim(2).admit(a), "a third from 10.0.0.1");
        assert!(claim(2).admit(b));
        assert!(claim(3).admit(b_same_64));
        slots.clear(0);
        assert!(claim(0).admit(a), "room again once a slot is freed");
        let off = Claim { slots: Arc::clone(&slots), index: 1, max: 0 };
        assert!(off.admit(a));
    }
}

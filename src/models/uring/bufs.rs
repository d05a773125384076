//! The provided buffer ring: one pool of receive buffers shared by every
//! connection, registered once. A multishot receive takes a buffer when
//! data arrives (not when it is armed), so an idle connection holds none;
//! the loop copies out what it needs and gives the buffer back at once.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

use crate::config::Mode;
use crate::error::Error;

use super::ring::unavailable;

/// The buffer group of the pool.
pub(super) const GROUP: u16 = 0;
/// Memory for the buffers, whatever their number.
const POOL_BYTES: usize = 16 << 20;
/// The kernel's largest buffer ring.
const MOST_ENTRIES: usize = 1 << 15;
/// The smallest buffer worth a completion.
const LEAST_BUF: usize = 512;
/// The largest buffer: what the mio model reads at once.
pub(super) const MOST_BUF: usize = 64 * 1024;

/// The pool: a ring of entries the kernel reads, and the buffers.
pub(super) struct Pool {
    /// `entries` ring entries, then `entries * size` bytes of buffers,
    /// in one anonymous mapping.
    map: NonNull<u8>,
    map_len: usize,
    entries: u16,
    size: usize,
    /// Our copy of the ring's tail; the kernel sees it when published.
    tail: u16,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("entries", &self.entries)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool sized for `connections`: trap C3, a turn in which every
    /// connection receives must not run it dry (a multishot receive that
    /// finds it empty ends with `ENOBUFS`), so there is a buffer for each
    /// connection (up to the kernel's 32,768), and the fixed memory is
    /// split among them. 10,000 connections get 16,384 buffers of 1 KiB.
    pub(super) fn new(
        ring: &IoUring,
        connections: usize,
    ) -> Result<Pool, Error> {
        let entries = (connections + connections / 4)
            .next_power_of_two()
            .clamp(64, MOST_ENTRIES);
        let size = (POOL_BYTES / entries).clamp(LEAST_BUF, MOST_BUF);
        let ring_bytes = entries * std::mem::size_of::<BufRingEntry>();
        let map_len = ring_bytes + entries * size;
        // SAFETY: an anonymous private mapping with no address hint; the
        // result is checked. MAP_POPULATE touches it now: the pool is
        // memory the server holds from the start, not a cost that grows
        // with the connections that happen to receive.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            return Err(Error::setup("map the receive buffers")(e));
        }
        let map = NonNull::new(addr.cast::<u8>()).ok_or_else(|| {
            Error::setup("map the receive buffers")(
                io::ErrorKind::OutOfMemory.into(),
            )
        })?;
        let mut pool =
            Pool { map, map_len, entries: entries as u16, size, tail: 0 };
        // SAFETY: the ring entries are the start of a mapping that lives
        // as long as the pool, which the loop drops after the ring.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                map.as_ptr() as u64,
                pool.entries,
                GROUP,
                0,
            )
        }
        .map_err(|e| unavailable("register the buffer ring", &e))?;
        for bid in 0..pool.entries {
            pool.put(bid);
        }
        pool.publish();
        Ok(pool)
    }

    /// How many buffers serve `connections` in `mode`. Echo is where
    /// every connection may receive in the same turn (pingpong at
    /// 10,000 connections), and trap C3 says a turn must not run the
    /// pool dry (a multishot receive that finds it empty ends with
    /// `ENOBUFS`): a buffer for each connection and a quarter more, so
    /// 10,000 connections get 16,384 buffers of 1 KiB. Log and discard
    /// mode read big chunks, as the mio model does (one log line a
    /// chunk): 256 buffers of 64 KiB.
    pub(super) fn wanted(connections: usize, mode: Mode) -> usize {
        match mode {
            Mode::Echo => connections + connections / 4,
            Mode::Log | Mode::Discard => POOL_BYTES / MOST_BUF,
        }
    }

    /// Bytes a buffer holds: the most one receive completion carries.
    pub(super) fn size(&self) -> usize {
        self.size
    }

    /// The first `len` bytes of buffer `bid`, as a receive filled them.
    pub(super) fn data(&self, bid: u16, len: usize) -> &[u8] {
        let bid = usize::from(bid % self.entries);
        let len = len.min(self.size);
        // SAFETY: `bid` is within the pool, so the slice lies inside the
        // mapping; the kernel wrote it before posting the completion and
        // does not touch it again until the buffer is given back.
        unsafe {
            std::slice::from_raw_parts(self.buffer(bid).cast_const(), len)
        }
    }

    fn buffer(&self, bid: usize) -> *mut u8 {
        let ring_bytes =
            usize::from(self.entries) * std::mem::size_of::<BufRingEntry>();
        // SAFETY: within the mapping for any bid below `entries`.
        unsafe { self.map.as_ptr().add(ring_bytes + bid * self.size) }
    }

    /// Gives buffer `bid` back (seen by the kernel once published).
    pub(super) fn put(&mut self, bid: u16) {
        let bid = bid % self.entries;
        let slot = usize::from(self.tail & (self.entries - 1));
        let addr = self.buffer(usize::from(bid)) as u64;
        // SAFETY: `slot` is below `entries`, so the entry is inside the
        // ring; the kernel reads only entries up to the published tail,
        // and this one is past it.
        let entry = unsafe {
            &mut *self.map.as_ptr().cast::<BufRingEntry>().add(slot)
        };
        entry.set_addr(addr);
        entry.set_len(self.size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Shows the kernel every buffer put back since the last publish.
    pub(super) fn publish(&self) {
        // SAFETY: the tail field overlays the first entry's last 16 bits
        // and is aligned for an atomic u16; the kernel reads it
        // concurrently, hence the atomic store with release ordering
        // (the entries written before it are visible first).
        unsafe {
            let base = self.map.as_ptr().cast::<BufRingEntry>();
            let tail = BufRingEntry::tail(base).cast_mut();
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once; the ring that
        // used it is already gone (the loop drops it first).
        unsafe {
            libc::munmap(self.map.as_ptr().cast(), self.map_len);
        }
    }
}

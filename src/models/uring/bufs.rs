//! The provided buffer ring: one pool of receive buffers shared by every
//! connection, registered once. A multishot receive takes a buffer when
//! data arrives (not when it is armed), so an idle connection holds none;
//! the loop copies out what it needs and gives the buffer back at once,
//! or, sending it in place, keeps it pinned until the send is done (trap
//! C11).
//!
//! Two layouts, picked by probe at start-up:
//!
//! - **Incremental** (`IOU_PBUF_RING_INC`, Linux 6.12): 256 buffers of
//!   64 KiB that the kernel consumes piece by piece. A 16 KiB read takes
//!   16 KiB of one buffer (one completion, not 16-32), a 64-byte read
//!   takes 64 bytes of one, and the next read, on any socket, continues
//!   where it ended. A completion with `IORING_CQE_F_BUF_MORE` says the
//!   kernel keeps using that buffer: it is not given back then (trap
//!   C7, a partially consumed buffer recycled early would be filled
//!   again under data not yet read, and the next completion's data
//!   would not be at the offset this pool expects), only after the
//!   completion without it.
//! - **Whole buffers** (older kernels, where registering with the flag
//!   fails with `EINVAL`): one completion per buffer, so the pool is cut
//!   in as many buffers as connections may receive in one turn (trap
//!   C3), 1 KiB each at 10,000 connections.

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

/// `IOU_PBUF_RING_INC`: the kernel consumes the ring's buffers
/// incrementally (Linux 6.12).
const PBUF_RING_INC: u16 = 2;

/// Incremental only: the fewest buffers kept in the ring, unused.
const LEAST_READY: usize = 4;

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
    /// The ring was registered with `IOU_PBUF_RING_INC`.
    incremental: bool,
    /// Incremental only: per buffer, where the next completion's data
    /// starts (what earlier completions of that buffer took). Trap C7.
    offsets: Vec<u32>,
    /// Incremental only: buffers in the ring that no completion has
    /// named yet (the kernel has not started them), by buffer.
    ready: Vec<bool>,
    /// How many are `ready`.
    ready_count: usize,
    /// Incremental only: buffers given back but kept out of the ring,
    /// the last given back on top.
    reserve: Vec<u16>,
    /// Buffers the kernel started since the last refill, and the most
    /// it started in a recent turn (decaying).
    started: usize,
    peak: usize,
    /// Incremental: the ring holds what the traffic needs, not every
    /// buffer ([`Pool::refill`]); cleared by its switch, to measure it.
    fitted: bool,
    /// Incremental only: the buffer put at each ring slot, and the ring
    /// position each buffer was last put at. A bundled receive's data
    /// runs on from a buffer it finished into the next one in the ring
    /// (trap C10): this says which that is.
    slots: Vec<u16>,
    put_at: Vec<u16>,
    /// Incremental only: per buffer, the sends in place that still read
    /// from it (trap C11), and whether the kernel finished it meanwhile
    /// (it goes back once the last of them is done).
    pins: Vec<u16>,
    finished: Vec<bool>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("entries", &self.entries)
            .field("size", &self.size)
            .field("incremental", &self.incremental)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// The pool: incremental (64 KiB buffers) if the kernel takes
    /// `IOU_PBUF_RING_INC` and `incremental` is wanted, otherwise whole
    /// buffers sized for `connections` in `mode` ([`Pool::wanted`]).
    /// `buffers`, if given, is their number instead (rounded up to a
    /// power of two), for tests that run the pool dry (trap C3).
    pub(super) fn new(
        ring: &IoUring,
        connections: usize,
        mode: Mode,
        incremental: bool,
        buffers: Option<usize>,
    ) -> Result<Pool, Error> {
        let fixed =
            buffers.map(|n| n.next_power_of_two().clamp(1, MOST_ENTRIES));
        if incremental {
            let entries = fixed.unwrap_or(POOL_BYTES / MOST_BUF);
            match Pool::register(ring, entries, MOST_BUF, true) {
                Ok(pool) => return Ok(pool),
                // A kernel before 6.12 refuses the flag: whole buffers.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    log::debug!(
                        "io_uring: no incremental buffer consumption \
                         (IOU_PBUF_RING_INC needs Linux 6.12): whole \
                         buffers"
                    );
                }
                Err(e) => {
                    return Err(unavailable("register the buffer ring", &e))
                }
            }
        }
        let wanted = Pool::wanted(connections, mode);
        let entries = fixed.unwrap_or(
            (wanted + wanted / 4).next_power_of_two().clamp(64, MOST_ENTRIES),
        );
        let size = (POOL_BYTES / entries).clamp(LEAST_BUF, MOST_BUF);
        Pool::register(ring, entries, size, false)
            .map_err(|e| unavailable("register the buffer ring", &e))
    }

    /// Maps `entries` buffers of `size` bytes after their ring entries
    /// and registers the ring, incremental or not.
    fn register(
        ring: &IoUring,
        entries: usize,
        size: usize,
        incremental: bool,
    ) -> io::Result<Pool> {
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
            return Err(io::Error::last_os_error());
        }
        let map = NonNull::new(addr.cast::<u8>())
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        // Per buffer state that incremental buffers need.
        fn per_buffer<T: Clone>(inc: bool, entries: usize, v: T) -> Vec<T> {
            match inc {
                true => vec![v; entries],
                false => Vec::new(),
            }
        }
        let offsets = per_buffer(incremental, entries, 0);
        let (slots, put_at) = (
            per_buffer(incremental, entries, 0),
            per_buffer(incremental, entries, 0),
        );
        let pins = per_buffer(incremental, entries, 0);
        let ready = per_buffer(incremental, entries, false);
        let finished = per_buffer(incremental, entries, false);
        // Dropping the pool on an error below unmaps it.
        let mut pool = Pool {
            map,
            map_len,
            entries: entries as u16,
            size,
            tail: 0,
            incremental,
            offsets,
            ready,
            ready_count: 0,
            reserve: Vec::new(),
            started: 0,
            peak: entries,
            fitted: true,
            slots,
            put_at,
            pins,
            finished,
        };
        let flags = if incremental { PBUF_RING_INC } else { 0 };
        // SAFETY: the ring entries are the start of a mapping that lives
        // as long as the pool, which the loop drops after the ring.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                map.as_ptr() as u64,
                pool.entries,
                GROUP,
                flags,
            )
        }?;
        for bid in (0..pool.entries).rev() {
            pool.give_back(bid);
        }
        // Incremental: a first turn may use every buffer; the peak then
        // decays to what the traffic uses.
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

    /// How many buffers the pool has.
    pub(super) fn count(&self) -> usize {
        usize::from(self.entries)
    }

    /// The buffers are consumed incrementally (`IOU_PBUF_RING_INC`).
    pub(super) fn incremental(&self) -> bool {
        self.incremental
    }

    /// The `len` bytes a completion put in buffer `bid`, in order: from
    /// its start, or, incremental, from where the last completion of
    /// that buffer ended (trap C7); a bundled receive's data that fills
    /// the buffer runs on into the next one in the ring (trap C10), so
    /// it may come in two slices (a read is at most one buffer long).
    pub(super) fn data(
        &self,
        bid: u16,
        len: usize,
    ) -> impl Iterator<Item = &[u8]> + '_ {
        self.pieces(bid, len).map(|(_, piece)| piece)
    }

    /// [`Pool::data`], each slice with the buffer it lies in.
    pub(super) fn pieces(
        &self,
        bid: u16,
        len: usize,
    ) -> impl Iterator<Item = (u16, &[u8])> + '_ {
        let mut bid = usize::from(bid % self.entries);
        let mut at = self.offsets.get(bid).map_or(0, |&o| o as usize);
        let mut left = len;
        let mut buffers = usize::from(self.entries);
        std::iter::from_fn(move || {
            if left == 0 || buffers == 0 {
                return None;
            }
            buffers -= 1;
            at = at.min(self.size);
            let n = left.min(self.size - at);
            // SAFETY: `bid` is within the pool and `at + n` within a
            // buffer, so the slice lies inside the mapping; the kernel
            // wrote it before posting the completion and does not touch
            // it again until the buffer is given back.
            let slice = unsafe {
                let start = self.buffer(bid).add(at).cast_const();
                std::slice::from_raw_parts(start, n)
            };
            left -= n;
            let this = bid as u16;
            match self.incremental {
                true => (bid, at) = (self.after(bid), 0),
                false => left = 0,
            }
            Some((this, slice))
        })
    }

    /// The buffer put in the ring right after `bid`.
    fn after(&self, bid: usize) -> usize {
        let next = self.put_at[bid].wrapping_add(1) & (self.entries - 1);
        usize::from(self.slots[usize::from(next)])
    }

    /// A completion of `len` bytes from buffer `bid` was read: give the
    /// buffer back unless the kernel keeps filling it (`more`, the
    /// completion's `IORING_CQE_F_BUF_MORE`), in which case the next
    /// completion of `bid` starts `len` bytes further on. Trap C7: a
    /// partially consumed buffer is never given back early. Trap C10: a
    /// bundled receive that filled `bid` went on into the next buffer in
    /// the ring; `bid` is finished (given back), and `more` is about the
    /// last buffer it reached. This relies on the completions of one
    /// buffer arriving in the order the kernel consumed it (the suite's
    /// interleaved-sizes test checks the bytes).
    pub(super) fn done(&mut self, bid: u16, len: usize, more: bool) {
        let mut i = usize::from(bid % self.entries);
        let mut left = len;
        for _ in 0..self.entries {
            // The kernel has started this buffer: no longer ready.
            if let Some(ready) = self.ready.get_mut(i) {
                if std::mem::take(ready) {
                    self.ready_count -= 1;
                    self.started += 1;
                }
            }
            let Some(at) = self.offsets.get_mut(i) else {
                return self.put(i as u16);
            };
            let room = self.size - (*at as usize).min(self.size);
            if left > room {
                // A bundle filled this buffer and went on.
                *at = 0;
                self.finish(i);
                left -= room;
                i = self.after(i);
                continue;
            }
            match more {
                true => *at += left as u32,
                false => {
                    *at = 0;
                    self.finish(i);
                }
            }
            return;
        }
    }

    /// The kernel is done with buffer `i`: back to the ring, unless a
    /// send in place still reads from it (trap C11).
    fn finish(&mut self, i: usize) {
        match self.pins.get(i) {
            Some(&pins) if pins > 0 => self.finished[i] = true,
            _ => self.give_back(i as u16),
        }
    }

    /// A send in place will read from buffer `bid`: it stays out of the
    /// ring until [`Pool::unpin`], whatever the kernel does with it.
    pub(super) fn pin(&mut self, bid: u16) {
        if let Some(pins) = self.pins.get_mut(usize::from(bid % self.entries))
        {
            *pins += 1;
        }
    }

    /// A send in place no longer reads from buffer `bid`: back to the
    /// ring if the kernel has finished it and nothing else reads it.
    pub(super) fn unpin(&mut self, bid: u16) {
        let i = usize::from(bid % self.entries);
        let Some(pins) = self.pins.get_mut(i) else { return };
        *pins = pins.saturating_sub(1);
        if *pins == 0 && std::mem::take(&mut self.finished[i]) {
            self.give_back(i as u16);
        }
    }

    /// Every buffer stays in the ring, as before the ring was fitted to
    /// the traffic (for measuring what fitting brings).
    pub(super) fn unfit(&mut self) {
        self.fitted = false;
    }

    /// A receive found the ring empty (`ENOBUFS`, trap C3): the next
    /// refill puts twice as many buffers in the ring.
    pub(super) fn ran_dry(&mut self) {
        self.started = self.started.max(2 * self.peak).min(self.count());
    }

    /// Incremental: a buffer the kernel is done with waits in the
    /// reserve; [`Pool::publish`] moves buffers from there to the ring.
    fn give_back(&mut self, bid: u16) {
        match self.incremental {
            true => self.reserve.push(bid),
            false => self.put(bid),
        }
    }

    /// Incremental: tops the ring up to twice the most buffers a recent
    /// turn started (at least [`LEAST_READY`]), from the top of the
    /// reserve. Buffers cycle through the ring in order, so a ring of
    /// all 256 buffers walks a stream's bytes through 16 MiB that no
    /// cache holds; kept to what the traffic needs, the kernel writes
    /// into buffers it wrote to a moment ago, still in cache (the copy
    /// into them fell from 18% to 12.6% of a stream's samples, its CPU
    /// per message by 7-9%: docs/completion.md), and a burst of
    /// connections grows it again within a turn or two.
    fn refill(&mut self) {
        if !self.incremental {
            return;
        }
        let decayed = self.peak - self.peak.div_ceil(16);
        self.peak = self.started.max(decayed);
        self.started = 0;
        let want = match self.fitted {
            true => (2 * self.peak).max(LEAST_READY),
            false => self.count(),
        };
        while self.ready_count < want {
            let Some(bid) = self.reserve.pop() else { break };
            self.ready[usize::from(bid)] = true;
            self.ready_count += 1;
            self.put(bid);
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
        if let Some(at) = self.put_at.get_mut(usize::from(bid)) {
            *at = self.tail;
            self.slots[slot] = bid;
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Shows the kernel every buffer put back since the last publish
    /// (incremental: after topping the ring up from the reserve).
    pub(super) fn publish(&mut self) {
        self.refill();
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

#[cfg(test)]
mod tests;

use super::*;

/// A pool of 64 incremental buffers on a real ring (Linux 6.12).
fn pool() -> (IoUring, Pool) {
    let ring = IoUring::new(8).expect("io_uring_setup");
    let pool = Pool::new(&ring, 100, Mode::Echo, true, Some(64))
        .expect("register the buffer ring");
    assert!(pool.incremental(), "this kernel has IOU_PBUF_RING_INC");
    (ring, pool)
}

/// The kernel consumes `n` ready buffers whole, as a turn does.
fn use_up(pool: &mut Pool, n: usize) {
    let bids: Vec<u16> = (0..pool.entries)
        .filter(|&b| pool.ready[usize::from(b)])
        .take(n)
        .collect();
    assert_eq!(bids.len(), n, "fewer than {n} buffers ready");
    for bid in bids {
        pool.done(bid, 100, true); // started, kept (trap C7)
        pool.done(bid, pool.size - 100, false); // finished: back
    }
}

/// The ring starts with every buffer, shrinks to the fewest under
/// light traffic, grows to twice what a busy turn used, and grows at
/// once after running dry; buffers come back from the top of the
/// reserve (the last given back first, still in cache).
#[test]
fn the_ring_holds_what_the_traffic_needs() {
    let (_ring, mut pool) = pool();
    assert_eq!(pool.ready_count, 64);
    for _ in 0..200 {
        pool.publish();
    }
    assert_eq!(pool.ready_count, 64, "buffers never leave the ring");
    // Turns that use one buffer each: the ring keeps what it has
    // until the kernel takes it, and is topped up to the fewest once
    // the peak has decayed; the rest wait in the reserve.
    for _ in 0..200 {
        use_up(&mut pool, 1);
        pool.publish();
    }
    assert_eq!(pool.ready_count, LEAST_READY);
    assert_eq!(pool.reserve.len(), 64 - LEAST_READY);
    // A turn that used 4 buffers: 8 ready after it.
    use_up(&mut pool, 4);
    let last = *pool.reserve.last().unwrap();
    pool.publish();
    assert_eq!(pool.ready_count, 8);
    assert!(pool.ready[usize::from(last)], "the last back goes first");
    // Running dry doubles it.
    pool.ran_dry();
    pool.publish();
    assert_eq!(pool.ready_count, 16);
}

/// Trap C10: a bundled receive that fills the rest of one buffer goes
/// on into the buffer after it in the ring (as the ring's entries
/// say, not as numbered): its data is read from both, in order, the
/// first buffer is given back and the next continues where the
/// bundle ended.
#[test]
fn a_bundle_runs_on_into_the_next_buffer_in_the_ring() {
    let (_ring, mut pool) = pool();
    // Buffers come back out of number order: the ring's order moves.
    for _ in 0..3 {
        use_up(&mut pool, 5);
        pool.publish();
    }
    let size = pool.size;
    let first = (0..pool.entries)
        .find(|&b| pool.ready[usize::from(b)])
        .expect("a buffer in the ring");
    // What the kernel reads as the entry after `first`.
    let slot = pool.put_at[usize::from(first)].wrapping_add(1);
    let slot = usize::from(slot & (pool.entries - 1));
    // SAFETY: a slot below `entries`, inside the ring's mapping.
    let entry =
        unsafe { &*pool.map.as_ptr().cast::<BufRingEntry>().add(slot) };
    let next = entry.bid();
    assert_eq!(pool.after(usize::from(first)), usize::from(next));
    assert_ne!(next, first + 1, "the test wants a shuffled ring");
    // The kernel filled all but 10 bytes of `first`, then a bundle
    // of 30 bytes: the last 10 of `first`, the first 20 of `next`.
    pool.done(first, size - 10, true);
    // SAFETY: both ranges lie inside their buffers in the mapping.
    unsafe {
        let tail = pool.buffer(usize::from(first)).add(size - 10);
        std::ptr::write_bytes(tail, b'a', 10);
        std::ptr::write_bytes(pool.buffer(usize::from(next)), b'b', 20);
    }
    let pieces: Vec<&[u8]> = pool.data(first, 30).collect();
    assert_eq!(pieces, [&[b'a'; 10][..], &[b'b'; 20][..]]);
    pool.done(first, 30, true);
    assert_eq!(pool.reserve.last(), Some(&first), "first given back");
    assert_eq!(pool.offsets[usize::from(first)], 0);
    assert_eq!(pool.offsets[usize::from(next)], 20, "next goes on");
    // The next completion of `next` starts at byte 20.
    // SAFETY: inside `next`.
    unsafe { *pool.buffer(usize::from(next)).add(20) = b'c' };
    assert_eq!(pool.data(next, 1).next(), Some(&b"c"[..]));
}

/// Trap C11: a buffer a send in place reads from stays out of the
/// ring after the kernel finished it, until the last send is done.
#[test]
fn a_pinned_buffer_goes_back_after_its_last_send() {
    let (_ring, mut pool) = pool();
    let bid = (0..pool.entries)
        .find(|&b| pool.ready[usize::from(b)])
        .expect("a buffer in the ring");
    pool.pin(bid);
    pool.pin(bid);
    pool.done(bid, 100, true);
    pool.done(bid, pool.size - 100, false); // the kernel is done
    assert!(!pool.reserve.contains(&bid), "pinned: not given back");
    pool.unpin(bid);
    assert!(!pool.reserve.contains(&bid), "one send still reads it");
    pool.unpin(bid);
    assert_eq!(pool.reserve.last(), Some(&bid), "back after the last");
    // Unpinned before the kernel finished it: back when it does.
    pool.publish();
    let next = (0..pool.entries)
        .find(|&b| pool.ready[usize::from(b)] && b != bid)
        .expect("another buffer in the ring");
    pool.pin(next);
    pool.done(next, 10, true);
    pool.unpin(next);
    assert!(!pool.reserve.contains(&next), "the kernel still fills it");
    pool.done(next, pool.size - 10, false);
    assert_eq!(pool.reserve.last(), Some(&next));
}

/// With fitting off, every buffer goes back into the ring.
#[test]
fn an_unfitted_ring_holds_every_buffer() {
    let (_ring, mut pool) = pool();
    pool.unfit();
    use_up(&mut pool, 60);
    for _ in 0..200 {
        pool.publish();
    }
    assert_eq!(pool.ready_count, 64);
    assert!(pool.reserve.is_empty());
}

use super::*;

/// Trap C1's cousin for sends: growing the buffer while a send is in
/// flight keeps the bytes the kernel may still read where they were.
#[test]
fn bytes_in_flight_never_move() {
    let mut out = OutBuf::default();
    out.push(b"hello");
    let Some(Next::Bytes(ptr, len)) = out.next_send() else { panic!() };
    assert_eq!(len, 5);
    out.push(&[7; 8 * 1024]); // grows past FIRST_OUT
                              // SAFETY: the retired buffer still holds the five bytes.
    let flying = unsafe { std::slice::from_raw_parts(ptr, 5) };
    assert_eq!(flying, b"hello");
    assert!(out.next_send().is_none(), "one send at a time");
    assert!(!out.sent(3, |_| ()));
    let Some(Next::Bytes(_, rest)) = out.next_send() else { panic!() };
    assert_eq!(rest as usize, 2 + 8 * 1024);
    assert!(out.sent(rest as usize, |_| ()));
}

/// The bytes of one send of `out`, and the send itself.
fn next_bytes(out: &mut OutBuf) -> Vec<u8> {
    match out.next_send() {
        Some(Next::Bytes(ptr, n)) => {
            // SAFETY: valid until `sent`.
            unsafe { std::slice::from_raw_parts(ptr, n as usize) }.to_vec()
        }
        Some(Next::Leased(msg)) => {
            // SAFETY: the message and its vectors live in `out`.
            let msg = unsafe { &*msg };
            let iov = unsafe {
                std::slice::from_raw_parts(msg.msg_iov, msg.msg_iovlen)
            };
            iov.iter()
                .flat_map(|v| {
                    // SAFETY: each vector is a lease's piece.
                    unsafe {
                        std::slice::from_raw_parts(
                            v.iov_base.cast::<u8>(),
                            v.iov_len,
                        )
                    }
                })
                .copied()
                .collect()
        }
        None => Vec::new(),
    }
}

/// Trap C11: leases go out in order in one `sendmsg`; a short send
/// copies what is left into the ring, in order, and unpins every
/// lease (a slow client keeps no receive buffer); output that
/// follows copied bytes is copied too; a full send unpins what it
/// sent.
#[test]
fn leases_go_in_order_and_a_short_send_copies_the_rest() {
    let a: Vec<u8> = (0..100).collect();
    let b: Vec<u8> = (100..250).collect();
    let mut out = OutBuf::default();
    assert!(out.leasable());
    out.lease(1, &a);
    out.lease(2, &b);
    assert_eq!(out.pending(), 250);
    assert_eq!(out.held(), std::mem::size_of::<OutBuf>(), "no copy");
    let mut want = a.clone();
    want.extend_from_slice(&b);
    assert_eq!(next_bytes(&mut out), want);
    assert!(out.next_send().is_none(), "one send at a time");
    let mut unpinned = Vec::new();
    // 120 bytes go: lease 1 done, 20 of lease 2; the rest copied.
    assert!(!out.sent(120, |bid| unpinned.push(bid)));
    assert_eq!(unpinned, [1, 2]);
    assert_eq!(out.pending(), 130);
    assert!(!out.leasable(), "copied bytes wait: no lease after them");
    assert_eq!(next_bytes(&mut out), &want[120..]);
    assert!(out.sent(130, |_| panic!("nothing pinned")));
    // Drained: leases again; a send of all of them unpins them.
    assert!(out.leasable());
    out.lease(3, &a);
    next_bytes(&mut out);
    let mut unpinned = Vec::new();
    assert!(out.sent(100, |bid| unpinned.push(bid)));
    assert_eq!(unpinned, [3]);
    assert!(out.is_quiet());
}

/// More leases than one `sendmsg` takes: the first go, the rest wait
/// for the next send, still in place.
#[test]
fn leases_past_one_sendmsg_wait_for_the_next() {
    let piece = [7u8; 10];
    let mut out = OutBuf::default();
    for bid in 0..LeaseMsg::IOV as u16 + 2 {
        out.lease(bid, &piece);
    }
    assert_eq!(next_bytes(&mut out).len(), 10 * LeaseMsg::IOV);
    let mut unpinned = 0;
    assert!(!out.sent(10 * LeaseMsg::IOV, |_| unpinned += 1));
    assert_eq!(unpinned, LeaseMsg::IOV);
    assert!(out.leasable(), "nothing was copied");
    assert_eq!(next_bytes(&mut out).len(), 20);
    assert!(out.sent(20, |_| unpinned += 1));
    assert_eq!(unpinned, LeaseMsg::IOV + 2);
}

/// Output wraps around the ring: bytes come out in the order they
/// went in, across the end, in at most two sends.
#[test]
fn output_wraps_in_order() {
    let mut out = OutBuf::default();
    let first: Vec<u8> = (0..FIRST_OUT).map(|i| i as u8).collect();
    out.push(&first[..FIRST_OUT - 10]);
    let n = next_bytes(&mut out).len();
    out.sent(n - 5, |_| ()); // 5 left, near the end
    out.push(&first[..20]); // wraps
    let mut got = Vec::new();
    loop {
        let bytes = next_bytes(&mut out);
        if bytes.is_empty() {
            break;
        }
        out.sent(bytes.len(), |_| ());
        got.extend(bytes);
    }
    let mut want = first[FIRST_OUT - 15..FIRST_OUT - 10].to_vec();
    want.extend_from_slice(&first[..20]);
    assert_eq!(got, want);
    assert_eq!(out.ring.len(), FIRST_OUT, "no growth was needed");
}

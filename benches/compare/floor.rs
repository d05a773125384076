//! The floors: the least an echo server can do, as references, not
//! products. No logging, no limits, no timeouts, no graceful stop.
//!
//! - `epoll`: raw libc epoll, one thread, edge-triggered, one fixed
//!   64 KiB buffer; read until EAGAIN, write it back, keep what the
//!   socket did not take and stop reading until it drained. What any
//!   readiness server must pay: a `recv` and a `send` per message.
//! - `uring`: raw io_uring, one thread, `SINGLE_ISSUER | DEFER_TASKRUN`,
//!   a multishot accept, a multishot receive per connection into a
//!   provided buffer ring, and a send straight from the received buffer
//!   (given back when the send completes); one `io_uring_enter` a turn.
//!
//! The benchmark runs them as `compare floor epoll|uring ADDR`.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::{cqueue, opcode, types, IoUring};

/// Runs floor `which` on `addr` until killed.
pub fn main(which: &str, addr: &str) -> ExitCode {
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {addr}: {e}");
            return ExitCode::from(1);
        }
    };
    if let Ok(local) = listener.local_addr() {
        eprintln!("listening on {local} (floor {which})");
    }
    let result = match which {
        "epoll" => epoll(listener),
        "uring" => uring(listener),
        other => {
            eprintln!("error: unknown floor {other}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn check(r: i32) -> io::Result<i32> {
    match r {
        -1 => Err(io::Error::last_os_error()),
        r => Ok(r),
    }
}

/// One client of the epoll floor: its socket and unsent output.
struct Client {
    stream: TcpStream,
    out: Vec<u8>,
}

fn epoll(listener: TcpListener) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    // SAFETY: plain syscalls on descriptors this function owns.
    let ep = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    let add = |fd: RawFd, events: u32| -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: fd as u64 };
        // SAFETY: `ev` lives across the call.
        check(unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) })
            .map(drop)
    };
    let lfd = listener.as_raw_fd();
    add(lfd, libc::EPOLLIN as u32)?;
    let mut clients: HashMap<RawFd, Client> = HashMap::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    loop {
        // SAFETY: `events` has room for the count passed.
        let n = unsafe {
            libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, -1)
        };
        if n < 0 {
            continue; // EINTR
        }
        for ev in &events[..n as usize] {
            let fd = ev.u64 as RawFd;
            if fd == lfd {
                while let Ok((stream, _)) = listener.accept() {
                    stream.set_nonblocking(true)?;
                    let cfd = stream.as_raw_fd();
                    let interest =
                        libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLET;
                    add(cfd, interest as u32)?;
                    clients.insert(cfd, Client { stream, out: Vec::new() });
                }
                continue;
            }
            let Some(c) = clients.get_mut(&fd) else { continue };
            if !serve(c, &mut buf) {
                clients.remove(&fd); // closing removes it from epoll
            }
        }
    }
}

/// Flushes, then reads and echoes until EAGAIN; false when it is done.
fn serve(c: &mut Client, buf: &mut [u8]) -> bool {
    if !c.out.is_empty() {
        match write_some(&mut c.stream, &c.out) {
            Ok(n) => drop(c.out.drain(..n)),
            Err(_) => return false,
        }
        if !c.out.is_empty() {
            return true;
        }
    }
    loop {
        match c.stream.read(buf) {
            Ok(0) => return false,
            Ok(n) => match write_some(&mut c.stream, &buf[..n]) {
                Ok(sent) if sent < n => {
                    c.out.extend_from_slice(&buf[sent..n]);
                    return true; // read again once it drained
                }
                Ok(_) => {}
                Err(_) => return false,
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

fn write_some(stream: &mut TcpStream, data: &[u8]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < data.len() {
        match stream.write(&data[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

/// Provided buffers of the uring floor.
const ENTRIES: u16 = 1 << 15;
const BUF: usize = 1024;
const ACCEPT: u64 = u64::MAX;
const RECV: u64 = 0;
const SEND: u64 = 1 << 32;

/// One client of the uring floor: received buffers waiting to go back
/// out (buffer, offset, length), the first of them in a send.
#[derive(Default)]
struct Echo {
    queue: VecDeque<(u16, usize, usize)>,
    sending: bool,
    receiving: bool,
}

fn uring(listener: TcpListener) -> io::Result<()> {
    let mut ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(1 << 16)
        .setup_clamp()
        .build(4096)?;
    let ring_bytes = usize::from(ENTRIES) * 16;
    let len = ring_bytes + usize::from(ENTRIES) * BUF;
    // SAFETY: an anonymous mapping, checked, never unmapped (the process
    // ends with it).
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
            -1,
            0,
        )
    };
    if map == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let base = map.cast::<u8>();
    // SAFETY: the mapping outlives the ring.
    unsafe {
        ring.submitter().register_buf_ring_with_flags(
            base as u64,
            ENTRIES,
            0,
            0,
        )?
    };
    let buffer = |bid: u16| {
        // SAFETY: inside the mapping for any bid below ENTRIES.
        unsafe { base.add(ring_bytes + usize::from(bid) * BUF) }
    };
    let mut tail: u16 = 0;
    let mut put = |bid: u16| {
        let slot = usize::from(tail & (ENTRIES - 1));
        // SAFETY: `slot` is inside the ring; the kernel reads entries only
        // up to the published tail.
        let e = unsafe { &mut *base.cast::<types::BufRingEntry>().add(slot) };
        e.set_addr(buffer(bid) as u64);
        e.set_len(BUF as u32);
        e.set_bid(bid);
        tail = tail.wrapping_add(1);
        tail
    };
    let publish = |tail: u16| {
        // SAFETY: the tail overlays the first entry; release ordering
        // shows the entries before it.
        unsafe {
            let t = types::BufRingEntry::tail(base.cast()).cast_mut();
            AtomicU16::from_ptr(t).store(tail, Ordering::Release);
        }
    };
    let mut published = 0;
    for bid in 0..ENTRIES {
        published = put(bid);
    }
    publish(published);

    let lfd = types::Fd(listener.as_raw_fd());
    let push = |ring: &mut IoUring, e: io_uring::squeue::Entry| {
        // SAFETY: every pointer an entry carries (a received buffer)
        // stays valid until its completion.
        while unsafe { ring.submission().push(&e) }.is_err() {
            let _ = ring.submit();
        }
    };
    push(&mut ring, opcode::AcceptMulti::new(lfd).build().user_data(ACCEPT));
    let mut clients: HashMap<RawFd, (TcpStream, Echo)> = HashMap::new();
    let mut rearm = Vec::new();
    loop {
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(e),
        }
        let cqes: Vec<_> = ring
            .completion()
            .map(|c| (c.user_data(), c.result(), c.flags()))
            .collect();
        let mut to_send = Vec::new();
        for (data, res, flags) in cqes {
            if data == ACCEPT {
                if res >= 0 {
                    // SAFETY: a new descriptor nobody else owns.
                    let s = unsafe { TcpStream::from_raw_fd(res) };
                    clients.insert(res, (s, Echo::default()));
                    rearm.push(res);
                }
                if !cqueue::more(flags) {
                    push(
                        &mut ring,
                        opcode::AcceptMulti::new(lfd)
                            .build()
                            .user_data(ACCEPT),
                    );
                }
                continue;
            }
            let fd = (data & 0xffff_ffff) as RawFd;
            let bid = cqueue::buffer_select(flags);
            let Some((_, echo)) = clients.get_mut(&fd) else {
                if let Some(b) = bid {
                    published = put(b);
                }
                continue;
            };
            if data & SEND == 0 {
                if !cqueue::more(flags) {
                    echo.receiving = false;
                }
                match (res, bid) {
                    (n, Some(b)) if n > 0 => {
                        echo.queue.push_back((b, 0, n as usize));
                        to_send.push(fd);
                    }
                    (n, _) if n == -libc::ENOBUFS => rearm.push(fd),
                    (n, _) if n > 0 => {}
                    _ => {
                        // EOF or error: done once nothing is in flight.
                        if !echo.sending {
                            for (b, _, _) in echo.queue.drain(..) {
                                published = put(b);
                            }
                            clients.remove(&fd);
                        }
                        continue;
                    }
                }
                if !echo.receiving && !rearm.contains(&fd) {
                    rearm.push(fd);
                }
            } else {
                echo.sending = false;
                match echo.queue.front_mut() {
                    Some((b, off, len)) if res > 0 => {
                        *off += res as usize;
                        if *off == *len {
                            published = put(*b);
                            echo.queue.pop_front();
                        }
                        to_send.push(fd);
                    }
                    _ => {
                        for (b, _, _) in echo.queue.drain(..) {
                            published = put(b);
                        }
                        if !echo.receiving {
                            clients.remove(&fd);
                        }
                    }
                }
            }
        }
        publish(published);
        for fd in rearm.drain(..) {
            if let Some((_, echo)) = clients.get_mut(&fd) {
                if !echo.receiving {
                    echo.receiving = true;
                    let recv =
                        opcode::RecvMulti::new(types::Fd(fd), 0).build();
                    push(&mut ring, recv.user_data(RECV | fd as u64));
                }
            }
        }
        for fd in to_send {
            let Some((_, echo)) = clients.get_mut(&fd) else { continue };
            if echo.sending {
                continue;
            }
            let Some(&(b, off, len)) = echo.queue.front() else { continue };
            echo.sending = true;
            // SAFETY: `b`'s bytes stay put until this send completes.
            let ptr = unsafe { buffer(b).add(off) };
            let send =
                opcode::Send::new(types::Fd(fd), ptr, (len - off) as u32)
                    .flags(libc::MSG_NOSIGNAL)
                    .build();
            push(&mut ring, send.user_data(SEND | fd as u64));
        }
    }
}

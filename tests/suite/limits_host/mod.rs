//! Limits for small hosts, against the real binary: one address cannot
//! take every slot (`--max-connections-per-ip`), clients that never read
//! cost the output budget and not their number (`--max-output-memory`),
//! and a `--max-connections` the descriptor limit cannot honour is named
//! at start.
//!
//! Standalone (std and libc only, its own helpers) so that it can move
//! into the one test binary as a module.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::FromRawFd;
use std::thread;
use std::time::{Duration, Instant};

use readyloop::{Model, Summary};

use crate::support::PATIENCE;
use crate::support::{close_and_wait, eventually, proc, ServerProcess};

/// The "one address" of the per-address tests, and another one.
const ONE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const OTHER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

// ---------------------------------------------------------------- helpers

/// The server's flags in these tests: echo, and only warnings logged.
const ECHO: [&str; 4] = ["--mode", "echo", "--log-level", "warn"];

/// `readyloop serve` in echo mode on a free loopback port with `args`.
fn echo_server(args: &[&str]) -> ServerProcess {
    ServerProcess::start(&[&ECHO[..], args].concat())
}

/// SIGTERM, exit 0, and the summary with the server's whole log.
fn stop(mut server: ServerProcess) -> (Summary, Vec<String>) {
    let (code, summary) = server.finish();
    assert_eq!(code, 0, "exit code; log:\n{:?}", server.log);
    (summary, std::mem::take(&mut server.log))
}

/// A TCP connection from `src` (any 127.0.0.0/8 address is this host)
/// to `to`, optionally with small socket buffers set before connecting
/// so that a client that does not read holds little kernel memory.
fn connect_from(
    src: Ipv4Addr,
    to: SocketAddr,
    bufs: Option<i32>,
) -> TcpStream {
    let SocketAddr::V4(to) = to else { panic!("IPv4 only: {to}") };
    // SAFETY: socket(2) returns a new descriptor or -1.
    let fd = unsafe {
        libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0)
    };
    assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
    // SAFETY: `fd` is a new socket nobody else owns; the stream closes it.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    if let Some(size) = bufs {
        for option in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
            // SAFETY: `size` is a c_int that outlives the call.
            let r = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    option,
                    (&size as *const i32).cast(),
                    std::mem::size_of::<i32>() as libc::socklen_t,
                )
            };
            assert_eq!(r, 0, "setsockopt: {}", io::Error::last_os_error());
        }
    }
    let sockaddr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let local = sockaddr(src, 0);
    // SAFETY: `local` is a valid sockaddr_in of `len` bytes.
    let r = unsafe {
        libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len)
    };
    assert_eq!(r, 0, "bind {src}: {}", io::Error::last_os_error());
    let remote = sockaddr(*to.ip(), to.port());
    loop {
        // SAFETY: as above.
        let r = unsafe {
            libc::connect(
                fd,
                (&remote as *const libc::sockaddr_in).cast(),
                len,
            )
        };
        if r == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        assert_eq!(e.kind(), ErrorKind::Interrupted, "connect {to}: {e}");
    }
    stream
}

/// Writes `data` and reads it back; panics unless the echo is exact.
fn assert_echoes(stream: &mut TcpStream, data: &[u8]) {
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(data).expect("write");
    let mut back = vec![0; data.len()];
    stream.read_exact(&mut back).expect("read the echo");
    assert_eq!(back, data);
}

/// The server closed the connection at once without sending anything:
/// the next read ends (EOF or reset) instead of timing out.
fn assert_closed_at_once(mut stream: TcpStream) {
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected the server to close, got {other:?}"),
    }
}

/// Bytes client `i` sends at `offset` onwards: different for every
/// client and position, so a byte delivered to the wrong client or out
/// of order is caught.
fn pattern(i: usize, offset: usize, out: &mut [u8]) {
    for (j, b) in out.iter_mut().enumerate() {
        let x = (offset + j) as u64 ^ ((i as u64) << 32);
        *b = (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8;
    }
}

// ------------------------------------------------------ per-address limit

/// Allowed per address in the per-address tests, and one more each.
const PER_IP: usize = 3;
const OVER: usize = 2;

/// One address over `--max-connections-per-ip` in a concurrent model: the
/// connections past the limit are closed at once and counted in
/// `rejected`, another address is still served, and closing some frees
/// exactly that many slots for the first address again.
fn one_address_cannot_take_every_slot(model: &str) {
    let per_ip = PER_IP.to_string();
    let mut server =
        echo_server(&["--model", model, "--max-connections-per-ip", &per_ip]);
    let addr = server.addr;
    let mut held: Vec<TcpStream> = (0..PER_IP)
        .map(|i| {
            let mut s = connect_from(ONE, addr, None);
            assert_echoes(&mut s, format!("held {i}").as_bytes());
            s
        })
        .collect();
    for _ in 0..OVER {
        assert_closed_at_once(connect_from(ONE, addr, None));
    }
    server.wait_for_line("max-connections-per-ip");
    let mut other = connect_from(OTHER, addr, None);
    assert_echoes(&mut other, b"another address is served");

    // Close two of the first address's connections: two may come back.
    for s in held.drain(..2) {
        close_and_wait(s);
    }
    if model == "process" {
        // The parent learns of a close when it reaps the child, which
        // may come just after the client saw the child's FIN.
        let pid = server.pid();
        eventually("the closed children to be reaped", || {
            proc::children(pid).len() == held.len() + 1
        });
    }
    for i in 0..2 {
        let mut s = connect_from(ONE, addr, None);
        assert_echoes(&mut s, format!("again {i}").as_bytes());
        held.push(s);
    }
    // At the limit again: exactly as many as were freed came back.
    assert_closed_at_once(connect_from(ONE, addr, None));
    for s in held {
        close_and_wait(s);
    }
    close_and_wait(other);
    let (counts, log) = stop(server);
    assert_eq!(counts.rejected, OVER as u64 + 1, "{counts:?}");
    assert_eq!(counts.accepted, PER_IP as u64 + 3, "{counts:?}");
    assert!(
        log.iter().all(|l| !l.contains("(max-connections)")),
        "the global limit was never reached: {log:?}"
    );
}

per_model!(concurrent: per_address_limit);

/// An address over its limit is rejected and others are served: the mio
/// loop frees a slot when it closes a connection, the thread model's
/// accept thread learns of closes from the connection threads, the
/// process model's parent frees it when it reaps the child.
fn per_address_limit(model: Model) {
    one_address_cannot_take_every_slot(model.name());
}

/// iterative: one connection is open at a time, so the limit never
/// refuses anyone; what it must do is free the address's count when a
/// connection ends, or the address's next client would be refused. With
/// a limit of 1, a second client of the same address waits in the
/// backlog while the first is served, and is served after it.
#[test]
fn per_address_limit_iterative() {
    let server = echo_server(&[
        "--model",
        "iterative",
        "--max-connections-per-ip",
        "1",
    ]);
    let addr = server.addr;
    let mut first = connect_from(ONE, addr, None);
    assert_echoes(&mut first, b"first");
    let mut second = connect_from(ONE, addr, None);
    second.write_all(b"second").unwrap();
    close_and_wait(first);
    let mut back = [0u8; 6];
    second.set_read_timeout(Some(PATIENCE)).unwrap();
    second.read_exact(&mut back).expect("the second client is served");
    assert_eq!(&back, b"second");
    close_and_wait(second);
    for i in 0..3 {
        let mut s = connect_from(ONE, addr, None);
        assert_echoes(&mut s, format!("next {i}").as_bytes());
        close_and_wait(s);
    }
    let (counts, _) = stop(server);
    assert_eq!(counts.rejected, 0, "{counts:?}");
    assert_eq!(counts.accepted, 5, "{counts:?}");
}

/// IPv6 addresses are counted too (per /64; over loopback the one /64
/// is ::1): the second connection from ::1 over a limit of 1 is closed.
#[test]
fn per_address_limit_ipv6() {
    // A probe, not the server, decides; a host without it fails here.
    if let Err(e) = TcpListener::bind("[::1]:0") {
        panic!("this test needs an IPv6 loopback (::1): {e}");
    }
    let args = [&ECHO[..], &["--max-connections-per-ip", "1"]].concat();
    let cmd = ServerProcess::command_at("[::1]:0", &args);
    let mut server = ServerProcess::start_command(cmd);
    let mut first = TcpStream::connect(server.addr).unwrap();
    assert_echoes(&mut first, b"v6");
    assert_closed_at_once(TcpStream::connect(server.addr).unwrap());
    server.wait_for_line("max-connections-per-ip");
    close_and_wait(first);
    let mut again = TcpStream::connect(server.addr).unwrap();
    assert_echoes(&mut again, b"v6 again");
    close_and_wait(again);
    let (counts, _) = stop(server);
    assert_eq!(counts.rejected, 1, "{counts:?}");
}

mod budget;

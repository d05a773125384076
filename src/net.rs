//! Socket set-up and the small predicates that name what an IO error means.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::RawFd;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

/// Binds a listening socket on `addr` with the given backlog.
///
/// Trap 11: std and mio listen with a backlog of 128, which a burst of
/// connects overflows; socket2 lets us pass `--backlog` (the kernel still
/// caps it at `net.core.somaxconn`). The socket is close-on-exec and in
/// nonblocking mode; blocking models switch their accepted sockets back.
pub(crate) fn listen(
    addr: SocketAddr,
    backlog: u32,
    receive_buffer: Option<usize>,
    reuse_port: bool,
) -> io::Result<TcpListener> {
    let domain = Domain::for_address(addr);
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        // `[::]:P` takes IPv6 only, so `0.0.0.0:P` can be bound beside
        // it (Linux's default, net.ipv6.bindv6only=0, would take both and
        // make the second bind fail).
        socket.set_only_v6(true)?;
    }
    // A restarted server must not wait out TIME_WAIT of its old sockets.
    socket.set_reuse_address(true)?;
    if reuse_port {
        // `--workers`: every worker binds the address, and the kernel
        // hashes each new connection to one of their sockets. Only
        // sockets of the same user can join the group.
        socket.set_reuse_port(true)?;
    }
    if let Some(size) = receive_buffer {
        // `--receive-buffer`: accepted sockets inherit it, and set before
        // listen it sizes the window scale their handshakes offer.
        socket.set_recv_buffer_size(size)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Whether listeners on `a` and `b` would take the same connections: the
/// same port, and the same address or an unspecified one (`0.0.0.0`,
/// `[::]`) in the same family. Families never overlap: IPv6 listeners
/// are `IPV6_V6ONLY`, so `[::]:P` takes no IPv4 client of `0.0.0.0:P`
/// (an IPv4-mapped IPv6 address counts as the IPv4 address it is).
/// Port 0 never overlaps: the kernel picks a free port for each.
pub(crate) fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() == 0 || a.port() != b.port() {
        return false;
    }
    let (x, y) = (a.ip().to_canonical(), b.ip().to_canonical());
    let same_family = matches!(
        (x, y),
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_))
    );
    same_family && (x == y || x.is_unspecified() || y.is_unspecified())
}

/// The peer of a connection whose address could not be read: a client
/// that reset before the server looked (`getpeername` fails with
/// ENOTCONN then, and a multishot accept brings no address). No real
/// peer has it; the log says `unknown peer`.
pub(crate) const UNKNOWN_PEER: SocketAddr = SocketAddr::V4(
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0),
);

/// The operation would block: the edge has been consumed, wait for the
/// next event.
pub(crate) fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// Trap 9: a signal interrupted the call; retry it.
pub(crate) fn interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}

/// Trap 4: `accept` failed for want of descriptors or kernel memory. The
/// pending connection stays in the backlog and the listener stays ready,
/// so retrying at once spins; back off instead. std reports EMFILE as
/// `ErrorKind::Uncategorized`, hence the raw errno.
pub(crate) fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Trap 12: `accept` failed for a reason that concerns only the one
/// pending connection (it was aborted or refused by a filter before we
/// took it); skip it and accept the next.
pub(crate) fn skip_on_accept(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNABORTED
                | libc::EPROTO
                | libc::EPERM
                | libc::ENETDOWN
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
        )
    ) || e.kind() == io::ErrorKind::ConnectionAborted
}

/// How long ago TCP socket `fd` last moved bytes to its peer, as the
/// kernel saw it (`TCP_INFO`), or `None` if the kernel will not say:
/// the later of its last data sent and its last ACK received, so that
/// both must be recent. Bytes a slow reader takes from what the server
/// wrote earlier move only in the kernel (the socket turns writable
/// again only once a third of its send buffer is free, which at a few
/// KiB a second can take longer than the idle timeout). A client that
/// never reads gets no data (its window is shut; the window probes
/// carry none), and a vanished peer's retransmissions get no ACK.
pub(crate) fn since_data_sent(fd: RawFd) -> Option<Duration> {
    let info = tcp_info(fd)?;
    let ms = info.tcpi_last_data_sent.max(info.tcpi_last_ack_recv);
    Some(Duration::from_millis(ms.into()))
}

/// The TCP state of socket `fd` as the kernel reports it (`TCP_INFO`'s
/// `tcpi_state`), by the name the TCP state diagram gives it.
pub(crate) fn tcp_state(fd: RawFd) -> &'static str {
    let Some(info) = tcp_info(fd) else { return "unknown" };
    match i32::from(info.tcpi_state) {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        _ => "unknown",
    }
}

/// `TCP_INFO` of socket `fd`, if the kernel gives it (the test suite's
/// chaos clients read it too).
#[allow(unsafe_code)]
pub fn tcp_info(fd: RawFd) -> Option<libc::tcp_info> {
    // SAFETY: `info` is a plain C struct that any bytes make valid, and
    // `len` tells the kernel its size; the kernel writes at most that.
    let (info, ok) = unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let ret = libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        );
        (info, ret == 0)
    };
    ok.then_some(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlap(a: &str, b: &str) -> bool {
        let (a, b) = (a.parse().unwrap(), b.parse().unwrap());
        let answer = overlaps(a, b);
        assert_eq!(answer, overlaps(b, a), "{a} {b}: not symmetric");
        answer
    }

    #[test]
    fn listeners_overlap_on_the_same_port_and_address_family() {
        assert!(overlap("127.0.0.1:9898", "127.0.0.1:9898"));
        assert!(overlap("0.0.0.0:9898", "127.0.0.1:9898"));
        assert!(overlap("[::]:9898", "[::1]:9898"));
        assert!(overlap("[::1]:9898", "[::1]:9898"));
        assert!(overlap("[::ffff:127.0.0.1]:9898", "127.0.0.1:9898"));
        assert!(!overlap("127.0.0.1:9898", "127.0.0.1:9899"));
        assert!(!overlap("127.0.0.1:9898", "127.0.0.2:9898"));
        assert!(!overlap("[::]:9898", "0.0.0.0:9898"));
        assert!(!overlap("[::1]:9898", "127.0.0.1:9898"));
        assert!(!overlap("127.0.0.1:0", "127.0.0.1:0"));
        assert!(!overlap("0.0.0.0:0", "127.0.0.1:0"));
    }
}

//! Socket set-up and the small predicates that name what an IO error means.

use std::io;
use std::net::{SocketAddr, TcpListener};

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
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

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

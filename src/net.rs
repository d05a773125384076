//! Socket set-up and the small predicates that name what an IO error means.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::journal::RateLimited;

/// Trap 2 for the listener, in every model: connections accepted per
/// turn, so a connect flood cannot starve the connections already open;
/// the listener stays marked ready and the next turn goes on (trap 5).
pub const ACCEPTS_PER_TURN: usize = 256;
/// Trap 4: how long accepting pauses when descriptors run out (nginx
/// pauses 500 ms; a close frees one sooner and may resume at once).
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// How long an unexpected accept error pauses accepting.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Binds a listening socket on `addr` with the given backlog.
///
/// Trap 11: std and mio listen with a backlog of 128, which a burst of
/// connects overflows; socket2 lets us pass `--backlog` (the kernel still
/// caps it at `net.core.somaxconn`). The socket is close-on-exec and in
/// nonblocking mode; blocking models switch their accepted sockets back.
pub fn listen(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let domain = Domain::for_address(addr);
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    // A restarted server must not wait out TIME_WAIT of its old sockets.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// The operation would block: the edge has been consumed, wait for the
/// next event.
pub fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// Trap 9: a signal interrupted the call; retry it.
pub fn interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}

/// Trap 4: `accept` failed for want of descriptors or kernel memory. The
/// pending connection stays in the backlog and the listener stays ready,
/// so retrying at once spins; back off instead. std reports EMFILE as
/// `ErrorKind::Uncategorized`, hence the raw errno.
pub fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Trap 12: `accept` failed for a reason that concerns only the one
/// pending connection (it was aborted or refused by a filter before we
/// took it); skip it and accept the next.
pub fn skip_on_accept(e: &io::Error) -> bool {
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

/// What an accept loop does after `accept` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptFailed {
    /// Trap 3: `WouldBlock`, so the listener's edge is consumed; wait for
    /// the next event.
    Drained,
    /// Interrupted (trap 9), or a failure of that one pending connection
    /// (trap 12): accept the next.
    Next,
    /// Out of descriptors (trap 4) or an unexpected error: accept nothing
    /// before this instant.
    Pause(Instant),
}

/// Decides what follows a failed `accept` in every model, and logs what
/// an operator should see (descriptor exhaustion at most once a second).
pub fn accept_failed(
    e: &io::Error,
    now: Instant,
    exhaustion: &mut RateLimited,
) -> AcceptFailed {
    if would_block(e) {
        AcceptFailed::Drained
    } else if interrupted(e) || skip_on_accept(e) {
        AcceptFailed::Next
    } else if out_of_descriptors(e) {
        // Trap 4: the connection stays in the backlog and the listener
        // stays ready; retrying now would spin.
        if let Some(folded) = exhaustion.admit(now) {
            log::warn!(
                "accept: {e}; pausing accept for {} ms \
                 ({folded} more since the last line; raise the \
                 descriptor limit: ulimit -n, LimitNOFILE)",
                ACCEPT_PAUSE.as_millis()
            );
        }
        AcceptFailed::Pause(now + ACCEPT_PAUSE)
    } else {
        log::error!("accept: {e}; pausing accept for 1 s");
        AcceptFailed::Pause(now + ACCEPT_ERROR_PAUSE)
    }
}

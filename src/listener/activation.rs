//! systemd socket activation: the listening sockets a service manager
//! passes (`LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`, from fd 3), read
//! with the `sd-notify` crate, checked and made ready for the loop.

use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

use crate::error::Error;

/// The sockets passed to this process, or `None` when it was not socket
/// activated (no `LISTEN_FDS`, or `LISTEN_PID` names another process).
/// Each must be a TCP socket in the listening state; it is made
/// nonblocking (the crate already made it close-on-exec). The variables
/// are unset, so nothing this process starts inherits them.
pub(super) fn take() -> Result<Option<Vec<TcpListener>>, Error> {
    // SAFETY: unsetting environment variables races with any other thread
    // reading the environment. `Config::systemd` asks for this only in a
    // process with one thread: the binary binds before any thread or
    // child starts.
    #[allow(unsafe_code)]
    let passed = unsafe { sd_notify::listen_fds_with_names_and_unset_env() }
        .map_err(|e| Error::Activation(format!("{e}")))?;
    let passed: Vec<(RawFd, String)> = passed.collect();
    if passed.is_empty() {
        return Ok(None);
    }
    // Own every descriptor first, so each one is closed on any error.
    let owned: Vec<(RawFd, String, OwnedFd)> = passed
        .into_iter()
        .map(|(fd, name)| {
            // SAFETY: the service manager passed this descriptor to this
            // process (fd 3 onwards, as LISTEN_FDS counts them, and the
            // crate checked each is open by setting FD_CLOEXEC on it);
            // nothing else in the process owns it.
            #[allow(unsafe_code)]
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            (fd, name, owned)
        })
        .collect();
    owned
        .into_iter()
        .map(|(fd, name, owned)| {
            listening(Socket::from(owned)).map_err(|why| {
                Error::Activation(format!("passed socket {fd} ({name}) {why}"))
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// `socket` as a nonblocking TCP listener, or why it cannot be one.
fn listening(socket: Socket) -> Result<TcpListener, String> {
    let bad = |e: std::io::Error| format!("cannot be inspected: {e}");
    let domain = socket.domain().map_err(bad)?;
    if domain != Domain::IPV4 && domain != Domain::IPV6 {
        return Err(format!(
            "is not a TCP socket (address family {domain:?}); readyloop \
             takes ListenStream= sockets on IPv4 or IPv6 addresses"
        ));
    }
    let kind = socket.r#type().map_err(bad)?;
    let protocol = socket.protocol().map_err(bad)?;
    if kind != Type::STREAM || protocol.is_some_and(|p| p != Protocol::TCP) {
        return Err(format!(
            "is not a TCP socket ({kind:?}, {protocol:?}); use \
             ListenStream="
        ));
    }
    if !socket.is_listener().map_err(bad)? {
        return Err("is a TCP socket that is not listening (Accept=yes \
                    passes connections; readyloop needs Accept=no)"
            .into());
    }
    socket
        .set_nonblocking(true)
        .map_err(|e| format!("cannot be made nonblocking: {e}"))?;
    Ok(socket.into())
}

//! `--log-level trace` for the uring model: each completion as the
//! kernel posted it (operation, result, flags), each submission batch,
//! and the milestones of a connection with its TCP state. Nothing here
//! runs unless trace is enabled: every caller checks
//! [`log::log_enabled!`] (or uses `log::trace!`, which checks it) first,
//! so with trace off a completion costs one comparison of the level.

use std::fmt::Write as _;
use std::os::fd::AsRawFd;

use io_uring::cqueue;

use crate::net;

use super::close::live;
use super::ring::{Completion, Kind};
use super::Loop;

/// Whether trace lines are wanted: the `log` crate's own check (a
/// compare against the max level set from `--log-level`, and a
/// constant `false` when built with `--features no-trace`).
pub(super) fn on() -> bool {
    log::log_enabled!(log::Level::Trace)
}

impl Loop {
    /// Trace: the operations this submit hands the kernel, if any.
    pub(super) fn trace_submit(&mut self) {
        let queued = self.ring.submission().len();
        let s = if queued == 1 { "" } else { "s" };
        if queued > 0 {
            log::trace!("submit: {queued} operation{s} in one io_uring_enter");
        }
    }

    /// Trace: one completion, named by the client it belongs to.
    pub(super) fn trace_completion(&mut self, c: &Completion) {
        let mut line = String::new();
        let what = match c.op.kind {
            Kind::Accept => "accept",
            Kind::Control => "control",
            // The arming's trace line says which receive it was.
            Kind::Recv | Kind::Bundle => "recv",
            Kind::Send => "send",
            Kind::Cancel => "cancel",
        };
        match c.op.kind {
            Kind::Accept => {
                let _ = write!(line, "listener {} ", c.op.key);
            }
            Kind::Control => line.push_str("signals and waker "),
            _ => match live(&mut self.connections, c.op) {
                Some(conn) => {
                    let _ = write!(line, "{} ", conn.peer);
                }
                // Trap C2: its slot moved on (or is gone).
                None => {
                    let _ = write!(line, "slot {} (stale) ", c.op.key);
                }
            },
        }
        let _ = write!(line, "completion: {what} ");
        match (c.op.kind, c.result) {
            (_, r) if r < 0 => {
                let _ = write!(line, "-{}", errno_name(-r));
            }
            (Kind::Recv | Kind::Bundle, 0) => line.push_str("0 (EOF)"),
            (Kind::Recv | Kind::Bundle | Kind::Send, n) => {
                let _ = write!(line, "{n} bytes");
            }
            (Kind::Accept, fd) => {
                let _ = write!(line, "descriptor {fd}");
            }
            (Kind::Control, r) if r & i32::from(libc::POLLIN) != 0 => {
                line.push_str(
                    "POLLIN (the listener layer's epoll is readable)",
                );
            }
            (_, r) => {
                let _ = write!(line, "{r}");
            }
        }
        let mut flags = Vec::new();
        if c.more() {
            flags.push("more".to_string());
        }
        if let Some(bid) = c.buffer() {
            flags.push(format!("buffer {bid}"));
        }
        if c.buffer_more() {
            flags.push("buffer_more".into());
        }
        if cqueue::sock_nonempty(c.flags) {
            flags.push("sock_nonempty".into());
        }
        match flags.is_empty() {
            true => line.push_str("; flags: none"),
            false => {
                let _ = write!(line, "; flags: {}", flags.join(" "));
            }
        }
        if matches!(c.op.kind, Kind::Recv | Kind::Bundle | Kind::Accept)
            && !c.more()
        {
            line.push_str(" (the operation ended: armed again if wanted)");
        }
        log::trace!("{line}");
    }

    /// Trace: connection `key`'s milestone `what`, with its TCP state.
    pub(super) fn trace_state(&self, key: usize, what: &str) {
        if let Some(conn) = self.connections.get(key) {
            log::trace!(
                "{} {what}; state {}",
                conn.peer,
                net::tcp_state(conn.stream.as_raw_fd())
            );
        }
    }
}

/// The name of errno `e` (what a completion's negative result means),
/// for the ones a socket's operations give; others by number.
pub(super) fn errno_name(e: i32) -> String {
    let name = match e {
        libc::ECONNRESET => "ECONNRESET",
        libc::EPIPE => "EPIPE",
        libc::ENOBUFS => "ENOBUFS",
        libc::ECANCELED => "ECANCELED",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EAGAIN => "EAGAIN",
        libc::EINTR => "EINTR",
        libc::ENOENT => "ENOENT",
        libc::EALREADY => "EALREADY",
        libc::EBADF => "EBADF",
        libc::EINVAL => "EINVAL",
        libc::EMFILE => "EMFILE",
        libc::ENFILE => "ENFILE",
        libc::ENOMEM => "ENOMEM",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::ENOTCONN => "ENOTCONN",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ENETUNREACH => "ENETUNREACH",
        _ => return format!("errno {e}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_names_the_common_ones_and_numbers_the_rest() {
        assert_eq!(errno_name(libc::ECONNRESET), "ECONNRESET");
        assert_eq!(errno_name(libc::ENOBUFS), "ENOBUFS");
        assert_eq!(errno_name(9999), "errno 9999");
    }
}

//! A stop reaches a blocking connection: send our FIN, then read and
//! discard until the client's FIN or the end of the stop window
//! (lingering), so unread input never turns the close into an RST.

use std::io::Read;
use std::net::Shutdown;

use crate::net::{interrupted, would_block};
use crate::stats::Reason;

use super::connection::Connection;
use super::deadline::Call;
use super::Context;

impl Connection<'_> {
    /// The server is stopping and no output is pending (`send` returns
    /// only when all went). If the client left input unread, a close()
    /// would send an RST that makes its kernel drop the output already
    /// sent, so, as the event-driven models do, send our FIN first and
    /// discard input until the client's EOF or the end of the window
    /// (lingering, trap 17).
    pub(super) fn wind_down(&mut self, cx: &mut Context<'_>) -> Reason {
        let unread = self.drain_queued(cx);
        if !unread {
            return Reason::Shutdown;
        }
        let _ = self.stream.shutdown(Shutdown::Write);
        if log::log_enabled!(log::Level::Trace) {
            let fd = std::os::fd::AsRawFd::as_raw_fd(self.stream);
            let peer = self.stream.peer_addr().map(|p| p.to_string());
            log::trace!(
                "{} unread input at the stop: shutdown(Write) sent our FIN, \
                 lingering (trap 17); state {}",
                peer.unwrap_or_else(|_| "unknown peer".into()),
                crate::net::tcp_state(fd)
            );
        }
        loop {
            if self.arm(Call::Read).is_err() {
                return Reason::Shutdown;
            }
            match self.stream.read(cx.buf) {
                Ok(0) => return Reason::Shutdown,
                Ok(n) => cx.stats.read(n),
                Err(e) if would_block(&e) => {
                    if self.expired().is_some() {
                        return Reason::Shutdown;
                    }
                }
                Err(e) if interrupted(&e) => {}
                Err(_) => return Reason::Shutdown,
            }
        }
    }

    /// Reads, without blocking, what the client has queued; true if there
    /// was any (and the client has not closed).
    fn drain_queued(&mut self, cx: &mut Context<'_>) -> bool {
        if self.stream.set_nonblocking(true).is_err() {
            return false;
        }
        let mut unread = false;
        loop {
            match self.stream.read(cx.buf) {
                Ok(0) => {
                    unread = false;
                    break;
                }
                Ok(n) => {
                    cx.stats.read(n);
                    unread = true;
                    // A client that never stops sending cannot hold the
                    // stop past its window.
                    if self.expired().is_some() {
                        break;
                    }
                }
                Err(e) if interrupted(&e) => {}
                Err(_) => break,
            }
        }
        unread && self.stream.set_nonblocking(false).is_ok()
    }
}

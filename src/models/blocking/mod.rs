//! The per-connection loop the blocking models (iterative, thread,
//! process) share: read, then log, echo or discard, until EOF, an error,
//! the idle timeout or a stop.
//!
//! A blocking socket needs no output buffer: `write` returns only once the
//! kernel has taken the bytes, so a client that does not read stalls its
//! own thread or process and nothing else (that is the price: a whole
//! thread or process waits on it). What the models differ in is how a
//! blocked call learns that the server is stopping; [`Watch`] is that.
//!
//! | file | what it holds |
//! |---|---|
//! | `mod.rs` | the entry points: serve one socket, count and log its close |
//! | `connection` | one connection: the read loop, and echo's write loop |
//! | `deadline` | the socket timeouts: idle, the stop window, the watch |
//! | `header` | a PROXY header, read before serving |
//! | `linger` | a stop: our FIN first, then discard until the client's |
//! | `proxied` | `--proxy-protocol`: the client a header names, admitted |

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::config::Mode;
use crate::journal;
use crate::log_limit::Limits;
use crate::stats::{Reason, Stats};

use connection::Connection;
pub(crate) use proxied::{AddressTable, Proxied};

mod connection;
mod deadline;
mod header;
mod linger;
mod proxied;

/// How far a server's stop has come, as a connection sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Stop {
    /// Serving.
    No,
    /// Stopping: flush, then linger until the end of the stop window.
    Window,
    /// Stopping now: close at once.
    Now,
}

/// How a connection blocked in `read` or `write` learns the server is
/// stopping.
pub(crate) trait Watch {
    /// The longest one blocking call may wait before [`Watch::stopping`]
    /// is asked again; `None` when the model wakes blocked calls itself
    /// (it shuts the socket down, or a signal interrupts the call).
    fn slice(&self) -> Option<Duration> {
        None
    }

    /// Whether the server has been told to stop, and how.
    fn stopping(&mut self) -> Stop;
}

/// What serving a connection may use, sized by the model.
#[derive(Debug)]
pub(crate) struct Context<'a> {
    /// The read buffer.
    pub buf: &'a mut [u8],
    /// Reused for escaping logged chunks.
    pub scratch: &'a mut String,
    /// The server's counters.
    pub stats: &'a Stats,
    /// What to do with input.
    pub mode: Mode,
    /// `--idle-timeout`.
    pub idle: Option<Duration>,
    /// Log mode's rate limits, made once per server (before any fork).
    pub limits: Limits,
    /// `--proxy-protocol`: read a header before serving.
    pub proxy: Option<&'a Proxied>,
}

/// How serving a connection ended.
#[derive(Debug)]
pub(crate) enum Served {
    /// It closed for this reason; the peer is the client a PROXY header
    /// named, or the socket's peer.
    Closed(SocketAddr, Reason),
    /// Its header named a client over `--max-connections-per-ip`: counted
    /// as rejected, never served.
    Rejected,
}

/// Serves one accepted blocking socket until it ends, then counts and
/// logs its close: the only place a blocking model closes a connection.
pub(crate) fn serve(
    stream: &TcpStream,
    peer: SocketAddr,
    cx: &mut Context<'_>,
    watch: &mut dyn Watch,
) {
    if let Served::Closed(peer, reason) =
        serve_to_close(stream, peer, cx, watch)
    {
        finish(peer, &reason, cx.stats);
    }
}

/// Serves one accepted blocking socket until it ends and says why,
/// without counting or logging the close (the process model's parent
/// counts its children's).
pub(crate) fn serve_to_close(
    stream: &TcpStream,
    peer: SocketAddr,
    cx: &mut Context<'_>,
    watch: &mut dyn Watch,
) -> Served {
    let mut conn = Connection::new(stream, cx.idle, watch);
    let (peer, first) = match cx.proxy {
        None => (peer, 0),
        Some(proxied) => match conn.read_header(cx) {
            // Counted as accepted only now, so that it can close; a
            // stop that cut the header short is a `shutdown`.
            Err(reason) => {
                cx.stats.accepted();
                let reason = match conn.noticed_stop(true) {
                    true => Reason::Shutdown,
                    false => reason,
                };
                return Served::Closed(peer, reason);
            }
            Ok((source, first)) => {
                let client = source.unwrap_or(peer);
                if !proxied.admit(client, cx.stats) {
                    return Served::Rejected;
                }
                cx.stats.accepted();
                journal::accepted(client, open(cx.stats));
                (client, first)
            }
        },
    };
    log::trace!(
        "{peer} served by a blocking loop; state {}",
        crate::net::tcp_state(std::os::fd::AsRawFd::as_raw_fd(stream))
    );
    let reason = conn.run(peer, first, cx);
    log::trace!(
        "{peer} close ({reason}); state {} before close()",
        crate::net::tcp_state(std::os::fd::AsRawFd::as_raw_fd(stream))
    );
    journal::suppressed(peer, &mut conn.bucket);
    if let Some(proxied) = cx.proxy {
        proxied.release(peer);
    }
    // As in every model, whatever was open when the stop began closes as
    // `shutdown`.
    if conn.noticed_stop(true) {
        Served::Closed(peer, Reason::Shutdown)
    } else {
        Served::Closed(peer, reason)
    }
}

/// Counts and logs a connection that ended with `reason`.
pub(crate) fn finish(peer: SocketAddr, reason: &Reason, stats: &Stats) {
    stats.closed(reason);
    journal::closed(peer, reason, open(stats));
}

/// Connections accepted and not yet closed, from the counters every
/// thread or process shares.
pub(crate) fn open(stats: &Stats) -> usize {
    let s = stats.summary();
    usize::try_from(s.accepted.saturating_sub(s.closed())).unwrap_or(0)
}

//! The errors that stop a server from starting or running. Errors of one
//! connection never reach here: they end that connection only.

use std::fmt;
use std::io;
use std::net::SocketAddr;

/// A set-up failure: the server could not start, or its event loop broke.
#[derive(Debug)]
pub enum Error {
    /// Binding or listening on the address failed. When the address is
    /// in use, the message names the process that holds it (`held by pid
    /// 4242 (nc)`) where `/proc` shows it.
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// Why it failed (address in use, permission denied, ...).
        source: io::Error,
    },
    /// Creating or waiting on the event loop's machinery failed.
    Setup {
        /// What was being done, e.g. "create the poll".
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The sockets passed by systemd (socket activation) cannot be used.
    Activation(String),
    /// `--workers` cannot be used as asked.
    Workers(String),
    /// No address to listen on, and no socket passed by systemd.
    NoListener,
    /// More listeners than a server can have.
    TooManyListeners {
        /// Listeners asked for.
        count: usize,
        /// The most a server can have.
        max: usize,
    },
    /// The server's thread panicked (a bug; the panic message went to
    /// stderr).
    Panicked,
    /// The process model forks, and `fork` copies only the calling
    /// thread: with others running, a lock one of them holds stays locked
    /// in the child for ever. It runs only in a single-threaded process.
    NotSingleThreaded {
        /// Threads the process has.
        threads: usize,
    },
    /// The uring model cannot run here: a kernel before 6.1,
    /// `kernel.io_uring_disabled`, or a seccomp profile that blocks it.
    UringUnavailable {
        /// What failed, with the OS error.
        reason: String,
    },
}

impl Error {
    pub(crate) fn setup(
        what: &'static str,
    ) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Setup { what, source }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Listen { addr, source } => {
                write!(f, "cannot listen on {addr}: {source}")?;
                // Name who holds the port: a look in /proc, bounded by
                // holder::BUDGET, made only when the message is shown.
                if source.kind() == io::ErrorKind::AddrInUse {
                    write!(f, ": {}", crate::holder::describe(*addr))?;
                }
                Ok(())
            }
            Error::Setup { what, source } => {
                write!(f, "cannot {what}: {source}")
            }
            Error::Activation(why) => {
                write!(f, "socket activation: {why}")
            }
            Error::Workers(why) => f.write_str(why),
            Error::NoListener => f.write_str(
                "nothing to listen on: no address, and no socket passed \
                 by systemd",
            ),
            Error::TooManyListeners { count, max } => write!(
                f,
                "{count} listening sockets; a server can have at most {max}"
            ),
            Error::Panicked => f.write_str("the server thread panicked"),
            Error::NotSingleThreaded { threads } => write!(
                f,
                "the process model forks, which needs a single-threaded \
                 process; this one has {threads} threads"
            ),
            Error::UringUnavailable { reason } => {
                write!(f, "io_uring unavailable: {reason}")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Listen { source, .. } | Error::Setup { source, .. } => {
                Some(source)
            }
            Error::Activation(_)
            | Error::Workers(_)
            | Error::NoListener
            | Error::TooManyListeners { .. }
            | Error::Panicked
            | Error::NotSingleThreaded { .. }
            | Error::UringUnavailable { .. } => None,
        }
    }
}

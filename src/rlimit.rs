//! RLIMIT_NOFILE: every connection is a descriptor. The server raises
//! its soft limit to the hard limit; the load generator makes sure it may
//! open the connections it was asked for, or says in one line what to
//! raise. std has no wrapper for rlimits, so this module holds the only
//! unsafe code outside the process model: two libc calls on a struct we
//! own.
#![allow(unsafe_code)]

use std::fmt;
use std::io;

/// Descriptors the generator needs besides its sockets (poll, stdio,
/// threads' eventfds, the odd file).
const SPARE: u64 = 64;

/// Why this process may not open as many sockets as it needs.
#[derive(Debug)]
pub enum NofileError {
    /// `getrlimit` failed.
    Query(io::Error),
    /// The hard limit allows `need` but raising the soft limit failed.
    Raise {
        /// The soft limit asked for.
        need: u64,
        /// The OS error.
        source: io::Error,
    },
    /// The hard limit is below `need` and this process may not raise it.
    HardLimit {
        /// Sockets asked for.
        sockets: u64,
        /// Descriptors needed: the sockets and a few spare.
        need: u64,
        /// The soft limit in force.
        soft: u64,
        /// The hard limit in force.
        hard: u64,
        /// The kernel's ceiling for any hard limit (`fs.nr_open`), when
        /// it could be read.
        nr_open: Option<u64>,
    },
}

/// One line that says what to raise; an OS error is the
/// [`source`](std::error::Error::source).
impl fmt::Display for NofileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NofileError::Query(_) => f.write_str("getrlimit"),
            NofileError::Raise { need, .. } => {
                write!(f, "cannot raise RLIMIT_NOFILE to {need}")
            }
            NofileError::HardLimit { sockets, need, soft, hard, nr_open } => {
                write!(
                    f,
                    "{sockets} connections need {need} open files but \
                     RLIMIT_NOFILE is {soft} (hard {hard}); raise the hard \
                     limit (as root: ulimit -Hn {need}, or LimitNOFILE= / \
                     limits.conf; above fs.nr_open="
                )?;
                match nr_open {
                    Some(n) => write!(f, "{n}")?,
                    None => f.write_str("?")?,
                }
                f.write_str(
                    " also sysctl fs.nr_open) or use fewer --connections",
                )
            }
        }
    }
}

impl std::error::Error for NofileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NofileError::Query(e) | NofileError::Raise { source: e, .. } => {
                Some(e)
            }
            NofileError::HardLimit { .. } => None,
        }
    }
}

/// Makes sure this process may open `sockets` sockets at once: raises the
/// soft limit (and, for root, the hard limit) when it is too low.
/// Returns the limit now in force.
pub fn ensure_nofile(sockets: u64) -> Result<u64, NofileError> {
    let need = sockets.saturating_add(SPARE);
    let (soft, hard) = get().map_err(NofileError::Query)?;
    if soft >= need {
        return Ok(soft);
    }
    if hard >= need {
        return set(need, hard)
            .map(|()| need)
            .map_err(|source| NofileError::Raise { need, source });
    }
    // Only root (CAP_SYS_RESOURCE) may raise the hard limit, and only up
    // to fs.nr_open; try, and explain what to change when it fails.
    set(need, need).map(|()| need).map_err(|_| {
        let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok());
        NofileError::HardLimit { sockets, need, soft, hard, nr_open }
    })
}

/// Raises the soft limit to the hard limit, as a server meant to hold
/// many connections should (no privilege needed); returns the soft limit
/// now in force.
pub fn raise_to_hard() -> io::Result<u64> {
    let (soft, hard) = get()?;
    if soft < hard {
        set(hard, hard)?;
    }
    Ok(hard.max(soft))
}

/// The soft limit now in force (what `process_max_fds` reports);
/// `None` if the kernel does not say.
pub(crate) fn soft_nofile() -> Option<u64> {
    get().ok().map(|(soft, _)| soft)
}

fn get() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

fn set(soft: u64, hard: u64) -> io::Result<()> {
    let limit = libc::rlimit { rlim_cur: soft, rlim_max: hard };
    // SAFETY: setrlimit reads one rlimit from a struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_need_is_already_met() {
        assert!(ensure_nofile(10).is_ok());
    }

    #[test]
    fn an_impossible_need_names_what_to_raise() {
        // Far above any fs.nr_open, so even root cannot grant it.
        let err = ensure_nofile(u64::MAX / 2).unwrap_err().to_string();
        assert!(err.contains("RLIMIT_NOFILE"), "{err}");
        assert!(err.contains("ulimit -Hn"), "{err}");
        assert!(!err.contains('\n'));
    }
}

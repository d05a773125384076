//! Who holds a port: when a bind fails with "address in use", the
//! process whose listening socket is in the way, found in `/proc` the
//! way `ss -ltnp` finds it, or the closed connection that keeps the
//! port in TIME_WAIT.
//!
//! 1. `/proc/net/tcp` and `tcp6` list the sockets of this network
//!    namespace (see [`proc_net`]); a LISTEN socket whose address fits
//!    the one asked for gives an inode.
//! 2. Every open descriptor of a process is a link in `/proc/PID/fd`; a
//!    socket's reads `socket:[INODE]`. The first process holding one of
//!    those inodes is named with its `comm`.
//! 3. With no listener in the way, a connection in TIME_WAIT on the
//!    port is: the side that closes first keeps its end for 2 MSL (60 s
//!    on Linux) so a late segment of the old connection cannot be taken
//!    for one of a new connection. No process owns it. Our listener sets
//!    SO_REUSEADDR, which lets it bind beside TIME_WAIT connections that
//!    set it too (those a listener accepted, for one); a client socket
//!    bound without it still blocks the port until it clears.
//!
//! Another user's descriptors, or a holder in another PID namespace (a
//! container), cannot be seen; the lookup then says so and names the
//! `ss` command to ask with more privilege. It gives up at a deadline,
//! since a host with many processes and descriptors takes a while to
//! scan, as does a table of 100,000 TIME_WAIT connections, and nothing
//! it reads can make it panic.

mod proc_net;

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::escape::escape;
use proc_net::{fit, parse_line, Entry, Fit};

/// How long Linux keeps a connection in TIME_WAIT (`TCP_TIMEWAIT_LEN`).
const TIME_WAIT_SECS: u64 = 60;

/// The longest a lookup may take before it falls back.
pub(crate) const BUDGET: Duration = Duration::from_millis(100);

/// How to check the deadline without a clock read per descriptor.
const CHECK_EVERY: usize = 64;
/// Bytes asked of `/proc/net/tcp` per read.
const READ_BUF: usize = 256 * 1024;

/// What follows "Address already in use" for `addr`: `held by pid 4242
/// (nc)`, the connection in TIME_WAIT that holds the port, or, when
/// neither can be seen within [`BUDGET`], the command that finds it.
pub(crate) fn describe(addr: SocketAddr) -> String {
    let deadline = Instant::now() + BUDGET;
    describe_at(Path::new("/proc"), addr, deadline)
}

/// [`describe`] with `/proc` at `root` and a given deadline.
fn describe_at(root: &Path, addr: SocketAddr, deadline: Instant) -> String {
    if addr.port() == 0 {
        // Port 0 asks the kernel for any free port: none was left.
        return "no free port left in net.ipv4.ip_local_port_range".into();
    }
    let port = addr.port();
    let listeners = listeners_fitting(root, addr, deadline);
    if !listeners.is_empty() {
        return match find(root, listeners, deadline) {
            Some(Holder { pid, comm }) => {
                format!("held by pid {pid} ({comm})")
            }
            None => unseen(port),
        };
    }
    if let Some(closed) = time_wait_fitting(root, addr, deadline) {
        return format!(
            "no process holds it: the closed connection {} -> {} is in \
             TIME_WAIT, which clears by itself within {TIME_WAIT_SECS} s \
             (that socket was bound without SO_REUSEADDR, so ours cannot \
             share the port)",
            closed.local, closed.remote
        );
    }
    if Instant::now() > deadline {
        // No listener, and the connections not all read: a busy host's
        // table of TIME_WAIT connections alone can take longer.
        return format!(
            "held by another process or a connection in TIME_WAIT (the \
             lookup ran out of time; run: ss -tanp 'sport = :{port}')"
        );
    }
    unseen(port)
}

/// The holder cannot be seen here: the command that finds it.
fn unseen(port: u16) -> String {
    format!("held by another process (run: ss -ltnp 'sport = :{port}')")
}

/// A process holding the socket, and its name (escaped).
#[derive(Debug, PartialEq, Eq)]
struct Holder {
    pid: u32,
    comm: String,
}

/// The holder of one of `listeners`, those that keep the address from
/// being bound.
fn find(
    root: &Path,
    mut listeners: Vec<(Fit, u64)>,
    deadline: Instant,
) -> Option<Holder> {
    // An exact match explains the failure best; wildcards come after.
    listeners.sort_by_key(|&(fit, _)| fit);
    let inodes: Vec<u64> = listeners.iter().map(|&(_, inode)| inode).collect();
    let (pid, _) = owner(root, &inodes, deadline)?;
    let comm = fs::read(root.join(pid.to_string()).join("comm"))
        .map(|raw| escape(raw.strip_suffix(b"\n").unwrap_or(&raw)))
        .unwrap_or_else(|_| "?".into());
    Some(Holder { pid, comm })
}

/// The inodes of the LISTEN sockets in `root/net/tcp{,6}` that fit
/// `addr`, each with how well it fits.
fn listeners_fitting(
    root: &Path,
    addr: SocketAddr,
    deadline: Instant,
) -> Vec<(Fit, u64)> {
    let mut found = Vec::new();
    walk(root, deadline, |entry| {
        // The kernel lists the listening sockets first: the first
        // connection's line ends the table.
        if !entry.listening() {
            return Next::Table;
        }
        if entry.inode != 0 {
            if let Some(fit) = fit(addr, entry.local) {
                found.push((fit, entry.inode));
            }
        }
        Next::Line
    });
    found
}

/// A connection in TIME_WAIT whose local address fits `addr`: the first
/// on the same address, else the first a wildcard `addr` covers.
fn time_wait_fitting(
    root: &Path,
    addr: SocketAddr,
    deadline: Instant,
) -> Option<Entry> {
    let mut found = None;
    walk(root, deadline, |entry| {
        if !entry.time_wait() {
            return Next::Line;
        }
        match fit(addr, entry.local) {
            Some(Fit::Exact) => {
                found = Some(entry);
                Next::Stop
            }
            Some(Fit::Wildcard) if found.is_none() => {
                found = Some(entry);
                Next::Line
            }
            _ => Next::Line,
        }
    });
    found
}

/// Where a [`walk`] goes after a line.
enum Next {
    /// On to the next line.
    Line,
    /// On to the next table: nothing more of this one is needed.
    Table,
    /// Done.
    Stop,
}

/// Shows `visit` each socket of `root/net/tcp`, then of `tcp6`, until
/// it says stop or `deadline` passes.
fn walk(root: &Path, deadline: Instant, mut visit: impl FnMut(Entry) -> Next) {
    for table in ["net/tcp", "net/tcp6"] {
        // A table that cannot be read (no IPv6, no /proc) holds nothing.
        let Ok(file) = File::open(root.join(table)) else { continue };
        // Line by line: a busy host's table runs to megabytes (131,000
        // sockets, most in TIME_WAIT, after a test run here), and what
        // is not read is never generated. Large reads keep the kernel's
        // walks of its tables few.
        let lines = BufReader::with_capacity(READ_BUF, file).split(b'\n');
        for (n, line) in lines.enumerate() {
            if n % CHECK_EVERY == 0 && Instant::now() > deadline {
                return;
            }
            let Ok(line) = line else { break };
            let Ok(line) = std::str::from_utf8(&line) else { continue };
            let Some(entry) = parse_line(line) else { continue };
            match visit(entry) {
                Next::Line => {}
                Next::Table => break,
                Next::Stop => return,
            }
        }
    }
}

/// The first process (by pid) with a descriptor on one of `inodes`, and
/// the index of that inode: stops at once on `inodes[0]`, the best fit,
/// and at `deadline` with the best found so far.
fn owner(
    root: &Path,
    inodes: &[u64],
    deadline: Instant,
) -> Option<(u32, usize)> {
    if inodes.is_empty() {
        return None;
    }
    let targets: Vec<String> =
        inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let mut best: Option<(u32, usize)> = None;
    let mut pids: Vec<u32> = fs::read_dir(root)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    let mut checked = 0usize;
    for pid in pids {
        // Another user's process, or one that just exited: not visible.
        let Ok(fds) = fs::read_dir(root.join(pid.to_string()).join("fd"))
        else {
            continue;
        };
        for fd in fds.flatten() {
            checked += 1;
            if checked % CHECK_EVERY == 0 && Instant::now() > deadline {
                return best;
            }
            let Ok(link) = fs::read_link(fd.path()) else { continue };
            let Some(link) = link.to_str() else { continue };
            let Some(at) = targets.iter().position(|t| t == link) else {
                continue;
            };
            if best.map_or(true, |(_, b)| at < b) {
                best = Some((pid, at));
            }
            if at == 0 {
                return best;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests;

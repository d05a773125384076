//! What /proc says about a server process and its children, through the
//! `procfs` crate.

use std::net::SocketAddr;

use procfs::net::TcpNetEntry;
use procfs::process::{Process, Stat};

fn process(pid: u32) -> Option<Process> {
    Process::new(i32::try_from(pid).ok()?).ok()
}

fn stat(pid: u32) -> Option<Stat> {
    process(pid)?.stat().ok()
}

/// Resident memory now, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    process(pid)?.status().ok()?.vmrss
}

/// Peak resident memory so far (`VmHWM`), in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    process(pid)?.status().ok()?.vmhwm
}

/// Proportional set size of `pid`'s anonymous memory (heap, stacks) plus
/// every child's, in KiB. Proportional: pages shared copy-on-write with
/// forked children are split among the processes that share them, so the
/// sum is what the server really costs. Anonymous: file pages (the
/// binary's text, shared with the load generator, which runs the same
/// binary) would make the figure move with what else runs.
pub fn pss_kib(pid: u32) -> Option<u64> {
    let pss = |p: u32| {
        let rollup = process(p)?.smaps_rollup().ok()?;
        let map = &rollup.memory_map_rollup.0.first()?.extension.map;
        map.get("Pss_Anon").or_else(|| map.get("Pss")).map(|b| b / 1024)
    };
    let kids: u64 = children(pid).iter().filter_map(|c| pss(c.pid)).sum();
    Some(pss(pid)? + kids)
}

/// CPU clock ticks of `pid` (utime + stime), of its reaped children
/// (cutime + cstime) and of its live children: all the CPU the server
/// has used, wherever its work happens.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let own = stat(pid)?;
    let reaped = u64::try_from(own.cutime + own.cstime).unwrap_or(0);
    let live: u64 = children(pid)
        .iter()
        .filter_map(|c| stat(c.pid))
        .map(|s| s.utime + s.stime)
        .sum();
    Some(own.utime + own.stime + reaped + live)
}

/// Clock ticks per second of the CPU times.
pub fn ticks_per_second() -> u64 {
    procfs::ticks_per_second()
}

/// A child of some process: its pid, state letter (`Z`: zombie) and
/// start time (to tell it from a later process that reuses the pid).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Child {
    /// Its process id.
    pub pid: u32,
    /// Its state letter, as in /proc/PID/stat.
    pub state: char,
    /// When it started, in clock ticks after boot.
    pub start: u64,
}

/// Every process whose parent is `pid`, zombies included.
pub fn children(pid: u32) -> Vec<Child> {
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    all.filter_map(|p| p.ok()?.stat().ok())
        .filter(|s| u32::try_from(s.ppid).ok() == Some(pid))
        .filter_map(|s| {
            Some(Child {
                pid: u32::try_from(s.pid).ok()?,
                state: s.state,
                start: s.starttime,
            })
        })
        .collect()
}

/// Whether `child` still exists (as the same process, in any state).
pub fn exists(child: &Child) -> bool {
    stat(child.pid).is_some_and(|s| s.starttime == child.start)
}

/// Open descriptors of `pid` (0 once it is gone).
pub fn fd_count(pid: u32) -> usize {
    process(pid).and_then(|p| p.fd_count().ok()).unwrap_or(0)
}

/// Threads of `pid`.
pub fn threads(pid: u32) -> Option<usize> {
    Some(process(pid)?.tasks().ok()?.count())
}

/// The IPv4 TCP socket from `local` to `remote` as the kernel lists it
/// (`remote` 0.0.0.0:0 for a listener): its queues and state.
pub fn tcp_socket(
    local: SocketAddr,
    remote: SocketAddr,
) -> Option<TcpNetEntry> {
    procfs::net::tcp()
        .ok()?
        .into_iter()
        .find(|e| e.local_address == local && e.remote_address == remote)
}

/// The number of the system call the main thread of `pid` is blocked in
/// (`/proc/PID/syscall`), or `None` while it runs or is gone.
pub fn blocked_in(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// The state letter of `pid` (`T`: stopped), or `None` once it is gone.
pub fn state(pid: u32) -> Option<char> {
    Some(stat(pid)?.state)
}

//! What the kernel holds for the host's sockets, read before and while
//! the idle connections are held: `/proc/net/sockstat` (sockets in use,
//! pages of TCP socket buffers), `/proc/meminfo` (slab, kernel stacks,
//! page tables) and, when readable (root), `/proc/slabinfo` by cache.
//!
//! Every figure is host-wide, so on loopback a connection counts twice:
//! the server's socket and the load generator's. The server's share is
//! bounded from above by charging it everything except half of the
//! caches that hold exactly one object per socket at either end.

use std::collections::BTreeMap;

use procfs::Current as _;

/// Slab caches with one object per open socket, at either end alike:
/// the socket itself, its inode, the dentry and file of its descriptor,
/// and the security module's blobs for them.
const PER_SOCKET: [&str; 7] = [
    "TCP",
    "TCPv6",
    "sock_inode_cache",
    "dentry",
    "filp",
    "lsm_inode_cache",
    "lsm_file_cache",
];

/// Host-wide kernel memory at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// `sockets: used` of sockstat.
    pub sockets: u64,
    /// TCP `mem` of sockstat, in bytes (it counts pages).
    pub tcp_mem: u64,
    /// `Slab` + `KernelStack` + `PageTables` of meminfo, in bytes.
    pub kernel: u64,
    /// Bytes of each slab cache (its slabs times their size), if
    /// `/proc/slabinfo` was readable.
    pub caches: Option<BTreeMap<String, u64>>,
}

/// Kernel memory now, if sockstat and meminfo could be read.
pub fn snapshot() -> Option<Snapshot> {
    let page = procfs::page_size();
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let (sockets, tcp_pages) = parse_sockstat(&sockstat)?;
    let m = procfs::Meminfo::current().ok()?;
    let caches = std::fs::read_to_string("/proc/slabinfo")
        .ok()
        .map(|s| parse_slabinfo(&s, page));
    Some(Snapshot {
        sockets,
        tcp_mem: tcp_pages * page,
        kernel: m.slab
            + m.kernel_stack.unwrap_or(0)
            + m.page_tables.unwrap_or(0),
        caches,
    })
}

/// `sockets: used N` and the TCP line's `mem N` (pages).
fn parse_sockstat(text: &str) -> Option<(u64, u64)> {
    let field = |prefix: &str, name: &str| {
        let line = text.lines().find(|l| l.starts_with(prefix))?;
        let mut words = line.split_whitespace();
        words.find(|w| *w == name)?;
        words.next()?.parse::<u64>().ok()
    };
    Some((field("sockets:", "used")?, field("TCP:", "mem")?))
}

/// Bytes held by each cache: `num_slabs * pagesperslab * page`.
fn parse_slabinfo(text: &str, page: u64) -> BTreeMap<String, u64> {
    text.lines()
        .filter(|l| !l.starts_with("slabinfo") && !l.starts_with('#'))
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            // name active num objsize perslab pagesperslab : tunables
            // l b s : slabdata active_slabs num_slabs sharedavail
            let pages: u64 = w.get(5)?.parse().ok()?;
            let slabs: u64 = w.get(14)?.parse().ok()?;
            Some((w[0].to_string(), slabs * pages * page))
        })
        .collect()
}

/// What `after` holds beyond `before`, per connection.
#[derive(Clone, Copy, Debug)]
pub struct PerConn {
    /// Sockets per connection (2 on loopback: both ends).
    pub sockets: f64,
    /// TCP socket buffer bytes.
    pub tcp_mem: f64,
    /// Slab, kernel stacks and page tables, both ends.
    pub kernel: f64,
    /// The server's share at most, if slabinfo was readable.
    pub server_at_most: Option<f64>,
}

/// Signed `after - before` of a counter.
fn delta(before: u64, after: u64) -> f64 {
    after as f64 - before as f64
}

impl PerConn {
    /// The deltas from `before` to `after`, divided by `held`.
    pub fn between(
        before: &Snapshot,
        after: &Snapshot,
        held: u64,
    ) -> Option<PerConn> {
        if held == 0 {
            return None;
        }
        let n = held as f64;
        let kernel = delta(before.kernel, after.kernel) / n;
        let per_socket = per_cache(before, after, held).map(|c| {
            c.iter()
                .filter(|(name, _)| PER_SOCKET.contains(&name.as_str()))
                .map(|(_, b)| b)
                .sum::<f64>()
        });
        Some(PerConn {
            sockets: delta(before.sockets, after.sockets) / n,
            tcp_mem: delta(before.tcp_mem, after.tcp_mem) / n,
            kernel,
            // The client's end has one of each per-socket object too;
            // everything else (epoll items, port buckets, thread stacks,
            // page tables, other allocations) is charged to the server.
            server_at_most: per_socket.map(|s| kernel - s / 2.0),
        })
    }
}

/// Bytes per connection each slab cache grew by, if slabinfo was read
/// both times.
pub fn per_cache(
    before: &Snapshot,
    after: &Snapshot,
    held: u64,
) -> Option<BTreeMap<String, f64>> {
    let (b, a) = (before.caches.as_ref()?, after.caches.as_ref()?);
    let n = held.max(1) as f64;
    Some(
        a.iter()
            .map(|(name, &bytes)| {
                let was = b.get(name).copied().unwrap_or(0);
                (name.clone(), delta(was, bytes) / n)
            })
            .collect(),
    )
}

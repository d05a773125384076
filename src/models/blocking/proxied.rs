//! `--proxy-protocol` in a blocking model: the accept loop saw only the
//! balancer, so the client a header names is admitted to the
//! per-address table by whoever reads the header.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::journal::{self, RateLimited};
use crate::listener::group::Group;
use crate::stats::Stats;

/// `--proxy-protocol` in a blocking model: who may send a header, and
/// the per-address table the client is admitted to once its header named
/// it (the accept loop saw only the balancer).
#[derive(Debug)]
pub(crate) struct Proxied {
    /// The per-address table every connection of the server counts in;
    /// `None` admits every client.
    pub table: Option<Arc<dyn AddressTable>>,
    /// `--max-connections-per-ip`, for the rejection line.
    pub max_per_ip: usize,
    /// Rejection lines, at most one a second for all connections.
    pub rejections: Mutex<RateLimited>,
}

/// Where a connection's client is counted for `--max-connections-per-ip`
/// once its PROXY header named it: the workers' shared table (threads),
/// or a slot in shared memory (the process model's children).
pub(crate) trait AddressTable: Send + Sync + std::fmt::Debug {
    /// Counts `peer` if its address is under the limit.
    fn admit(&self, peer: SocketAddr) -> bool;
    /// A connection `admit` counted has closed.
    fn release(&self, peer: SocketAddr);
}

impl AddressTable for Group {
    fn admit(&self, peer: SocketAddr) -> bool {
        let table = self.per_address();
        table.lock().unwrap_or_else(|e| e.into_inner()).admit(peer)
    }

    fn release(&self, peer: SocketAddr) {
        let table = self.per_address();
        table.lock().unwrap_or_else(|e| e.into_inner()).release(peer);
    }
}

impl Proxied {
    /// Counts `peer` in the per-address table if it is under the limit;
    /// else counts and logs a rejection.
    pub(super) fn admit(&self, peer: SocketAddr, stats: &Stats) -> bool {
        let Some(table) = &self.table else { return true };
        let admitted = table.admit(peer);
        if !admitted {
            stats.rejected();
            let mut limiter =
                self.rejections.lock().unwrap_or_else(|e| e.into_inner());
            journal::rejected_per_address(&mut limiter, peer, self.max_per_ip);
        }
        admitted
    }

    /// A connection [`Proxied::admit`] counted has closed.
    pub(super) fn release(&self, peer: SocketAddr) {
        if let Some(table) = &self.table {
            table.release(peer);
        }
    }
}

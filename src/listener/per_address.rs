//! `--max-connections-per-ip`: open connections counted per client
//! address, so one address cannot take every slot.
//!
//! An IPv6 client usually owns a whole /64 and can pick a new address in
//! it for every connection, so IPv6 addresses are counted per /64; an
//! IPv4-mapped IPv6 address (a dual-stack listener's view of an IPv4
//! client) is counted as the IPv4 address it is. The table holds only
//! addresses with a connection open: an entry goes when its count drops
//! to zero, and the map shrinks once it is much smaller than its
//! capacity, so a past spike does not keep its memory.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The map shrinks when fewer than one in `SHRINK_BELOW` of its slots is
/// used; to twice its length, so a shrink is paid for by the removals
/// before it (O(1) amortised).
const SHRINK_BELOW: usize = 4;
/// Capacity a map keeps however empty it gets: below this, shrinking
/// would cost more reallocations than the memory it gives back.
const KEEP: usize = 64;

/// Open connections per address; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct PerAddress {
    /// At most this many per address; 0: no limit, nothing counted.
    max: usize,
    open: HashMap<IpAddr, usize>,
}

impl PerAddress {
    /// A table that allows `max` connections per address (0: no limit).
    pub(crate) fn new(max: usize) -> PerAddress {
        PerAddress { max, open: HashMap::new() }
    }

    /// Counts a connection from `peer` if its address is under the limit;
    /// false (and nothing counted) if it is at the limit.
    pub(crate) fn admit(&mut self, peer: SocketAddr) -> bool {
        if self.max == 0 {
            return true;
        }
        let open = self.open.entry(key(peer.ip())).or_insert(0);
        if *open >= self.max {
            return false;
        }
        *open += 1;
        true
    }

    /// A connection that [`PerAddress::admit`] counted has closed.
    pub(crate) fn release(&mut self, peer: SocketAddr) {
        if self.max == 0 {
            return;
        }
        let key = key(peer.ip());
        let Some(open) = self.open.get_mut(&key) else { return };
        *open -= 1;
        if *open == 0 {
            self.open.remove(&key);
            let capacity = self.open.capacity();
            if capacity > KEEP && self.open.len() * SHRINK_BELOW < capacity {
                self.open.shrink_to((self.open.len() * 2).max(KEEP));
            }
        }
    }

    /// Addresses with a connection open.
    #[cfg(test)]
    fn addresses(&self) -> usize {
        self.open.len()
    }
}

/// What a connection from `ip` is counted as: IPv4 addresses as they
/// are, IPv4-mapped IPv6 addresses as their IPv4 address, other IPv6
/// addresses as their /64.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !u128::from(u64::MAX);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_address_at_its_limit_is_refused_until_one_closes() {
        let mut t = PerAddress::new(2);
        assert!(t.admit(peer("10.0.0.1:1")));
        assert!(t.admit(peer("10.0.0.1:2")));
        assert!(!t.admit(peer("10.0.0.1:3")));
        assert!(t.admit(peer("10.0.0.2:1")), "another address is apart");
        t.release(peer("10.0.0.1:1"));
        assert!(t.admit(peer("10.0.0.1:4")));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let mut t = PerAddress::new(1);
        assert!(t.admit(peer("[2001:db8:1:2::1]:1")));
        assert!(!t.admit(peer("[2001:db8:1:2:ffff::9]:1")), "same /64");
        assert!(t.admit(peer("[2001:db8:1:3::1]:1")), "another /64");
        assert!(t.admit(peer("192.0.2.7:1")));
        assert!(!t.admit(peer("[::ffff:192.0.2.7]:2")), "mapped = v4");
        t.release(peer("[::ffff:192.0.2.7]:1"));
        assert!(t.admit(peer("192.0.2.7:3")));
    }

    #[test]
    fn the_table_forgets_closed_addresses_and_shrinks() {
        let mut t = PerAddress::new(1);
        let peers: Vec<SocketAddr> = (0..10_000u32)
            .map(|i| SocketAddr::from((i.to_be_bytes(), 1)))
            .collect();
        for &p in &peers {
            assert!(t.admit(p));
        }
        let spike = t.open.capacity();
        for &p in &peers {
            t.release(p);
        }
        assert_eq!(t.addresses(), 0);
        assert!(t.open.capacity() <= 2 * KEEP, "kept {}", t.open.capacity());
        assert!(t.open.capacity() < spike);
    }

    #[test]
    fn with_no_limit_nothing_is_counted() {
        let mut t = PerAddress::new(0);
        for i in 0..100 {
            assert!(t.admit(peer(&format!("10.0.0.1:{i}"))));
        }
        assert_eq!(t.addresses(), 0);
        t.release(peer("10.0.0.1:1"));
    }
}

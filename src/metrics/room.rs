//! Who gets a seat in the scrape table: the rule that keeps `/metrics`
//! and `/healthz` answered when connections that never finish their
//! request (a slowloris) try to fill it.
//!
//! 1. A client address has at most [`PER_ADDRESS`] scrapes in the
//!    table; one more from it is closed at once.
//! 2. A free slot is taken.
//! 3. When the table is full, the newcomer takes the seat of a scrape
//!    already answered that only waits for its client's close (the
//!    oldest), else of an incomplete request: the oldest of the address
//!    with the most of them, so a slowloris evicts itself first, and a
//!    lone checker's request is not evicted while any other address has
//!    two.
//! 4. A complete request being answered is never evicted: when all
//!    seats hold one, the newcomer is closed at once.
//!
//! With a [`HEAD_DEADLINE`](super::scrape::HEAD_DEADLINE) on every
//! request head, a stalled request costs its attacker a connection a
//! second and costs a real scrape nothing.

use std::net::IpAddr;
use std::time::Instant;

/// Scrapes one client address may have in the table at once.
pub(crate) const PER_ADDRESS: usize = 4;

/// What the table knows of a seated scrape to choose a seat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Seat {
    /// The client's address (an IPv4-mapped one as IPv4).
    pub(super) ip: IpAddr,
    /// When it was accepted.
    pub(super) at: Instant,
    pub(super) stage: Stage,
}

/// How far a seated scrape has come, as far as eviction goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stage {
    /// Its request head is not complete: may be evicted.
    Incomplete,
    /// Its request is complete and the answer not all sent: never
    /// evicted.
    Answering,
    /// Answered and our side shut; it waits for the client's close: the
    /// first to be evicted.
    Answered,
}

/// Where a newcomer from some address goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Room {
    /// This slot is free.
    Free(usize),
    /// The scrape in this slot makes room for it.
    Evict(usize),
    /// Its address has [`PER_ADDRESS`] scrapes already: closed at once.
    AddressFull,
    /// Every seat holds a request being answered: closed at once.
    Full,
}

/// Where a newcomer from `ip` goes in `seats` (one per slot, `None`
/// where free).
pub(super) fn room(seats: &[Option<Seat>], ip: IpAddr) -> Room {
    let ip = ip.to_canonical();
    let seated = || {
        let each = seats.iter().enumerate();
        each.filter_map(|(slot, seat)| Some((slot, seat.as_ref()?)))
    };
    if seated().filter(|(_, s)| s.ip == ip).count() >= PER_ADDRESS {
        return Room::AddressFull;
    }
    if let Some(free) = seats.iter().position(Option::is_none) {
        return Room::Free(free);
    }
    let answered = seated().filter(|(_, s)| s.stage == Stage::Answered);
    if let Some((slot, _)) = answered.min_by_key(|(_, s)| s.at) {
        return Room::Evict(slot);
    }
    let incomplete = || seated().filter(|(_, s)| s.stage == Stage::Incomplete);
    let from = |ip: IpAddr| incomplete().filter(|(_, s)| s.ip == ip).count();
    // The address with the most incomplete requests; its oldest.
    let victim = incomplete().max_by(|(_, a), (_, b)| {
        from(a.ip).cmp(&from(b.ip)).then(b.at.cmp(&a.at))
    });
    match victim {
        Some((slot, _)) => Room::Evict(slot),
        None => Room::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A table of seats, each `(last octet of 10.0.0.x, age order,
    /// stage)`: a lower order is an older scrape.
    fn table(seats: &[Option<(u8, u64, Stage)>]) -> Vec<Option<Seat>> {
        let base = Instant::now();
        seats
            .iter()
            .map(|s| {
                s.map(|(host, order, stage)| Seat {
                    ip: IpAddr::from([10, 0, 0, host]),
                    at: base + Duration::from_millis(order),
                    stage,
                })
            })
            .collect()
    }

    fn from(host: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, host])
    }

    use Stage::{Answered, Answering, Incomplete};

    /// A fifth scrape from one address is refused though slots are free;
    /// another address gets the first free one.
    #[test]
    fn an_address_over_its_share_is_closed_even_with_room() {
        let mut seats = vec![Some((1, 0, Answering)); PER_ADDRESS];
        seats.extend([None, None]);
        let seats = table(&seats);
        assert_eq!(room(&seats, from(1)), Room::AddressFull);
        assert_eq!(room(&seats, from(2)), Room::Free(PER_ADDRESS));
        // An IPv4-mapped address is the same client.
        let mapped =
            IpAddr::V6(std::net::Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert_eq!(room(&seats, mapped), Room::AddressFull);
    }

    /// A full table gives up the oldest answered scrape before any
    /// incomplete request, and never one being answered.
    #[test]
    fn a_full_table_gives_up_an_answered_scrape_first() {
        let seats = table(&[
            Some((1, 0, Incomplete)),
            Some((2, 5, Answered)),
            Some((3, 3, Answered)),
            Some((4, 1, Answering)),
        ]);
        assert_eq!(room(&seats, from(9)), Room::Evict(2));
    }

    /// Among incomplete requests, the address holding the most gives up
    /// its oldest; with one each, the oldest overall goes.
    #[test]
    fn the_address_with_most_incomplete_requests_gives_up_its_oldest() {
        let seats = table(&[
            Some((7, 0, Incomplete)), // the oldest, but alone
            Some((1, 4, Incomplete)),
            Some((1, 2, Incomplete)),
            Some((2, 1, Incomplete)),
            Some((1, 3, Answering)), // counts for the cap, not here
            Some((2, 6, Incomplete)),
            Some((3, 5, Answering)),
        ]);
        // 10.0.0.1 and 10.0.0.2 have two incomplete each: the oldest
        // of those four goes.
        assert_eq!(room(&seats, from(9)), Room::Evict(3));
        let seats = table(&[
            Some((5, 3, Incomplete)),
            Some((6, 1, Incomplete)),
            Some((7, 2, Incomplete)),
        ]);
        // One each: the oldest overall.
        assert_eq!(room(&seats, from(9)), Room::Evict(1));
    }

    /// A table of requests being answered has no room: the newcomer is
    /// closed.
    #[test]
    fn requests_being_answered_are_never_evicted() {
        let seats = table(&[Some((1, 0, Answering)), Some((2, 1, Answering))]);
        assert_eq!(room(&seats, from(9)), Room::Full);
    }
}

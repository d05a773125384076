//! The idle contract, and the list that keeps it in O(1).
//!
//! **A connection is idle when nothing moved in either direction for
//! `--idle-timeout`: no byte read from it and no byte written to it.**
//! Bytes the kernel still delivers from what the connection wrote
//! earlier are movement (`net::since_data_sent`): a slow reader that
//! keeps taking bytes is never cut. Input the client sent that the
//! server has not read is not: a client that sends until the output cap
//! ([`OUT_CAP`](crate::OUT_CAP)) stops the server reading from it, and
//! never reads, makes no progress once both directions are blocked, and
//! is closed as idle (as nginx's `send_timeout` does). Every model keeps
//! this contract: the blocking ones with socket timeouts, asking the
//! kernel the same before they close (`models::blocking::deadline`).
//!
//! Every connection shares one timeout, so ordering connections by their
//! last activity also orders them by deadline. [`IdleList`] is that order
//! kept as an intrusive doubly linked list over slab keys (a least
//! recently used list): activity moves a connection to the tail, a close
//! unlinks it, and the head is always the next to expire. Each operation
//! is O(1); nothing scans the connections, and nothing stale is left
//! behind when a connection closes, however fast they churn.
//!
//! Times are milliseconds on the loop's own clock, read once per turn.

use std::time::Duration;

/// Marks "no node" in a link.
const NIL: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
struct Node {
    prev: u32,
    next: u32,
    /// Last activity, in ms.
    last: u64,
    linked: bool,
}

/// How far [`IdleList::moved_at`] walks to keep the order.
const WALK: usize = 64;

const EMPTY: Node = Node { prev: NIL, next: NIL, last: 0, linked: false };

/// Connections ordered by last activity; see the module docs.
#[derive(Debug)]
pub struct IdleList {
    timeout_ms: u64,
    nodes: Vec<Node>,
    head: u32,
    tail: u32,
}

impl IdleList {
    /// An empty list whose entries expire `timeout` after activity.
    pub fn new(timeout: Duration) -> IdleList {
        let timeout_ms = timeout.as_millis().try_into().unwrap_or(u64::MAX);
        IdleList { timeout_ms, nodes: Vec::new(), head: NIL, tail: NIL }
    }

    /// The idle timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Starts tracking `key`, active at `now`.
    pub fn insert(&mut self, key: usize, now: u64) {
        let Ok(k) = u32::try_from(key) else { return };
        if self.nodes.len() <= key {
            self.nodes.resize(key + 1, EMPTY);
        }
        if self.nodes[key].linked {
            self.unlink(k);
        }
        self.nodes[key].last = now;
        self.push_tail(k);
    }

    /// Records activity on `key` at `now`.
    pub fn touch(&mut self, key: usize, now: u64) {
        match self.nodes.get(key) {
            // Same millisecond: the order is already right; skip the
            // pointer work on the hot path.
            Some(n) if n.linked && n.last == now => {}
            Some(n) if n.linked => self.insert(key, now),
            _ => {}
        }
    }

    /// Records that `key` moved bytes at `at`, earlier than now (its
    /// kernel sent data then): placed among the others by that time,
    /// walking back from the tail at most [`WALK`] steps (past them it
    /// may expire a little late, never early).
    pub fn moved_at(&mut self, key: usize, at: u64) {
        let Ok(k) = u32::try_from(key) else { return };
        if !self.nodes.get(key).is_some_and(|n| n.linked) {
            return;
        }
        self.unlink(k);
        self.nodes[key].last = at;
        let mut after = self.tail;
        for _ in 0..WALK {
            match self.nodes.get(after as usize) {
                Some(n) if n.last > at => after = n.prev,
                _ => break,
            }
        }
        self.link_after(k, after);
    }

    /// Stops tracking `key` (it closed).
    pub fn remove(&mut self, key: usize) {
        if let (Ok(k), Some(n)) = (u32::try_from(key), self.nodes.get(key)) {
            if n.linked {
                self.unlink(k);
            }
        }
    }

    /// The connection that has been idle past the timeout at `now`, if
    /// any; the caller closes it (and so removes it) and asks again.
    pub fn expired(&self, now: u64) -> Option<usize> {
        let deadline = self.next_deadline()?;
        (deadline <= now).then_some(self.head as usize)
    }

    /// When the next connection expires, in ms, if any is tracked.
    pub fn next_deadline(&self) -> Option<u64> {
        let head = self.nodes.get(self.head as usize)?;
        Some(head.last.saturating_add(self.timeout_ms))
    }

    fn push_tail(&mut self, k: u32) {
        self.link_after(k, self.tail);
    }

    /// Links `k` after `prev` (`NIL`: at the head).
    fn link_after(&mut self, k: u32, prev: u32) {
        let next = match prev {
            NIL => self.head,
            p => self.nodes[p as usize].next,
        };
        let node = &mut self.nodes[k as usize];
        node.prev = prev;
        node.next = next;
        node.linked = true;
        match prev {
            NIL => self.head = k,
            p => self.nodes[p as usize].next = k,
        }
        match next {
            NIL => self.tail = k,
            n => self.nodes[n as usize].prev = k,
        }
    }

    fn unlink(&mut self, k: u32) {
        let Node { prev, next, .. } = self.nodes[k as usize];
        match prev {
            NIL => self.head = next,
            p => self.nodes[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.nodes[n as usize].prev = prev,
        }
        self.nodes[k as usize] = EMPTY;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quietest_connection_expires_first() {
        let mut l = IdleList::new(Duration::from_millis(100));
        l.insert(0, 0);
        l.insert(1, 10);
        l.insert(2, 20);
        l.touch(0, 50);
        assert_eq!(l.next_deadline(), Some(110));
        assert_eq!(l.expired(109), None);
        assert_eq!(l.expired(110), Some(1));
        l.remove(1);
        assert_eq!(l.expired(149), Some(2));
        l.remove(2);
        assert_eq!(l.expired(149), None);
        assert_eq!(l.expired(150), Some(0));
        l.remove(0);
        assert_eq!(l.next_deadline(), None);
    }

    /// Every key, in the order they expire.
    fn drain(l: &mut IdleList) -> Vec<usize> {
        let mut order = Vec::new();
        while let Some(k) = l.expired(u64::MAX / 2) {
            order.push(k);
            l.remove(k);
        }
        order
    }

    #[test]
    fn removing_the_middle_and_reusing_a_key_keeps_the_order() {
        let mut l = IdleList::new(Duration::from_millis(10));
        for k in 0..5 {
            l.insert(k, k as u64);
        }
        l.remove(2);
        l.remove(2); // a second remove is a no-op
        l.insert(2, 100); // the slab reused key 2 for a new connection
        assert_eq!(drain(&mut l), [0, 1, 3, 4, 2]);
    }

    #[test]
    fn touching_an_untracked_key_does_nothing() {
        let mut l = IdleList::new(Duration::from_millis(10));
        l.touch(7, 5);
        l.remove(7);
        assert_eq!(l.next_deadline(), None);
    }

    #[test]
    fn a_move_in_the_past_takes_its_place_in_the_order() {
        let mut l = IdleList::new(Duration::from_millis(100));
        for k in 0..4 {
            l.insert(k, 10 * k as u64);
        }
        l.moved_at(0, 15); // between 1 (10) and 2 (20)
        assert_eq!(drain(&mut l), [1, 0, 2, 3]);
        l.insert(5, 0);
        l.moved_at(5, 3); // alone: head and tail
        assert_eq!(l.next_deadline(), Some(103));
    }
}

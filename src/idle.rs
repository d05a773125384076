//! Idle deadlines: which connection has been quiet longest, in O(1).
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
    /// An empty list whose entries expire `timeout_ms` after activity.
    pub fn new(timeout_ms: u64) -> IdleList {
        IdleList { timeout_ms, nodes: Vec::new(), head: NIL, tail: NIL }
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
        let tail = self.tail;
        let node = &mut self.nodes[k as usize];
        node.prev = tail;
        node.next = NIL;
        node.linked = true;
        match tail {
            NIL => self.head = k,
            t => self.nodes[t as usize].next = k,
        }
        self.tail = k;
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
        let mut l = IdleList::new(100);
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

    #[test]
    fn removing_the_middle_and_reusing_a_key_keeps_the_order() {
        let mut l = IdleList::new(10);
        for k in 0..5 {
            l.insert(k, k as u64);
        }
        l.remove(2);
        l.remove(2); // a second remove is a no-op
        l.insert(2, 100); // the slab reused key 2 for a new connection
        let mut order = Vec::new();
        while let Some(k) = l.expired(1000) {
            order.push(k);
            l.remove(k);
        }
        assert_eq!(order, [0, 1, 3, 4, 2]);
    }

    #[test]
    fn touching_an_untracked_key_does_nothing() {
        let mut l = IdleList::new(10);
        l.touch(7, 5);
        l.remove(7);
        assert_eq!(l.next_deadline(), None);
    }
}

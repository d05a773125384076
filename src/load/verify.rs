//! The bytes each connection sends, and the check of what comes back.
//!
//! Every connection sends its own deterministic sequence: a window into
//! one shared table of pseudo-random bytes, starting at a place chosen by
//! the connection's seed. Sending is a slice of the table (no copy, no
//! per-connection buffer) and checking an echo is one `memcmp` against the
//! slice at the same offset, so a lost, duplicated, reordered or foreign
//! byte shows up as a mismatch without costing the generator its speed.

use std::sync::OnceLock;

/// The table's period in bytes: a prime, so seeds spread the starting
/// points evenly and no short shift of the stream matches itself.
const PERIOD: usize = 65_521;

/// The table holds two periods, so any window of up to `PERIOD` bytes
/// starting inside the first period is one contiguous slice.
fn table() -> &'static [u8] {
    static TABLE: OnceLock<Box<[u8]>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let first: Vec<u8> = (0..PERIOD)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        [first.as_slice(), first.as_slice()].concat().into_boxed_slice()
    })
}

/// The byte sequence of one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sequence {
    start: u32,
}

impl Sequence {
    /// The sequence of the connection with this seed.
    pub fn new(seed: u64) -> Sequence {
        let start = seed.wrapping_mul(7_919) % PERIOD as u64;
        Sequence { start: start as u32 }
    }

    /// The bytes at `offset..`, at most `max` of them (fewer when `max`
    /// exceeds one period; ask again for the rest).
    pub fn bytes(&self, offset: u64, max: usize) -> &'static [u8] {
        let at = (u64::from(self.start) + offset) % PERIOD as u64;
        let at = at as usize;
        &table()[at..at + max.min(PERIOD)]
    }

    /// Whether `data` is exactly the sequence at `offset..`.
    pub fn matches(&self, offset: u64, data: &[u8]) -> bool {
        let mut at = offset;
        data.chunks(PERIOD).all(|chunk| {
            let same = chunk == self.bytes(at, chunk.len());
            at += chunk.len() as u64;
            same
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(seq: Sequence, offset: u64, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let at = offset + out.len() as u64;
            out.extend_from_slice(seq.bytes(at, len - out.len()));
        }
        out
    }

    #[test]
    fn an_exact_echo_matches_at_any_offset_and_length() {
        let seq = Sequence::new(42);
        for (offset, len) in [(0, 1), (7, 64), (65_000, 2_000), (3, 200_000)] {
            let data = collect(seq, offset, len);
            assert_eq!(data.len(), len);
            assert!(seq.matches(offset, &data), "{offset} {len}");
        }
    }

    #[test]
    fn one_corrupted_byte_is_a_mismatch() {
        let seq = Sequence::new(7);
        let mut data = collect(seq, 100, 16 * 1024);
        data[9_999] ^= 0x01;
        assert!(!seq.matches(100, &data));
    }

    #[test]
    fn a_shifted_lost_or_foreign_echo_is_a_mismatch() {
        let seq = Sequence::new(7);
        let data = collect(seq, 0, 4096);
        // One byte lost: everything after it is shifted.
        let mut lost = data.clone();
        lost.remove(10);
        assert!(!seq.matches(0, &lost[..4000]));
        // Bytes that belong to another connection.
        let other = collect(Sequence::new(8), 0, 4096);
        assert!(!seq.matches(0, &other));
        // The right bytes at the wrong offset.
        assert!(!seq.matches(1, &data[..4000]));
    }

    #[test]
    fn seeds_start_at_different_places() {
        let a = Sequence::new(1).bytes(0, 64);
        let b = Sequence::new(2).bytes(0, 64);
        assert_ne!(a, b);
    }
}

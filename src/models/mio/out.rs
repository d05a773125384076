//! Output of one mio connection waiting for its socket to drain.

use crate::policy::OUT_CAP;

/// The first output buffer of a connection whose write blocked.
const FIRST_OUT: usize = 4 * 1024;

/// Output waiting for the socket to drain; `data[sent..]` is unsent.
#[derive(Debug, Default)]
pub(super) struct OutBuf {
    data: Vec<u8>,
    sent: usize,
}

impl OutBuf {
    pub(super) fn pending(&self) -> &[u8] {
        &self.data[self.sent..]
    }

    /// Room left in the buffer without growing it.
    pub(super) fn spare(&self) -> usize {
        self.data.capacity() - self.pending().len()
    }

    /// Appends, growing the buffer by at most `allowance` beyond what the
    /// bytes need, and takes the growth off `allowance`.
    ///
    /// Most blocked writes leave a little behind, which a small first
    /// allocation holds; a client that keeps not reading fills the buffer
    /// to the cap, so the second step goes straight there: one
    /// reallocation instead of a ladder of them, whose freed steps would
    /// fragment the heap (measured: 68 KiB of RSS per stalled client with
    /// doubling, against the 64 KiB the cap promises). Past the budget,
    /// only what must be kept is allocated.
    pub(super) fn push(&mut self, bytes: &[u8], allowance: &mut usize) {
        if self.sent > 0 {
            self.data.drain(..self.sent);
            self.sent = 0;
        }
        let need = self.data.len() + bytes.len();
        let capacity = self.data.capacity();
        if need > capacity {
            let wanted = match need <= FIRST_OUT {
                true => FIRST_OUT,
                false => OUT_CAP.max(need),
            };
            let target = wanted.min(capacity + *allowance).max(need);
            self.data.reserve_exact(target - self.data.len());
        }
        let grown = self.data.capacity() - capacity;
        *allowance = allowance.saturating_sub(grown);
        self.data.extend_from_slice(bytes);
    }

    /// Marks `n` more bytes sent; true when nothing is left.
    pub(super) fn consume(&mut self, n: usize) -> bool {
        self.sent += n;
        self.sent == self.data.len()
    }

    /// Bytes of memory it holds (the buffer's capacity and its box),
    /// for the output budget.
    pub(super) fn held(&self) -> usize {
        std::mem::size_of::<OutBuf>() + self.data.capacity()
    }
}

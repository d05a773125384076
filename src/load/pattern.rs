//! The four traffic patterns, as the rules a connection follows.
//!
//! Every connection tracks two offsets into its byte sequence: `sent` and
//! `echoed`, and a `goal`: how far it may send before it must wait for the
//! echo. A pattern is only where the goal starts and what happens when
//! the echo reaches it.

use std::fmt;

/// `--pattern`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Pattern {
    /// Send SIZE bytes, wait for all of them to come back, repeat; the
    /// latency of each round trip is recorded.
    Pingpong,
    /// Send without pause and read the echoes concurrently: throughput.
    Stream,
    /// Exchange one byte on each connection, then hold it open.
    Idle,
    /// Connect, send SIZE bytes, read the echo, close, again: connection
    /// rate (the latency recorded is connect to last echoed byte).
    Connect,
}

/// What a connection does when its echo reaches its goal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AtGoal {
    /// A round trip completed: count it and send the next message.
    NextRound,
    /// The connection is established and proven: hold it.
    Hold,
    /// Close it and open a new one in its place.
    Reconnect,
}

impl Pattern {
    /// The name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Pattern::Pingpong => "pingpong",
            Pattern::Stream => "stream",
            Pattern::Idle => "idle",
            Pattern::Connect => "connect",
        }
    }

    /// How far a new connection may send before it waits for an echo.
    pub(crate) fn first_goal(self, size: u64) -> u64 {
        match self {
            // Stream never waits: the socket buffers and the server's
            // backpressure bound what is in flight.
            Pattern::Stream => u64::MAX,
            Pattern::Idle => 1,
            Pattern::Pingpong | Pattern::Connect => size,
        }
    }

    /// What happens when the echo reaches the goal.
    pub(crate) fn at_goal(self) -> AtGoal {
        match self {
            Pattern::Pingpong | Pattern::Stream => AtGoal::NextRound,
            Pattern::Idle => AtGoal::Hold,
            Pattern::Connect => AtGoal::Reconnect,
        }
    }

    /// Messages completed when the echo advanced from `before` to
    /// `after`: stream counts every SIZE bytes echoed; the others count
    /// at their goal instead.
    pub(crate) fn streamed(self, size: u64, before: u64, after: u64) -> u64 {
        match self {
            Pattern::Stream => after / size - before / size,
            _ => 0,
        }
    }

    /// What one message is, for the report.
    pub fn unit(self) -> &'static str {
        match self {
            Pattern::Pingpong => "round trips",
            Pattern::Stream => "SIZE-byte messages echoed",
            Pattern::Idle => "connections that exchanged a byte",
            Pattern::Connect => "connections opened, echoed and closed",
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_counts_whole_messages_as_they_are_echoed() {
        assert_eq!(Pattern::Stream.streamed(100, 0, 99), 0);
        assert_eq!(Pattern::Stream.streamed(100, 99, 100), 1);
        assert_eq!(Pattern::Stream.streamed(100, 150, 420), 3);
        assert_eq!(Pattern::Pingpong.streamed(100, 0, 1000), 0);
    }
}

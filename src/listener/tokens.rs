//! The token layout of the one poll: fixed tokens for the waker, the
//! signals and the metrics endpoint, then the client listeners, then the
//! connections (trap 14: they can never collide).

use mio::Token;

/// The token of the waker a `Handle` uses to stop the server.
pub(crate) const WAKER: Token = Token(0);
/// The token of the signals (trap 13: signals are events on the Poll).
pub(crate) const SIGNALS: Token = Token(1);
/// The token of the metrics listener (`--metrics-addr`).
pub(crate) const METRICS: Token = Token(2);
/// Scrape connections on the metrics listener: tokens
/// `FIRST_SCRAPE..FIRST_SCRAPE + MAX_SCRAPES`.
pub(crate) const FIRST_SCRAPE: usize = 8;
/// Scrapes served at once (`metrics::room` decides who gets a seat).
pub(crate) const MAX_SCRAPES: usize = 16;
/// Client listeners (`--addr`, socket activation): tokens
/// `FIRST_LISTENER + index`.
pub(crate) const FIRST_LISTENER: usize = FIRST_SCRAPE + MAX_SCRAPES;
/// Client listeners a server may have.
pub(crate) const MAX_LISTENERS: usize = 64;
/// Trap 14: connection tokens are slab keys plus this offset, above every
/// fixed token, so they can never collide.
pub(crate) const FIRST_CONNECTION: usize = FIRST_LISTENER + MAX_LISTENERS;

/// What a token stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// The waker or the signals: see [`Listener::control`].
    Control,
    /// The metrics listener.
    Metrics,
    /// Scrape connection `n` of the metrics listener.
    Scrape(usize),
    /// Client listener `n`.
    Listener(usize),
    /// Connection (or a model's own source) `key`.
    Connection(usize),
}

impl Source {
    /// Decodes `token`.
    pub(crate) fn of(token: Token) -> Source {
        match token.0 {
            t if t == METRICS.0 => Source::Metrics,
            t if t >= FIRST_CONNECTION => {
                Source::Connection(t - FIRST_CONNECTION)
            }
            t if t >= FIRST_LISTENER => Source::Listener(t - FIRST_LISTENER),
            t if t >= FIRST_SCRAPE => Source::Scrape(t - FIRST_SCRAPE),
            // The waker, the signals, and unused tokens below the
            // scrapes (which ask nothing of `control`).
            _ => Source::Control,
        }
    }
}

/// The token of client listener `n`.
pub(crate) fn listener_token(n: usize) -> Token {
    Token(FIRST_LISTENER + n)
}

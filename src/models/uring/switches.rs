//! The measurement switches: environment variables that turn each of
//! the uring model's choices off (or on, or set its bound), read once at
//! start-up, so that what each choice brings can be measured side by
//! side (`contrib/uring-ab.sh`, docs/completion.md). Unset, each is the
//! default the measurements chose.

use super::TURN_RECV;

/// The switch that turns incremental buffer consumption off (`0`), to
/// measure what it brings; on by default where the kernel has it.
const INC: &str = "READYLOOP_URING_INC";
/// The number of receive buffers, instead of the pool's own sizing: a
/// small pool runs dry (trap C3) in tests.
const BUFFERS: &str = "READYLOOP_URING_BUFFERS";
/// The switch that turns echo's bounded multishot receive off (`0`).
const ECHO_MULTISHOT: &str = "READYLOOP_URING_ECHO_MULTISHOT";
/// The switch that turns echo's bundled receive off (`0`), to measure
/// what it brings: reads then take at most half the output's room.
const BUNDLE: &str = "READYLOOP_URING_BUNDLE";
/// The switch that turns off (`0`) echo's sends in place from the
/// receive buffers (trap C11): received bytes are then copied into the
/// connection's output first. Any other number sets the smallest read
/// sent in place ([`IN_PLACE_MIN`]), to measure a threshold.
const IN_PLACE: &str = "READYLOOP_URING_IN_PLACE";
/// The smallest read echo sends in place: every read. Copying reads
/// below 2 KiB instead (`READYLOOP_URING_IN_PLACE=2048`) was measured
/// and bought nothing at pingpong 64 B (0.97x the CPU per message, in
/// the noise) while it cost streams at C=100 1.06x (docs/completion.md).
const IN_PLACE_MIN: usize = 1;
/// The switch that turns `IORING_RECVSEND_POLL_FIRST` on (`1`): off by
/// default, since it bought nothing measurable at pingpong and cost
/// about 6% CPU per message on streams (docs/completion.md).
const POLL_FIRST: &str = "READYLOOP_URING_POLL_FIRST";
/// The switch that keeps every incremental buffer in the ring (`0`)
/// instead of what the traffic needs, to measure what fitting brings.
const FITTED: &str = "READYLOOP_URING_FITTED_RING";
/// The switch that turns on (`1`) waiting for a send in flight before
/// arming an echo receive with little room: off by default, since it
/// bought nothing measurable (docs/completion.md).
const DEFER_RECV: &str = "READYLOOP_URING_DEFER_RECV";
/// The switch that lifts (`0`) the cap on what one turn's re-armed
/// receives may bring ([`TURN_RECV`]), or sets it (KiB), to measure
/// what it brings.
const TURN_CAP: &str = "READYLOOP_URING_TURN_CAP";

/// The switches as the environment sets them.
pub(super) struct Switches {
    /// Incremental buffers, where the kernel has them.
    pub(super) inc: bool,
    /// The pool's buffer count, instead of its own sizing.
    pub(super) buffers: Option<usize>,
    /// Only the buffers the traffic needs in the ring.
    pub(super) fitted: bool,
    /// Echo's bounded multishot receive.
    pub(super) echo_multishot: bool,
    /// Echo's receive as a bundle (with incremental buffers only).
    pub(super) bundle: bool,
    /// The smallest read sent in place; `usize::MAX`: never.
    pub(super) in_place: usize,
    /// `IORING_RECVSEND_POLL_FIRST` where the socket is known empty.
    pub(super) poll_first: bool,
    /// An echo receive with little room waits for the send in flight.
    pub(super) defer_recv: bool,
    /// What the receives armed in one turn may bring.
    pub(super) turn_recv: usize,
}

impl Switches {
    /// Reads every switch from the environment.
    pub(super) fn read() -> Switches {
        Switches {
            inc: on_unless_0(INC),
            buffers: std::env::var(BUFFERS).ok().and_then(|n| n.parse().ok()),
            fitted: on_unless_0(FITTED),
            echo_multishot: on_unless_0(ECHO_MULTISHOT),
            bundle: on_unless_0(BUNDLE),
            in_place: amount(IN_PLACE, 1, IN_PLACE_MIN),
            poll_first: on_if_1(POLL_FIRST),
            defer_recv: on_if_1(DEFER_RECV),
            turn_recv: amount(TURN_CAP, 1024, TURN_RECV),
        }
    }
}

/// Whether the switch `name` is on: anything but `0`, or unset.
fn on_unless_0(name: &str) -> bool {
    std::env::var_os(name).map_or(true, |v| v != "0")
}

/// Whether the switch `name` is on: `1` only.
fn on_if_1(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v == "1")
}

/// The bound `name` sets, in units of `unit` bytes: `0` lifts it
/// (`usize::MAX`); unset, or not a number, `default`.
fn amount(name: &str, unit: usize, default: usize) -> usize {
    let set = std::env::var(name).ok();
    match set.and_then(|v| v.parse::<usize>().ok()) {
        Some(0) => usize::MAX,
        Some(n) => n.saturating_mul(unit),
        None => default,
    }
}

//! Waking a thread blocked in `read` or `write` without touching its
//! socket: a signal whose handler does nothing, installed without
//! `SA_RESTART`, so the blocked call returns `EINTR` and the thread looks
//! at its stop flag.
//!
//! Shutting the socket's read side down would wake a reader too, but
//! then every later read returns 0 and the thread can no longer drain
//! and linger before it closes (trap 17). std has no wrapper for either
//! call, hence the only unsafe code of the listener layer besides
//! activation's.
//!
//! Here too: when the first stop signal arrived, read in the handler
//! itself. A model that looks for the stop only now and then (the
//! iterative one, between slices of a blocked call) would otherwise
//! start its stop window when it looks, and a SIGSTOP in between would
//! add its whole length to the stop.
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Once;
use std::time::{Duration, Instant};

/// CLOCK_MONOTONIC, in ns, when the first stop signal arrived; 0: none.
static STOP_ARRIVED: AtomicU64 = AtomicU64::new(0);

/// The signal: the last real-time one, which nothing else here uses.
pub(crate) fn signal() -> libc::c_int {
    libc::SIGRTMAX()
}

extern "C" fn nothing(_: libc::c_int) {}

/// Installs the handler (idempotent).
pub(crate) fn install() -> io::Result<()> {
    let handler = nothing as extern "C" fn(libc::c_int);
    // SAFETY: a zeroed sigaction is valid (empty mask, no flags, so no
    // SA_RESTART: a blocked call returns EINTR); the handler does
    // nothing, which is async-signal-safe.
    let r = unsafe {
        let mut action: libc::sigaction = mem::zeroed();
        action.sa_sigaction = handler as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(signal(), &action, ptr::null_mut())
    };
    match r {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Interrupts whatever blocking call `thread` is in, if any. The caller
/// must know the thread has not been joined yet.
pub(crate) fn interrupt(thread: libc::pthread_t) {
    // SAFETY: the caller guarantees the thread is not joined, so the
    // handle is valid; a thread that already returned gets nothing.
    unsafe { libc::pthread_kill(thread, signal()) };
}

/// Notes the time the first of `signals` arrives, from now on (an
/// earlier arrival is forgotten); the handler is installed once a
/// process, beside signal-hook's own.
pub(crate) fn note_arrival(signals: &[i32]) -> io::Result<()> {
    static INSTALLED: Once = Once::new();
    let mut result = Ok(());
    INSTALLED.call_once(|| {
        for &signal in signals {
            // SAFETY: the action reads the monotonic clock
            // (clock_gettime is async-signal-safe) and does one atomic
            // compare-exchange: no allocation, no lock.
            let registered =
                unsafe { signal_hook::low_level::register(signal, arrived) };
            if let Err(e) = registered {
                result = Err(e);
                return;
            }
        }
    });
    STOP_ARRIVED.store(0, Relaxed);
    result
}

/// When a stop window seen at `now` begins: the stop signal's arrival
/// (a SIGSTOP between it and `now` must not add a whole window), or
/// `now` when none was noted or when the stop follows a `--drain`
/// (`after_drain`: the signal came a whole drain earlier).
pub(crate) fn stop_began(now: Instant, after_drain: bool) -> Instant {
    match after_drain {
        true => now,
        false => stop_arrived().filter(|&t| t <= now).unwrap_or(now),
    }
}

fn arrived() {
    let _ = STOP_ARRIVED.compare_exchange(0, monotonic_ns(), Relaxed, Relaxed);
}

fn monotonic_ns() -> u64 {
    // SAFETY: a zeroed timespec is valid; clock_gettime writes it.
    let ts = unsafe {
        let mut ts: libc::timespec = mem::zeroed();
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
        ts
    };
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    (secs * 1_000_000_000 + nanos).max(1)
}

/// When the first stop signal arrived, if one did (see the module
/// docs); never later than now.
pub(crate) fn stop_arrived() -> Option<Instant> {
    let at = STOP_ARRIVED.load(Relaxed);
    if at == 0 {
        return None;
    }
    let ago = Duration::from_nanos(monotonic_ns().saturating_sub(at));
    Instant::now().checked_sub(ago)
}

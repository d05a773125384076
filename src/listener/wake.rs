//! Waking a thread blocked in `read` or `write` without touching its
//! socket: a signal whose handler does nothing, installed without
//! `SA_RESTART`, so the blocked call returns `EINTR` and the thread looks
//! at its stop flag.
//!
//! Shutting the socket's read side down would wake a reader too, but
//! then every later read returns 0 and the thread can no longer drain
//! and linger before it closes (trap 17). std has no wrapper for either
//! call, hence the only unsafe code of the listener layer.
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::ptr;

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

//! Whether io_uring can run here, decided by a probe of its own and not
//! by the model under test: a ring with the set-up the uring model asks
//! for (`SINGLE_ISSUER | DEFER_TASKRUN`, Linux 6.1) and the operations it
//! uses. Where the probe fails, a uring test fails with the probe's
//! reason, so CI cannot go green with the model untested; only with
//! `READYLOOP_SKIP_URING=1` (for a kernel without io_uring, which `.ci/run`
//! never sets) does it print the reason and pass. Where the probe
//! succeeds, the tests must pass for real.

use std::sync::OnceLock;

use io_uring::{opcode, IoUring, Probe};
use readyloop::Model;

/// `Err(reason)` when io_uring is unavailable on this machine.
pub fn probe() -> &'static Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    // On a thread of its own: tearing a ring down queues work on the
    // thread that made it, which interrupts that thread's next blocking
    // call (EINTR on a socket with a timeout): not a test's thread.
    PROBE.get_or_init(|| {
        std::thread::spawn(try_ring)
            .join()
            .unwrap_or_else(|_| Err("the probe panicked".into()))
    })
}

fn try_ring() -> Result<(), String> {
    {
        let ring: IoUring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(8)
            .map_err(|e| format!("io_uring_setup: {e}"))?;
        let mut probe = Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(|e| format!("probe: {e}"))?;
        for (name, code) in [
            ("accept", opcode::AcceptMulti::CODE),
            ("recv", opcode::RecvMulti::CODE),
            ("send", opcode::Send::CODE),
            ("poll_add", opcode::PollAdd::CODE),
            ("async_cancel", opcode::AsyncCancel::CODE),
        ] {
            if !probe.is_supported(code) {
                return Err(format!("no {name} operation"));
            }
        }
        Ok(())
    }
}

/// The variable that lets a uring test pass where the probe fails.
pub const SKIP: &str = "READYLOOP_SKIP_URING";

/// Runs `behaviour` against `model`. For the uring model on a machine
/// where the probe fails, panics with the probe's reason, unless
/// [`SKIP`] is `1`: then prints the reason and returns.
pub fn run(model: Model, behaviour: fn(Model)) {
    if model == Model::Uring {
        if let Err(reason) = probe() {
            unavailable(
                reason,
                std::env::var_os(SKIP).is_some_and(|v| v == "1"),
            );
            return;
        }
    }
    behaviour(model);
}

/// What a uring test does where the probe failed with `reason`.
fn unavailable(reason: &str, skip: bool) {
    assert!(
        skip,
        "io_uring unavailable here: {reason} (on a kernel without \
         io_uring, set {SKIP}=1 to pass the uring tests untested)"
    );
    eprintln!(
        "uring: NOT TESTED, io_uring unavailable here ({SKIP}=1): {reason}"
    );
}

/// Without [`SKIP`], a failed probe fails the test with its reason.
#[test]
#[should_panic(expected = "io_uring unavailable here: no ring")]
fn a_failed_probe_fails_the_test() {
    unavailable("no ring", false);
}

/// With [`SKIP`], a failed probe is reported and the test goes on.
#[test]
fn a_failed_probe_passes_only_when_told_to() {
    unavailable("no ring", true);
}

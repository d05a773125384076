//! Whether io_uring can run here, decided by a probe of its own and not
//! by the model under test: a ring with the set-up the uring model asks
//! for (`SINGLE_ISSUER | DEFER_TASKRUN`, Linux 6.1) and the operations it
//! uses. Where the probe fails, the uring tests say why and pass; where
//! it succeeds, they must pass for real.

use std::sync::OnceLock;

use io_uring::{opcode, IoUring, Probe};
use readyloop::Model;

/// `Err(reason)` when io_uring is unavailable on this machine.
pub fn probe() -> &'static Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE.get_or_init(|| {
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
    })
}

/// Runs `behaviour` against `model`; for the uring model on a machine
/// where the probe fails, prints the probe's reason instead and returns.
pub fn run(model: Model, behaviour: fn(Model)) {
    if model == Model::Uring {
        if let Err(reason) = probe() {
            eprintln!("uring: io_uring unavailable here: {reason}");
            return;
        }
    }
    behaviour(model);
}

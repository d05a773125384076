//! Waiting on what the server does: bounded retries on an observable
//! condition, never a bare sleep.

use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use readyloop::Model;

use super::proc;
use super::server::ServerProcess;

/// Generous bound for anything a test waits on; tests never assert time.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Retries `check` until it returns true or [`PATIENCE`] runs out.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    while !check() {
        assert!(start.elapsed() < PATIENCE, "gave up waiting for: {what}");
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Waits until `needle` occurs `n` times in the server's stderr.
pub fn wait_count(server: &mut ServerProcess, needle: &str, n: usize) {
    eventually(&format!("{n} × {needle:?}"), || server.count(needle) >= n);
}

/// Waits until the server has let go of every closed connection: the
/// thread model's threads have ended and the process model's children are
/// reaped, so `open` connections are all that count against the limit.
pub fn settle(server: &ServerProcess, model: Model, open: usize) {
    let pid = server.pid();
    match model {
        Model::Thread => {
            eventually("threads end", || proc::threads(pid) == Some(1 + open))
        }
        Model::Process => {
            eventually("children reaped", || proc::children(pid).len() == open)
        }
        Model::Mio | Model::Iterative | Model::Uring => {}
    }
}

/// Tests that load the two cores or open thousands of sockets (chaos,
/// floods, thousands of idle clients) run one at a time: a starved
/// client could sit past an idle timeout.
pub fn heavy() -> MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

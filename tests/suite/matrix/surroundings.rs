//! What the server's surroundings do to it, in every model: the signals
//! people send by habit (hang-up, Ctrl-\, a second Ctrl-C, a stray
//! SIGUSR2), job control pulsing SIGSTOP/SIGCONT, and a stop while a
//! client still owes reads.

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use readyloop::{Model, Summary};
use rustix::process::{kill_process, Pid};

use crate::support::server::Signal;
use crate::support::stall::write_until_backed_up;
use crate::support::*;

per_model!(
    hangup_stops_like_terminate,
    quit_stops_without_the_window,
    a_second_interrupt_stops_without_the_window,
    usr1_reports_the_counters_and_usr2_is_ignored,
    stop_and_continue_pulses_keep_the_idle_timeout,
    stop_and_continue_pulses_keep_the_stop_window,
    shutdown_flushes_and_lingers_instead_of_resetting,
    a_window_spent_stopped_ends_at_continue,
);

/// A client that left the server lingering: echo output pending for it
/// and input the server never read. Under a plain stop the server would
/// give it the whole stop window.
fn lingering_client(server: &ServerProcess) -> TcpStream {
    let mut c = connect(server.addr);
    write_until_backed_up(&mut c, &pattern(7, 64 << 10));
    c
}

/// SIGHUP (the terminal went away) stops the server cleanly: exit 0, the
/// summary, the open connection counted as `shutdown`.
fn hangup_stops_like_terminate(model: Model) {
    let mut server = serve(model, &["--mode", "echo"]);
    let mut c = connect(server.addr);
    assert_eq!(echo_round(&mut c, b"hello"), b"hello");
    let (code, s) = server.finish_with(&[Signal::HUP]);
    assert_eq!(code, 0);
    assert_eq!((s.accepted, s.closed_shutdown), (1, 1), "{s}");
    assert!(server.log.iter().any(|l| l.contains("received SIGHUP")));
}

/// A stop window kept by a running server: a mio server told to stop
/// while it holds a lingering client, which never reads nor closes, so
/// that only the end of the window lets the server exit. Once
/// [`StopWindow::begin`] returns, the window runs; while the server
/// runs, it has not ended.
struct StopWindow {
    server: ServerProcess,
    _client: TcpStream,
}

impl StopWindow {
    /// The server and its lingering client, not stopping yet.
    fn ready() -> StopWindow {
        let server = serve(Model::Mio, &["--mode", "echo"]);
        let client = lingering_client(&server);
        StopWindow { server, _client: client }
    }

    /// Stops the server, and returns once its window has begun.
    fn begin(&mut self) {
        self.server.signal(Signal::INT);
        self.server.wait_for_line("stopping: 1 connections open");
    }

    /// Whether the window is still on.
    fn running(&mut self) -> bool {
        self.server.alive()
    }
}

/// Sends `first` (and waits until the server has seen it) then `then` to
/// a server holding a lingering client, and checks it stopped at once:
/// exit 0, every connection counted as `shutdown`, and all while a stop
/// window begun before the first signal still runs.
fn stops_at_once(model: Model, first: Option<Signal>, then: Signal) {
    let mut server = serve(model, &["--mode", "echo"]);
    let c = lingering_client(&server);
    let mut window = StopWindow::ready();
    window.begin();
    if let Some(signal) = first {
        server.signal(signal);
        // Two signals sent at once would arrive as one.
        server.wait_for_line("stopping");
    }
    server.signal(then);
    let code = server.wait_exit();
    let at_once = window.running();
    let s = Summary::parse(&server.wait_for_status("summary "))
        .expect("parse summary");
    assert_eq!(code, 0);
    assert_eq!((s.accepted, s.closed_shutdown), (1, 1), "{s}");
    assert!(
        at_once,
        "{model}: still running when a stop window begun before the first \
         signal had ended"
    );
    drop(c);
}

/// SIGQUIT (Ctrl-\) stops at once: no flushing or lingering, the summary
/// still printed, exit 0.
fn quit_stops_without_the_window(model: Model) {
    stops_at_once(model, None, Signal::QUIT);
}

/// A second SIGINT during the stop window ends it at once.
fn a_second_interrupt_stops_without_the_window(model: Model) {
    stops_at_once(model, Some(Signal::INT), Signal::INT);
}

/// SIGUSR1 logs a `stats` line with the counters so far and the server
/// goes on; SIGUSR2, whose default would end the process, is ignored.
fn usr1_reports_the_counters_and_usr2_is_ignored(model: Model) {
    let mut server = serve(model, &["--mode", "echo"]);
    let mut c = connect(server.addr);
    assert_eq!(echo_round(&mut c, b"12345"), b"12345");
    server.signal(Signal::USR1);
    let line = server.wait_for_status("stats ");
    assert!(line.contains("accepted=1 "), "{line}");
    assert!(line.contains("bytes_in=5 "), "{line}");
    server.signal(Signal::USR2);
    server.wait_for_line("received SIGUSR2: ignored");
    assert_eq!(echo_round(&mut c, b"still"), b"still");
    drop(c);
    let (code, s) = server.terminate();
    assert_eq!(code, 0);
    assert_eq!(s.accepted, 1, "{s}");
}

/// Job control pulsing a server: SIGSTOP to it (and, in the process
/// model, its children, as job control does to a process group), a wait
/// until each is really stopped (a SIGCONT sent before that would cancel
/// the stop), SIGCONT, then 100 ms running; up to [`PULSES`] times, so
/// that a server that only acts once the pulses end is seen to.
struct Pulses {
    sent: Arc<AtomicU32>,
    done: Arc<AtomicBool>,
    pulser: thread::JoinHandle<()>,
}

/// How many pulses a [`Pulses`] sends at most: over 10 s of them, five
/// times the stop window and ten times the idle timeout below.
const PULSES: u32 = 100;

impl Pulses {
    /// Starts pulsing `server` (and the children it has now) and returns
    /// once a first pulse went.
    fn start(server: &ServerProcess) -> Pulses {
        let pid = server.pid();
        let mut pids = vec![pid];
        pids.extend(proc::children(pid).iter().map(|c| c.pid));
        let sent = Arc::new(AtomicU32::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let (count, stop) = (Arc::clone(&sent), Arc::clone(&done));
        let pulser = thread::spawn(move || {
            while !stop.load(SeqCst) && count.load(SeqCst) < PULSES {
                send(&pids, Signal::STOP);
                // Stopped, or gone (a zombie never stops); bounded.
                let stopped = |&p: &u32| {
                    matches!(proc::state(p), None | Some('T' | 'Z' | 'X'))
                };
                for _ in 0..1000 {
                    if pids.iter().all(stopped) {
                        break;
                    }
                    thread::sleep(Duration::from_millis(1));
                }
                send(&pids, Signal::CONT);
                count.fetch_add(1, SeqCst);
                thread::sleep(Duration::from_millis(100));
            }
        });
        let pulses = Pulses { sent, done, pulser };
        eventually("a first pulse", || pulses.sent() > 0);
        pulses
    }

    /// Pulses sent so far.
    fn sent(&self) -> u32 {
        self.sent.load(SeqCst)
    }

    /// Stops pulsing; returns whether the pulses had already run out
    /// (all [`PULSES`] sent) by themselves.
    fn stop(self) -> bool {
        let ran_out = self.pulser.is_finished();
        self.done.store(true, SeqCst);
        self.pulser.join().expect("pulser");
        ran_out
    }
}

fn send(pids: &[u32], signal: Signal) {
    for &p in pids {
        if let Some(p) = Pid::from_raw(p as i32) {
            let _ = kill_process(p, signal);
        }
    }
}

/// How many times a pulse test runs before it gives up on seeing a pulse
/// inside the span it watches: on a starved machine (a loaded CI run) the
/// pulser thread may not get the CPU for a whole span, which says nothing
/// about the server, so the test runs again; a server that ends the span
/// before any pulse on every try fails.
const PULSE_TRIES: u32 = 3;

/// Runs `attempt` (which returns the pulses sent inside its span) until
/// a pulse fell inside, at most [`PULSE_TRIES`] times; fails naming `what`.
fn with_a_pulse_inside(model: Model, what: &str, attempt: impl Fn() -> u32) {
    for _ in 0..PULSE_TRIES {
        if attempt() > 0 {
            return;
        }
    }
    panic!("{model}: no pulse {what} in {PULSE_TRIES} tries");
}

/// Job control cannot freeze the idle timeout: under [`Pulses`] that
/// began before the client's last byte, the idle timeout (1 s) still
/// closes the connection while the pulses go on (a wait retried with
/// its whole timeout after each pulse would close it only once they
/// end), with pulses between that byte and the close.
fn stop_and_continue_pulses_keep_the_idle_timeout(model: Model) {
    with_a_pulse_inside(model, "while the connection was idle", || {
        let server = serve(model, &["--mode", "echo", "--idle-timeout", "1"]);
        let mut c = connect(server.addr);
        let pulses = Pulses::start(&server);
        assert_eq!(echo_round(&mut c, b"x"), b"x");
        let before = pulses.sent();
        let (rest, _) = read_to_end(&mut c);
        let during = pulses.sent() - before;
        let ran_out = pulses.stop();
        assert!(rest.is_empty());
        assert!(
            !ran_out,
            "{model}: the idle close came after all {PULSES} pulses"
        );
        let (code, s) = server.terminate();
        assert_eq!(code, 0);
        assert_eq!((s.accepted, s.closed_idle), (1, 1), "{s}");
        during
    });
}

/// Job control cannot stretch the stop: under [`Pulses`], SIGINT with a
/// lingering client (which only the stop window's end can close) ends
/// the server while the pulses go on, with pulses during its window;
/// the client is counted as `shutdown`.
fn stop_and_continue_pulses_keep_the_stop_window(model: Model) {
    with_a_pulse_inside(model, "during the stop window", || {
        let mut server = serve(model, &["--mode", "echo"]);
        let c = lingering_client(&server);
        let pulses = Pulses::start(&server);
        let before = pulses.sent();
        server.signal(Signal::INT);
        let code = server.wait_exit();
        let during = pulses.sent() - before;
        let ran_out = pulses.stop();
        let line = server.wait_for_status("summary ");
        let s = Summary::parse(&line).expect("parse summary");
        assert!(!ran_out, "{model}: stopped only after all {PULSES} pulses");
        assert_eq!(code, 0);
        assert_eq!((s.accepted, s.closed_shutdown), (1, 1), "{s}");
        drop(c);
        during
    });
}

/// A client with echo output pending at the server and more input the
/// server never read: on SIGTERM it still receives every byte the server
/// wrote and then a clean EOF, not an RST that would discard them.
fn shutdown_flushes_and_lingers_instead_of_resetting(model: Model) {
    let server = serve(model, &["--mode", "echo"]);
    let mut c = connect(server.addr);
    let sent = write_until_backed_up(&mut c, &pattern(3, 64 << 10));
    let reader = thread::spawn(move || read_to_end(&mut c));
    let (code, s) = server.terminate();
    let (back, clean) = reader.join().expect("reader");
    assert_eq!(code, 0);
    assert!(clean, "{model}: an RST after {} bytes", back.len());
    assert_eq!(back.len() as u64, s.bytes_out, "{s}");
    assert!(back == sent[..back.len()], "echo differs");
}

/// Whether signal `signal` waits, undelivered, for process `pid` (its
/// bit in `SigPnd` or `ShdPnd` of /proc/PID/status).
fn pending(pid: u32, signal: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default();
    let bit = 1u64 << (signal - 1);
    status.lines().any(|l| {
        let mask =
            l.strip_prefix("SigPnd:").or_else(|| l.strip_prefix("ShdPnd:"));
        mask.and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .is_some_and(|m| m & bit != 0)
    })
}

/// Job control cannot add a window to a stop: SIGTERM (delivered), then
/// SIGSTOP before the model may have looked for it, held until a whole
/// stop window has passed (a reference server's window, begun with the
/// SIGTERM, is over), then SIGCONT: the server exits at once, while a
/// window begun at the SIGCONT still runs. (The iterative model, which
/// looks for a stop between slices of a blocked call, used to start its
/// window at that look, after the SIGCONT.)
fn a_window_spent_stopped_ends_at_continue(model: Model) {
    // The reference windows are other processes, which a loaded machine
    // (the whole suite at once) can stretch or delay by a large part of
    // a window; a server that adds a whole window fails every try.
    for _ in 1..PULSE_TRIES {
        if window_spent_stopped(model) {
            return;
        }
    }
    assert!(
        window_spent_stopped(model),
        "{model}: still running a whole window after SIGCONT, its window \
         spent while stopped ({PULSE_TRIES} tries)"
    );
}

/// One try of [`a_window_spent_stopped_ends_at_continue`]: whether the
/// server exited while the window begun at the SIGCONT still ran.
fn window_spent_stopped(model: Model) -> bool {
    let mut server = serve(model, &["--mode", "echo"]);
    let c = lingering_client(&server);
    let mut before = StopWindow::ready();
    let mut after = StopWindow::ready();
    let pid = server.pid();
    before.begin();
    server.signal(Signal::TERM);
    eventually("SIGTERM delivered", || !pending(pid, libc::SIGTERM));
    server.signal(Signal::STOP);
    eventually("a whole stop window passed", || !before.running());
    after.begin();
    server.signal(Signal::CONT);
    let code = server.wait_exit();
    let at_once = after.running();
    assert_eq!(code, 0);
    drop(c);
    at_once
}

//! Control: what the waker and the signals ask of the server (a stop,
//! a stop now, the stats line), and the end of accepting.

use std::time::Instant;

use mio::Token;

use super::signals::{self, Control};
use super::{Listener, SIGNALS, WAKER};

impl Listener {
    /// What `token` asks of the server, if it is the waker's or the
    /// signals' (taking every pending signal, so their edge is
    /// consumed); `None` for any other token. A wake-up with no signal pending asks
    /// nothing: spurious wake-ups are harmless.
    pub(crate) fn control(&mut self, token: Token) -> Option<Control> {
        match token {
            WAKER => Some(self.group.asked()),
            SIGNALS => {
                let mut control = Control::default();
                let pending: Vec<i32> = match &mut self.signals {
                    Some(signals) => signals.pending().collect(),
                    None => Vec::new(),
                };
                for signal in pending {
                    control.merge(self.on_signal(signal));
                }
                Some(control)
            }
            _ => None,
        }
    }

    fn on_signal(&mut self, signal: i32) -> Control {
        let name = signals::name(signal);
        match signals::meaning(signal) {
            signals::Meaning::Stop => {
                let control = self.ask_stop(false);
                match (control.stop, control.now) {
                    (_, true) => log::info!(
                        "received {name} again: stopping now, without \
                         waiting for connections"
                    ),
                    (true, false) => log::info!("received {name}, stopping"),
                    (false, _) => log::info!(
                        "received {name}: draining for {} s (/healthz \
                         answers 503, connections are still accepted), \
                         then stopping",
                        self.group.drain().as_secs_f64()
                    ),
                }
                control
            }
            signals::Meaning::StopNow => {
                log::info!("received {name}: stopping now");
                self.ask_stop(true)
            }
            signals::Meaning::Stats => {
                self.service.ask_stats();
                Control::default()
            }
            signals::Meaning::Ignore => {
                match self.ignored.admit(Instant::now()) {
                    Some(0) => log::info!("received {name}: ignored"),
                    Some(folded) => log::info!(
                        "received {name}: ignored ({folded} more ignored \
                         signals since the last line)"
                    ),
                    None => {}
                }
                Control::default()
            }
        }
    }

    /// A stop (SIGINT, SIGTERM, SIGHUP), for every worker; a second one
    /// while stopping, or `now`, stops at once.
    fn ask_stop(&mut self, now: bool) -> Control {
        self.group.ask_stop(now)
    }

    /// Stops accepting for good: deregisters and closes every listener,
    /// and tells the service manager the stop began. A socket this
    /// process bound is shut down first, so new clients are refused at
    /// once instead of waiting in a backlog nobody accepts from (on
    /// Linux, shutdown of a listening socket returns it to the closed
    /// state). A socket systemd passed is only closed: systemd keeps its
    /// copy listening, and clients that arrive while the service
    /// restarts wait in its backlog for the next start.
    pub(crate) fn stop_listening(&mut self) {
        self.service.stopping();
        for mut socket in self.sockets.drain(..) {
            let _ = self.poll.registry().deregister(&mut socket);
            if self.activated {
                continue;
            }
            let sock = socket2::SockRef::from(&socket);
            if let Err(e) = sock.shutdown(std::net::Shutdown::Read) {
                log::warn!("cannot shut the listener down: {e}");
            }
        }
    }
}

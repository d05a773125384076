//! What `--metrics-addr` costs the mio model: server CPU per message
//! with the endpoint on and scraped every second, against off, on the
//! CPU test, in the same run. The two alternate (off on, then on off)
//! round by round, so drift of a shared machine hits both alike; the
//! cost is the median over rounds of on / off in the same round.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use readyloop::Model;

use crate::sample::{cpu_median, cpu_ratio, Sample};
use crate::server::{Kind, Spec};
use crate::settings::Settings;

/// The mio model without the endpoint, and with it.
pub const OFF: Spec = Spec { name: "mio", kind: Kind::Readyloop(Model::Mio) };
pub const ON: Spec =
    Spec { name: "mio+metrics", kind: Kind::Readyloop(Model::Mio) };

/// How often the endpoint is scraped while the load runs.
const EVERY: Duration = Duration::from_secs(1);
/// How long one scrape may take before it counts as failed.
const PATIENCE: Duration = Duration::from_secs(2);
/// The target: CPU per message with the endpoint on, over off.
pub const TARGET: f64 = 1.01;

/// The samples of both, and how the scrapes went.
#[derive(Default)]
pub struct Cost {
    pub samples: Vec<Sample>,
    pub scrapes: Tally,
}

/// Scrapes answered 200, and the others.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tally {
    pub answered: u64,
    pub failed: u64,
}

impl Cost {
    /// Median over rounds of CPU per message on / off in the same round.
    pub fn ratio(&self) -> Option<f64> {
        cpu_ratio(&self.samples, ON.name, OFF.name)
    }

    /// Median CPU per message, in µs, of `spec`.
    pub fn cpu(&self, spec: &Spec) -> Option<f64> {
        cpu_median(&self.samples, spec.name)
    }

    /// One line for stdout and the report.
    pub fn line(&self, settings: &Settings) -> String {
        let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
        format!(
            "metrics endpoint ({}, {} rounds): CPU µs/msg off {}, on and \
             scraped every {} s {}, on/off {}x (target ≤ {TARGET}x); \
             scrapes answered {}, failed {}",
            settings.cpu_test.label(),
            self.samples.iter().filter(|s| s.server == ON.name).count(),
            f(self.cpu(&OFF)),
            EVERY.as_secs(),
            f(self.cpu(&ON)),
            f(self.ratio()),
            self.scrapes.answered,
            self.scrapes.failed
        )
    }
}

/// Runs the comparison: as many rounds as the CPU test has.
pub fn run(settings: &Settings) -> Cost {
    let mut cost = Cost::default();
    if !settings.tests.contains(&settings.cpu_test) {
        return cost; // READYLOOP_BENCH_ONLY left the CPU test out
    }
    let scraped = Some((ON.name, &mut cost.scrapes));
    cost.samples =
        crate::alternating(settings, "metrics", &[OFF, ON], scraped);
    cost
}

/// Scrapes `GET /metrics` every [`EVERY`] on a thread of its own, from
/// [`Scraper::start`] until [`Scraper::stop`].
pub struct Scraper {
    stop: Sender<()>,
    thread: JoinHandle<Tally>,
}

impl Scraper {
    /// Scrapes `addr` now and every [`EVERY`] after.
    pub fn start(addr: SocketAddr) -> Scraper {
        let (stop, stopped) = mpsc::channel();
        let thread = thread::spawn(move || {
            let mut tally = Tally::default();
            loop {
                match scrape(addr) {
                    Ok(true) => tally.answered += 1,
                    _ => tally.failed += 1,
                }
                match stopped.recv_timeout(EVERY) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return tally,
                }
            }
        });
        Scraper { stop, thread }
    }

    /// Stops scraping; how the scrapes went.
    pub fn stop(self) -> Tally {
        let _ = self.stop.send(());
        self.thread.join().unwrap_or_default()
    }
}

/// One scrape: whether it was answered 200 with a body.
fn scrape(addr: SocketAddr) -> std::io::Result<bool> {
    let mut s = TcpStream::connect_timeout(&addr, PATIENCE)?;
    s.set_read_timeout(Some(PATIENCE))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")?;
    let mut response = Vec::new();
    s.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    Ok(text.starts_with("HTTP/1.1 200 OK\r\n")
        && text.contains("readyloop_connections_open "))
}

/// Where `server`'s `metrics on http://ADDR/metrics` line says it
/// serves.
pub fn addr(line: &str) -> Option<SocketAddr> {
    line.split("http://").nth(1)?.strip_suffix("/metrics")?.parse().ok()
}

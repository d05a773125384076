//! The scaling table: `--workers N` against tokio's `multi_thread`
//! runtime with N worker threads and the thread model, every server
//! confined to the same N CPUs, at pingpong 64 B and stream 16 KiB with
//! C = 1000.
//!
//! The load generator runs N threads (one per server core: on loopback
//! the sender's core does most of the TCP work of both ends, so the
//! generator needs about as much CPU as the server). It gets CPUs of
//! its own when N + N CPUs are there; otherwise it is confined to all
//! of them and shares the server's, and every figure of that N says so.
//! `READYLOOP_BENCH_WORKERS=1,2,4,8` sets the worker counts; one worker
//! is always run, as the base of the ratios.

use std::time::Duration;

use readyloop::load::Pattern;
use readyloop::Model;

use crate::load::{self, Drive, Test};
use crate::sample::Sample;
use crate::server::{self, Kind, Running, Spec};

/// A server of the scaling table.
#[derive(Clone, Copy, Debug)]
pub struct Scaler {
    /// How it starts, and its name in the table.
    pub spec: Spec,
    /// `--pin` (mio only).
    pub pin: bool,
}

/// The servers of the scaling table; tokio-mt is the CPU comparison.
pub const SCALERS: [Scaler; 4] = [
    Scaler {
        spec: Spec { name: "mio", kind: Kind::Readyloop(Model::Mio) },
        pin: false,
    },
    Scaler {
        spec: Spec { name: "mio --pin", kind: Kind::Readyloop(Model::Mio) },
        pin: true,
    },
    Scaler {
        spec: Spec { name: "tokio-mt", kind: Kind::Tokio("multi_thread") },
        pin: false,
    },
    Scaler {
        spec: Spec { name: "thread", kind: Kind::Readyloop(Model::Thread) },
        pin: false,
    },
];

/// What the scaling table covers.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Worker counts, ascending, 1 first.
    pub workers: Vec<usize>,
    /// The CPUs this process may use, in order.
    pub cpus: Vec<u32>,
    /// taskset is there: servers and generator are confined.
    pub confine: bool,
    /// The tests (none when `READYLOOP_BENCH_ONLY` leaves them out).
    pub tests: Vec<Test>,
    /// Seconds per run.
    pub duration: Duration,
}

/// Where the servers and the load generator of one N run.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The servers' CPUs (a taskset list), if confined.
    pub server: Option<String>,
    /// The generator's CPUs, if confined.
    pub load: Option<String>,
    /// Generator threads.
    pub threads: usize,
    /// The generator has CPUs of its own.
    pub own: bool,
}

impl Plan {
    /// The plan for a quick or a full run; `only` keeps the tests of one
    /// pattern.
    pub fn new(
        quick: bool,
        only: Option<Pattern>,
        confine: bool,
    ) -> Result<Plan, String> {
        let cpus = allowed_cpus();
        let workers = match std::env::var("READYLOOP_BENCH_WORKERS") {
            Ok(v) => parse_workers(&v, cpus.len())?,
            Err(_) => default_workers(quick, cpus.len()),
        };
        let mut tests = vec![
            Test { pattern: Pattern::Pingpong, connections: 1000, size: 64 },
            Test { pattern: Pattern::Stream, connections: 1000, size: 16384 },
        ];
        if let Some(p) = only {
            tests.retain(|t| t.pattern == p);
        }
        let duration = match quick {
            true => Duration::from_millis(250),
            false => Duration::from_secs(2),
        };
        Ok(Plan { workers, cpus, confine, tests, duration })
    }

    /// Where the servers and the generator of `n` workers run.
    pub fn layout(&self, n: usize) -> Layout {
        let threads = n;
        let own = self.confine && self.cpus.len() >= n + threads;
        let list = |cpus: &[u32]| {
            cpus.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
        };
        let confined = self.confine && n <= self.cpus.len();
        Layout {
            server: confined.then(|| list(&self.cpus[..n])),
            load: match own {
                true => Some(list(&self.cpus[n..n + threads])),
                false => confined.then(|| list(&self.cpus)),
            },
            threads,
            own,
        }
    }

    /// One line per N: where everything ran.
    pub fn layout_lines(&self) -> Vec<String> {
        self.workers
            .iter()
            .map(|&n| {
                let l = self.layout(n);
                let server =
                    l.server.as_deref().map_or(
                        "servers unconfined (no taskset)".into(),
                        |c| format!("servers on CPU {c}"),
                    );
                let load = match (&l.load, l.own) {
                    (Some(c), true) => format!("on CPU {c} (its own)"),
                    (Some(c), false) => {
                        format!("on CPU {c}, sharing the servers' CPUs")
                    }
                    (None, _) => "unconfined, sharing every CPU".into(),
                };
                format!(
                    "N={n}: {server}; load generator ({} thread{}) {load}",
                    l.threads,
                    if l.threads == 1 { "" } else { "s" }
                )
            })
            .collect()
    }
}

/// 1, 2, 4, … and the CPU count; quick: 1 and 2.
fn default_workers(quick: bool, cpus: usize) -> Vec<usize> {
    let top = match quick {
        true => cpus.min(2),
        false => cpus,
    };
    let mut n: Vec<usize> =
        std::iter::successors(Some(1usize), |n| n.checked_mul(2))
            .take_while(|&n| n <= top)
            .collect();
    n.push(top.max(1));
    n.dedup();
    n
}

/// `READYLOOP_BENCH_WORKERS`: worker counts, comma-separated, each at
/// most the CPUs there are; 1 is added as the base of the ratios.
fn parse_workers(v: &str, cpus: usize) -> Result<Vec<usize>, String> {
    let mut workers = vec![1];
    for part in v.split(',') {
        let n = match part.trim().parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(format!(
                    "READYLOOP_BENCH_WORKERS={v}: {part:?} is not a worker \
                     count (give e.g. 1,2,4,8)"
                ))
            }
        };
        if n > cpus {
            return Err(format!(
                "READYLOOP_BENCH_WORKERS={v}: {n} workers run on {n} CPUs; \
                 this process may use {cpus}"
            ));
        }
        workers.push(n);
    }
    workers.sort_unstable();
    workers.dedup();
    Ok(workers)
}

/// The CPUs this process may use (`Cpus_allowed_list`), or the first
/// `available_parallelism` ones if that cannot be read.
fn allowed_cpus() -> Vec<u32> {
    let listed = procfs::process::Process::myself()
        .ok()
        .and_then(|p| p.status().ok())
        .and_then(|s| s.cpus_allowed_list)
        .map(|ranges| {
            ranges.iter().flat_map(|&(a, b)| a..=b).collect::<Vec<_>>()
        });
    match listed {
        Some(cpus) if !cpus.is_empty() => cpus,
        _ => {
            let n =
                std::thread::available_parallelism().map_or(1, |n| n.get());
            (0..n as u32).collect()
        }
    }
}

/// Every server at every N on every test, `rounds` times, alternating
/// the order of the servers from round to round as the main matrix does.
pub fn run(plan: &Plan, rounds: u32) -> Vec<Sample> {
    let mut samples = Vec::new();
    for round in 1..=rounds {
        let mut order: Vec<&Scaler> = SCALERS.iter().collect();
        if round % 2 == 0 {
            order.reverse();
        }
        for &test in &plan.tests {
            for &n in &plan.workers {
                let layout = plan.layout(n);
                for scaler in &order {
                    let sample =
                        measure(plan, scaler, n, &layout, test, round);
                    eprintln!(
                        "bench: round {round} scaling {} N={n} {}: {}",
                        test.label(),
                        scaler.spec.name,
                        sample.brief()
                    );
                    samples.push(sample);
                }
            }
        }
    }
    samples
}

fn measure(
    plan: &Plan,
    scaler: &Scaler,
    n: usize,
    layout: &Layout,
    test: Test,
    round: u32,
) -> Sample {
    let name = scaler.spec.name;
    let cmd = server::command_on(&scaler.spec, layout.server.as_deref());
    let started = cmd.and_then(|mut cmd| {
        match scaler.spec.kind {
            Kind::Readyloop(Model::Mio) => {
                cmd.args(["--workers", &n.to_string()]);
                // One loop runs on the main thread, unpinned: `serve`
                // refuses --pin with --workers 1.
                if scaler.pin && n > 1 {
                    cmd.arg("--pin");
                }
            }
            Kind::Tokio(_) => {
                cmd.arg(n.to_string());
            }
            // The thread model has no count: it is confined to N CPUs.
            _ => {}
        }
        Running::start(cmd)
    });
    let mut sample = match started {
        Ok(server) => {
            let drive = Drive {
                addr: server.addr,
                test,
                duration: plan.duration,
                messages: None,
                cpus: layout.load.clone(),
                threads: layout.threads,
                on_held: None,
            };
            load::measure(server, name, round, drive, || {})
        }
        Err(why) => Sample::skipped(round, name, test, why),
    };
    sample.workers = Some(n);
    sample
}

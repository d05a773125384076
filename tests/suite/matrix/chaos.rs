//! Chaos against the real binary of every model in echo mode: many
//! clients, each picking a fault at random (see [`Behaviour`]), and then
//! exact checks: every byte read back equals what was sent, the summary
//! matches what the clients did, nothing leaked, memory stayed within
//! the buffer caps. `cargo test --release -- --ignored soak` runs the
//! same for ten minutes per model (`READYLOOP_SOAK_SECS` to change it).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use readyloop::{Model, Summary};

use super::chaos_checks::*;
use crate::support::chaos::{self, Behaviour, Outcome, Plan, Tally};
use crate::support::server::Signal;
use crate::support::*;

per_model!(chaos_run, sigterm_mid_chaos);

/// Clients open at once against the mio and thread models.
const MANY_CLIENTS: usize = 1000;
/// Clients open at once against the process model (a process each).
const PROCESS_CLIENTS: usize = 200;
/// Clients in a CI run, one after another, against the iterative model.
const ITERATIVE_CLIENTS: usize = 24;
/// CI runs start clients for at most this long.
const CI_DURATION: Duration = Duration::from_secs(8);
/// Echo backpressure cap per connection, in KiB.
const OUT_CAP_KIB: u64 = (readyloop::OUT_CAP as u64).div_ceil(1024);
/// How far RSS may stay above its baseline once every client is gone:
/// the allocator keeps some freed memory, the slab keeps its slots.
const RSS_MARGIN_KIB: u64 = 4 * 1024;
/// What the thread model may keep on top of that: glibc caches the stacks
/// of joined threads, up to 40 MiB of them, for the next threads to reuse,
/// and each keeps the top pages its thread used resident (16 KiB measured
/// with 64 KiB stacks): at most 40 MiB / 68 KiB x 16 KiB, about 9.5 MiB,
/// however many connections came and went. (Before the model joined its
/// finished threads, every stack stayed: 16 MiB per thousand.)
const THREAD_STACK_CACHE_KIB: u64 = 10 * 1024;
/// The uring model's rings are shared with the kernel and become
/// resident as completions wrap around them: 65,536 completion entries of
/// 16 bytes and 4,096 submission entries of 64 bytes (1.3 MiB) at the
/// default `--max-connections`, touched once and then reused. The
/// baseline, after one client, has touched almost none of it.
const URING_RINGS_KIB: u64 = 2 * 1024;

fn plan(model: Model, duration: Duration, total: usize) -> Plan {
    let concurrency = match model {
        Model::Mio | Model::Thread | Model::Uring => MANY_CLIENTS,
        Model::Process => PROCESS_CLIENTS,
        Model::Iterative => 1,
    };
    Plan {
        concurrency,
        total,
        duration,
        drivers: if concurrency > 1 { 2 } else { 1 },
        seed: 0xc4a05 + model as u64,
        tolerant: false,
        scale: 1,
    }
}

/// The CI run of `model`: two generations of clients for the concurrent
/// models, a short sequence for the iterative one.
fn ci_plan(model: Model) -> Plan {
    let p = plan(model, CI_DURATION, 0);
    let total = match model {
        Model::Iterative => ITERATIVE_CLIENTS,
        _ => 2 * p.concurrency,
    };
    Plan { total, ..p }
}

fn start(model: Model) -> ServerProcess {
    let idle = chaos::IDLE_TIMEOUT.as_secs_f64().to_string();
    ServerProcess::start(&[
        "--mode",
        "echo",
        "--model",
        model.name(),
        "--idle-timeout",
        &idle,
    ])
}

/// The figures a run reports.
#[derive(Debug, Default)]
struct Figures {
    connections: usize,
    /// Most connections the server had open at once (from its log).
    peak_open: usize,
    faults: usize,
    bytes_verified: u64,
    by_behaviour: BTreeMap<String, usize>,
    /// Clients closed as idle because their driver was starved.
    starved: usize,
    leaks: usize,
}

/// Runs `plan` against a fresh server of `model` and checks everything;
/// returns the figures.
fn chaos(model: Model, plan: &Plan) -> Figures {
    let mut server = start(model);
    let pid = server.pid();
    let warm = server.warm_up();
    let base_fds = server.fd_count();
    let base_rss = proc::rss_kib(pid).expect("rss");

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample(pid, Arc::clone(&stop));
    let began = Instant::now();
    let tallies =
        chaos::run(server.addr, plan, &Arc::new(AtomicBool::new(false)));
    let elapsed = began.elapsed();
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().expect("sampler");
    let mut figures = Figures::default();
    for t in &tallies {
        figures.connections += 1;
        figures.faults += usize::from(t.behaviour != Behaviour::Normal);
        figures.bytes_verified += t.verified;
        figures.starved +=
            usize::from(matches!(t.outcome, Outcome::Starved(_)));
        *figures
            .by_behaviour
            .entry(format!("{:?}", t.behaviour))
            .or_default() += 1;
    }
    // Shown before any check, so a failing run still reports its size.
    eprintln!(
        "{model}: ran {} clients, {} faults, {} bytes verified",
        figures.connections, figures.faults, figures.bytes_verified
    );
    assert_clients_kept_promises(model, &mut server, &tallies);

    // Nothing leaked: descriptors and children back to the baseline.
    let mut leaks = 0;
    eventually("descriptors back to the baseline", || {
        server.fd_count() == base_fds
    });
    eventually("no child process left", || proc::children(pid).is_empty());
    leaks += samples.children_seen.iter().filter(|c| proc::exists(c)).count();

    // Alive and correct: a fresh client gets its bytes back.
    let data = pattern(7, 64 * 1024);
    let fresh = echo_and_close(server.addr, &data);
    eventually("descriptors back after the fresh client", || {
        server.fd_count() == base_fds
    });

    let margin = RSS_MARGIN_KIB
        + match model {
            Model::Thread => THREAD_STACK_CACHE_KIB,
            Model::Uring => URING_RINGS_KIB,
            _ => 0,
        };
    // The thread model joins finished threads once a second.
    let mut last = None;
    let back = || {
        last = proc::rss_kib(pid);
        last.is_some_and(|rss| rss <= base_rss + margin)
    };
    let waited =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            eventually("rss back near its baseline", back)
        }));
    assert!(
        waited.is_ok(),
        "{model}: rss {last:?} KiB, not back within {margin} KiB of its \
         baseline {base_rss} KiB"
    );
    let rss = proc::rss_kib(pid).expect("rss");
    let cap = base_rss + plan.concurrency as u64 * OUT_CAP_KIB;
    eprintln!(
        "{model}: {} clients in {elapsed:.1?}; rss baseline {base_rss} KiB, \
         peak {} KiB (cap {cap} KiB), after {rss} KiB; peak children {}, \
         peak child rss {} KiB",
        tallies.len(),
        samples.peak_rss_kib,
        samples.peak_children,
        samples.peak_child_rss_kib,
    );
    assert!(
        rss <= base_rss + margin,
        "{model}: rss {rss} KiB after the run, baseline {base_rss} KiB"
    );
    assert!(samples.peak_rss_kib <= cap, "{model}: peak rss over the cap");
    assert!(
        samples.peak_child_rss_kib <= base_rss + OUT_CAP_KIB + RSS_MARGIN_KIB,
        "{model}: a child over its cap"
    );

    let hwm = proc::peak_rss_kib(pid).unwrap_or(0);
    assert!(hwm <= cap, "{model}: peak rss {hwm} KiB over the cap {cap} KiB");
    let (code, summary) = server.finish();
    assert_eq!(code, 0, "{model}: exit code");
    let peak_open = server
        .log
        .iter()
        .filter_map(|l| l.rsplit_once(" (")?.1.strip_suffix(" open)"))
        .filter_map(|n| n.parse::<usize>().ok())
        .max()
        .unwrap_or(0);
    let mut all = tallies.clone();
    for (peer, len) in [(warm, WARM_UP_BYTES), (fresh, data.len())] {
        all.push(Tally {
            behaviour: Behaviour::Normal,
            peer: Some(peer),
            written: len as u64,
            verified: len as u64,
            outcome: Outcome::Done,
        });
    }
    assert_counts_match(model, &summary, &all);
    assert_whole_records(model, &server.log);
    // With the warm-up and fresh clients: in a long run their ports were
    // used before.
    assert_reasons_match(model, &server.log, &all);

    figures.leaks = leaks;
    figures.peak_open = peak_open;
    eprintln!("{model}: {figures:?}; {summary}");
    assert_eq!(figures.leaks, 0, "{model}: children outlived their run");
    figures
}

/// Chaos in CI: 1,000 clients at once (200 for the process model, one
/// after another for the iterative model), every fault, for two
/// generations of clients; every check of [`chaos`] holds.
fn chaos_run(model: Model) {
    let _heavy = heavy();
    chaos(model, &ci_plan(model));
}

/// The soak: the chaos run for `READYLOOP_SOAK_SECS` (default 600) per
/// model (`READYLOOP_SOAK_MODELS=mio,thread` picks some), printing the
/// figures.
#[test]
#[ignore = "runs for ten minutes per model; cargo test --release -- --ignored soak"]
fn soak() {
    let secs = std::env::var("READYLOOP_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let only = std::env::var("READYLOOP_SOAK_MODELS").unwrap_or_default();
    let mut failed = Vec::new();
    for model in Model::ALL {
        if !only.is_empty() && !only.split(',').any(|m| m == model.name()) {
            continue;
        }
        let plan = plan(model, Duration::from_secs(secs), usize::MAX);
        let began = Instant::now();
        let run = std::panic::catch_unwind(|| chaos(model, &plan));
        let Ok(f) = run else {
            println!("soak {model}: FAILED (see the panic above)");
            failed.push(model);
            continue;
        };
        println!(
            "soak {model}: {:.0?}: connections={} peak_open={} \
             faults_injected={} bytes_verified={} leaks_found={} \
             starved_idle={} by_behaviour={:?}",
            began.elapsed(),
            f.connections,
            f.peak_open,
            f.faults,
            f.bytes_verified,
            f.leaks,
            f.starved,
            f.by_behaviour
        );
    }
    assert!(failed.is_empty(), "soak failed for {failed:?}");
}

/// SIGTERM in the middle of a chaos run: exit 0 while the chaos clients
/// still run (a stop that waited for them would not end before they
/// do), a complete summary that accounts for every connection, no byte
/// a client read back wrong, no child process left behind.
fn sigterm_mid_chaos(model: Model) {
    let _heavy = heavy();
    let mut server = start(model);
    let pid = server.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample(pid, Arc::clone(&stop));
    let plan = Plan {
        tolerant: true,
        ..plan(model, Duration::from_secs(30), usize::MAX)
    };
    let addr = server.addr;
    let driver = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || chaos::run(addr, &plan, &stop))
    };
    // Under load: at least half the planned clients are open.
    let busy = plan_concurrency(model).div_ceil(2);
    eventually("the server is busy", || {
        server.collect_log().iter().any(|l| {
            l.rsplit_once(" (")
                .and_then(|(_, n)| n.strip_suffix(" open)")?.parse().ok())
                .is_some_and(|n: usize| n >= busy)
        })
    });

    let signalled = Instant::now();
    server.signal(Signal::TERM);
    let code = server.wait_exit();
    let took = signalled.elapsed();
    let clients_running = !driver.is_finished();
    stop.store(true, Ordering::Relaxed);
    let tallies = driver.join().expect("driver");
    let samples = sampler.join().expect("sampler");

    let line = server.wait_for_status("summary ");
    let summary = Summary::parse(&line).expect("summary parses");
    eprintln!("{model}: exit {code} {took:.2?} after SIGTERM; {line}");

    assert_eq!(code, 0, "{model}: exit code");
    assert!(clients_running, "{model}: exit only once the clients ended");
    for key in [
        "accepted=",
        "closed_eof=",
        "closed_reset=",
        "closed_error=",
        "closed_idle=",
        "closed_shutdown=",
        "rejected=",
        "bytes_in=",
        "bytes_out=",
    ] {
        assert!(line.contains(key), "{model}: no {key} in {line}");
    }
    assert!(summary.closed_shutdown > 0, "{model}: nothing was open");
    assert_eq!(summary.closed(), summary.accepted, "{model}: {summary}");
    assert_eq!(summary.closed_error, 0, "{model}: {summary}");
    let connected = tallies.iter().filter(|t| t.peer.is_some()).count();
    assert!(summary.accepted <= connected as u64, "{model}: {summary}");
    let written: u64 = tallies.iter().map(|t| t.written).sum();
    let verified: u64 = tallies.iter().map(|t| t.verified).sum();
    assert!(verified <= summary.bytes_out, "{model}: {summary}");
    assert!(summary.bytes_out <= summary.bytes_in, "{model}: {summary}");
    assert!(summary.bytes_in <= written, "{model}: {summary}");
    let broken: Vec<&Tally> = tallies
        .iter()
        .filter(|t| matches!(t.outcome, Outcome::Failed(_)))
        .take(3)
        .collect();
    assert!(broken.is_empty(), "{model}: {broken:#?}");
    // No child left behind: none outlived the server.
    let left: Vec<_> =
        samples.children_seen.iter().filter(|c| proc::exists(c)).collect();
    assert!(left.is_empty(), "{model}: children left: {left:?}");
}

fn plan_concurrency(model: Model) -> usize {
    plan(model, Duration::ZERO, 0).concurrency
}

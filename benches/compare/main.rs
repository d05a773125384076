//! `cargo bench`: every server model and the tokio and monoio peers,
//! side by side.
//!
//! Each server runs as a child process (`readyloop serve --model M --mode
//! echo`, or a peer's own binary, built on first use: `peers.rs`),
//! pinned to CPU 0 with taskset when there are two or more CPUs, and is
//! driven by `readyloop load --json` pinned to CPU 1.
//! Servers alternate run by run (A B A B …) so drift of a shared machine
//! hits all of them alike; each figure is the median over rounds, with
//! its spread. Server CPU per message comes from utime + stime in
//! /proc/PID/stat (children included) over the run.
//!
//! After the matrix, the mio model runs the CPU test again with
//! `--metrics-addr` on and scraped every second against off, round by
//! round (`metrics_cost`), and behind HAProxy with the PROXY protocol
//! against without it (`haproxy_cost`). With
//! `READYLOOP_BENCH_BEFORE=PATH` (a readyloop binary built from another
//! commit, or with `--features no-trace`), the mio model of this build
//! runs the CPU test against that binary's and tokio current_thread,
//! round by round (`before_cost`); `READYLOOP_BENCH_ONLY=before` runs
//! that comparison alone.
//!
//! Output: a table on stdout, `target/bench/report.md`, `report.csv`
//! and SVG charts. `READYLOOP_BENCH_QUICK=1` runs a smoke matrix in
//! under a minute; `READYLOOP_BENCH_ONLY=idle` (a pattern name) runs
//! only that pattern's tests, `READYLOOP_BENCH_ONLY=scaling` only the
//! scaling table (`scaling.rs`: `--workers N` against tokio
//! multi_thread and the thread model on the same N CPUs, with
//! `READYLOOP_BENCH_WORKERS=1,2,4,8` for the counts).

mod before_cost;
mod charts;
mod floor;
mod haproxy_cost;
mod kernel;
mod load;
mod metrics_cost;
mod output;
mod peers;
mod report;
mod sample;
mod scaling;
mod scaling_report;
mod server;
mod settings;
mod syscalls;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use load::{Drive, Test};
use readyloop::load::Pattern;
use readyloop::Model;
use readyloop_harness::proc;
use sample::Sample;
use server::{Kind, Running, Spec, SERVERS};
use settings::Settings;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("floor") {
        let which = args.get(2).map_or("", String::as_str);
        let addr = args.get(3).map_or("127.0.0.1:0", String::as_str);
        return floor::main(which, addr);
    }
    // `cargo bench -- FILTER` and `cargo test --benches` pass flags
    // meant for libtest; only `--bench` means "run".
    if !args.iter().any(|a| a == "--bench") {
        println!("compare: run with `cargo bench`");
        return ExitCode::SUCCESS;
    }
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn bench() -> Result<(), String> {
    let started = Instant::now();
    let settings = Settings::new()?;
    // Servers and load generators inherit the limit: let them open as
    // many sockets as the hard limit allows.
    if let Err(e) = readyloop::rlimit::raise_to_hard() {
        eprintln!("bench: cannot raise the descriptor limit: {e}");
    }
    let out_dir = out_dir();
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| format!("{out_dir:?}: {e}"))?;
    if settings.only_before {
        let text = before_cost::run(&settings)?
            .text(&settings)
            .ok_or("the comparison with the other binary did not run")?;
        println!("{text}");
        let md = format!(
            "# readyloop benchmark: this build against another\n\n{}\n",
            text
        );
        write(&out_dir.join("before.md"), &md)?;
        eprintln!("bench: wrote {}", out_dir.join("before.md").display());
        return Ok(());
    }
    let mut samples = Vec::new();
    let mut unavailable: HashMap<&'static str, String> = HashMap::new();
    for round in 1..=settings.rounds + settings.cpu_rounds {
        let tests: Vec<Test> = match round > settings.rounds {
            true => vec![settings.cpu_test],
            false => settings.tests.clone(),
        };
        // A B A B …, and B A B A in the next round.
        let mut order: Vec<&Spec> = SERVERS.iter().collect();
        if round % 2 == 0 {
            order.reverse();
        }
        for &test in &tests {
            for spec in &order {
                let sample =
                    measure(&settings, spec, test, round, &mut unavailable);
                eprintln!(
                    "bench: round {round} {} {}: {}",
                    test.label(),
                    spec.name,
                    sample.brief()
                );
                samples.push(sample);
            }
        }
    }
    let metrics = metrics_cost::run(&settings);
    let scaled = scaling::run(&settings.scaling, settings.rounds);
    let haproxy = haproxy_cost::run(&settings);
    let before = before_cost::run(&settings)?;
    let strace = strace_counts(&settings);
    let basics = report::basics(&settings);
    let servers: Vec<&'static str> = SERVERS.iter().map(|s| s.name).collect();
    let (busy, idle) = output::tables(&samples, &settings.tests, &servers);
    let (head, idle_head) = output::heads();
    let scale_rows = scaling_report::rows(&settings.scaling, &scaled);
    for (head, rows) in [
        (head, &busy),
        (idle_head, &idle),
        (&scaling_report::HEAD[..], &scale_rows),
    ] {
        if !rows.is_empty() {
            println!("{}", output::text_table(head, rows));
        }
    }
    let scale_md =
        scaling_report::section(&settings.scaling, &scale_rows, &scaled);
    let syscall_text = report::syscall_table(&strace);
    println!("{syscall_text}");
    println!("{}", metrics.line(&settings));
    let before_text = before.text(&settings);
    if let Some(text) = &before_text {
        println!("{text}");
    }
    println!("behind HAProxy, PROXY v2 against none:\n{}", haproxy.table());
    println!("{}", basics.join("\n"));
    let charts = report::draw(&out_dir, &samples, &settings, &servers);
    let mut md = report::report_md(
        &settings,
        &samples,
        &busy,
        &idle,
        &syscall_text,
        &scale_md,
        &basics,
        &strace,
        &charts,
        &metrics,
        started.elapsed(),
    );
    md.push_str(&haproxy.markdown());
    if let Some(text) = &before_text {
        md.push_str(&format!(
            "\n## This build against another\n\n{}\n",
            text.replace('\n', "\n\n")
        ));
    }
    write(&out_dir.join("report.md"), &md)?;
    write(&out_dir.join("report.csv"), &output::csv(&samples))?;
    write(&out_dir.join("scaling.csv"), &output::csv(&scaled))?;
    eprintln!(
        "bench: wrote {} in {:.0} s",
        out_dir.join("report.md").display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn out_dir() -> PathBuf {
    target_dir().join("bench")
}

/// Cargo's target directory: `CARGO_TARGET_DIR`, or `target/`.
pub(crate) fn target_dir() -> PathBuf {
    std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target")
    })
}

fn write(path: &std::path::Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Why a model cannot run a test, if it cannot.
fn cannot(spec: &Spec, test: Test) -> Option<String> {
    match (spec.kind, test.pattern) {
        (Kind::Readyloop(Model::Iterative), Pattern::Connect) => None,
        (Kind::Readyloop(Model::Iterative), _) if test.connections > 1 => Some(
            "serves one connection at a time; the others would wait unserved"
                .into(),
        ),
        _ => None,
    }
}

fn measure(
    settings: &Settings,
    spec: &Spec,
    test: Test,
    round: u32,
    unavailable: &mut HashMap<&'static str, String>,
) -> Sample {
    measure_with(settings, spec, test, round, unavailable, None)
}

/// Rounds of the CPU test over `specs`, in turn A B C, then C B A, so
/// that a shared machine's drift hits all alike; `scraped` names the
/// spec whose server is scraped all along, and the tally of its scrapes.
/// `label` starts each progress line.
pub(crate) fn alternating(
    settings: &Settings,
    label: &str,
    specs: &[Spec],
    mut scraped: Option<(&str, &mut metrics_cost::Tally)>,
) -> Vec<Sample> {
    let mut unavailable = HashMap::new();
    let mut samples = Vec::new();
    let rounds = settings.rounds + settings.cpu_rounds;
    for round in 1..=rounds.max(1) {
        let mut order = specs.to_vec();
        if round % 2 == 0 {
            order.reverse();
        }
        for spec in order {
            let tally = scraped
                .as_mut()
                .filter(|(name, _)| *name == spec.name)
                .map(|(_, tally)| &mut **tally);
            let sample = measure_with(
                settings,
                &spec,
                settings.cpu_test,
                round,
                &mut unavailable,
                tally,
            );
            eprintln!(
                "bench: {label} round {round} {}: {}",
                spec.name,
                sample.brief()
            );
            samples.push(sample);
        }
    }
    samples
}

/// [`measure`], and with `metrics` the server serves `--metrics-addr`,
/// scraped every second while the load runs (tallied in `metrics`).
pub(crate) fn measure_with(
    settings: &Settings,
    spec: &Spec,
    test: Test,
    round: u32,
    unavailable: &mut HashMap<&'static str, String>,
    metrics: Option<&mut metrics_cost::Tally>,
) -> Sample {
    if let Some(why) = unavailable.get(spec.name) {
        return Sample::skipped(round, spec.name, test, why.clone());
    }
    if let Some(why) = cannot(spec, test) {
        return Sample::skipped(round, spec.name, test, why);
    }
    let started =
        server::command(spec, settings.cpus.0).and_then(|mut cmd| {
            if metrics.is_some() {
                cmd.args(["--metrics-addr", "127.0.0.1:0"]);
            }
            let mut server = Running::start(cmd)?;
            let scraper = match metrics.is_some() {
                true => Some(server.metrics()?),
                false => None,
            };
            Ok((server, scraper))
        });
    let (server, scraper) = match started {
        Ok(started) => started,
        Err(why) => {
            unavailable.insert(spec.name, why.clone());
            return Sample::skipped(round, spec.name, test, why);
        }
    };
    let pid = server.pid;
    let idle = test.pattern == Pattern::Idle;
    let mem_before = idle.then(|| proc::pss_kib(pid)).flatten();
    let kernel_before = idle.then(kernel::snapshot).flatten();
    let mut mem_after = None;
    let mut kernel_after = None;
    // Kernel first: reading PSS walks /proc, which grows the kernel's
    // inode caches, and that is the benchmark's memory, not the server's.
    let mut on_held = || {
        kernel_after = kernel::snapshot();
        mem_after = proc::pss_kib(pid);
    };
    let drive = Drive {
        addr: server.addr,
        test,
        duration: match idle {
            true => settings.idle_duration,
            false => settings.duration,
        },
        messages: None,
        cpus: settings.cpus.1.map(|c| c.to_string()),
        threads: 1,
        on_held: match idle {
            true => Some(&mut on_held),
            false => None,
        },
    };
    let stop_scraper = || {
        if let (Some(scraper), Some(tally)) = (scraper, metrics) {
            let done = scraper.stop();
            tally.answered += done.answered;
            tally.failed += done.failed;
        }
    };
    let mut sample =
        load::measure(server, spec.name, round, drive, stop_scraper);
    if sample.skipped.is_none() {
        sample.mem_kb = mem_before.zip(mem_after);
        sample.kernel = kernel_before.zip(kernel_after);
    }
    sample
}

/// Syscalls per message for each event-driven model with its floor and
/// its peer.
fn strace_counts(settings: &Settings) -> Result<Vec<syscalls::Count>, String> {
    if settings.strace_messages == 0 {
        return Err("not run: READYLOOP_BENCH_ONLY leaves it out".into());
    }
    syscalls::strace_available()?;
    let test = settings.cpu_test;
    let mut counts = Vec::new();
    for spec in SERVERS.iter().filter(|s| server::headline(s.name)) {
        match syscalls::count(
            spec,
            test,
            settings.strace_messages,
            settings.cpus,
        ) {
            Ok(c) => counts.push(c),
            Err(e) => eprintln!("bench: strace of {} failed: {e}", spec.name),
        }
    }
    Ok(counts)
}

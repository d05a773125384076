//! The scaling table's rows, its section of `report.md`, and the
//! targets of `--workers`: throughput that grows with N, CPU per
//! message that does not, and less CPU per message than tokio's
//! `multi_thread` runtime on the same CPUs.

use std::fmt::Write as _;

use crate::output::{self, figure, fmt_stat, paired_ratio, ratio};
use crate::sample::Sample;
use crate::scaling::{Plan, SCALERS};

/// Column headers of the scaling table.
pub const HEAD: [&str; 12] = [
    "test",
    "N",
    "server",
    "msg/s",
    "p99 µs",
    "CPU µs/msg",
    "srv CPU%",
    "gen CPU%",
    "msg/s vs N=1",
    "CPU vs N=1",
    "CPU vs tokio-mt",
    "note",
];

/// The CPU comparison at the same N.
const TOKIO: &str = "tokio-mt";

/// The samples of `n` workers.
fn at(samples: &[Sample], n: usize) -> Vec<Sample> {
    samples.iter().filter(|s| s.workers == Some(n)).cloned().collect()
}

/// Ratios of a server at N: its msg/s and CPU per message to its own at
/// one worker, and its CPU per message to tokio-mt's at N.
struct Ratios {
    rate: Option<f64>,
    cpu: Option<f64>,
    cpu_vs_tokio: Option<f64>,
}

fn ratios(
    now: &[Sample],
    one: &[Sample],
    server: &str,
    test: crate::load::Test,
) -> Ratios {
    let cpu = |s: &Sample| s.cpu_us_per_msg;
    Ratios {
        rate: paired_ratio((now, server), (one, server), test, |s| {
            Some(s.rate)
        }),
        cpu: paired_ratio((now, server), (one, server), test, cpu),
        cpu_vs_tokio: paired_ratio((now, server), (now, TOKIO), test, cpu),
    }
}

/// One row per test, N and server.
pub fn rows(plan: &Plan, samples: &[Sample]) -> Vec<Vec<String>> {
    let one = at(samples, 1);
    let mut rows = Vec::new();
    for &test in &plan.tests {
        for &n in &plan.workers {
            let now = at(samples, n);
            let shared = match plan.layout(n).own {
                true => "",
                false => "load generator shares the CPUs",
            };
            for scaler in &SCALERS {
                let server = scaler.spec.name;
                let f = |g: fn(&Sample) -> Option<f64>, digits| {
                    fmt_stat(figure(&now, server, test, g), digits)
                };
                let r = ratios(&now, &one, server, test);
                let note = output::note(&now, server, test);
                rows.push(vec![
                    test.label(),
                    n.to_string(),
                    server.into(),
                    f(|s| Some(s.rate), 0),
                    f(|s| s.p99_us, 0),
                    f(|s| s.cpu_us_per_msg, 2),
                    f(|s| s.util_pct, 0),
                    f(|s| s.load_util_pct, 0),
                    ratio(r.rate),
                    ratio(r.cpu),
                    match server {
                        TOKIO => "-".into(),
                        _ => ratio(r.cpu_vs_tokio),
                    },
                    [shared, &note]
                        .into_iter()
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                        .join("; "),
                ]);
            }
        }
    }
    rows
}

/// The section of `report.md`.
pub fn section(
    plan: &Plan,
    rows: &[Vec<String>],
    samples: &[Sample],
) -> String {
    let mut md = String::from("## Scaling across cores (`--workers`)\n\n");
    if plan.tests.is_empty() {
        md.push_str("Not run: READYLOOP_BENCH_ONLY leaves its tests out.\n");
        return md;
    }
    let _ = writeln!(
        md,
        "mio with `--workers N` (and with `--pin`), tokio multi_thread with N worker threads and the thread model, each confined with taskset to the same N CPUs, {} s per run. \"vs N=1\" is the median over rounds of the ratio to the same server with one worker (one worker thread, one CPU) in the same round; \"CPU vs tokio-mt\" the ratio to tokio multi_thread at the same N in the same round. srv CPU% and gen CPU% (the load generator's) are in percent of one CPU (N CPUs give up to N × 100): where neither is near its CPUs' whole, something else held the CPUs. The load generator runs N threads. Where they ran:\n\n{}\n\n{}",
        plan.duration.as_secs_f64(),
        plan.layout_lines()
            .iter()
            .map(|l| format!("- {l}"))
            .collect::<Vec<_>>()
            .join("\n"),
        output::md_table(&HEAD, rows)
    );
    let _ = writeln!(
        md,
        "### Targets of `--workers`\n\nmsg/s at N workers ≥ 0.9 × N × one worker, CPU per message within 10% of one worker's, and below tokio multi_thread's at the same N. The throughput target holds only where the load generator has CPUs of its own (with fewer CPUs it takes its share of the servers' and is not checked); the CPU figures are the server's own and are shown either way, marked where the generator shared the CPUs.\n\n{}",
        targets(plan, samples)
    );
    md
}

fn targets(plan: &Plan, samples: &[Sample]) -> String {
    let one = at(samples, 1);
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "not measured",
    };
    let mut rows = Vec::new();
    for &test in &plan.tests {
        for &n in plan.workers.iter().filter(|&&n| n > 1) {
            let now = at(samples, n);
            let own = plan.layout(n).own;
            for server in ["mio", "mio --pin"] {
                let r = ratios(&now, &one, server, test);
                let shared = if own { "" } else { " (shared CPUs)" };
                rows.push(vec![
                    test.label(),
                    n.to_string(),
                    server.into(),
                    match own {
                        true => format!(
                            "{} {}",
                            ratio(r.rate),
                            verdict(r.rate.map(|v| v >= 0.9 * n as f64))
                        ),
                        false => format!(
                            "{}: not checked, the generator shares the CPUs",
                            ratio(r.rate)
                        ),
                    },
                    format!(
                        "{} {}{shared}",
                        ratio(r.cpu),
                        verdict(r.cpu.map(|v| (v - 1.0).abs() <= 0.1))
                    ),
                    format!(
                        "{} {}{shared}",
                        ratio(r.cpu_vs_tokio),
                        verdict(r.cpu_vs_tokio.map(|v| v < 1.0))
                    ),
                ]);
            }
        }
    }
    if rows.is_empty() {
        return "No N above 1 was run: nothing to compare.\n".into();
    }
    output::md_table(
        &[
            "test",
            "N",
            "server",
            "msg/s vs N=1 (≥ 0.9 × N)",
            "CPU vs N=1 (within ±10%)",
            "CPU vs tokio-mt (< 1)",
        ],
        &rows,
    )
}

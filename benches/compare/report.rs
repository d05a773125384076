//! The report: the syscall table, binary size and start-up memory, the
//! charts, and `report.md` with the targets of the mio model.

use std::fmt::Write as _;
use std::time::Duration;

use readyloop::load::Pattern;

use crate::load::Test;
use crate::metrics_cost::{self, Cost};
use crate::sample::Sample;
use crate::server::{self, Running, SERVERS};
use crate::settings::Settings;
use crate::{charts, output, syscalls};
use readyloop_harness::proc;

pub fn syscall_table(strace: &Result<Vec<syscalls::Count>, String>) -> String {
    let counts = match strace {
        Ok(c) => c,
        Err(why) => return format!("syscalls per message: skipped ({why})"),
    };
    let rows: Vec<Vec<String>> = counts
        .iter()
        .map(|c| {
            let top = c
                .calls
                .iter()
                .map(|(name, n)| {
                    format!(
                        "{name} {:.3}",
                        *n as f64 / c.messages.max(1) as f64
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            vec![
                c.server.into(),
                c.messages.to_string(),
                c.total.to_string(),
                format!("{:.3}", c.per_message()),
                format!("{:.3}", c.steady_per_message()),
                top,
            ]
        })
        .collect();
    output::text_table(
        &[
            "server",
            "messages",
            "syscalls",
            "per message",
            "without set-up",
            "per message by syscall",
        ],
        &rows,
    )
}

/// The benchmark's binary's size (the `bench` profile, built with
/// `release`'s settings), and the RSS at start of every headline
/// server: the mio and uring models, their peers (tokio current_thread,
/// monoio) and the two floors.
pub fn basics(settings: &Settings) -> Vec<String> {
    let mut lines = Vec::new();
    match std::fs::metadata(server::readyloop()) {
        Ok(m) => lines.push(format!(
            "binary size (bench profile, stripped): {} bytes ({:.2} MB)",
            m.len(),
            m.len() as f64 / 1e6
        )),
        Err(e) => lines.push(format!("binary size: unknown ({e})")),
    }
    for spec in SERVERS.iter().filter(|s| server::headline(s.name)) {
        let started =
            server::command(spec, settings.cpus.0).and_then(Running::start);
        if let Ok(server) = started {
            let rss = proc::rss_kib(server.pid);
            let pss = proc::pss_kib(server.pid);
            lines.push(format!(
                "RSS at start of {}: {} kB (anonymous PSS {} kB), after one echoed byte",
                spec.name,
                rss.map_or("?".into(), |v| v.to_string()),
                pss.map_or("?".into(), |v| v.to_string())
            ));
            server.stop();
        }
    }
    lines
}

pub fn draw(
    out: &std::path::Path,
    samples: &[Sample],
    settings: &Settings,
    servers: &[&'static str],
) -> Vec<String> {
    let pingpong: Vec<Test> = settings
        .tests
        .iter()
        .copied()
        .filter(|t| t.pattern == Pattern::Pingpong)
        .collect();
    let mut made = Vec::new();
    if pingpong.is_empty() {
        // READYLOOP_BENCH_ONLY left them out: no empty charts.
        return idle_chart(out, samples, settings, servers, made);
    }
    let mut note =
        |name: &str, r: Result<(), Box<dyn std::error::Error>>| match r {
            Ok(()) => made.push(name.to_string()),
            Err(e) => eprintln!("bench: chart {name}: {e}"),
        };
    note(
        "throughput.svg",
        charts::by_connections(
            &out.join("throughput.svg"),
            "pingpong 64 B: messages/s by connections",
            "messages/s (median)",
            samples,
            &pingpong,
            servers,
            |s| Some(s.rate),
        ),
    );
    note(
        "cpu_per_message.svg",
        charts::by_connections(
            &out.join("cpu_per_message.svg"),
            "pingpong 64 B: server CPU per message",
            "µs of server CPU per message",
            samples,
            &pingpong,
            servers,
            |s| s.cpu_us_per_msg,
        ),
    );
    idle_chart(out, samples, settings, servers, made)
}

fn idle_chart(
    out: &std::path::Path,
    samples: &[Sample],
    settings: &Settings,
    servers: &[&'static str],
    mut made: Vec<String>,
) -> Vec<String> {
    let Some(&idle) =
        settings.tests.iter().find(|t| t.pattern == Pattern::Idle)
    else {
        return made;
    };
    let name = "idle_memory.svg";
    match charts::idle_bars(&out.join(name), samples, idle, servers) {
        Ok(()) => made.push(name.to_string()),
        Err(e) => eprintln!("bench: chart {name}: {e}"),
    }
    made
}

#[allow(clippy::too_many_arguments)]
pub fn report_md(
    settings: &Settings,
    samples: &[Sample],
    busy: &[Vec<String>],
    idle: &[Vec<String>],
    syscall_text: &str,
    scaling: &str,
    basics: &[String],
    strace: &Result<Vec<syscalls::Count>, String>,
    charts: &[String],
    metrics: &Cost,
    took: Duration,
) -> String {
    let (head, idle_head) = output::heads();
    let mut md = String::new();
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let _ = writeln!(md, "# readyloop benchmark report\n");
    let _ = writeln!(
        md,
        "Machine: {cores} cores, {cpu_model}. Mode: {}{}, {} round(s) (+{} of {}), {:.1} s per run, took {:.0} s. Pinning: {}.\n",
        if settings.quick { "QUICK smoke run" } else { "full" },
        match (settings.only, settings.only_scaling) {
            (Some(p), _) => format!(", {} tests only (READYLOOP_BENCH_ONLY)", p.name()),
            (None, true) => ", scaling table only (READYLOOP_BENCH_ONLY)".into(),
            (None, false) => String::new(),
        },
        settings.rounds,
        settings.cpu_rounds,
        settings.cpu_test.label(),
        settings.duration.as_secs_f64(),
        took.as_secs_f64(),
        match settings.cpus {
            (Some(s), Some(l)) => format!("server on CPU {s}, load generator on CPU {l} (taskset)"),
            _ => "none (taskset or a second CPU missing)".into(),
        }
    );
    let _ = writeln!(md, "Figures are medians over rounds; ±N% is half the spread (max−min) in percent of the median. \"vs ct\" is the median over rounds of the ratio to tokio current_thread in the same round. srv CPU% is server CPU time over wall time: near 100 the server was the bottleneck, well below it something else was: the load generator, or other work on a shared machine taking the server's core.\n");
    if !busy.is_empty() {
        let _ = writeln!(
            md,
            "## Throughput and latency\n\n{}",
            output::md_table(head, busy)
        );
    }
    md.push_str(scaling);
    md.push('\n');
    if settings.only_scaling {
        return md;
    }
    if !idle.is_empty() {
        let _ = writeln!(md, "## Idle memory\n\nServer anonymous PSS (heap and stacks; children included, copy-on-write pages split among sharers) before, and when the load generator reports every connection held; bytes/conn = delta / held.\n\nThe columns after the note are the kernel's memory, host-wide, read at the same two moments, per held connection. On loopback both ends of a connection are on this host, so they count the server's socket and the load generator's. sockets/conn: delta of `sockets: used` in /proc/net/sockstat (2.00: one socket per end, nothing else opened meanwhile). TCP mem: delta of the TCP `mem` pages of sockstat: what the kernel has charged to TCP socket buffers, the per-socket reserve of less than a page included; an accounting figure, shown apart and not added to the next column. kernel: delta of `Slab` + `KernelStack` + `PageTables` of /proc/meminfo, both ends. server kernel ≤: kernel minus half of the slab caches that hold one object per socket at either end (TCP, sock_inode_cache, dentry, filp, lsm_*; /proc/slabinfo, root only): an upper bound of the server's end, which is charged everything else (epoll items, the client's port buckets, thread stacks, page tables). server total ≤: bytes/conn + server kernel ≤, what one more idle connection costs the server's host at most. Other work on the host moves these figures (sockets/conn away from 2 says it did).\n\n{}", output::md_table(idle_head, idle));
    }
    for &test in settings.tests.iter().filter(|t| t.pattern == Pattern::Idle) {
        if let Some(table) =
            output::cache_table(samples, test, &SERVERS.map(|s| s.name))
        {
            let _ = writeln!(md, "### Slab caches that grew, {}: bytes per connection, both ends\n\nMedian over rounds of the growth of each cache (`/proc/slabinfo`: its slabs times their size). Caches of the same object size may be merged by the kernel and then show under one name (e.g. `eventpoll_epi` with `tcp_bind_bucket`).\n\n{}", test.label(), table);
        }
    }
    let _ = writeln!(
        md,
        "## Syscalls per echoed message ({}, strace -c -f)\n\n```\n{}```\n",
        settings.cpu_test.label(),
        syscall_text
    );
    let _ = writeln!(
        md,
        "## Cost of the metrics endpoint\n\nThe mio model on {} with `--metrics-addr` on and scraped every second, against off, alternating round by round; on/off is the median over rounds of the ratio in the same round.\n\n{}\n",
        settings.cpu_test.label(),
        metrics_table(metrics)
    );
    let _ = writeln!(
        md,
        "## Size and start-up\n\n{}\n",
        basics.iter().map(|l| format!("- {l}")).collect::<Vec<_>>().join("\n")
    );
    let _ = writeln!(
        md,
        "## Targets for the mio model\n\n{}",
        targets(settings, samples, strace, basics, metrics)
    );
    let _ = writeln!(
        md,
        "## Charts\n\n{}",
        charts
            .iter()
            .map(|c| format!("- [{c}]({c})"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    md
}

/// The metrics endpoint's table: CPU per message off and on, on/off,
/// and how the scrapes went.
fn metrics_table(cost: &Cost) -> String {
    let f = |v: Option<f64>, unit: &str| {
        v.map_or("-".into(), |v| format!("{v:.2}{unit}"))
    };
    let rounds = cost
        .samples
        .iter()
        .filter(|s| s.server == metrics_cost::ON.name)
        .count();
    let row = vec![
        rounds.to_string(),
        f(cost.cpu(&metrics_cost::OFF), ""),
        f(cost.cpu(&metrics_cost::ON), ""),
        f(cost.ratio(), "x"),
        cost.scrapes.answered.to_string(),
        cost.scrapes.failed.to_string(),
    ];
    output::md_table(
        &[
            "rounds",
            "CPU µs/msg off",
            "on, scraped every 1 s",
            "on/off",
            "scrapes answered",
            "failed",
        ],
        &[row],
    )
}

fn targets(
    settings: &Settings,
    samples: &[Sample],
    strace: &Result<Vec<syscalls::Count>, String>,
    basics: &[String],
    metrics: &Cost,
) -> String {
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "not measured",
    };
    let t = settings.cpu_test;
    let cpu =
        output::ratio_to_baseline(samples, "mio", t, |s| s.cpu_us_per_msg);
    let p99 = output::ratio_to_baseline(samples, "mio", t, |s| s.p99_us);
    let idle = settings
        .tests
        .iter()
        .find(|t| t.pattern == Pattern::Idle)
        .and_then(|&i| {
            output::figure(samples, "mio", i, Sample::bytes_per_conn)
        })
        .map(|s| s.median);
    let sys = strace
        .as_ref()
        .ok()
        .and_then(|c| c.iter().find(|c| c.server == "mio"))
        .map(|c| c.steady_per_message());
    let size = std::fs::metadata(server::readyloop()).ok().map(|m| m.len());
    let rss =
        basics.iter().find(|l| l.contains("start of mio")).and_then(|l| {
            l.split(": ").nth(1)?.split(' ').next()?.parse::<u64>().ok()
        });
    let f = |v: Option<f64>, unit: &str| {
        v.map_or("-".into(), |v| format!("{v:.2}{unit}"))
    };
    let rows = vec![
        vec![
            format!("CPU per message vs tokio-ct ({})", t.label()),
            "≤ 0.9x".into(),
            f(cpu, "x"),
            verdict(cpu.map(|v| v <= 0.9)).into(),
        ],
        vec![
            format!("p99 vs tokio-ct ({})", t.label()),
            "≤ 1.1x".into(),
            f(p99, "x"),
            verdict(p99.map(|v| v <= 1.1)).into(),
        ],
        vec![
            format!("CPU per message, metrics on vs off ({})", t.label()),
            format!("≤ {}x", metrics_cost::TARGET),
            f(metrics.ratio(), "x"),
            verdict(metrics.ratio().map(|v| v <= metrics_cost::TARGET)).into(),
        ],
        vec![
            "bytes per idle connection".into(),
            "≤ 128".into(),
            f(idle, " B"),
            verdict(idle.map(|v| v <= 128.0)).into(),
        ],
        vec![
            "syscalls per message (without set-up)".into(),
            "≤ 2.1".into(),
            f(sys, ""),
            verdict(sys.map(|v| v <= 2.1)).into(),
        ],
        vec![
            "stripped binary".into(),
            "≤ 1.5 MB".into(),
            f(size.map(|s| s as f64 / 1e6), " MB"),
            verdict(size.map(|s| s <= 1_500_000)).into(),
        ],
        vec![
            "RSS at start".into(),
            "≤ 4 MB".into(),
            f(rss.map(|r| r as f64 / 1024.0), " MiB"),
            verdict(rss.map(|r| r <= 4096)).into(),
        ],
    ];
    output::md_table(&["target", "goal", "measured", "verdict"], &rows)
}

//! The report: a table on stdout, `report.md` and `report.csv`.

use std::fmt::Write as _;

use readyloop::load::Pattern;

use crate::kernel::PerConn;
use crate::load::Test;
use crate::sample::{stat, Sample, Stat};
use crate::server::BASELINE;

/// Column headers of the throughput table.
const HEAD: [&str; 10] = [
    "test",
    "server",
    "msg/s",
    "MB/s",
    "p99 µs",
    "CPU µs/msg",
    "srv CPU%",
    "CPU vs ct",
    "p99 vs ct",
    "note",
];

/// Column headers of the idle-memory table.
const IDLE_HEAD: [&str; 13] = [
    "test",
    "server",
    "held",
    "memory before kB",
    "after kB",
    "bytes/conn",
    "vs ct",
    "note",
    "sockets/conn",
    "TCP mem B/conn",
    "kernel B/conn",
    "server kernel ≤ B/conn",
    "server total ≤ B/conn",
];

/// A median with ±half its spread, when there are several values.
pub fn fmt_stat(s: Option<Stat>, digits: usize) -> String {
    match s {
        Some(s) if s.n > 1 => {
            format!("{:.*} ±{:.0}%", digits, s.median, s.spread_pct / 2.0)
        }
        Some(s) => format!("{:.*}", digits, s.median),
        None => "-".into(),
    }
}

/// `1.23x`, or `-`.
pub fn ratio(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.2}x"))
}

/// The samples of `server` on `test` that measured something.
fn of<'a>(
    samples: &'a [Sample],
    server: &str,
    test: Test,
) -> impl Iterator<Item = &'a Sample> + 'a {
    let server = server.to_string();
    samples.iter().filter(move |s| {
        s.server == server && s.test == test && s.skipped.is_none()
    })
}

/// Median over rounds of `f(server) / f(baseline)` in the same round.
pub fn ratio_to_baseline(
    samples: &[Sample],
    server: &str,
    test: Test,
    f: impl Fn(&Sample) -> Option<f64>,
) -> Option<f64> {
    paired_ratio((samples, server), (samples, BASELINE), test, f)
}

/// Median over rounds of `f(a) / f(b)`: `a` a sample of a server among
/// some samples, `b` the sample of another in the same round among
/// others.
pub fn paired_ratio(
    (these, server): (&[Sample], &str),
    (bases, base): (&[Sample], &str),
    test: Test,
    f: impl Fn(&Sample) -> Option<f64>,
) -> Option<f64> {
    let ratios = of(these, server, test)
        .filter_map(|s| {
            let b = of(bases, base, test).find(|b| b.round == s.round)?;
            Some(f(s)? / f(b)?)
        })
        .collect();
    stat(ratios).map(|s| s.median)
}

/// Median and spread of a figure of `server` on `test`.
pub fn figure(
    samples: &[Sample],
    server: &str,
    test: Test,
    f: impl Fn(&Sample) -> Option<f64>,
) -> Option<Stat> {
    stat(of(samples, server, test).filter_map(f).collect())
}

/// Why a server is missing from a row, or how many errors it had.
pub fn note(samples: &[Sample], server: &str, test: Test) -> String {
    if let Some(s) = samples
        .iter()
        .find(|s| s.server == server && s.test == test && s.skipped.is_some())
    {
        return format!("unavailable: {}", s.skipped.as_deref().unwrap_or(""));
    }
    let errors: u64 = of(samples, server, test).map(|s| s.errors).sum();
    match errors {
        e if e > 0 => format!("{e} errors"),
        _ => String::new(),
    }
}

/// The throughput rows and the idle rows, as text cells.
pub fn tables(
    samples: &[Sample],
    tests: &[Test],
    servers: &[&'static str],
) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let mut busy = Vec::new();
    let mut idle = Vec::new();
    for &test in tests {
        for &server in servers {
            if test.pattern == Pattern::Idle {
                let bpc =
                    figure(samples, server, test, Sample::bytes_per_conn);
                let mem = |i: usize| {
                    figure(samples, server, test, |s| {
                        s.mem_kb.map(|m| [m.0, m.1][i] as f64)
                    })
                };
                let held =
                    figure(samples, server, test, |s| Some(s.held as f64));
                let vs = ratio_to_baseline(
                    samples,
                    server,
                    test,
                    Sample::bytes_per_conn,
                );
                let kernel = |f: fn(PerConn) -> Option<f64>, digits| {
                    let v = figure(samples, server, test, |s| {
                        f(s.kernel_per_conn()?)
                    });
                    fmt_stat(v, digits)
                };
                idle.push(vec![
                    test.label(),
                    server.into(),
                    fmt_stat(held, 0),
                    fmt_stat(mem(0), 0),
                    fmt_stat(mem(1), 0),
                    fmt_stat(bpc, 0),
                    ratio(vs),
                    note(samples, server, test),
                    kernel(|k| Some(k.sockets), 2),
                    kernel(|k| Some(k.tcp_mem), 0),
                    kernel(|k| Some(k.kernel), 0),
                    kernel(|k| k.server_at_most, 0),
                    fmt_stat(
                        figure(samples, server, test, |s| {
                            s.server_total_per_conn()
                        }),
                        0,
                    ),
                ]);
                continue;
            }
            let rate = figure(samples, server, test, |s| Some(s.rate));
            let mb = figure(samples, server, test, |s| Some(s.mb_per_s));
            let p99 = figure(samples, server, test, |s| s.p99_us);
            let cpu = figure(samples, server, test, |s| s.cpu_us_per_msg);
            busy.push(vec![
                test.label(),
                server.into(),
                fmt_stat(rate, 0),
                fmt_stat(mb, 1),
                fmt_stat(p99, 0),
                fmt_stat(cpu, 2),
                fmt_stat(figure(samples, server, test, |s| s.util_pct), 0),
                ratio(ratio_to_baseline(samples, server, test, |s| {
                    s.cpu_us_per_msg
                })),
                ratio(ratio_to_baseline(samples, server, test, |s| s.p99_us)),
                note(samples, server, test),
            ]);
        }
    }
    (busy, idle)
}

/// Slab caches that grew by at least 16 bytes per held connection for
/// some server (median over rounds, both ends), as a Markdown table with
/// one column per server; `None` without slabinfo.
pub fn cache_table(
    samples: &[Sample],
    test: Test,
    servers: &[&'static str],
) -> Option<String> {
    let by_cache = |server: &str, cache: &str| {
        figure(samples, server, test, |s| {
            s.cache_per_conn()?.get(cache).copied()
        })
    };
    let names: Vec<String> = of(samples, servers.first()?, test)
        .chain(servers.iter().flat_map(|&v| of(samples, v, test)))
        .find_map(Sample::cache_per_conn)?
        .into_keys()
        .collect();
    let rows: Vec<Vec<String>> = names
        .iter()
        .filter_map(|cache| {
            let cells: Vec<Option<Stat>> =
                servers.iter().map(|v| by_cache(v, cache)).collect();
            cells.iter().flatten().any(|s| s.median.abs() >= 16.0).then(|| {
                [cache.clone()]
                    .into_iter()
                    .chain(cells.into_iter().map(|c| fmt_stat(c, 0)))
                    .collect()
            })
        })
        .collect();
    let head: Vec<&str> =
        ["slab cache"].into_iter().chain(servers.to_vec()).collect();
    Some(md_table(&head, &rows))
}

/// Rows aligned in columns for a terminal.
pub fn text_table(head: &[&str], rows: &[Vec<String>]) -> String {
    let cols =
        rows.iter().map(Vec::len).chain([head.len()]).max().unwrap_or(0);
    let width = |i: usize| {
        rows.iter()
            .filter_map(|r| r.get(i))
            .map(|c| c.chars().count())
            .chain(head.get(i).map(|h| h.chars().count()))
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..cols).map(width).collect();
    let mut out = String::new();
    let line = |out: &mut String, cells: Vec<&str>| {
        for (i, c) in cells.iter().enumerate() {
            let _ = write!(out, "{c:<w$}  ", w = widths[i]);
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
    };
    line(&mut out, head.to_vec());
    for r in rows {
        line(&mut out, r.iter().map(String::as_str).collect());
    }
    out
}

/// Rows as a Markdown table.
pub fn md_table(head: &[&str], rows: &[Vec<String>]) -> String {
    let cols =
        rows.iter().map(Vec::len).chain([head.len()]).max().unwrap_or(0);
    let mut out = String::new();
    let cell = |v: Option<&str>| v.unwrap_or("").replace('|', "\\|");
    let _ = writeln!(
        out,
        "| {} |",
        (0..cols)
            .map(|i| cell(head.get(i).copied()))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(out, "|{}", "---|".repeat(cols));
    for r in rows {
        let _ = writeln!(
            out,
            "| {} |",
            (0..cols)
                .map(|i| cell(r.get(i).map(String::as_str)))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    out
}

/// Headers of the two tables.
pub fn heads() -> (&'static [&'static str], &'static [&'static str]) {
    (&HEAD, &IDLE_HEAD)
}

/// Every sample, one CSV row each.
pub fn csv(samples: &[Sample]) -> String {
    let mut out = String::from(
        "round,server,pattern,connections,size,skipped,messages,rate,mb_per_s,\
         p50_us,p99_us,cpu_us_per_msg,util_pct,mem_before_kb,mem_after_kb,\
         bytes_per_conn,rounds_min,rounds_max,held,errors,\
         sockets_per_conn,tcp_mem_per_conn,kernel_per_conn,\
         server_kernel_max_per_conn,server_total_max_per_conn,workers,load_util_pct\n",
    );
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
    for s in samples {
        let k = s.kernel_per_conn();
        let _ = writeln!(
            out,
            "{},{},{},{},{},\"{}\",{},{:.1},{:.3},{},{},{},{},{},{},{},{},{},{},{},\
             {},{},{},{},{},{},{}",
            s.round,
            s.server,
            s.test.pattern,
            s.test.connections,
            s.test.size,
            s.skipped.as_deref().unwrap_or("").replace('"', "'"),
            s.messages,
            s.rate,
            s.mb_per_s,
            opt(s.p50_us),
            opt(s.p99_us),
            opt(s.cpu_us_per_msg),
            opt(s.util_pct),
            s.mem_kb.map_or(String::new(), |m| m.0.to_string()),
            s.mem_kb.map_or(String::new(), |m| m.1.to_string()),
            opt(s.bytes_per_conn()),
            opt(s.rounds.map(|r| r.0 as f64)),
            opt(s.rounds.map(|r| r.1 as f64)),
            s.held,
            s.errors,
            opt(k.map(|k| k.sockets)),
            opt(k.map(|k| k.tcp_mem)),
            opt(k.map(|k| k.kernel)),
            opt(k.and_then(|k| k.server_at_most)),
            opt(s.server_total_per_conn()),
            s.workers.map_or(String::new(), |n| n.to_string()),
            opt(s.load_util_pct),
        );
    }
    out
}

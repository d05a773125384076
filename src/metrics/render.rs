//! The counters in the Prometheus text format 0.0.4: a `# HELP` and a
//! `# TYPE` line for each family, then its samples.

use std::fmt::{Display, Write as _};

use crate::config::{Mode, Model};
use crate::stats::Summary;

use super::process::Process;

/// What a scrape reports, taken when it is answered.
#[derive(Clone, Debug)]
pub(crate) struct Counters {
    /// The counters of the `summary` line, exact at this moment.
    pub summary: Summary,
    /// Client connections open now.
    pub open: usize,
    /// With `--workers`: each worker's accepted and open connections.
    pub workers: Vec<(u64, usize)>,
    /// The mio and uring models: output memory held for clients now
    /// (what `--max-output-memory` bounds); the blocking models hold
    /// none.
    pub output_held: Option<u64>,
}

/// Labels of `readyloop_build_info`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Build {
    pub model: Model,
    pub mode: Mode,
}

/// One family: its name, type, help, and samples (labels, value).
struct Family<'a> {
    name: &'a str,
    kind: &'a str,
    help: &'a str,
}

impl Family<'_> {
    fn write<V: Display>(&self, out: &mut String, samples: &[(&str, V)]) {
        let Family { name, kind, help } = self;
        // Writing to a String cannot fail.
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    }
}

/// Writes every family into `out`, with `process`'s figures. Label
/// values are the crate's own names (version, model, mode, close
/// reasons), none of which holds a character the format would need
/// escaped.
pub(crate) fn render(
    out: &mut String,
    c: &Counters,
    build: Build,
    process: &Process,
) {
    let s = &c.summary;
    let counter = |name, help| Family { name, kind: "counter", help };
    let gauge = |name, help| Family { name, kind: "gauge", help };
    counter(
        "readyloop_connections_accepted_total",
        "Client connections accepted and served.",
    )
    .write(out, &[("", s.accepted)]);
    counter(
        "readyloop_connections_closed_total",
        "Client connections closed, by reason.",
    )
    .write(
        out,
        &[
            ("{reason=\"eof\"}", s.closed_eof),
            ("{reason=\"reset\"}", s.closed_reset),
            ("{reason=\"error\"}", s.closed_error),
            ("{reason=\"idle\"}", s.closed_idle),
            ("{reason=\"shutdown\"}", s.closed_shutdown),
        ],
    );
    counter(
        "readyloop_connections_rejected_total",
        "Client connections closed at once: over --max-connections or \
         --max-connections-per-ip.",
    )
    .write(out, &[("", s.rejected)]);
    gauge("readyloop_connections_open", "Client connections open now.")
        .write(out, &[("", c.open as u64)]);
    if !c.workers.is_empty() {
        let labels: Vec<String> = (0..c.workers.len())
            .map(|n| format!("{{worker=\"{n}\"}}"))
            .collect();
        let each = |f: fn(&(u64, usize)) -> u64| -> Vec<(&str, u64)> {
            let pairs = labels.iter().zip(&c.workers);
            pairs.map(|(l, w)| (l.as_str(), f(w))).collect()
        };
        counter(
            "readyloop_worker_connections_accepted_total",
            "Client connections each worker (--workers) accepted.",
        )
        .write(out, &each(|w| w.0));
        gauge(
            "readyloop_worker_connections_open",
            "Client connections open on each worker (--workers).",
        )
        .write(out, &each(|w| w.1 as u64));
    }
    if let Some(held) = c.output_held {
        gauge(
            "readyloop_output_memory_bytes",
            "Memory held for output clients have not taken yet (mio and \
             uring models; --max-output-memory bounds it).",
        )
        .write(out, &[("", held)]);
    }
    counter("readyloop_bytes_received_total", "Bytes read from clients.")
        .write(out, &[("", s.bytes_in)]);
    counter("readyloop_bytes_sent_total", "Bytes written to clients.")
        .write(out, &[("", s.bytes_out)]);
    counter(
        "readyloop_log_lines_dropped_total",
        "Log lines dropped because stderr did not take them in time \
         (the summary's log_dropped).",
    )
    .write(out, &[("", s.log_dropped)]);
    counter(
        "readyloop_log_lines_suppressed_total",
        "Chunk lines not logged because of --log-rate or --log-total-rate \
         (the summary's log_suppressed).",
    )
    .write(out, &[("", s.log_suppressed)]);
    let labels = format!(
        "{{version=\"{}\",model=\"{}\",mode=\"{}\"}}",
        env!("CARGO_PKG_VERSION"),
        build.model,
        build.mode
    );
    gauge(
        "readyloop_build_info",
        "Always 1; the labels say which build serves, how.",
    )
    .write(out, &[(&labels, 1)]);
    write_process(out, process);
}

/// The process collector's families, each only if /proc had its figure.
fn write_process(out: &mut String, p: &Process) {
    let gauge = |name, help| Family { name, kind: "gauge", help };
    if let Some(fds) = p.open_fds {
        gauge("process_open_fds", "Number of open file descriptors.")
            .write(out, &[("", fds)]);
    }
    if let Some(max) = p.max_fds {
        gauge("process_max_fds", "Maximum number of open file descriptors.")
            .write(out, &[("", max)]);
    }
    if let Some(bytes) = p.resident_bytes {
        gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
        )
        .write(out, &[("", bytes)]);
    }
    if let Some(seconds) = p.cpu_seconds {
        Family {
            name: "process_cpu_seconds_total",
            kind: "counter",
            help: "Total user and system CPU time spent in seconds.",
        }
        .write(out, &[("", seconds)]);
    }
    if let Some(start) = p.start_time {
        gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
        )
        .write(out, &[("", start)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_help_type_and_its_samples() {
        let summary = Summary {
            accepted: 7,
            closed_eof: 3,
            closed_reset: 1,
            rejected: 2,
            bytes_in: 100,
            bytes_out: 90,
            ..Summary::default()
        };
        let counters = Counters {
            summary,
            open: 3,
            workers: Vec::new(),
            output_held: Some(4160),
        };
        let build = Build { model: Model::Thread, mode: Mode::Echo };
        let process = Process {
            open_fds: Some(12),
            max_fds: Some(1024),
            resident_bytes: Some(4096),
            cpu_seconds: Some(0.25),
            start_time: Some(1_796_596_201.5),
        };
        let mut out = String::new();
        render(&mut out, &counters, build, &process);
        for line in [
            "readyloop_connections_accepted_total 7",
            "readyloop_connections_closed_total{reason=\"eof\"} 3",
            "readyloop_connections_closed_total{reason=\"reset\"} 1",
            "readyloop_connections_closed_total{reason=\"shutdown\"} 0",
            "readyloop_connections_rejected_total 2",
            "readyloop_connections_open 3",
            "readyloop_output_memory_bytes 4160",
            "readyloop_bytes_received_total 100",
            "readyloop_bytes_sent_total 90",
            "readyloop_log_lines_dropped_total 0",
            "readyloop_log_lines_suppressed_total 0",
            "process_open_fds 12",
            "process_max_fds 1024",
            "process_resident_memory_bytes 4096",
            "process_cpu_seconds_total 0.25",
            "process_start_time_seconds 1796596201.5",
            "# TYPE process_cpu_seconds_total counter",
            "# TYPE process_start_time_seconds gauge",
            "# TYPE readyloop_connections_open gauge",
            "# TYPE readyloop_bytes_sent_total counter",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} in:\n{out}");
        }
        let info = format!(
            "readyloop_build_info{{version=\"{}\",model=\"thread\",\
             mode=\"echo\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(out.lines().any(|l| l == info), "{out}");
        let helps = out.lines().filter(|l| l.starts_with("# HELP ")).count();
        let types = out.lines().filter(|l| l.starts_with("# TYPE ")).count();
        assert_eq!((helps, types), (15, 15), "{out}");
        let mut none = String::new();
        render(&mut none, &counters, build, &Process::default());
        assert!(!none.contains("process_"), "{none}");
    }
}

//! What one run covers: the matrix, its rounds and durations, the
//! CPUs to pin to, and the scaling table, from `READYLOOP_BENCH_QUICK`,
//! `READYLOOP_BENCH_ONLY`, `READYLOOP_BENCH_ROUNDS` and
//! `READYLOOP_BENCH_WORKERS`.

use std::time::Duration;

use readyloop::load::Pattern;

use crate::load::Test;
use crate::scaling;

/// What one benchmark run covers.
pub struct Settings {
    pub quick: bool,
    pub rounds: u32,
    /// Extra rounds of the CPU-per-message test, so that it has at
    /// least five.
    pub cpu_rounds: u32,
    pub duration: Duration,
    pub idle_duration: Duration,
    pub tests: Vec<Test>,
    pub cpu_test: Test,
    pub strace_messages: u64,
    /// CPUs of the server and of the load generator.
    pub cpus: (Option<u32>, Option<u32>),
    /// The one pattern to run, if `READYLOOP_BENCH_ONLY` names one.
    pub only: Option<Pattern>,
    /// `READYLOOP_BENCH_ONLY=scaling`: the scaling table alone.
    pub only_scaling: bool,
    /// `READYLOOP_BENCH_ONLY=before`: this build against
    /// `READYLOOP_BENCH_BEFORE` alone (`before_cost.rs`).
    pub only_before: bool,
    /// The scaling table (`--workers`).
    pub scaling: scaling::Plan,
}

const fn t(pattern: Pattern, connections: u64, size: u64) -> Test {
    Test { pattern, connections, size }
}

impl Settings {
    pub fn new() -> Result<Settings, String> {
        let quick =
            std::env::var("READYLOOP_BENCH_QUICK").is_ok_and(|v| v != "0");
        let two_cpus =
            std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
        let taskset = std::process::Command::new("taskset")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        if two_cpus && !taskset {
            eprintln!(
                "bench: taskset is not installed (util-linux, as .ci/run \
                 installs it): servers and load run unpinned"
            );
        }
        let cpus = match two_cpus && taskset {
            true => (Some(0), Some(1)),
            false => (None, None),
        };
        let cpu_test = t(Pattern::Pingpong, 1000, 64);
        let only_var = std::env::var("READYLOOP_BENCH_ONLY");
        let only_scaling = only_var.as_deref() == Ok("scaling");
        let only_before = only_var.as_deref() == Ok("before");
        if only_before && crate::before_cost::binary().is_none() {
            return Err(format!(
                "READYLOOP_BENCH_ONLY=before needs {} (a readyloop binary \
                 to compare with)",
                crate::before_cost::VAR
            ));
        }
        let only = match only_var {
            Ok(v) if v == "scaling" || v == "before" => None,
            Ok(v) => Some(
                <Pattern as clap::ValueEnum>::value_variants()
                    .iter()
                    .copied()
                    .find(|p| p.name() == v)
                    .ok_or_else(|| {
                        format!(
                            "READYLOOP_BENCH_ONLY={v}: not a pattern, nor \
                             scaling, nor before"
                        )
                    })?,
            ),
            Err(_) => None,
        };
        let plan = scaling::Plan::new(quick, only, taskset)?;
        let mut settings = match quick {
            true => Settings {
                quick,
                rounds: 1,
                cpu_rounds: 0,
                duration: Duration::from_millis(500),
                idle_duration: Duration::from_millis(300),
                tests: vec![
                    t(Pattern::Pingpong, 1, 64),
                    t(Pattern::Pingpong, 100, 64),
                    cpu_test,
                    t(Pattern::Stream, 1, 16384),
                    t(Pattern::Stream, 100, 16384),
                    t(Pattern::Connect, 50, 64),
                    t(Pattern::Idle, 1000, 1),
                ],
                cpu_test,
                strace_messages: 20_000,
                cpus,
                only,
                only_scaling,
                only_before,
                scaling: plan,
            },
            false => Settings {
                quick,
                rounds: 3,
                cpu_rounds: 2,
                duration: Duration::from_secs(2),
                idle_duration: Duration::from_secs(1),
                tests: vec![
                    t(Pattern::Pingpong, 1, 64),
                    t(Pattern::Pingpong, 100, 64),
                    cpu_test,
                    t(Pattern::Pingpong, 10_000, 64),
                    t(Pattern::Stream, 1, 16384),
                    t(Pattern::Stream, 100, 16384),
                    t(Pattern::Connect, 50, 64),
                    t(Pattern::Idle, 10_000, 1),
                ],
                cpu_test,
                strace_messages: 200_000,
                cpus,
                only,
                only_scaling,
                only_before,
                scaling: plan,
            },
        };
        // READYLOOP_BENCH_ROUNDS=N: N rounds of everything (the CPU test
        // then needs no extra ones), for a steadier median.
        if let Ok(v) = std::env::var("READYLOOP_BENCH_ROUNDS") {
            let n: u32 =
                v.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                    format!("READYLOOP_BENCH_ROUNDS={v}: not a positive count")
                })?;
            settings.rounds = n;
            settings.cpu_rounds = 5u32.saturating_sub(n);
        }
        if only_scaling {
            settings.tests.clear();
            settings.cpu_rounds = 0;
            settings.strace_messages = 0;
        }
        if let Some(p) = only {
            settings.tests.retain(|t| t.pattern == p);
            if p != cpu_test.pattern {
                settings.cpu_rounds = 0;
                settings.strace_messages = 0;
            }
        }
        Ok(settings)
    }
}

//! `--workers N`: the loop of the mio or uring model N times over, one
//! thread each, sharing nothing on the path of a message. Each worker has
//! its own poll (or ring), slab and listening sockets, bound to the same
//! addresses with SO_REUSEPORT before any worker starts
//! ([`crate::bind`]); the kernel hashes every new connection to one of
//! the sockets, so to one worker. What the
//! workers share is in [`Group`](crate::listener::group::Group): the
//! stop, and counters that are only added up for a `stats` line, a
//! status or a scrape.
//!
//! Worker 0 runs on the calling thread and has the signals and the
//! service duties (the `stats` line, systemd's notifications); a stop,
//! from a signal or a [`Handle`](crate::Handle), wakes every worker. Each
//! flushes and lingers as one loop does, and the summary is the sum of
//! theirs. `--max-connections` is split: worker `n` of `N` may hold
//! `max / N` connections, one more for the first `max % N` workers, so
//! together they never hold more than `max`; `--max-output-memory` is
//! split the same way.

use std::thread;

use crate::config::{Config, Model};
use crate::error::Error;
use crate::listener::Listener;
use crate::stats::Summary;
use crate::{affinity, journal, models};

/// Runs the model's loop (mio or uring) once per listener, the first on
/// this thread, until they stop, and returns the sum of their summaries.
pub(crate) fn run(
    listeners: Vec<Listener>,
    config: &Config,
) -> Result<Summary, Error> {
    let count = listeners.len();
    let cpus = match config.pin {
        true => affinity::allowed().map_err(Error::setup("read the CPUs"))?,
        false => Vec::new(),
    };
    let cpu = |n: usize| (!cpus.is_empty()).then(|| cpus[n % cpus.len()]);
    let mut listeners = listeners.into_iter();
    let Some(first) = listeners.next() else { return Err(Error::NoListener) };
    let group = std::sync::Arc::clone(first.group());
    let mut threads = Vec::with_capacity(count - 1);
    let mut failure = None;
    for (n, listener) in (1..).zip(listeners) {
        let worker = share(config, n, count);
        let cpu = cpu(n);
        let shared = std::sync::Arc::clone(&group);
        let spawned =
            thread::Builder::new().name(format!("w{n}")).spawn(move || {
                start(n, cpu);
                let result = run_one(listener, &worker);
                if result.is_err() {
                    // One loop broke: the others stop too.
                    shared.ask_stop(true);
                }
                result
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                group.ask_stop(true);
                failure = Some(Error::setup("spawn a worker")(e));
                break;
            }
        }
    }
    start(0, cpu(0));
    let mut total = Summary::default();
    match run_one(first, &share(config, 0, count)) {
        Ok(s) => total.add(&s),
        Err(e) => {
            group.ask_stop(true);
            failure.get_or_insert(e);
        }
    }
    for t in threads {
        match t.join() {
            Ok(Ok(s)) => total.add(&s),
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(_) => {
                failure.get_or_insert(Error::Panicked);
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(total),
    }
}

/// One worker's loop: the model's, for the models that are one loop.
fn run_one(listener: Listener, config: &Config) -> Result<Summary, Error> {
    match config.model {
        Model::Uring => models::uring::run(listener, config),
        _ => models::mio::run(listener, config),
    }
}

/// Names this thread's log lines after worker `n` and pins it to `cpu`.
fn start(n: usize, cpu: Option<usize>) {
    journal::set_worker(n);
    if let Some(cpu) = cpu {
        if let Err(e) = affinity::pin(cpu) {
            log::warn!("cannot pin worker {n} to CPU {cpu}: {e}");
        }
    }
}

/// Worker `n`'s configuration: its share of `--max-connections` and of
/// `--max-output-memory`.
fn share(config: &Config, n: usize, count: usize) -> Config {
    let part = |total: usize| total / count + usize::from(n < total % count);
    let mut worker = config.clone();
    worker.max_connections = part(config.max_connections);
    worker.max_output_memory = part(config.max_output_memory);
    worker
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_connections_is_split_and_never_exceeded() {
        let mut config = Config::new("127.0.0.1:0".parse().unwrap());
        for (max, count) in
            [(10_000, 2), (10_001, 2), (7, 3), (5, 5), (100, 7)]
        {
            config.max_connections = max;
            let shares: Vec<usize> = (0..count)
                .map(|n| share(&config, n, count).max_connections)
                .collect();
            assert_eq!(shares.iter().sum::<usize>(), max, "{shares:?}");
            let budget: usize = (0..count)
                .map(|n| share(&config, n, count).max_output_memory)
                .sum();
            assert_eq!(budget, config.max_output_memory);
            let (lo, hi) = (shares.iter().min(), shares.iter().max());
            assert!(hi.unwrap() - lo.unwrap() <= 1, "{shares:?}");
        }
    }
}

//! What a chaos run watches and checks: samples of the server process
//! during the run, then its counts, log records and close reasons
//! against what the clients did.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use readyloop::{Model, Summary};

use crate::support::chaos::{Behaviour, Outcome, Tally};
use crate::support::{proc, ServerProcess};

/// The server's counts must be what the clients did: exact where the
/// client knows, within [echoed back, written] for the bytes of a client
/// that left with bytes in flight (an RST, or a close with unread echo),
/// and `eof` or `reset` for a close the kernel may turn into an RST.
pub fn assert_counts_match(model: Model, s: &Summary, tallies: &[Tally]) {
    let mut eof = (0, 0);
    let mut reset = (0, 0);
    let (mut idle, mut bytes_in, mut bytes_out) = (0, (0, 0), (0, 0));
    for t in tallies.iter().filter(|t| t.peer.is_some()) {
        if let Outcome::Starved(_) = t.outcome {
            idle += 1;
            bytes_in = (bytes_in.0 + t.verified, bytes_in.1 + t.written);
            bytes_out = (bytes_out.0 + t.verified, bytes_out.1 + t.written);
            continue;
        }
        match t.behaviour.reasons() {
            ["eof"] => eof = (eof.0 + 1, eof.1 + 1),
            ["reset"] => reset = (reset.0 + 1, reset.1 + 1),
            ["idle"] => idle += 1,
            _ => (eof.1, reset.1) = (eof.1 + 1, reset.1 + 1),
        }
        let low =
            if t.behaviour.exact_bytes() { t.written } else { t.verified };
        bytes_in = (bytes_in.0 + low, bytes_in.1 + t.written);
        bytes_out = (bytes_out.0 + low, bytes_out.1 + t.written);
    }
    let connected = tallies.iter().filter(|t| t.peer.is_some()).count();
    let within = |v: u64, (lo, hi): (u64, u64)| lo <= v && v <= hi;
    let m = format!("{model}: {s}");
    assert_eq!(s.accepted, connected as u64, "{m}");
    assert_eq!(s.rejected, 0, "{m}");
    assert_eq!(s.closed_error, 0, "{m}");
    assert_eq!(s.closed_shutdown, 0, "{m}");
    assert_eq!(s.closed_idle, idle, "{m}");
    assert!(within(s.closed_eof, eof), "{m}: eof in {eof:?}");
    assert!(within(s.closed_reset, reset), "{m}: reset in {reset:?}");
    assert_eq!(s.closed(), s.accepted, "{m}: one close each");
    assert!(within(s.bytes_in, bytes_in), "{m}: in {bytes_in:?}");
    assert!(within(s.bytes_out, bytes_out), "{m}: out {bytes_out:?}");
    assert!(s.bytes_out <= s.bytes_in, "{m}");
}

/// Every client's connection closed, in the server's log, for a reason
/// its behaviour allows.
pub fn assert_reasons_match(model: Model, log: &[String], tallies: &[Tally]) {
    let mut logged: HashMap<SocketAddr, Vec<&str>> = HashMap::new();
    for line in log {
        let Some((head, rest)) = line.split_once(" closed: ") else {
            continue;
        };
        let Some(peer) = head.rsplit(' ').next().and_then(|p| p.parse().ok())
        else {
            continue;
        };
        let reason = rest.rsplit_once(" (").map_or(rest, |(r, _)| r);
        logged.entry(peer).or_default().push(reason);
    }
    let mut clients: HashMap<SocketAddr, Vec<Behaviour>> = HashMap::new();
    for t in tallies {
        if let Some(peer) = t.peer {
            // A starved client was closed as idle, whatever its script.
            let behaviour = match t.outcome {
                Outcome::Starved(_) => Behaviour::Idle,
                _ => t.behaviour,
            };
            clients.entry(peer).or_default().push(behaviour);
        }
    }
    for (peer, behaviours) in &clients {
        let reasons = logged.get(peer).cloned().unwrap_or_default();
        assert_eq!(
            reasons.len(),
            behaviours.len(),
            "{model}: {peer} ({behaviours:?}) closed as {reasons:?}"
        );
        let allowed =
            |r: &&str| behaviours.iter().any(|b| b.reasons().contains(r));
        assert!(
            reasons.iter().all(allowed),
            "{model}: {peer} ({behaviours:?}) closed as {reasons:?}"
        );
    }
}

/// Every client's script ran to the end; a failure shows what the server
/// logged for the first few failed clients.
pub fn assert_clients_kept_promises(
    model: Model,
    server: &mut ServerProcess,
    tallies: &[Tally],
) {
    let failed: Vec<&Tally> = tallies
        .iter()
        .filter(|t| !matches!(t.outcome, Outcome::Done | Outcome::Starved(_)))
        .take(5)
        .collect();
    if failed.is_empty() {
        return;
    }
    let log = server.collect_log();
    let said: Vec<&String> = failed
        .iter()
        .filter_map(|t| t.peer)
        .flat_map(|p| {
            let p = format!("{p} ");
            log.iter().filter(move |l| l.contains(&p))
        })
        .collect();
    panic!(
        "{model}: {} of {} clients failed, first: {failed:#?}\nserver: \
         {said:#?}",
        tallies
            .iter()
            .filter(|t| !matches!(
                t.outcome,
                Outcome::Done | Outcome::Starved(_)
            ))
            .count(),
        tallies.len(),
    );
}

/// What the server process (and its children) looked like during a run.
#[derive(Debug, Default)]
pub struct Samples {
    pub peak_rss_kib: u64,
    pub peak_child_rss_kib: u64,
    pub peak_children: usize,
    pub children_seen: Vec<proc::Child>,
}

/// Samples the server's RSS and children every few milliseconds until
/// `stop` is set.
pub fn sample(pid: u32, stop: Arc<AtomicBool>) -> thread::JoinHandle<Samples> {
    thread::spawn(move || {
        let mut s = Samples::default();
        while !stop.load(Ordering::Relaxed) {
            let rss = proc::rss_kib(pid).unwrap_or(0);
            s.peak_rss_kib = s.peak_rss_kib.max(rss);
            let children = proc::children(pid);
            s.peak_children = s.peak_children.max(children.len());
            for child in children {
                let rss = proc::rss_kib(child.pid).unwrap_or(0);
                s.peak_child_rss_kib = s.peak_child_rss_kib.max(rss);
                if !s.children_seen.iter().any(|c| c.pid == child.pid) {
                    s.children_seen.push(child);
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
        s
    })
}

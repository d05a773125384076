//! What the PROXY protocol costs behind HAProxy: the mio model behind a
//! local HAProxy (`mode tcp`, one backend) with `--proxy-protocol` and
//! `send-proxy-v2`, against the same path without the header. Server
//! CPU per message at pingpong C=1000 (the header comes once per
//! connection, so the difference should be within noise) and
//! connections per second of the `connect` pattern (a header per
//! connection). The two alternate round by round as in
//! `metrics_cost`. Without HAProxy the section says so: it is never
//! left out silently.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use readyloop::load::Pattern;

use crate::load::{Drive, Test};
use crate::sample::{stat, Sample};
use crate::server::{self, Kind, Running, Spec};
use crate::settings::Settings;

/// The mio model behind HAProxy without the header, and with it.
pub const OFF: Spec =
    Spec { name: "haproxy", kind: Kind::Readyloop(readyloop::Model::Mio) };
pub const ON: Spec = Spec {
    name: "haproxy+proxy-v2",
    kind: Kind::Readyloop(readyloop::Model::Mio),
};

/// One figure of a sample.
type Figure = fn(&Sample) -> Option<f64>;

/// The results, or why there are none.
pub struct Cost {
    /// `Err`: why nothing ran (HAProxy not installed).
    pub samples: Result<Vec<Sample>, String>,
    tests: Vec<Test>,
}

/// Where HAProxy is, if installed (Debian puts it in /usr/sbin).
fn haproxy() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("haproxy"))
        .find(|p| p.is_file())
}

/// Runs both paths on the CPU test and the connect test.
pub fn run(settings: &Settings) -> Cost {
    let connect =
        Test { pattern: Pattern::Connect, connections: 50, size: 64 };
    let tests: Vec<Test> = [settings.cpu_test, connect]
        .into_iter()
        .filter(|t| settings.only.map_or(true, |p| p == t.pattern))
        .collect();
    let Some(haproxy) = haproxy() else {
        let why = "haproxy not installed (Debian package haproxy)".into();
        return Cost { samples: Err(why), tests };
    };
    let mut samples = Vec::new();
    for round in 1..=settings.rounds + settings.cpu_rounds {
        let order = match round % 2 {
            1 => [OFF, ON],
            _ => [ON, OFF],
        };
        for &test in &tests {
            for spec in order {
                let sample = measure(settings, &haproxy, &spec, test, round);
                eprintln!(
                    "bench: haproxy round {round} {} {}: {}",
                    test.label(),
                    spec.name,
                    sample.brief()
                );
                samples.push(sample);
            }
        }
    }
    Cost { samples: Ok(samples), tests }
}

/// One run of `test` through HAProxy to the server of `spec`.
fn measure(
    settings: &Settings,
    haproxy: &Path,
    spec: &Spec,
    test: Test,
    round: u32,
) -> Sample {
    let skipped = |why: String| Sample::skipped(round, spec.name, test, why);
    let header = spec.name == ON.name;
    let started =
        server::command(spec, settings.cpus.0).and_then(|mut cmd| {
            if header {
                cmd.arg("--proxy-protocol");
            }
            Running::start_with(cmd, !header)
        });
    let server = match started {
        Ok(server) => server,
        Err(why) => return skipped(why),
    };
    let balancer =
        Balancer::start(haproxy, settings.cpus.1, server.addr, header);
    let balancer = match balancer {
        Ok(b) => b,
        Err(why) => return skipped(why),
    };
    let drive = Drive {
        addr: balancer.front,
        test,
        duration: settings.duration,
        messages: None,
        cpus: settings.cpus.1.map(|c| c.to_string()),
        threads: 1,
        on_held: None,
    };
    // HAProxy stops before the server, so no client sees a reset.
    crate::load::measure(server, spec.name, round, drive, || drop(balancer))
}

/// HAProxy in front of one server, on the load generator's CPU.
struct Balancer {
    child: Child,
    front: SocketAddr,
    _dir: PathBuf,
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

impl Balancer {
    fn start(
        haproxy: &Path,
        cpu: Option<u32>,
        backend: SocketAddr,
        header: bool,
    ) -> Result<Balancer, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("find a free port: {e}"))?
            .port();
        let front = SocketAddr::from(([127, 0, 0, 1], port));
        let option = if header { " send-proxy-v2" } else { "" };
        // One thread, as the server has one; the same settings as
        // contrib/haproxy/readyloop.cfg otherwise.
        let cfg = format!(
            "global\n    maxconn 4000\n    nbthread 1\n\
             defaults\n    mode tcp\n    timeout connect 5s\n    \
             timeout client 1m\n    timeout server 1m\n\
             frontend readyloop\n    bind {front}\n    \
             default_backend readyloop\n\
             backend readyloop\n    server a {backend}{option}\n"
        );
        let dir = std::env::temp_dir()
            .join(format!("readyloop-bench-haproxy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{e}"))?;
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, cfg).map_err(|e| format!("{e}"))?;
        let child = server::pinned(cpu, &haproxy.to_string_lossy())
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("start haproxy: {e}"))?;
        let balancer = Balancer { child, front, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(front).is_err() {
            if Instant::now() > deadline {
                return Err("haproxy did not listen within 5 s".into());
            }
            thread::sleep(Duration::from_millis(10));
        }
        Ok(balancer)
    }
}

impl Cost {
    fn median(
        &self,
        spec: &Spec,
        test: Test,
        f: fn(&Sample) -> Option<f64>,
    ) -> Option<f64> {
        let samples = self.samples.as_ref().ok()?;
        let values = samples
            .iter()
            .filter(|s| s.server == spec.name && s.test == test)
            .filter_map(f)
            .collect();
        stat(values).map(|s| s.median)
    }

    /// Median over rounds of with / without in the same round.
    fn ratio(&self, test: Test, f: Figure) -> Option<f64> {
        let samples = self.samples.as_ref().ok()?;
        let of = |name: &str, round: u32| {
            samples
                .iter()
                .find(|s| {
                    s.server == name && s.test == test && s.round == round
                })
                .and_then(f)
        };
        let ratios = samples
            .iter()
            .filter(|s| s.server == ON.name && s.test == test)
            .filter_map(|s| {
                Some(of(ON.name, s.round)? / of(OFF.name, s.round)?)
            })
            .collect();
        stat(ratios).map(|s| s.median)
    }

    /// Why a path has no figure, if every run of it was skipped.
    fn skipped(&self, spec: &Spec) -> Option<String> {
        let samples = self.samples.as_ref().ok()?;
        let mine: Vec<&Sample> =
            samples.iter().filter(|s| s.server == spec.name).collect();
        let all = !mine.is_empty() && mine.iter().all(|s| s.skipped.is_some());
        all.then(|| mine[0].skipped.clone().unwrap_or_default())
    }

    /// The table, for stdout and the report.
    pub fn table(&self) -> String {
        if let Err(why) = &self.samples {
            return format!("HAProxy and the PROXY protocol: {why}\n");
        }
        let show = |v: Option<f64>, digits: usize| {
            v.map_or("-".into(), |v| format!("{v:.digits$}"))
        };
        let mut out = String::from(
            "| test | figure | without header | with PROXY v2 | with/without |\n\
             |---|---|---|---|---|\n",
        );
        let cpu: Figure = |s| s.cpu_us_per_msg;
        let rate: Figure = |s| Some(s.rate);
        for &test in &self.tests {
            let per = match test.pattern {
                Pattern::Connect => "connection",
                _ => "message",
            };
            let figures: [(String, Figure, usize); 2] = [
                (format!("server CPU µs per {per}"), cpu, 2),
                (format!("{per}s/s"), rate, 0),
            ];
            for (name, get, digits) in figures {
                let _ = writeln!(
                    out,
                    "| {} | {name} | {} | {} | {}x |",
                    test.label(),
                    show(self.median(&OFF, test, get), digits),
                    show(self.median(&ON, test, get), digits),
                    show(self.ratio(test, get), 2),
                );
            }
        }
        for spec in [OFF, ON] {
            if let Some(why) = self.skipped(&spec) {
                let _ = writeln!(out, "\n{}: not measured: {why}", spec.name);
            }
        }
        out
    }

    /// The report's section.
    pub fn markdown(&self) -> String {
        format!(
            "## Behind HAProxy: the PROXY protocol's cost\n\nThe mio model \
             behind a local HAProxy (`mode tcp`, one thread, one backend) \
             with `--proxy-protocol` and `send-proxy-v2`, against the same \
             path without the header, alternating round by round; \
             with/without is the median over rounds of the ratio in the \
             same round. HAProxy runs on the load generator's CPU.\n\n{}\n",
            self.table()
        )
    }
}

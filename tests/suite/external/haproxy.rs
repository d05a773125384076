//! readyloop behind a real HAProxy (Debian package `haproxy`), run from
//! `contrib/haproxy/readyloop.cfg` itself with its addresses, ports and
//! check intervals substituted for loopback: two backends on 127.0.0.2
//! and 127.0.0.3, HAProxy on 127.0.0.1, clients from 127.0.0.10-19.
//!
//! The rolling restart is the deployment's promise: with `--drain`, a
//! backend told to stop answers 503 to the health check while it still
//! serves, HAProxy takes it out, and no client ever reaches a backend
//! that has stopped listening (HAProxy's own retry and redispatch
//! counters stay at zero, so it did not hide a refused connection).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use readyloop::Model;

use crate::support::load_json::LoadReport;
use crate::support::scrape::metrics_addr;
use crate::support::server::{binary, ServerProcess, Signal};
use crate::support::*;

use super::{tool, Scratch};

/// The deployment file under test.
const CONTRIB: &str = include_str!("../../../contrib/haproxy/readyloop.cfg");

/// What HAProxy sends a backend before the client's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Header {
    /// Nothing: plain TCP, the backend without `--proxy-protocol`.
    None,
    /// `send-proxy`: PROXY v1 (text).
    V1,
    /// `send-proxy-v2`: PROXY v2 (binary), as the contrib file has it.
    V2,
}

impl Header {
    /// The server option in HAProxy's configuration.
    fn option(self) -> &'static str {
        match self {
            Header::None => "",
            Header::V1 => "send-proxy",
            Header::V2 => "send-proxy-v2",
        }
    }

    /// The backend's flags for it.
    fn flags(self) -> &'static [&'static str] {
        match self {
            Header::None => &[],
            Header::V1 | Header::V2 => &["--proxy-protocol"],
        }
    }
}

/// One readyloop backend: its client and metrics addresses stay the
/// same across restarts.
struct Backend {
    server: Option<ServerProcess>,
    addr: SocketAddr,
    metrics: SocketAddr,
    args: Vec<String>,
}

impl Backend {
    /// `readyloop serve --mode echo` on `ip` (free ports) with `args`.
    fn start(ip: &str, args: &[&str]) -> Backend {
        let mut backend = Backend {
            server: None,
            addr: SocketAddr::new(ip.parse().expect("an IP"), 0),
            metrics: SocketAddr::new(ip.parse().expect("an IP"), 0),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        backend.restart();
        backend
    }

    /// Starts the backend again on the same addresses.
    fn restart(&mut self) {
        let metrics = self.metrics.to_string();
        let mut cmd = ServerProcess::command_at(
            &self.addr.to_string(),
            &["--mode", "echo", "--metrics-addr", &metrics],
        );
        cmd.args(&self.args);
        let mut server = ServerProcess::start_command(cmd);
        self.addr = server.addr;
        self.metrics = metrics_addr(&mut server);
        self.server = Some(server);
    }

    fn server(&mut self) -> &mut ServerProcess {
        self.server.as_mut().expect("the backend runs")
    }
}

/// HAProxy running the contrib configuration.
struct Balancer {
    child: Child,
    front: SocketAddr,
    socket: PathBuf,
    _dir: Scratch,
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free on `ip` just now.
fn free_port(ip: &str) -> u16 {
    let probe = TcpListener::bind((ip, 0)).expect("bind a probe");
    probe.local_addr().expect("probe address").port()
}

/// Replaces `from` with `to` in `text`, which must hold it exactly once:
/// a contrib file that drifted fails here, naming what is missing.
fn substitute(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "{from:?} in {text}");
    text.replacen(from, to, 1)
}

impl Balancer {
    /// HAProxy in front of `a` and `b` (servers `a` and `b`), sending
    /// `header`, once it sees both UP.
    fn start(a: &Backend, b: &Backend, header: Header) -> Balancer {
        let haproxy = tool("haproxy", "haproxy");
        // One directory per balancer: tests run side by side.
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = Scratch::new(&format!("haproxy-{n}"));
        let front = SocketAddr::from(([127, 0, 0, 1], free_port("127.0.0.1")));
        let socket = dir.join("stats.sock");
        let mut cfg = CONTRIB.to_string();
        let subs = [
            ("10.0.0.1:7000", front.to_string()),
            ("10.0.0.2:7000 port 9100", server_line(a)),
            ("10.0.0.3:7000 port 9100", server_line(b)),
            // Quick checks, so a test waits a fraction of a second.
            ("inter 500ms fall 1 rise 2", "inter 100ms fall 1 rise 1".into()),
            ("/run/haproxy/readyloop.sock", socket.display().to_string()),
            (
                "127.0.0.1:8404",
                format!("127.0.0.1:{}", free_port("127.0.0.1")),
            ),
        ];
        for (from, to) in subs {
            cfg = substitute(&cfg, from, &to);
        }
        cfg = substitute(
            &cfg,
            " send-proxy-v2\n",
            &format!(" {}\n", header.option()),
        );
        let path = dir.join("readyloop.cfg");
        std::fs::write(&path, &cfg).expect("write the configuration");
        let check = Command::new(&haproxy)
            .arg("-c")
            .arg("-f")
            .arg(&path)
            .output()
            .expect("run haproxy -c");
        assert!(
            check.status.success(),
            "haproxy -c: {}{}\n{cfg}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let child = Command::new(&haproxy)
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy");
        let balancer = Balancer { child, front, socket, _dir: dir };
        balancer.wait_status("a", "UP");
        balancer.wait_status("b", "UP");
        balancer
    }

    /// `show stat` on the stats socket: one map per proxy or server
    /// line, keyed by the CSV header's field names.
    fn stats(&self) -> Option<Vec<HashMap<String, String>>> {
        let mut stream = UnixStream::connect(&self.socket).ok()?;
        stream.write_all(b"show stat\n").ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        let mut lines = text.lines();
        let header = lines.next()?.strip_prefix("# ")?;
        let names: Vec<&str> = header.split(',').collect();
        Some(
            lines
                .filter(|l| !l.is_empty())
                .map(|line| {
                    names
                        .iter()
                        .zip(line.split(','))
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect()
                })
                .collect(),
        )
    }

    /// The `show stat` line of server `name` of backend `readyloop`.
    fn server(&self, name: &str) -> Option<HashMap<String, String>> {
        self.stats()?.into_iter().find(|row| {
            row.get("pxname").map(String::as_str) == Some("readyloop")
                && row.get("svname").map(String::as_str) == Some(name)
        })
    }

    /// A counter of server `name` (0 if HAProxy leaves it empty).
    fn counter(&self, name: &str, field: &str) -> u64 {
        let row = self.server(name).expect("the server's stats");
        row.get(field).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    /// Waits until HAProxy reports server `name` with `status`.
    fn wait_status(&self, name: &str, status: &str) {
        eventually(&format!("HAProxy sees server {name} {status}"), || {
            self.server(name)
                .and_then(|row| row.get("status").cloned())
                .is_some_and(|s| s == status)
        });
    }
}

/// The contrib file's `ADDR port METRICS_PORT` for `backend`.
fn server_line(backend: &Backend) -> String {
    format!("{} port {}", backend.addr, backend.metrics.port())
}

/// 127.0.0.10 to 127.0.0.19, the clients' source addresses.
fn client_ips() -> Vec<IpAddr> {
    (10..20).map(|n| IpAddr::from([127, 0, 0, n])).collect()
}

/// A client connected to `front` from source address `ip`.
fn connect_from(ip: IpAddr, front: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        None,
    )
    .expect("a socket");
    socket.bind(&SocketAddr::new(ip, 0).into()).expect("bind the source");
    socket.connect(&front.into()).expect("connect to HAProxy");
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(PATIENCE)).expect("read timeout");
    stream.set_write_timeout(Some(PATIENCE)).expect("write timeout");
    stream
}

/// Clients from ten source addresses are echoed exactly through
/// HAProxy with `header`, and the backends log each client's own
/// address and port, never HAProxy's.
fn real_addresses_through(model: Model, header: Header) {
    let args = [&["--model", model.name()], header.flags()].concat();
    let mut a = Backend::start("127.0.0.2", &args);
    let mut b = Backend::start("127.0.0.3", &args);
    let balancer = Balancer::start(&a, &b, header);
    let mut clients = Vec::new();
    for (n, ip) in client_ips().into_iter().enumerate() {
        let mut stream = connect_from(ip, balancer.front);
        let data = pattern(n as u64, 10_000 + n);
        assert_eq!(echo_round(&mut stream, &data), data, "echo from {ip}");
        clients.push(stream.local_addr().expect("local address"));
        close_and_wait(stream);
    }
    for client in &clients {
        let line = format!("{client} accepted");
        eventually(&format!("a backend logs {line:?}"), || {
            a.server().count(&line) + b.server().count(&line) == 1
        });
    }
    let (_, sa) = a.server.take().expect("a").terminate();
    let (_, sb) = b.server.take().expect("b").terminate();
    assert_eq!(sa.accepted + sb.accepted, 10, "{sa:?} {sb:?}");
    assert_eq!(sa.closed_eof + sb.closed_eof, 10, "{sa:?} {sb:?}");
    drop(balancer);
}

per_model!(
    send_proxy_v2_echoes_and_logs_the_real_clients,
    send_proxy_v1_echoes_and_logs_the_real_clients,
);

/// `send-proxy-v2`, as the contrib file has it.
fn send_proxy_v2_echoes_and_logs_the_real_clients(model: Model) {
    real_addresses_through(model, Header::V2);
}

/// `send-proxy` (v1, text).
fn send_proxy_v1_echoes_and_logs_the_real_clients(model: Model) {
    real_addresses_through(model, Header::V1);
}

/// `--max-connections-per-ip 1` behind HAProxy counts the real client:
/// a client from 127.0.0.10 with a connection open on each backend is
/// refused a third, while one from 127.0.0.11 is served, though every
/// connection comes from HAProxy's own address.
#[test]
fn the_per_address_limit_counts_real_clients() {
    let args = ["--proxy-protocol", "--max-connections-per-ip", "1"];
    let mut a = Backend::start("127.0.0.2", &args);
    let mut b = Backend::start("127.0.0.3", &args);
    let balancer = Balancer::start(&a, &b, Header::V2);
    let [ten, eleven] = [client_ips()[0], client_ips()[1]];
    let mut held = Vec::new();
    // leastconn: the first two go one to each backend.
    for round in 0..2u8 {
        let mut stream = connect_from(ten, balancer.front);
        assert_eq!(echo_round(&mut stream, &[round; 100]), [round; 100]);
        held.push(stream);
    }
    let mut third = connect_from(ten, balancer.front);
    let _ = third.write_all(b"refused");
    assert!(closed_by_server(&mut third), "a third from {ten} is refused");
    let mut other = connect_from(eleven, balancer.front);
    assert_eq!(echo_round(&mut other, b"served"), b"served");
    close_and_wait(other);
    for stream in held {
        close_and_wait(stream);
    }
    let (_, sa) = a.server.take().expect("a").terminate();
    let (_, sb) = b.server.take().expect("b").terminate();
    assert_eq!(sa.rejected + sb.rejected, 1, "{sa:?} {sb:?}");
    // A refused connection counts as rejected, not accepted.
    assert_eq!(sa.accepted + sb.accepted, 3, "{sa:?} {sb:?}");
    drop(balancer);
}

/// Runs `readyloop load --pattern connect` through HAProxy while each
/// backend in turn gets SIGTERM with `--drain 2`, exits, and is started
/// again: the load generator sees no error and no mismatch, HAProxy's
/// stats show each backend went DOWN and came back UP, and HAProxy never
/// had to retry or redispatch a connection.
fn rolling_restart(header: Header) {
    let _heavy = heavy();
    let args = [header.flags(), &["--drain", "2"]].concat();
    let mut backends = [
        Backend::start("127.0.0.2", &args),
        Backend::start("127.0.0.3", &args),
    ];
    let balancer = Balancer::start(&backends[0], &backends[1], header);
    let sources: Vec<String> =
        client_ips().iter().map(ToString::to_string).collect();
    let mut load = Command::new(binary())
        .args(["load", "--addr", &balancer.front.to_string()])
        .args(["--pattern", "connect", "-c", "8", "--size", "512"])
        .args(["--duration", "20", "--json", "-q"])
        .args(["--source", &sources.join(",")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the load generator");
    for (backend, name) in backends.iter_mut().zip(["a", "b"]) {
        // Both backends serve some of the load before this one stops.
        eventually(&format!("server {name} serves the load"), || {
            balancer.counter(name, "stot") > 100
        });
        let downs = balancer.counter(name, "chkdown");
        let server = backend.server();
        server.signal(Signal::TERM);
        server.wait_for_line("draining for 2 s");
        balancer.wait_status(name, "DOWN");
        let code = backend.server.take().expect("running").wait_exit();
        assert_eq!(code, 0, "backend {name} exits cleanly");
        backend.restart();
        balancer.wait_status(name, "UP");
        let went_down = balancer.counter(name, "chkdown") - downs;
        assert_eq!(went_down, 1, "{name} went DOWN once");
    }
    assert!(
        load.try_wait().expect("wait").is_none(),
        "both restarts ran while the load did (raise --duration?)"
    );
    let out = load.wait_with_output().expect("the load generator");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = LoadReport::parse(&stdout).expect("its JSON report");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(report.errors, 0, "{report:?}");
    assert_eq!(report.connect_errors, 0, "{report:?}");
    assert_eq!(report.mismatches, 0, "{report:?}");
    assert!(report.messages > 1000, "{report:?}");
    for name in ["a", "b"] {
        for counter in ["wretr", "wredis", "econ", "eresp"] {
            let n = balancer.counter(name, counter);
            assert_eq!(n, 0, "HAProxy's {counter} of {name}");
        }
    }
    for backend in &mut backends {
        let (code, _) = backend.server.take().expect("running").terminate();
        assert_eq!(code, 0);
    }
}

/// The rolling restart without the PROXY protocol: the drain alone.
#[test]
fn a_rolling_restart_with_drain_loses_no_connection() {
    rolling_restart(Header::None);
}

/// The rolling restart as the contrib file deploys it: `send-proxy-v2`.
#[test]
fn a_rolling_restart_through_send_proxy_v2_loses_no_connection() {
    rolling_restart(Header::V2);
}

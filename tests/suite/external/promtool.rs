//! `promtool check metrics` (Debian package `prometheus`) accepts what
//! every model serves on `--metrics-addr`.

use std::io::Write;
use std::process::{Command, Stdio};

use readyloop::Model;

use super::tool;
use crate::support::scrape::{scrape, serve_metrics};
use crate::support::*;

per_model!(promtool_accepts_the_metrics);

/// A scrape after some traffic passes Prometheus's own linter: the
/// format parses, every family has its help and type, counters end in
/// `_total`.
fn promtool_accepts_the_metrics(model: Model) {
    let (server, metrics) = serve_metrics(model, &["--mode", "echo"]);
    echo_and_close(server.addr, &pattern(1, 2000));
    let text = scrape(metrics).text;
    let mut check = Command::new(tool("promtool", "prometheus"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    let mut stdin = check.stdin.take().expect("stdin");
    stdin.write_all(text.as_bytes()).expect("feed promtool");
    drop(stdin);
    let out = check.wait_with_output().expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool: {said}\nof:\n{text}");
    // It exits 0 on lint warnings too, and prints them.
    assert!(said.trim().is_empty(), "promtool: {said}\nof:\n{text}");
    stop(server);
}

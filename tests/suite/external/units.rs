//! The units in `contrib/systemd` as systemd's own analyzer judges them:
//! `systemd-analyze verify` accepts both, and `systemd-analyze security
//! --offline=yes` rates the service's exposure at most 2.0.
//!
//! `verify` checks that ExecStart='s program exists, so the units are
//! checked as installed: under a scratch root (`--root=`) holding the
//! host's system units (their dependencies, sysinit.target and the
//! like), the two units unchanged in `/etc/systemd/system`, and the
//! binary cargo built at the path their ExecStart= names. Nothing on the
//! host is installed or changed.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{tool, Scratch};
use crate::support::server::binary;

/// Where the units live in the repository.
pub const CONTRIB: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/systemd");

/// The highest exposure `systemd-analyze security` may give the service.
const MAX_EXPOSURE: f64 = 2.0;

/// The text of the unit `name` from `contrib/systemd`.
pub fn unit(name: &str) -> String {
    fs::read_to_string(Path::new(CONTRIB).join(name))
        .unwrap_or_else(|e| panic!("read contrib/systemd/{name}: {e}"))
}

/// Every value of `key` in the unit file `text`, in order, with comments
/// left out and continued lines (ending in `\`) joined by a space, as
/// systemd reads them.
pub fn settings(text: &str, key: &str) -> Vec<String> {
    let mut values = Vec::new();
    let mut line = String::new();
    for raw in text.lines() {
        let raw = raw.trim();
        if line.is_empty() && (raw.starts_with('#') || raw.starts_with(';')) {
            continue;
        }
        match raw.strip_suffix('\\') {
            Some(part) => {
                line.push_str(part);
                line.push(' ');
            }
            None => {
                line.push_str(raw);
                if let Some((k, v)) = line.split_once('=') {
                    if k.trim() == key {
                        values.push(v.trim().to_string());
                    }
                }
                line.clear();
            }
        }
    }
    values
}

/// The service's ExecStart= as program and arguments (the unit quotes
/// nothing, so whitespace splits it).
pub fn exec_start(service: &str) -> Vec<String> {
    let lines = settings(service, "ExecStart");
    assert_eq!(lines.len(), 1, "one ExecStart= line: {lines:?}");
    assert!(!lines[0].contains(['"', '\'']), "quoting: {}", lines[0]);
    lines[0].split_whitespace().map(str::to_string).collect()
}

/// `systemd-analyze`, or a failure naming its package.
fn analyze() -> Command {
    let mut cmd = Command::new(tool("systemd-analyze", "systemd"));
    cmd.env("SYSTEMD_COLORS", "0").env("SYSTEMD_PAGER", "");
    cmd
}

/// The host's system units: the targets every unit depends on.
pub(super) fn host_units() -> PathBuf {
    ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("sysinit.target").is_file())
        .unwrap_or_else(|| {
            panic!("no sysinit.target: install the Debian package systemd")
        })
}

/// Copies the tree `from` to `to`, symbolic links as links. Files named
/// `readyloop.*` are left out: those of an installed package (which the
/// suite's `package` test installs and removes meanwhile) are not the
/// units under test.
pub(super) fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create directory");
    for entry in fs::read_dir(from).expect("read directory") {
        let entry = entry.expect("directory entry");
        if entry.file_name().to_string_lossy().starts_with("readyloop.") {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().expect("file type");
        if kind.is_symlink() {
            symlink(fs::read_link(&src).expect("read link"), &dst)
                .expect("copy link");
        } else if kind.is_dir() {
            copy_tree(&src, &dst);
        } else {
            fs::copy(&src, &dst).expect("copy file");
        }
    }
}

/// A root for `--root=`: the host's system units, `units` (name, text)
/// in `/etc/systemd/system`, and, when `with_binary`, the built binary
/// at the path the service's ExecStart= names.
fn root(name: &str, units: &[(&str, String)], with_binary: bool) -> Scratch {
    let root = Scratch::new(name);
    copy_tree(&host_units(), &root.join("usr/lib/systemd/system"));
    let etc = root.join("etc/systemd/system");
    fs::create_dir_all(&etc).expect("create /etc/systemd/system");
    for (unit, text) in units {
        fs::write(etc.join(unit), text).expect("write unit");
    }
    if with_binary {
        let service = unit("readyloop.service");
        let program = &exec_start(&service)[0];
        let at = root.join(program.trim_start_matches('/'));
        fs::create_dir_all(at.parent().expect("a directory"))
            .expect("create the binary's directory");
        fs::copy(binary(), &at).expect("install the binary");
    }
    root
}

/// The two units as shipped.
fn shipped() -> Vec<(&'static str, String)> {
    ["readyloop.socket", "readyloop.service"]
        .into_iter()
        .map(|name| (name, unit(name)))
        .collect()
}

/// `systemd-analyze verify` of `units` under `root`: Ok when it exits 0
/// and says nothing (it exits 0 after warnings such as an unknown key,
/// so any output is a finding).
pub(super) fn verify(root: &Scratch, units: &[&str]) -> Result<(), String> {
    let out = analyze()
        .arg(format!("--root={}", root.path.display()))
        .arg("verify")
        .args(units)
        .output()
        .expect("run systemd-analyze verify");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("{}: {}", out.status, said.trim()))
    }
}

/// `systemd-analyze security --offline=yes` of `service` under `root`:
/// the overall exposure and the settings it holds against the unit.
pub(super) fn exposure(root: &Scratch, service: &str) -> (f64, Vec<String>) {
    let out = analyze()
        .arg(format!("--root={}", root.path.display()))
        .args(["security", "--offline=yes", "--no-pager", service])
        .output()
        .expect("run systemd-analyze security");
    let text = String::from_utf8_lossy(&out.stdout);
    let marker = format!("Overall exposure level for {service}:");
    let score = text
        .lines()
        .find_map(|l| l.split_once(&marker))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no exposure level ({}):\n{text}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let against =
        text.lines().filter(|l| l.starts_with('✗')).map(str::to_string);
    (score, against.collect())
}

/// `systemd-analyze verify` accepts both units as installed, without a
/// warning.
#[test]
fn both_units_pass_systemd_analyze_verify() {
    let units = shipped();
    let root = root("verify", &units, true);
    if let Err(found) =
        verify(&root, &["readyloop.socket", "readyloop.service"])
    {
        panic!("systemd-analyze verify: {found}");
    }
}

/// The verify check can fail: a missing binary and a misspelt setting
/// are both findings.
#[test]
fn verify_finds_a_missing_binary_and_an_unknown_key() {
    let units = shipped();
    let bare = root("verify-no-binary", &units, false);
    let found = verify(&bare, &["readyloop.service"])
        .expect_err("verify passed without the binary");
    assert!(found.contains("is not executable"), "{found}");

    let typo = unit("readyloop.service")
        .replace("ProtectSystem=strict", "ProtectSytem=strict");
    let typo = root("verify-typo", &[("readyloop.service", typo)], true);
    let found = verify(&typo, &["readyloop.service"])
        .expect_err("verify passed with a misspelt key");
    assert!(found.contains("Unknown key"), "{found}");
}

/// `systemd-analyze security --offline=yes` rates the service's
/// exposure at most 2.0 (printed, with what it holds against it, for
/// docs/service.md).
#[test]
fn the_service_exposure_is_at_most_2_0() {
    let units = shipped();
    let root = root("security", &units, true);
    let (score, against) = exposure(&root, "readyloop.service");
    eprintln!("exposure {score}; held against it:");
    for line in &against {
        eprintln!("  {line}");
    }
    assert!(score <= MAX_EXPOSURE, "exposure {score} > {MAX_EXPOSURE}");
}

/// The score read is the unit's own: the same command without the
/// sandbox rates far above 2.0.
#[test]
fn an_unsandboxed_service_is_rated_exposed() {
    let bare = format!(
        "[Unit]\nDescription=readyloop, no sandbox\n\n[Service]\n\
         ExecStart={}\n",
        exec_start(&unit("readyloop.service")).join(" ")
    );
    let root = root("security-bare", &[("readyloop.service", bare)], true);
    let (score, _) = exposure(&root, "readyloop.service");
    assert!(score > MAX_EXPOSURE * 2.0, "bare service rated {score}");
}

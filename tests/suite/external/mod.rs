//! Checks that need a tool from outside the Rust toolchain, compiled
//! only with the cargo feature `external`:
//! `cargo test --release --features external external::`. A missing
//! tool fails its test with the Debian package to install; none is
//! skipped.
//!
//! | module | what it pins down |
//! |---|---|
//! | [`activation`] | socket activation with `systemd-socket-activate` |
//! | [`units`] | `contrib/systemd`: `systemd-analyze verify` and `security` |
//! | [`sandbox`] | the service's command line stays inside its sandbox |
//! | [`promtool`] | `promtool check metrics` accepts every model's scrape |
//! | [`package`] | the Debian package: its files, man pages, bash completion, units; `dpkg -i` and `dpkg -r` for real |
//! | [`haproxy`] | `contrib/haproxy` in front of two backends: real client addresses, the per-address limit, a rolling restart with `--drain` |
//! | [`recipes`] | docs/service.md's recipes run as written: `systemd-analyze verify`, `systemd-socket-activate`, notify messages through `socat` |

use std::fs;
use std::path::{Path, PathBuf};

mod activation;
mod haproxy;
mod package;
mod promtool;
mod recipes;
mod sandbox;
mod units;

/// The path of `program` on `PATH`; panics naming the Debian `package`
/// that provides it when it is not there.
pub fn tool(program: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{program} not found: install the Debian package {package}")
        })
}

/// A directory of this test's own under the system's temporary
/// directory, removed when dropped.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    /// A fresh, empty directory named after `name` and this process.
    pub fn new(name: &str) -> Scratch {
        let path = std::env::temp_dir()
            .join(format!("readyloop-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create a scratch directory");
        Scratch { path }
    }

    /// `rel` under the scratch directory.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

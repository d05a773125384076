//! The peers, each a package of its own under `benches/peers/`: the
//! tokio peers (`benches/peers/tokio`: the echo server people write with
//! tokio, on its current_thread or multi_thread runtime) and the monoio
//! peer (`benches/peers/monoio`: the same with monoio, the io_uring
//! runtime). A peer's runtime as a dev-dependency would compile for
//! `cargo test` too, so the benchmark builds each peer on first use,
//! once a run, with `cargo build --release` into `peers/` of its target
//! directory (`CARGO_TARGET_DIR` honoured), and a build that fails makes
//! that peer unavailable with one line saying why.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The tokio peers' binary, built on first call; or why there is none.
/// It runs as `readyloop-tokio-peer FLAVOR ADDR [THREADS]`.
pub fn tokio() -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT.get_or_init(|| build("tokio")).clone()
}

/// The monoio peer's binary, built on first call; or why there is none.
/// It runs as `readyloop-monoio-peer ADDR`.
pub fn monoio() -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT.get_or_init(|| build("monoio")).clone()
}

/// Builds `benches/peers/NAME` (its binary `readyloop-NAME-peer`).
fn build(name: &str) -> Result<PathBuf, String> {
    let manifest_rel = format!("benches/peers/{name}/Cargo.toml");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join(&manifest_rel);
    let target = crate::target_dir().join("peers");
    // `cargo bench` names itself in CARGO for the programs it runs.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("bench: building the {name} peer ({manifest_rel})");
    let failed = |why: String| {
        let why = format!(
            "cannot build the {name} peer (cargo build --release \
             --manifest-path {manifest_rel}): {why}"
        );
        eprintln!("bench: {why}");
        why
    };
    let built = Command::new(cargo)
        .args(["build", "--release", "--locked", "--quiet"])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .map_err(|e| failed(format!("cannot run cargo: {e}")))?;
    if !built.status.success() {
        let said = String::from_utf8_lossy(&built.stderr);
        let first = said.lines().find(|l| l.starts_with("error"));
        return Err(failed(
            first.unwrap_or("cargo failed without an error line").into(),
        ));
    }
    Ok(target.join("release").join(format!("readyloop-{name}-peer")))
}

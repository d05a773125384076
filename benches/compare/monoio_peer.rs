//! The monoio peer (`benches/peers/monoio`): the echo server people
//! write with monoio, the io_uring runtime. It is a package of its own
//! because a dev-dependency would compile for `cargo test` too, so the
//! benchmark builds it on first use, once a run, with `cargo build
//! --release` into `peers/` of its target directory (`CARGO_TARGET_DIR`
//! honoured), and a build that fails makes the peer unavailable with
//! one line saying why.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The package, from the repository root.
const MANIFEST: &str = "benches/peers/monoio/Cargo.toml";

/// The peer's binary, built on first call; or why there is none.
pub fn binary() -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT.get_or_init(build).clone()
}

fn build() -> Result<PathBuf, String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join(MANIFEST);
    let target = crate::target_dir().join("peers");
    // `cargo bench` names itself in CARGO for the programs it runs.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("bench: building the monoio peer ({MANIFEST})");
    let failed = |why: String| {
        let why = format!(
            "cannot build the monoio peer (cargo build --release \
             --manifest-path {MANIFEST}): {why}"
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
    Ok(target.join("release").join("readyloop-monoio-peer"))
}

//! Tests that need a tool from outside the Rust toolchain, compiled only
//! with `--features external` (`cargo test --release --features external
//! external::`). A missing tool fails its test with the package to
//! install; none is skipped.

mod promtool;

use std::process::Command;

/// `program` with `args`, or a failure naming the Debian package that
/// provides it.
pub fn tool(program: &str, package: &str) -> Command {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{program} not found: install the Debian package {package}"
    );
    Command::new(program)
}

//! The second suite: tests against real outside components, built only
//! with `--features external` (`cargo test --release --features external
//! external::`; `.ci/run` installs the packages first). A missing tool
//! fails its test with the package to install, never a silent skip.

mod activation;

use std::process::Command;

/// `tool`, or a failure naming the Debian package that has it.
pub fn require(tool: &str, package: &str) -> Command {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} not found: install the Debian package {package} \
         (apt-get install {package}; .ci/run does)"
    );
    Command::new(tool)
}

//! The load generator (`readyloop load`). Placeholder until its issue.

use std::process::ExitCode;

/// Flags of `readyloop load`.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {}

/// Runs the load generator.
pub fn main(_args: LoadArgs) -> ExitCode {
    eprintln!("error: readyloop load is not built yet");
    ExitCode::from(1)
}

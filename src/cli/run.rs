//! Running `readyloop serve`: logging set up, the descriptor limit
//! raised, the server run, and its outcome as an exit code.

use std::process::ExitCode;

use log::LevelFilter;
use simple_logger::SimpleLogger;

use crate::config::{Config, Model};
use crate::journal::{self, STATUS};
use crate::log_prefix;

use super::ServeArgs;

/// Runs `readyloop serve`: sets up logging, raises the descriptor limit,
/// runs the server until it is stopped, and maps the outcome to an exit
/// code.
pub fn serve(args: &ServeArgs) -> ExitCode {
    // Logs go to stderr; stdout stays free for machine-readable output.
    let logger = SimpleLogger::new()
        .with_level(args.log_level.filter())
        .with_module_level(STATUS, LevelFilter::Info)
        // mio's own trace lines (registrations) name no client; the
        // loop's say what they mean.
        .with_module_level(
            "mio",
            args.log_level.filter().min(LevelFilter::Debug),
        );
    if let Err(e) = journal::init(logger, args.log_timestamps) {
        eprintln!("error: cannot set up logging: {e}");
        return ExitCode::from(1);
    }
    let mut config = match args.config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{}", log_prefix::error_line(&e));
            return ExitCode::from(2);
        }
    };
    // Flags that have no effect here but do no harm: said once, at start.
    for warning in args.warnings(&config) {
        log::warn!("{warning}");
    }
    config.handle_signals = true;
    // Nothing else runs yet: taking systemd's sockets (and unsetting its
    // variables) is sound here.
    config.systemd = true;
    // Each connection is a descriptor: allow as many as the hard limit
    // does. When they still run out, accept pauses and says so.
    match crate::rlimit::raise_to_hard() {
        Ok(limit) => {
            if let Some(warning) = descriptor_shortfall(&config, limit) {
                log::warn!("{warning}");
            }
        }
        Err(e) => log::warn!("cannot raise the descriptor limit: {e}"),
    }
    let server = match crate::bind(config) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("{}", log_prefix::error_line(&e));
            return ExitCode::from(1);
        }
    };
    if server.activated() {
        for warning in args.activation_warnings() {
            log::warn!("{warning}");
        }
    }
    match server.run() {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", log_prefix::error_line(&e));
            ExitCode::from(1)
        }
    }
}

/// Descriptors a server process needs besides its connections: stdio,
/// the listener, the poll, the waker, the signal pipes, and room to spare.
const SPARE_FDS: u64 = 32;

/// A one-line warning when `--max-connections` needs more descriptors
/// than RLIMIT_NOFILE (`limit`, already raised to the hard limit) allows:
/// the connections past it would wait unserved in the backlog. The limit
/// stays as asked (an operator may raise the descriptor limit of a
/// running process); the line says what to change. The process model's
/// parent keeps no client socket open and each child holds one, and the
/// iterative model holds one connection, so only the mio, uring and
/// thread models can run short.
pub(crate) fn descriptor_shortfall(
    config: &Config,
    limit: u64,
) -> Option<String> {
    let connections = match config.model {
        Model::Mio | Model::Thread | Model::Uring => {
            config.max_connections as u64
        }
        Model::Iterative | Model::Process => 1,
    };
    let need = connections.saturating_add(SPARE_FDS);
    (need > limit).then(|| {
        format!(
            "--max-connections {connections} needs about {need} open files \
             but RLIMIT_NOFILE is {limit}: clients past about {} would \
             wait unserved in the backlog; raise the limit (ulimit -Hn, \
             LimitNOFILE=) or lower --max-connections",
            limit.saturating_sub(SPARE_FDS)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_few_descriptors_for_max_connections_are_named() {
        let mut config = Config::new("127.0.0.1:0".parse().unwrap());
        config.max_connections = 10_000;
        let warning = descriptor_shortfall(&config, 1024).unwrap();
        assert!(warning.contains("RLIMIT_NOFILE is 1024"), "{warning}");
        assert!(warning.contains("--max-connections"), "{warning}");
        assert!(!warning.contains('\n'));
        assert_eq!(descriptor_shortfall(&config, 20_000), None);
        config.model = Model::Process;
        assert_eq!(descriptor_shortfall(&config, 1024), None);
    }
}

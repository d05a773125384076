//! Flags that cannot take effect beside the others: no flag is a silent
//! no-op. Each is either refused (exit 2, one line naming the flag and
//! the one it needs) or warned about once at start.
//!
//! The rule: a flag is refused when the operator clearly meant something
//! that will not happen (a check, a bound, a placement, an announcement
//! that is not in force); it is warned about when what it asks for holds
//! anyway or concerns nothing that exists here (a limit on lines never
//! logged, a size of threads never started), so running is harmless.
//!
//! Audited and left alone: `--max-connections` and
//! `--max-connections-per-ip` with the iterative model hold (it serves
//! one connection at a time, which is within every limit), and every
//! other flag takes effect in every model and mode.

use crate::config::{Config, Mode, Model};

use super::ServeArgs;

impl ServeArgs {
    /// Why one of these flags cannot take effect beside the others, in
    /// one line naming both, if one cannot and running without it would
    /// betray what the operator meant.
    pub(crate) fn refusal(&self, config: &Config) -> Option<String> {
        let model = config.model;
        let one_loop = matches!(model, Model::Mio | Model::Uring);
        // A header check the operator configured would silently not be
        // made: every connection's peer would be the balancer.
        if self.proxy_from.is_some() && !self.proxy_protocol {
            return Some(
                "--proxy-from needs --proxy-protocol: without it no PROXY \
                 header is read, so no sender is checked"
                    .into(),
            );
        }
        // Only /healthz tells a balancer the drain began: without it the
        // stop would only be delayed while clients keep coming.
        if !self.drain.is_zero() && self.metrics_addr.is_none() {
            return Some(
                "--drain needs --metrics-addr: only its /healthz tells a \
                 load balancer that the drain began"
                    .into(),
            );
        }
        // Parallelism or placement the operator counted on would not
        // happen.
        if !one_loop && (self.workers != 1 || self.pin) {
            return Some(format!(
                "--workers and --pin need --model mio or uring: the \
                 {model} model has no loop to repeat or pin"
            ));
        }
        if self.pin && self.workers == 1 {
            return Some(
                "--pin needs --workers 2 or more (or 0, one per CPU): a \
                 single loop runs on the main thread, which is not pinned"
                    .into(),
            );
        }
        // A memory bound the operator set would not bound anything: the
        // blocking models block instead of holding output.
        if self.max_output_memory.is_some() && !one_loop {
            return Some(format!(
                "--max-output-memory needs --model mio or uring: the \
                 {model} model holds no output (a blocked write holds its \
                 {}), so no budget applies; --max-connections and \
                 --send-buffer bound its memory",
                match model {
                    Model::Process => "process",
                    _ => "thread",
                }
            ));
        }
        None
    }

    /// One line for each flag that has no effect beside the others but
    /// does no harm: what it asks for holds anyway, or concerns nothing
    /// that runs. Logged once, as a warning, at start.
    pub(crate) fn warnings(&self, config: &Config) -> Vec<String> {
        let mut lines = Vec::new();
        let mode = config.mode;
        let rates = [
            ("--log-rate", self.log_rate.is_some()),
            ("--log-burst", self.log_burst.is_some()),
            ("--log-total-rate", self.log_total_rate.is_some()),
        ];
        for (flag, _) in rates.iter().filter(|(_, given)| *given) {
            if mode != Mode::Log {
                lines.push(format!(
                    "{flag} has no effect: only --mode log logs chunk \
                     lines, and the mode is {mode}"
                ));
            } else if self.log_level.filter() < log::LevelFilter::Info {
                lines.push(format!(
                    "{flag} has no effect: chunk lines are info lines, \
                     which --log-level {} hides",
                    self.log_level.filter().as_str().to_lowercase()
                ));
            }
        }
        // Nothing is written back outside echo mode: no output is held
        // and no send buffer fills, so both bounds hold by themselves.
        if mode != Mode::Echo {
            let held = self.max_output_memory.is_some();
            for flag in held
                .then_some("--max-output-memory")
                .into_iter()
                .chain(self.send_buffer.map(|_| "--send-buffer"))
            {
                lines.push(format!(
                    "{flag} has no effect: only --mode echo writes to \
                     clients, and the mode is {mode}"
                ));
            }
        }
        if self.thread_stack_kib.is_some() && config.model != Model::Thread {
            lines.push(format!(
                "--thread-stack-kib has no effect: only --model thread \
                 starts a thread per connection, and the model is {}",
                config.model
            ));
        }
        if self.pin && self.workers == 0 && config.workers == 1 {
            lines.push(
                "--pin has no effect: --workers 0 found one CPU, so one \
                 loop runs, on the main thread"
                    .into(),
            );
        }
        lines
    }

    /// The warnings of flags that socket activation overrides: the
    /// sockets systemd passed are bound and listening already.
    pub(crate) fn activation_warnings(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if !self.addrs.is_empty() {
            lines.push(
                "--addr has no effect: systemd passed the listening \
                 sockets (the socket unit's ListenStream= applies)"
                    .into(),
            );
        }
        if self.backlog.is_some() {
            lines.push(
                "--backlog has no effect: systemd passed the listening \
                 sockets (the socket unit's Backlog= applies)"
                    .into(),
            );
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn args(flags: &[&str]) -> ServeArgs {
        #[derive(Parser)]
        struct Serve {
            #[command(flatten)]
            args: ServeArgs,
        }
        let all = std::iter::once("serve").chain(flags.iter().copied());
        Serve::try_parse_from(all).expect("flags").args
    }

    fn verdict(flags: &[&str]) -> (Option<String>, Vec<String>) {
        let a = args(flags);
        let mut config = Config::new("127.0.0.1:0".parse().unwrap());
        config.mode = a.mode;
        config.model = a.model;
        config.workers = a.workers.max(1) as usize;
        (a.refusal(&config), a.warnings(&config))
    }

    #[test]
    fn defaults_are_neither_refused_nor_warned_about() {
        assert_eq!(verdict(&[]), (None, vec![]));
        let echo = ["--mode", "echo", "--max-output-memory", "1M"];
        assert_eq!(verdict(&echo), (None, vec![]));
        assert!(args(&[]).activation_warnings().is_empty());
    }

    #[test]
    fn refusals_name_the_flag_and_what_it_needs() {
        for (flags, named, needed) in [
            (
                &["--proxy-from", "10.0.0.0/8"][..],
                "--proxy-from",
                "--proxy-protocol",
            ),
            (&["--drain", "2"], "--drain", "--metrics-addr"),
            (&["--pin"], "--pin", "--workers"),
            (
                &["--model", "thread", "--max-output-memory", "1M"],
                "--max-output-memory",
                "--model mio or uring",
            ),
            (
                &["--model", "process", "--max-output-memory", "1M"],
                "--max-output-memory",
                "--model mio or uring",
            ),
        ] {
            let refused = verdict(flags).0.expect("refused");
            assert!(refused.contains(named), "{refused}");
            assert!(refused.contains(needed), "{refused}");
            assert!(!refused.contains('\n'), "{refused}");
        }
    }

    #[test]
    fn harmless_flags_are_warned_about_once_each() {
        let (refused, warned) = verdict(&[
            "--mode",
            "echo",
            "--log-rate",
            "5",
            "--log-burst",
            "9",
        ]);
        assert_eq!(refused, None);
        assert_eq!(warned.len(), 2, "{warned:?}");
        assert!(warned[0].starts_with("--log-rate has no effect"));
        let (_, warned) = verdict(&["--log-level", "warn", "--log-rate", "5"]);
        assert!(warned[0].contains("--log-level warn"), "{warned:?}");
        let (_, warned) = verdict(&["--send-buffer", "16K"]);
        assert!(warned[0].starts_with("--send-buffer"), "{warned:?}");
        let (_, warned) = verdict(&["--thread-stack-kib", "128"]);
        assert!(warned[0].starts_with("--thread-stack-kib"), "{warned:?}");
        let under = args(&["--addr", "127.0.0.1:1", "--backlog", "9"]);
        assert_eq!(under.activation_warnings().len(), 2);
    }
}

//! The integration tests: one binary (as ripgrep's `tests/tests.rs`), so
//! the crate is linked once. Each test starts a real server on a free
//! loopback port (the `readyloop` binary, or the library in-process) and
//! talks to it over real sockets.
//!
//! | module | what it pins down |
//! |---|---|
//! | [`matrix`] | every behaviour the models share, one test per model |
//! | [`mio`] | what only the mio model promises (its traps, its costs) |
//! | [`process`] | the process model's children and its fork guard |
//! | [`uring`] | the uring model: unavailable io_uring is a clear exit 1 |
//! | [`library`] | the library API: start and stop in-process |
//! | [`cli`] | exit codes and errors of the command line |
//! | [`generate`] | `--version`; `generate`: man pages and completions name every flag |
//! | [`client`] | `readyloop client`: echo, half-close, RST, idle, exit codes |
//! | [`holder`] | an address in use names the process that holds it |
//! | [`load`] | `readyloop load` and its JSON |
//! | [`load_fails`] | `readyloop load` fails loudly: exit 3, stalls, usage errors |
//! | [`log_format`] | each line begins with a UTC timestamp, or its priority in the journal |
//! | [`log_sink`] | a stderr that stalls or floods never stops serving, per model |
//! | [`limits_host`] | the per-address limit, the output budget, the descriptor warning |
//! | [`escape_props`] | the log escaper, over arbitrary input |
//! | [`health`] | `/healthz` and `--drain`: 503 from a stop's start, serving through the drain |
//! | [`proxy`] | `--proxy-protocol`, `--proxy-from`: headers name the peer, bad ones are refused, per model |
//! | [`proxy_props`] | the PROXY header parser, over arbitrary bytes and splits |
//! | [`trace`] | `--log-level trace` narrates an exchange, a reset and a full output buffer (every model), and is silent at `info` |
//! | [`metrics`] | `--metrics-addr`: exact counters, wrong, slow and surplus scrapes, 10,000 connections |
//! | [`docs`] | README.md and docs/*.md: links and anchors resolve, every `--help` flag is documented with its default, every trap cited in src/ has its entry |
//! | [`tour`] | the README's five-minute tour, read from README.md and run as written against real servers |
//! | [`metrics_complete`] | the log counters equal the summary's; the process series agree with /proc |
//! | `external` | checks with outside tools; only with `--features external` |
//!
//! `cargo test --release -- --ignored soak` runs the chaos test for ten
//! minutes per model.

/// Makes one test per model of each behaviour `fn name(model: Model)`:
/// a module `name` with a test `mio`, `iterative`, `thread`, `process`
/// and `uring`, so a failure names the model (`matrix::...::thread`). A
/// model that cannot run fails its test. Where a probe of its own finds
/// io_uring unavailable, a uring test fails with the probe's reason;
/// only with `READYLOOP_SKIP_URING=1` (a kernel without io_uring) does it
/// print why and pass (`support::uring`). `concurrent:` first leaves out
/// the iterative model (one client at a time, so nothing piles up on
/// it); `in_process:` the process model (forking a multi-threaded test
/// process is unsound).
macro_rules! per_model {
    (@each $models:tt $($behaviour:ident),*) => {$(
        per_model!(@one $behaviour $models);
    )*};
    (@one $behaviour:ident [$($test:ident $model:ident),*]) => {
        mod $behaviour {
            $(
                #[doc = concat!(
                    "[`super::", stringify!($behaviour), "`] against the ",
                    stringify!($test), " model."
                )]
                #[test]
                fn $test() {
                    crate::support::uring::run(
                        readyloop::Model::$model,
                        super::$behaviour,
                    )
                }
            )*
        }
    };
    (concurrent: $($behaviour:ident),* $(,)?) => {
        per_model!(@each [mio Mio, thread Thread, process Process,
            uring Uring] $($behaviour),*);
    };
    (loops: $($behaviour:ident),* $(,)?) => {
        per_model!(@each [mio Mio, uring Uring] $($behaviour),*);
    };
    (in_process: $($behaviour:ident),* $(,)?) => {
        per_model!(@each [mio Mio, iterative Iterative, thread Thread,
            uring Uring] $($behaviour),*);
    };
    ($($behaviour:ident),* $(,)?) => {
        per_model!(@each [mio Mio, iterative Iterative, thread Thread,
            process Process, uring Uring] $($behaviour),*);
    };
}

mod cli;
mod client;
mod docs;
mod escape_props;
#[cfg(feature = "external")]
mod external;
mod generate;
mod health;
mod holder;
mod library;
mod limits_host;
mod load;
mod load_fails;
mod log_format;
mod log_sink;
mod matrix;
mod metrics;
mod metrics_complete;
mod mio;
mod process;
mod proxy;
mod proxy_props;
mod service;
mod structure;
mod support;
mod tour;
mod trace;
mod uring;
mod workers;

/// The matrix names every model there is: a new model fails here until
/// [`per_model!`] makes its tests.
#[test]
fn the_matrix_covers_every_model() {
    use readyloop::Model;
    let matrix = [
        Model::Mio,
        Model::Iterative,
        Model::Thread,
        Model::Process,
        Model::Uring,
    ];
    assert_eq!(Model::ALL, matrix);
    let names: Vec<&str> = matrix.iter().map(|m| m.name()).collect();
    assert_eq!(names, ["mio", "iterative", "thread", "process", "uring"]);
}

//! This build against another: the mio model of this build, the mio
//! model of the readyloop binary `READYLOOP_BENCH_BEFORE` names (built
//! from an earlier commit, or with trace compiled out), and the tokio
//! current_thread peer, on the CPU test, in the same run. The three
//! alternate (A B C, then C B A) round by round, so drift of a shared
//! machine hits all alike; each ratio is the median over rounds of the
//! ratio in the same round.
//!
//! Two questions it answers: did a refactor cost the hot path anything
//! (`before` = the commit before it), and does trace cost anything when
//! it is compiled in but not enabled (`before` = this tree built with
//! `--features no-trace`, which compiles every trace line out). Without
//! the variable it does not run.

use std::path::Path;

use readyloop::Model;

use crate::sample::{cpu_in, cpu_median, cpu_ratio, Sample};
use crate::server::{Kind, Spec, BASELINE};
use crate::settings::Settings;

/// The variable naming the other binary.
pub const VAR: &str = "READYLOOP_BENCH_BEFORE";

/// This build's mio model, the other's, and the baseline.
pub const AFTER: Spec =
    Spec { name: "mio", kind: Kind::Readyloop(Model::Mio) };
pub const BEFORE: Spec =
    Spec { name: "mio-before", kind: Kind::Before(Model::Mio) };
const PEER: Spec =
    Spec { name: BASELINE, kind: Kind::Tokio("current_thread") };

/// The target for this build over the other.
pub const TARGET: f64 = 1.02;

/// The other binary, if `READYLOOP_BENCH_BEFORE` names one.
pub fn binary() -> Option<String> {
    std::env::var(VAR).ok().filter(|v| !v.is_empty())
}

/// The samples of all three.
#[derive(Default)]
pub struct Cost {
    /// The other binary, as named.
    pub before: Option<String>,
    pub samples: Vec<Sample>,
}

impl Cost {
    /// Median over rounds of `a`'s CPU per message over `b`'s in the
    /// same round.
    pub fn ratio(&self, a: &Spec, b: &Spec) -> Option<f64> {
        cpu_ratio(&self.samples, a.name, b.name)
    }

    /// Median CPU per message, in µs, of `spec`.
    pub fn cpu(&self, spec: &Spec) -> Option<f64> {
        cpu_median(&self.samples, spec.name)
    }

    /// Per round: this build / before, and this build / tokio-ct.
    fn per_round(&self) -> Vec<(u32, Option<f64>, Option<f64>)> {
        let cpu = |name: &str, round: u32| cpu_in(&self.samples, name, round);
        let mut rounds: Vec<u32> =
            self.samples.iter().map(|s| s.round).collect();
        rounds.dedup();
        rounds
            .into_iter()
            .map(|r| {
                let after = cpu(AFTER.name, r);
                let ratio = |other: &str| Some(after? / cpu(other, r)?);
                (r, ratio(BEFORE.name), ratio(PEER.name))
            })
            .collect()
    }

    /// Lines for stdout and the report; `None` when it did not run.
    pub fn text(&self, settings: &Settings) -> Option<String> {
        let before = self.before.as_ref()?;
        let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3}"));
        let rounds = self
            .per_round()
            .iter()
            .map(|(r, b, p)| format!("round {r}: {} {}", f(*b), f(*p)))
            .collect::<Vec<_>>()
            .join("; ");
        let skipped: Vec<String> = self
            .samples
            .iter()
            .filter_map(|s| {
                Some(format!("{}: {}", s.server, s.skipped.as_ref()?))
            })
            .collect();
        let mut text = format!(
            "this build against {before} ({}, {} rounds, mio model): CPU \
             µs/msg this {}, before {}, {BASELINE} {}; this/before {}x \
             (target ≤ {TARGET}x), this/{BASELINE} {}x (target ≤ 1.0x)\n\
             per round (this/before, this/{BASELINE}): {rounds}",
            settings.cpu_test.label(),
            self.samples.iter().filter(|s| s.server == AFTER.name).count(),
            f(self.cpu(&AFTER)),
            f(self.cpu(&BEFORE)),
            f(self.cpu(&PEER)),
            f(self.ratio(&AFTER, &BEFORE)),
            f(self.ratio(&AFTER, &PEER)),
        );
        if !skipped.is_empty() {
            text.push_str(&format!("\nnot measured: {}", skipped.join("; ")));
        }
        Some(text)
    }
}

/// Runs the comparison when `READYLOOP_BENCH_BEFORE` is set: as many
/// rounds as the CPU test has.
pub fn run(settings: &Settings) -> Result<Cost, String> {
    let Some(before) = binary() else {
        return Ok(Cost::default());
    };
    if !Path::new(&before).is_file() {
        return Err(format!("{VAR}={before}: no such file"));
    }
    let samples =
        crate::alternating(settings, "before", &[AFTER, BEFORE, PEER], None);
    Ok(Cost { before: Some(before), samples })
}

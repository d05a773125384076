//! Log mode's rate limits, kept beside the slab rather than in a
//! connection, so that the other modes pay nothing for them.

use crate::config::{Config, Mode};
use crate::journal::ChunkLimit;
use crate::log_limit::{Bucket, Limits};
use crate::stats::Stats;

/// The server's limits, and a bucket per slab key.
#[derive(Debug)]
pub(crate) struct LogBuckets {
    limits: Limits,
    buckets: Vec<Bucket>,
}

impl LogBuckets {
    /// The buckets `config` asks for: `None` outside log mode.
    pub(crate) fn of(config: &Config) -> Option<LogBuckets> {
        (config.mode == Mode::Log).then(|| LogBuckets {
            limits: Limits::of(config),
            buckets: Vec::new(),
        })
    }

    /// The bucket of slab key `key`, made on first use.
    pub(crate) fn bucket(&mut self, key: usize) -> &mut Bucket {
        if self.buckets.len() <= key {
            self.buckets.resize(key + 1, Bucket::default());
        }
        &mut self.buckets[key]
    }

    /// What decides whether connection `key` may log a chunk line.
    pub(crate) fn limit<'a>(
        &'a mut self,
        key: usize,
        stats: &'a Stats,
    ) -> ChunkLimit<'a> {
        self.bucket(key);
        ChunkLimit {
            limits: &self.limits,
            bucket: &mut self.buckets[key],
            stats,
        }
    }
}

//! The `process_*` families of the Prometheus process collector, with
//! its names, types and help texts (client_golang's), read from /proc at
//! each scrape. A figure /proc cannot give is left out, not made up.

/// Clock ticks a second in /proc's times: USER_HZ, which the kernel
/// fixes at 100 for user space on every architecture it still supports
/// (the Prometheus collector assumes the same, rather than ask sysconf,
/// an unsafe call here).
const USER_HZ: f64 = 100.0;

/// What the process collector reports about this process.
#[derive(Debug, Default)]
pub(super) struct Process {
    /// Descriptors open now (the one that reads the directory among
    /// them).
    pub open_fds: Option<u64>,
    /// The soft RLIMIT_NOFILE.
    pub max_fds: Option<u64>,
    /// Resident memory, in bytes.
    pub resident_bytes: Option<u64>,
    /// User and system CPU time, in seconds.
    pub cpu_seconds: Option<f64>,
    /// When the process started, in seconds since the epoch.
    pub start_time: Option<f64>,
}

impl Process {
    /// This process's figures as /proc (and getrlimit) give them now.
    pub(super) fn now() -> Process {
        let stat = Stat::read();
        let boot = boot_time();
        Process {
            open_fds: open_fds(),
            max_fds: crate::rlimit::soft_nofile(),
            resident_bytes: resident_bytes(),
            cpu_seconds: stat.as_ref().map(|s| s.cpu_ticks as f64 / USER_HZ),
            start_time: stat
                .zip(boot)
                .map(|(s, boot)| boot as f64 + s.start_ticks as f64 / USER_HZ),
        }
    }
}

/// This process's open descriptors; `None` if /proc cannot say.
fn open_fds() -> Option<u64> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    Some(entries.count() as u64)
}

/// This process's resident memory: `VmRSS` of /proc/self/status, the
/// kernel's count behind the second field of /proc/self/statm, already
/// in KiB rather than pages (whose size only `sysconf`, an unsafe call,
/// would tell). `None` if /proc cannot say.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// When the machine booted, in seconds since the epoch: `btime` of
/// /proc/stat.
fn boot_time() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("btime "))?;
    line["btime ".len()..].trim().parse().ok()
}

/// The fields of /proc/self/stat the collector reports, in ticks.
#[derive(Debug, PartialEq)]
struct Stat {
    /// utime + stime: this process's threads, not its children.
    cpu_ticks: u64,
    /// starttime: ticks after boot.
    start_ticks: u64,
}

impl Stat {
    fn read() -> Option<Stat> {
        Stat::parse(&std::fs::read_to_string("/proc/self/stat").ok()?)
    }

    /// Fields 14 (utime), 15 (stime) and 22 (starttime) of proc(5),
    /// counted after the command name, which is in parentheses and may
    /// hold spaces and parentheses itself: the fields start after the
    /// last `)`.
    fn parse(text: &str) -> Option<Stat> {
        let rest = &text[text.rfind(')')? + 1..];
        // Field 3 (state) is the first after the name.
        let field = |n: usize| -> Option<u64> {
            rest.split_whitespace().nth(n - 3)?.parse().ok()
        };
        Some(Stat {
            cpu_ticks: field(14)?.checked_add(field(15)?)?,
            start_ticks: field(22)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_found_after_a_name_with_spaces_and_parens() {
        let text = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 37 0 0 20 0 1 0 123456 1000000 200 42";
        let stat = Stat::parse(text).unwrap();
        assert_eq!(stat, Stat { cpu_ticks: 287, start_ticks: 123456 });
        assert_eq!(Stat::parse("4242 (cut"), None);
        assert_eq!(Stat::parse("1 (x) S 1 2"), None);
    }

    #[test]
    fn this_process_has_figures_that_make_sense() {
        let p = Process::now();
        assert!(p.open_fds.is_some_and(|n| n > 2), "{p:?}");
        assert!(p.max_fds.is_some_and(|n| n >= p.open_fds.unwrap()), "{p:?}");
        assert!(p.resident_bytes.is_some_and(|b| b > 0), "{p:?}");
        assert!(p.cpu_seconds.is_some_and(|s| s >= 0.0), "{p:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = p.start_time.unwrap();
        assert!(start <= now + 1.0 && start > now - 3600.0, "{start} {now}");
    }
}

//! What /proc says about a server process and its children: CPU time and
//! memory.

use std::fs;

/// Clock ticks per second of utime/stime.
pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        n if n > 0 => n as f64,
        _ => 100.0,
    }
}

/// Fields of /proc/PID/stat after the command name (index 0 = state).
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect())
}

/// Direct children of `pid` (over all its threads).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// CPU ticks (utime + stime) of `pid`, its reaped children (cutime +
/// cstime) and its live children: all the CPU the server has used.
pub fn cpu_ticks(pid: u32) -> u64 {
    let sum = |f: &[u64], range: std::ops::Range<usize>| {
        f.get(range).map_or(0, |v| v.iter().sum::<u64>())
    };
    let own = stat_fields(pid).map_or(0, |f| sum(&f, 11..15));
    let kids: u64 = children(pid)
        .into_iter()
        .filter_map(stat_fields)
        .map(|f| sum(&f, 11..13))
        .sum();
    own + kids
}

/// A `Key:   123 kB` line of a /proc file, in kB.
fn kb_field(path: &str, key: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// Resident set size of `pid` alone, in kB.
pub fn rss_kb(pid: u32) -> Option<u64> {
    kb_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// Proportional set size of `pid`'s anonymous memory (heap, stacks) plus
/// every child's, in kB. Proportional: pages shared copy-on-write with
/// forked children are split among the processes that share them, so the
/// sum is what the server really costs. Anonymous: file pages (the
/// binary's text, shared with the load generator, which runs the same
/// binary) would make the figure move with what else runs.
pub fn pss_kb(pid: u32) -> Option<u64> {
    let pss = |p: u32| {
        let path = format!("/proc/{p}/smaps_rollup");
        kb_field(&path, "Pss_Anon:").or_else(|| kb_field(&path, "Pss:"))
    };
    let own = pss(pid)?;
    let kids: u64 = children(pid).into_iter().filter_map(pss).sum();
    Some(own + kids)
}

//! The CPU time of the processes the benchmark measures: `utime + stime` read from
//! `/proc`, summed by role (`testkit::process` starts and stops them).

use std::collections::BTreeMap;

/// Seconds per clock tick of `/proc/<pid>/stat`'s CPU times.
fn tick_secs() -> f64 {
    // SAFETY: sysconf(3) has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    1.0 / if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// CPU seconds (`utime + stime`, every thread) `pid` has used, or `None` once it is gone.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count fields after its `)`.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 * tick_secs())
}

/// The direct children of `pid` (nginx's workers under its master).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// The processes measured, by role: each role's CPU is the sum over its processes (and,
/// for those added with their children, their direct children, found again at every
/// reading: nginx's workers).
#[derive(Debug, Clone, Default)]
pub struct Measured {
    roles: Vec<(String, Vec<(u32, bool)>)>,
}

impl Measured {
    /// Adds `pid` to `role` (roles keep the order they were first named in).
    pub fn add(&mut self, role: &str, pid: u32) {
        self.push(role, (pid, false));
    }

    /// Adds `pid` and its direct children to `role`.
    pub fn add_with_children(&mut self, role: &str, pid: u32) {
        self.push(role, (pid, true));
    }

    fn push(&mut self, role: &str, entry: (u32, bool)) {
        match self.roles.iter_mut().find(|(r, _)| r == role) {
            Some((_, pids)) => pids.push(entry),
            None => self.roles.push((role.to_owned(), vec![entry])),
        }
    }

    /// CPU seconds used so far, by role; processes by pid so that one that came or
    /// went between two readings is counted only for the time both saw.
    pub fn read(&self) -> Vec<(String, BTreeMap<u32, f64>)> {
        self.roles
            .iter()
            .map(|(role, pids)| {
                let mut all = BTreeMap::new();
                for &(pid, with_children) in pids {
                    let kids = if with_children {
                        children(pid)
                    } else {
                        Vec::new()
                    };
                    for p in std::iter::once(pid).chain(kids) {
                        if let Some(secs) = cpu_secs(p) {
                            all.insert(p, secs);
                        }
                    }
                }
                (role.clone(), all)
            })
            .collect()
    }
}

/// CPU seconds by role between two [`Measured::read`]s.
pub fn cpu_delta(
    before: &[(String, BTreeMap<u32, f64>)],
    after: &[(String, BTreeMap<u32, f64>)],
) -> Vec<(String, f64)> {
    after
        .iter()
        .map(|(role, now)| {
            let then = before.iter().find(|(r, _)| r == role).map(|(_, t)| t);
            let used = now
                .iter()
                .filter_map(|(pid, secs)| Some(secs - then?.get(pid)?))
                .sum();
            (role.clone(), used)
        })
        .collect()
}

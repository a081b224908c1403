//! The processes the benchmark starts and the CPU time of the ones it measures: a child
//! that the kernel kills when the benchmark dies and that is stopped when dropped, free
//! loopback ports, readiness polls, and `utime + stime` read from `/proc`.

use std::{
    collections::BTreeMap,
    fs::File,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// How long a started process may take to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a process asked to stop with `SIGTERM` may take before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A process the benchmark started, writing its output to `<dir>/<name>.log`.
///
/// It gets `death_signal` when the benchmark dies without cleaning up (`SIGKILL`, a
/// panic that aborts), and is stopped when dropped: `SIGTERM` then, after
/// [`STOP_TIMEOUT`], `SIGKILL` when `graceful`, else `SIGKILL` at once.
///
/// The kernel sends the death signal when the *thread* that forked the child ends, so
/// children are spawned from the main thread only (the benchmark's `block_on` future,
/// never a blocking-pool thread, which ends when idle).
pub struct Child {
    name: String,
    child: std::process::Child,
    log: PathBuf,
    graceful: bool,
}

impl Child {
    /// Starts `command` as `name`, its stdout and stderr in `<dir>/<name>.log` and its
    /// environment without `RUST_LOG` (every server logs with its default filter).
    ///
    /// # Panics
    /// When the log file cannot be created or the program cannot be started.
    pub fn spawn(name: &str, mut command: Command, dir: &Path, death_signal: i32) -> Self {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let err = out.try_clone().expect("log file handle");
        let parent = std::process::id();
        command
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // SAFETY: the closure runs between fork and exec and calls only prctl(2) and
        // getppid(2), both async-signal-safe; it allocates nothing.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, death_signal as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The benchmark died before prctl took effect: do not outlive it.
                if libc::getppid() as u32 != parent {
                    return Err(std::io::Error::other("the benchmark has exited"));
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({:?}): {e}", command.get_program()));
        Self {
            name: name.to_owned(),
            child,
            log,
            graceful: death_signal == libc::SIGTERM,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls `ready` every 20 ms until it holds.
    ///
    /// # Panics
    /// When the process exits first or [`START_TIMEOUT`] passes; the message ends with
    /// the tail of its log.
    pub async fn wait_ready(&mut self, mut ready: impl AsyncFnMut() -> bool) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited with {status}:\n{}", self.name, self.log_tail());
            }
            if ready().await {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} not ready after {START_TIMEOUT:?}:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last 2 000 bytes of the process's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut start = text.len().saturating_sub(2000);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        text[start..].to_owned()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.graceful {
            send_signal(self.pid(), libc::SIGTERM);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `signal` to `pid`.
fn send_signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions; `pid` is our own child.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A directory under the system's temporary directory, removed with everything in it
/// when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `<tmp>/smcp-load-<pid>-<name>`.
    ///
    /// # Panics
    /// When the directory cannot be created.
    pub fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("smcp-load-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Self(path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

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

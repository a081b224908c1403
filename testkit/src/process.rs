//! The one wrapper of child processes (`redis-server`, replicas run as the binary, nginx):
//! stopped when dropped, and stopped by the kernel when the process that started them dies
//! without cleaning up (`PR_SET_PDEATHSIG`), so none outlives a failed test or an
//! interrupted benchmark.

use std::{
    fs::File,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

/// How long a started process may take to become ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a process asked to stop with `SIGTERM` may take before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How a [`Child`] is stopped: when dropped, and by the kernel when the process that
/// started it dies first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// `SIGKILL` at once.
    Kill,
    /// `SIGTERM`, then `SIGKILL` once [`STOP_TIMEOUT`] has passed: for a process that
    /// must stop processes of its own (nginx's master stops its workers; killed, it
    /// would orphan them).
    Terminate,
}

impl Stop {
    fn signal(self) -> libc::c_int {
        match self {
            Self::Kill => libc::SIGKILL,
            Self::Terminate => libc::SIGTERM,
        }
    }
}

/// A process a test or a benchmark started, its stdout and stderr in `<dir>/<name>.log`
/// or discarded.
///
/// The kernel sends the death signal when the *thread* that forked the child ends, so a
/// child is spawned from a thread that outlives it: a test's own thread (the future of
/// `#[tokio::test]`), a runtime's worker, a benchmark's main thread (its `block_on`
/// future); never a blocking-pool thread, which ends when idle.
pub struct Child {
    name: String,
    child: std::process::Child,
    log: Option<PathBuf>,
    stop: Stop,
    /// Whether it has been waited for: from then on its pid may name another process.
    reaped: bool,
}

impl Child {
    /// Starts `command` as `name`, stdin empty, stdout and stderr in `<log_dir>/<name>.log`
    /// (or discarded without a `log_dir`), stopped as `stop` says.
    ///
    /// # Panics
    /// When the log file cannot be created or the program cannot be started.
    pub fn spawn(name: &str, mut command: Command, log_dir: Option<&Path>, stop: Stop) -> Self {
        let log = log_dir.map(|dir| dir.join(format!("{name}.log")));
        let (stdout, stderr) = match &log {
            Some(log) => {
                let out = File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
                let err = out.try_clone().expect("log file handle");
                (Stdio::from(out), Stdio::from(err))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        command.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        let parent = std::process::id();
        let death_signal = stop.signal();
        // SAFETY: the closure runs between fork and exec and calls only prctl(2) and
        // getppid(2), both async-signal-safe; it allocates nothing.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, death_signal as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent died before prctl took effect: do not outlive it.
                if libc::getppid() as u32 != parent {
                    return Err(std::io::Error::other("the parent has exited"));
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
            stop,
            reaped: false,
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

    /// The last 2 000 bytes of the process's log (empty when its output is discarded).
    pub fn log_tail(&self) -> String {
        let text = self.log();
        let mut start = text.len().saturating_sub(2000);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        text[start..].to_owned()
    }

    /// Everything the process has written so far (empty when its output is discarded).
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|log| std::fs::read_to_string(log).ok())
            .unwrap_or_default()
    }

    /// Sends `signal` (`libc::SIGTERM`, `SIGSTOP`, `SIGCONT`, ...).
    ///
    /// # Panics
    /// When the process has been [killed](Child::kill) or [waited for](Child::wait), or
    /// the signal cannot be sent.
    pub fn signal(&self, signal: libc::c_int) {
        assert!(!self.reaped, "{} has already exited", self.name);
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child,
        // not yet reaped (checked above), so it names no other process.
        let sent = unsafe { libc::kill(self.pid() as libc::pid_t, signal) };
        assert_eq!(
            sent,
            0,
            "signal {signal} to {}: {}",
            self.name,
            std::io::Error::last_os_error()
        );
    }

    /// Kills the process with `SIGKILL` (as a crash would) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reaped = true;
    }

    /// Waits until the process exits, polling every 20 ms, and returns its exit status;
    /// `None` when it is still running after `limit` (it is left running: dropping the
    /// [`Child`] stops it).
    ///
    /// # Panics
    /// When its status cannot be read.
    pub async fn wait_for_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            let status = self
                .child
                .try_wait()
                .unwrap_or_else(|e| panic!("wait for {}: {e}", self.name));
            if let Some(status) = status {
                self.reaped = true;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Blocks until the process exits; its exit status.
    ///
    /// # Panics
    /// When waiting fails.
    pub fn wait(&mut self) -> ExitStatus {
        let status = self
            .child
            .wait()
            .unwrap_or_else(|e| panic!("wait for {}: {e}", self.name));
        self.reaped = true;
        status
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.reaped || matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        if self.stop == Stop::Terminate {
            // SAFETY: as in `signal`: our own child, not yet reaped (checked above).
            unsafe {
                libc::kill(self.pid() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.kill();
    }
}

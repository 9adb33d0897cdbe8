//! A thread that sends SIGKILL to a process a chosen time after it is armed.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// An armed `kill -9`; [`Killer::wait`] returns once the signal was sent.
#[derive(Debug)]
pub struct Killer {
    thread: JoinHandle<Option<Instant>>,
}

impl Killer {
    /// Sends SIGKILL to `pid` `after` from now. The caller keeps the process unreaped until
    /// [`Killer::wait`] returns, so the pid cannot be reused by another process meanwhile.
    pub fn arm(pid: u32, after: Duration) -> Self {
        let deadline = Instant::now() + after;
        let thread = std::thread::spawn(move || {
            let now = Instant::now();
            if deadline > now {
                std::thread::sleep(deadline - now);
            }
            let pid = Pid::from_raw(i32::try_from(pid).ok()?);
            kill(pid, Signal::SIGKILL).ok()?;
            Some(Instant::now())
        });
        Killer { thread }
    }

    /// Waits for the kill; the moment it was sent, or `None` if it could not be sent.
    pub fn wait(self) -> Option<Instant> {
        self.thread.join().ok().flatten()
    }
}

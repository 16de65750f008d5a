//! Signal dispositions, masks and the alternate stack; signals sent to the process itself.

use super::threads::RunState;
use super::{err, errno, ExitStatus, Flow, Linux, SyscallEnv};
use crate::error::Result;

impl Linux {
    pub(super) fn rt_sigaction(&mut self, env: &SyscallEnv, sig: u64, act: u64, oact: u64, size: u64) -> std::result::Result<u64, i32> {
        if !(1..=64).contains(&sig) || size != 8 {
            return Err(errno::EINVAL);
        }
        let new: Option<[u64; 4]> = if act != 0 { Some(env.user().read_pod(act)?) } else { None };
        if new.is_some() && (sig == 9 || sig == 19) {
            return Err(errno::EINVAL);
        }
        if oact != 0 {
            env.user().write_pod(oact, &self.sigactions[sig as usize])?;
        }
        if let Some(n) = new {
            self.sigactions[sig as usize] = n;
        }
        Ok(0)
    }

    pub(super) fn rt_sigprocmask(&mut self, env: &SyscallEnv, how: u64, set: u64, oset: u64, size: u64) -> std::result::Result<u64, i32> {
        if size != 8 {
            return Err(errno::EINVAL);
        }
        let old = self.thread_mut().sigmask;
        if set != 0 {
            let s = env.user().read_u64(set)? & !((1 << 8) | (1 << 18)); // SIGKILL, SIGSTOP
            self.thread_mut().sigmask = match how {
                0 => old | s,
                1 => old & !s,
                2 => s,
                _ => return Err(errno::EINVAL),
            };
        }
        if oset != 0 {
            env.user().write_u64(oset, old)?;
        }
        Ok(0)
    }

    pub(super) fn sigaltstack(&mut self, env: &SyscallEnv, ss: u64, oss: u64) -> std::result::Result<u64, i32> {
        let new: Option<[u64; 3]> = if ss != 0 { Some(env.user().read_pod(ss)?) } else { None };
        if oss != 0 {
            env.user().write_pod(oss, &self.thread_mut().altstack)?;
        }
        if let Some(n) = new {
            self.thread_mut().altstack = n;
        }
        Ok(0)
    }

    /// kill/tkill/tgkill. Signals to ourselves end the process the way their default action
    /// would (abort() → SIGABRT); delivery to handlers is not emulated yet.
    pub(super) fn kill(&mut self, pid: i64, sig: u64) -> Result<Flow> {
        if pid != self.pid() as i64 && pid != 0 && pid != -1 {
            return Ok(Flow::Return(err(errno::ESRCH)));
        }
        if sig > 64 {
            return Ok(Flow::Return(err(errno::EINVAL)));
        }
        if sig == 0 {
            return Ok(Flow::Return(0));
        }
        Ok(self.raise(sig).map_or(Flow::Return(0), Flow::Exit))
    }

    /// tkill/tgkill: a signal to one thread of this process (`tgid`, if given, must be it).
    /// Delivery to handlers is not emulated yet: the process-wide default action applies.
    pub(super) fn thread_kill(&mut self, tgid: Option<u64>, tid: u64, sig: u64) -> Result<Flow> {
        if tgid.is_some_and(|g| g as i64 <= 0) || tid as i64 <= 0 {
            return Ok(Flow::Return(err(errno::EINVAL)));
        }
        if tgid.is_some_and(|g| g != self.pid()) || !self.threads().iter().any(|t| t.tid == tid && t.state != RunState::Exited) {
            return Ok(Flow::Return(err(errno::ESRCH)));
        }
        self.kill(self.pid() as i64, sig)
    }

    /// What signal `sig` (1–64) does to the process: `None` if it is ignored (explicitly, or
    /// by default), else how the process ends (handlers are not run: no signal delivery yet).
    pub(super) fn raise(&self, sig: u64) -> Option<ExitStatus> {
        let handler = self.sigactions[sig as usize][0];
        let default_ignored = matches!(sig as i32, libc::SIGCHLD | libc::SIGURG | libc::SIGWINCH | libc::SIGCONT);
        if handler == 1 /* SIG_IGN */ || (handler == 0 && default_ignored) {
            None
        } else {
            Some(ExitStatus::Signal(sig as i32))
        }
    }
}

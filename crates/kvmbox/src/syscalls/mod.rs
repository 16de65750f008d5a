//! Linux syscall emulation: the host side of every guest `syscall`.
//!
//! [`Linux`] holds the emulated process state (memory map, descriptors, signal dispositions)
//! and [`Linux::handle`] runs one syscall. Guest memory is only reached through
//! `UserMemory` (checked access), so a bad pointer becomes EFAULT for the guest, never a host access.
//! Every number here may come from the guest: arithmetic is checked or saturating (clippy's
//! `arithmetic_side_effects` is denied for this module and its children, and CI runs clippy).

#![deny(clippy::arithmetic_side_effects)]

pub mod files;
mod fs;
mod fs_write;
mod hostrw;
mod ident;
mod io;
pub mod ipc;
pub mod memfs;
pub mod mm;
mod notifiers;
pub mod signals;
mod sockets;
mod state;
pub mod table;
pub mod threads;
mod time;

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::host::{Host, HostCall};
use crate::interrupt::Deadline;
use crate::layout::AddressSpace;
use crate::memory::{Efault, GuestMemory, UserMemory};
use files::{FdTable, FilePolicy, Input, Output};
use mm::Mappings;
pub use state::LinuxState;
pub use threads::{CpuUpdate, Next, SavedCpu, Thread, UserCpu};

/// errno values (x86-64 Linux numbering, the same as the host's).
pub mod errno {
    pub use libc::{
        EACCES, EAGAIN, EBADF, EBUSY, EEXIST, EFAULT, EINTR, EINVAL, EIO, EISDIR, ELOOP, EMFILE, ENAMETOOLONG, ENODATA, ENOENT, ENOMEM,
        ENOSPC, ENOSYS, ENOTDIR, ENOTTY, EOVERFLOW, EPERM, EPIPE, ERANGE, EROFS, ESPIPE, ESRCH, ETIMEDOUT,
    };
}

/// How the guest process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// exit/exit_group with this status (0–255).
    Code(i32),
    /// Killed by this signal (e.g. abort() → SIGABRT).
    Signal(i32),
}

/// What the run loop does after a syscall.
pub enum Flow {
    /// Resume the calling thread with this value in rax.
    Return(u64),
    /// The process ended.
    Exit(ExitStatus),
    /// The calling thread cannot go on (it waits, or it ended: its run state says): the
    /// machine runs another thread (see [`Linux::schedule`]); the caller's result comes when
    /// it is woken.
    Block,
    /// sched_yield: the calling thread goes on with 0 in rax, after the other runnable threads.
    Yield,
    /// rt_sigreturn: the calling thread goes on with these registers (its TLS bases stay) and,
    /// if given, this FPU state.
    Replace(Box<SavedCpu>),
}

/// The most bytes one read or write moves, as on Linux (INT_MAX rounded down to a page).
const MAX_RW_COUNT: u64 = 0x7fff_f000;

/// What a syscall handler may use besides the process state.
pub struct SyscallEnv<'a> {
    pub mem: &'a GuestMemory,
    pub space: &'a AddressSpace,
    /// When the current run must stop (its timeout, an interrupt): long host work checks it.
    pub deadline: &'a Deadline,
    /// The calling thread's user-mode registers and TLS bases at the syscall.
    pub cpu: UserCpu,
}

impl SyscallEnv<'_> {
    pub fn user(&self) -> UserMemory<'_> {
        UserMemory { mem: self.mem, space: self.space }
    }
}

/// Fill `buf` from the host's random source. Returns how many bytes were filled (all of them,
/// unless a signal interrupted it: then what was filled, as Linux's getrandom does) or the
/// errno — never a retry loop that an outer sandbox denying getrandom would make endless.
pub fn host_random(buf: &mut [u8]) -> std::result::Result<usize, i32> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: getrandom into a valid, owned buffer.
        let n = unsafe { libc::getrandom(buf[done..].as_mut_ptr().cast(), buf.len().saturating_sub(done), 0) };
        if n > 0 {
            done = done.saturating_add(n.unsigned_abs());
            continue;
        }
        let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(errno::EIO);
        return if done > 0 { Ok(done) } else { Err(e) };
    }
    Ok(done)
}

/// Fill all of `buf` with host randomness (retrying a few interrupted attempts), or fail with an
/// internal error naming `what` needed it: for bytes kvmbox itself must not go without
/// (AT_RANDOM, the reseed hook's seed).
pub(crate) fn fill_random(buf: &mut [u8], what: &str) -> Result<()> {
    if (0..8).any(|_| host_random(buf).is_ok_and(|n| n == buf.len())) {
        return Ok(());
    }
    Err(Error::Internal(format!("the host's getrandom failed: no random bytes for {what}")))
}

pub(crate) fn err(e: i32) -> u64 {
    i64::from(e).wrapping_neg() as u64
}

fn ret(r: std::result::Result<u64, i32>) -> u64 {
    r.unwrap_or_else(err)
}

impl From<Efault> for i32 {
    fn from(_: Efault) -> i32 {
        errno::EFAULT
    }
}

/// `struct sigaction` (handler, flags, restorer, mask) of signals 0–64, kept in place so a
/// reset copies it without allocating.
type SignalTable = [[u64; 4]; 65];

/// The emulated Linux process: what its threads share, and the threads.
pub struct Linux {
    pub mm: Mappings,
    pub fds: FdTable,
    pub policy: Arc<FilePolicy>,
    pub stdin: Input,
    pub stdout: Output,
    pub stderr: Output,
    /// Absolute path reported by readlink("/proc/self/exe").
    pub exe_path: PathBuf,
    pub cwd: PathBuf,
    /// The writable in-memory filesystem (`/tmp` and the configured mounts).
    pub fs: memfs::MemFs,
    /// The working directory's inode when it is in memory (then `cwd` is where it was).
    pub cwd_ino: Option<memfs::Ino>,
    /// The file mode creation mask.
    pub umask: u32,
    /// Nanoseconds the guest's CLOCK_MONOTONIC and CLOCK_BOOTTIME are ahead of the host's:
    /// 0 until a snapshot's state is restored where the host's clock is behind the one it was
    /// taken on (another host), so the guest's clocks never step back.
    pub mono_offset: u64,
    pub uid: u32,
    pub gid: u32,
    pub trace: bool,
    pub memory: u64,
    pub stack_size: u64,
    sigactions: SignalTable,
    /// Live threads in creation order (exited ones until the machine switches away).
    threads: Vec<Thread>,
    /// The thread on the vCPU.
    current: usize,
    next_tid: u64,
    /// Futex waiters are woken in the order they came (see `Linux::wake`).
    futex_seq: u64,
    /// Signals sent to the process (any thread may take them), not yet delivered.
    shared_pending: Vec<signals::SigInfo>,
    /// ITIMER_REAL and POSIX timers.
    timers: Vec<signals::Timer>,
    /// A timerfd or signalfd was made: the timers and signal sends look at the descriptors.
    has_notifiers: bool,
    /// Bytes of the XSAVE area a signal frame holds, and the features in it (XCR0).
    xsave_size: usize,
    xfeatures: u64,
}

const PATH_MAX: usize = 4096;
const AT_FDCWD: i32 = -100;
const AT_EMPTY_PATH: u64 = 0x1000;
const AT_SYMLINK_NOFOLLOW: u64 = 0x100;

/// Where a machine's emulated process starts: its memory map, files and output, and limits.
pub struct ProcessConfig {
    pub mm: Mappings,
    pub policy: Arc<FilePolicy>,
    pub stdin: Input,
    pub stdout: Output,
    pub stderr: Output,
    pub exe_path: PathBuf,
    pub cwd: PathBuf,
    pub fs: memfs::MemFs,
    pub memory: u64,
    pub stack_size: u64,
    pub trace: bool,
    /// The XSAVE area size and features of the vCPU (for signal frames).
    pub xsave_size: usize,
    pub xfeatures: u64,
}

impl Linux {
    pub fn new(c: ProcessConfig) -> Linux {
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Linux {
            mm: c.mm,
            fds: FdTable::new(),
            policy: c.policy,
            stdin: c.stdin,
            stdout: c.stdout,
            stderr: c.stderr,
            exe_path: c.exe_path,
            cwd: c.cwd,
            fs: c.fs,
            cwd_ino: None,
            umask: 0o022,
            mono_offset: 0,
            uid,
            gid,
            trace: c.trace,
            memory: c.memory,
            stack_size: c.stack_size,
            sigactions: [[0; 4]; 65],
            threads: vec![Thread::main()],
            current: 0,
            next_tid: threads::MAIN_TID + 1,
            futex_seq: 0,
            shared_pending: Vec::new(),
            timers: Vec::new(),
            has_notifiers: false,
            xsave_size: c.xsave_size.clamp(512 + 64, 4096),
            xfeatures: c.xfeatures,
        }
    }

    /// The process id (the first thread's tid).
    pub fn pid(&self) -> u64 {
        threads::MAIN_TID
    }

    /// CPU changes the last syscalls made to the calling thread (TLS bases), for the machine to
    /// apply before it runs again.
    pub fn take_cpu_update(&mut self) -> CpuUpdate {
        std::mem::take(&mut self.thread_mut().cpu_update)
    }

    /// Everything a snapshot must remember of the emulated process.
    pub fn capture(&self) -> LinuxState {
        LinuxState {
            mm: self.mm.clone(),
            fds: self.fds.describe(),
            stdin: self.stdin.clone(),
            sigactions: self.sigactions,
            threads: self.threads.clone(),
            current: self.current,
            next_tid: self.next_tid,
            futex_seq: self.futex_seq,
            shared_pending: self.shared_pending.clone(),
            timers: self.timers.clone(),
            fs: self.fs.clone(),
            cwd: self.cwd.clone(),
            cwd_ino: self.cwd_ino,
            umask: self.umask,
            mono_offset: self.mono_offset,
            mono_at_capture: time::host_clock(libc::CLOCK_MONOTONIC as u64, self.mono_offset).map_or(0, |t| time::timespec_ns(&t)),
            captured_at: std::time::Instant::now(),
        }
    }

    /// Return to `state` (captured from this process or from the one a snapshot came from).
    /// Output destinations stay as configured, with nothing captured.
    pub fn restore(&mut self, state: &LinuxState) -> Result<()> {
        self.fs = state.fs.clone();
        self.cwd = state.cwd.clone();
        self.cwd_ino = state.cwd_ino;
        // The guest's monotonic clock goes on from where it was at the capture, on any host.
        let host_now = time::host_clock(libc::CLOCK_MONOTONIC as u64, 0).map_or(0, |t| time::timespec_ns(&t));
        self.mono_offset = state.mono_offset.max(state.mono_at_capture.saturating_sub(host_now));
        self.umask = state.umask;
        self.fds = FdTable::rebuild(&state.fds, &self.policy, &self.fs)?;
        self.release_orphans();
        self.has_notifiers =
            self.fds.iter_locals().any(|d| matches!(ipc::lock(&d).local, ipc::Local::TimerFd(_) | ipc::Local::SignalFd { .. }));
        self.mm = state.mm.clone();
        self.stdin = state.stdin.clone();
        self.sigactions = state.sigactions;
        // Timeouts keep the time they had left when the state was captured.
        let shift = state.captured_at.elapsed();
        self.threads = state.threads.iter().map(|t| t.shifted(shift)).collect();
        self.current = state.current;
        self.next_tid = state.next_tid;
        self.futex_seq = state.futex_seq;
        self.shared_pending = state.shared_pending.clone();
        self.timers =
            state.timers.iter().map(|t| signals::Timer { next: t.next.map(|n| n.checked_add(shift).unwrap_or(n)), ..t.clone() }).collect();
        self.stdout = self.stdout.fresh_like();
        self.stderr = self.stderr.fresh_like();
        Ok(())
    }

    /// A new process like this one but in `state` (for a fork), with fresh output buffers.
    pub fn fork_from(&self, state: &LinuxState) -> Result<Linux> {
        let mut child = Linux::new(ProcessConfig {
            mm: state.mm.clone(),
            policy: Arc::clone(&self.policy),
            stdin: state.stdin.clone(),
            stdout: self.stdout.fresh_like(),
            stderr: self.stderr.fresh_like(),
            exe_path: self.exe_path.clone(),
            cwd: self.cwd.clone(),
            fs: state.fs.clone(),
            memory: self.memory,
            stack_size: self.stack_size,
            trace: self.trace,
            xsave_size: self.xsave_size,
            xfeatures: self.xfeatures,
        });
        (child.uid, child.gid) = (self.uid, self.gid);
        child.restore(state)?;
        Ok(child)
    }

    /// The rights changes the last syscalls made (mmap, munmap, mprotect, brk, mremap), for
    /// the machine to put into the page tables before the guest runs again.
    pub fn take_rights_changes(&mut self) -> Vec<crate::layout::Region> {
        self.mm.take_changes()
    }

    /// True if a mapping holds `addr` (see [`mm::Mappings::is_mapped`]).
    pub fn is_mapped(&self, addr: u64) -> bool {
        self.mm.is_mapped(addr)
    }

    /// Run syscall `nr` with arguments `a`.
    pub fn handle(&mut self, env: &SyscallEnv, host: &mut dyn Host, nr: u64, a: [u64; 6]) -> Result<Flow> {
        // A wait's deadline belongs to the syscall that waited, run again; a new one has none
        // (a thread woken with a result never ran its wait again to clear it).
        let t = self.thread_mut();
        if !std::mem::take(&mut t.rerun) {
            t.wait_deadline = None;
        }
        let flow = self.dispatch(env, host, nr, &a);
        if matches!(flow, Ok(Flow::Block)) {
            // A signal or an I/O change may make it run again (see `signals::RestartWhen`).
            self.thread_mut().blocked_nr = nr;
            self.interrupt_if_pending();
        } else {
            // The wait (if this was one, run again) is over; a helper that started to wait
            // before the syscall settled for a partial result (readv) does not leave its
            // thread marked blocked.
            let t = self.thread_mut();
            t.wait_deadline = None;
            if t.state != threads::RunState::Exited {
                t.state = threads::RunState::Runnable;
            }
        }
        self.trace_syscall(env, host, nr, &a, &flow);
        flow
    }

    /// Report one traced syscall to the host, or print it to stderr, if tracing is on (host calls
    /// are traced too).
    fn trace_syscall(&self, env: &SyscallEnv, host: &mut dyn Host, nr: u64, a: &[u64; 6], flow: &Result<Flow>) {
        if !self.trace {
            return;
        }
        let shown = match flow {
            Ok(Flow::Return(v)) if (*v as i64) < 0 && (*v as i64) > -4096 => {
                format!("-{}", errno_name((*v as i64).wrapping_neg() as i32))
            }
            Ok(Flow::Return(v)) => format!("{v:#x}"),
            Ok(Flow::Exit(s)) => format!("exit {s:?}"),
            Ok(Flow::Block) => "(blocked)".into(),
            Ok(Flow::Yield) => "0 (yield)".into(),
            Ok(Flow::Replace(_)) => "(registers restored)".into(),
            Err(e) => format!("stopped: {e}"),
        };
        let name = table::name(nr);
        if host.trace(&crate::host::TraceEvent { nr, name: &name, args: *a, result: &shown }) {
            return;
        }
        // Paths are shown as strings, as strace does (read after the call: what it used).
        let kinds = table::lookup(nr).map_or(&[][..], |s| s.args);
        let args: Vec<String> = a
            .iter()
            .enumerate()
            .take(if kinds.is_empty() { 6 } else { kinds.len() })
            .map(|(i, v)| match kinds.get(i) {
                Some(table::Arg::Path) => match env.user().read_cstring(*v, 256) {
                    Ok(Some(s)) => format!("{:?}", String::from_utf8_lossy(&s)),
                    _ => format!("{v:#x}"),
                },
                Some(table::Arg::Fd | table::Arg::Int) => format!("{}", *v as i64),
                _ => format!("{v:#x}"),
            })
            .collect();
        eprintln!("[kvmbox] {name}({}) = {shown}", args.join(", "));
    }

    fn dispatch(&mut self, env: &SyscallEnv, host: &mut dyn Host, nr: u64, a: &[u64; 6]) -> Result<Flow> {
        // The embedder's own syscall numbers (host calls), or Linux ones it took over.
        if host.intercepts(nr) {
            let mut call = HostCall { nr, args: *a, memory: env.user(), deadline: env.deadline };
            return match host.syscall(&mut call) {
                Ok(v) => Ok(Flow::Return(v)),
                // A handler that gave up because the run must stop ends it that way.
                Err(e) => env.deadline.check().and(Err(Error::HostCallback(e))),
            };
        }
        match table::lookup(nr) {
            Some(syscall) => (syscall.run)(self, env, host, a),
            None => Ok(Flow::Return(err(errno::ENOSYS))),
        }
    }
}

fn host_result(n: i64) -> std::result::Result<u64, i32> {
    if n < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(errno::EIO))
    } else {
        Ok(n as u64)
    }
}

/// Name of an errno value for traces.
pub fn errno_name(e: i32) -> String {
    let known = [
        (errno::EPERM, "EPERM"),
        (errno::ENOENT, "ENOENT"),
        (errno::ESRCH, "ESRCH"),
        (errno::EINTR, "EINTR"),
        (errno::EIO, "EIO"),
        (errno::EBADF, "EBADF"),
        (errno::EAGAIN, "EAGAIN"),
        (errno::ENOMEM, "ENOMEM"),
        (errno::EACCES, "EACCES"),
        (errno::EFAULT, "EFAULT"),
        (errno::EEXIST, "EEXIST"),
        (errno::ENOTDIR, "ENOTDIR"),
        (errno::EISDIR, "EISDIR"),
        (errno::EINVAL, "EINVAL"),
        (errno::EMFILE, "EMFILE"),
        (errno::ENOTTY, "ENOTTY"),
        (errno::ESPIPE, "ESPIPE"),
        (errno::EROFS, "EROFS"),
        (errno::ERANGE, "ERANGE"),
        (errno::ENOSYS, "ENOSYS"),
        (errno::ETIMEDOUT, "ETIMEDOUT"),
    ];
    known.iter().find(|(n, _)| *n == e).map(|(_, s)| s.to_string()).unwrap_or_else(|| format!("E{e}"))
}

#[cfg(test)]
mod tests;

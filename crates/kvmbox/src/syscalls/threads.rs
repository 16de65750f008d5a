//! Threads of the emulated process: per-thread state, creation and exit, TLS bases, futexes
//! and the scheduler that picks which thread the machine's one vCPU runs next.
//!
//! The machine runs one thread at a time. The running thread's CPU state lives in the vCPU;
//! every other thread keeps its own ([`SavedCpu`]) here. A syscall that has to wait (a futex
//! wait, a sleep) marks its thread blocked and returns [`Flow::Block`]; the machine then saves
//! the thread's CPU state and loads the next one [`Linux::schedule`] names. The machine also
//! preempts a thread that has run for a time slice while others are runnable.

use std::time::{Duration, Instant};

use kvm_bindings::{kvm_regs, kvm_xsave};

use super::signals::{RestartWhen, SigInfo};
use super::time::host_clock;
use super::{err, errno, ExitStatus, Flow, Linux, SyscallEnv};

/// The calling thread's user-mode CPU state at a syscall: the registers `sysret` returns to
/// (rip after the `syscall`, the user rflags) and the TLS bases.
#[derive(Debug, Clone, Copy, Default)]
pub struct UserCpu {
    pub regs: kvm_regs,
    pub fs_base: u64,
    pub gs_base: u64,
}

/// Changes a syscall made to the calling thread's CPU state, which the machine applies
/// before the thread runs again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuUpdate {
    pub fs_base: Option<u64>,
    pub gs_base: Option<u64>,
}

/// The CPU state of a thread that is not on the vCPU.
pub struct SavedCpu {
    /// User-mode registers to continue with.
    pub user: UserCpu,
    /// x87/SSE/AVX state; `None` for a thread just created, until the machine copies its
    /// creator's in (see [`Linux::take_unfilled_fpu`]).
    pub xsave: Option<Box<kvm_xsave>>,
}

impl Clone for SavedCpu {
    fn clone(&self) -> SavedCpu {
        let xsave = self.xsave.as_ref().map(|x| Box::new(kvm_xsave { region: x.region, ..Default::default() }));
        SavedCpu { user: self.user, xsave }
    }
}

/// Whether a thread can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Runnable,
    /// In FUTEX_WAIT on the word at `addr`; a wake whose bitset meets `bitset` ends it.
    /// `seq` orders waiters (first come, first woken).
    Futex {
        addr: u64,
        bitset: u32,
        until: Option<Instant>,
        seq: u64,
    },
    /// In nanosleep (or waiting for ever, `None`); `rem` is where an interrupted sleep
    /// reports the time left (0: nowhere).
    Sleep {
        until: Option<Instant>,
        rem: u64,
    },
    /// In pause or sigsuspend: until a handler runs.
    Pause,
    /// In sigtimedwait for a signal in `set`.
    SigWait {
        set: u64,
        until: Option<Instant>,
    },
    /// Waiting for an in-machine object (pipe, eventfd, epoll) to change, or `until`
    /// (then the syscall returns 0); a signal ends the wait as `on_signal` says.
    IoWait {
        until: Option<Instant>,
        on_signal: RestartWhen,
    },
    /// Ended; removed when the machine switches away from it.
    Exited,
}

impl RunState {
    fn until(&self) -> Option<Instant> {
        match *self {
            RunState::Futex { until, .. }
            | RunState::Sleep { until, .. }
            | RunState::SigWait { until, .. }
            | RunState::IoWait { until, .. } => until,
            _ => None,
        }
    }
}

/// What Linux keeps per thread (the process's state — memory, descriptors, dispositions — is
/// shared by all of them).
#[derive(Clone)]
pub struct Thread {
    pub tid: u64,
    /// Blocked signals.
    pub sigmask: u64,
    /// `stack_t` of the alternate signal stack: ss_sp, ss_flags, ss_size.
    pub altstack: [u64; 3],
    /// set_tid_address / CLONE_CHILD_CLEARTID: zeroed and futex-woken when the thread exits.
    pub clear_child_tid: u64,
    /// set_robust_list: the head of the thread's robust futex list.
    pub robust_list: u64,
    /// CPU changes the machine has yet to apply (running thread only).
    pub cpu_update: CpuUpdate,
    pub state: RunState,
    /// The syscall result it gets when it runs again after blocking.
    pub resume_rax: Option<u64>,
    /// Its CPU state while another thread is on the vCPU.
    pub saved: Option<Box<SavedCpu>>,
    /// Signals sent to this thread, not yet delivered.
    pub pending: Vec<SigInfo>,
    /// A signal interrupted its blocking syscall: whether the syscall runs again is decided
    /// when the signal is delivered.
    pub restart: Option<RestartWhen>,
    /// The syscall it blocked in (to run it again).
    pub blocked_nr: u64,
    /// The mask sigsuspend replaced, restored by the handler's return.
    pub saved_mask: Option<u64>,
    /// The deadline of the wait its syscall is in, kept when the syscall runs again after an
    /// I/O change or a signal that ran no handler (a relative timeout does not start over).
    pub wait_deadline: Option<Option<Instant>>,
    /// Its user code was rewound to run the blocked syscall again: only that run keeps
    /// `wait_deadline` (any other syscall starts with none).
    pub rerun: bool,
    /// An interrupted nanosleep's `rem` pointer and the time that was left.
    pub sleep_rem: Option<(u64, Duration)>,
}

/// The tid of the first thread, which is also the process id.
pub const MAIN_TID: u64 = 1;
/// How many threads a process may have at once (Linux's default threads-max is far higher,
/// but each costs host memory here: the saved XSAVE area, 4 KiB).
pub const MAX_THREADS: usize = 4096;
/// Robust-list entries walked at thread exit, as Linux's ROBUST_LIST_LIMIT.
const ROBUST_LIST_LIMIT: usize = 2048;

impl Thread {
    /// The first thread of a new process.
    pub fn main() -> Thread {
        Thread {
            tid: MAIN_TID,
            sigmask: 0,
            altstack: [0, 2 /* SS_DISABLE */, 0],
            clear_child_tid: 0,
            robust_list: 0,
            cpu_update: CpuUpdate::default(),
            state: RunState::Runnable,
            resume_rax: None,
            saved: None,
            pending: Vec::new(),
            restart: None,
            blocked_nr: 0,
            saved_mask: None,
            wait_deadline: None,
            rerun: false,
            sleep_rem: None,
        }
    }
}

impl Thread {
    /// This thread with its timeout moved `by` later (a captured state restored later keeps
    /// the time its waits had left).
    pub fn shifted(&self, by: Duration) -> Thread {
        let mut t = self.clone();
        let later = |u: Option<Instant>| u.map(|u| u.checked_add(by).unwrap_or(u));
        match &mut t.state {
            RunState::Futex { until, .. }
            | RunState::Sleep { until, .. }
            | RunState::SigWait { until, .. }
            | RunState::IoWait { until, .. } => *until = later(*until),
            _ => {}
        }
        t.wait_deadline = t.wait_deadline.map(later);
        t
    }
}

/// What the machine does next (see [`Linux::schedule`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Run the thread at this position (it may be the one already on the vCPU).
    Run(usize),
    /// Every live thread is blocked; the first timeout ends at this instant (`None`: only the
    /// end of the run can end the wait).
    Wait(Option<Instant>),
    /// Every live thread is blocked for ever: nothing can wake them.
    Deadlock,
}

// clone flags.
const CLONE_VM: u64 = 0x100;
const CLONE_FS: u64 = 0x200;
const CLONE_FILES: u64 = 0x400;
const CLONE_SIGHAND: u64 = 0x800;
const CLONE_PIDFD: u64 = 0x1000;
const CLONE_PTRACE: u64 = 0x2000;
const CLONE_VFORK: u64 = 0x4000;
const CLONE_PARENT: u64 = 0x8000;
const CLONE_THREAD: u64 = 0x10000;
const CLONE_NEWNS: u64 = 0x20000;
const CLONE_SYSVSEM: u64 = 0x40000;
const CLONE_SETTLS: u64 = 0x80000;
const CLONE_PARENT_SETTID: u64 = 0x100000;
const CLONE_CHILD_CLEARTID: u64 = 0x200000;
const CLONE_DETACHED: u64 = 0x400000;
const CLONE_UNTRACED: u64 = 0x800000;
const CLONE_CHILD_SETTID: u64 = 0x1000000;
/// The flags a thread of this process may be created with; anything else (new namespaces,
/// a new process, vfork) is refused.
const THREAD_FLAGS: u64 = CLONE_VM
    | CLONE_FS
    | CLONE_FILES
    | CLONE_SIGHAND
    | CLONE_THREAD
    | CLONE_SYSVSEM
    | CLONE_SETTLS
    | CLONE_PARENT_SETTID
    | CLONE_CHILD_CLEARTID
    | CLONE_CHILD_SETTID
    | CLONE_DETACHED
    | CLONE_UNTRACED
    | CLONE_PTRACE
    | CLONE_PARENT;

// futex operations and flags.
const FUTEX_WAIT: u64 = 0;
const FUTEX_WAKE: u64 = 1;
const FUTEX_REQUEUE: u64 = 3;
const FUTEX_CMP_REQUEUE: u64 = 4;
const FUTEX_WAKE_OP: u64 = 5;
const FUTEX_WAIT_BITSET: u64 = 9;
const FUTEX_WAKE_BITSET: u64 = 10;
const FUTEX_PRIVATE_FLAG: u64 = 128;
const FUTEX_CLOCK_REALTIME: u64 = 256;
const FUTEX_WAITERS: u32 = 0x8000_0000;
const FUTEX_OWNER_DIED: u32 = 0x4000_0000;
const FUTEX_TID_MASK: u32 = 0x3fff_ffff;

/// A clone request, from clone's registers or clone3's struct.
struct CloneArgs {
    flags: u64,
    /// The new thread's stack pointer (0: the caller's).
    stack: u64,
    parent_tid: u64,
    child_tid: u64,
    tls: u64,
}

impl Linux {
    /// The calling thread (the one on the vCPU).
    pub(crate) fn thread(&self) -> &Thread {
        &self.threads[self.current]
    }

    pub(crate) fn thread_mut(&mut self) -> &mut Thread {
        &mut self.threads[self.current]
    }

    pub(super) fn threads_mut(&mut self) -> &mut [Thread] {
        &mut self.threads
    }

    /// The calling thread's id.
    pub fn tid(&self) -> u64 {
        self.thread().tid
    }

    /// The live threads, in creation order (tests and debuggers).
    pub fn threads(&self) -> &[Thread] {
        &self.threads
    }

    #[cfg(test)]
    pub(super) fn take_shared_pending_for_tests(&mut self) -> usize {
        std::mem::take(&mut self.shared_pending).len()
    }

    /// The thread with id `tid` (debuggers change a waiting thread's registers).
    pub fn thread_by_tid_mut(&mut self, tid: u64) -> Option<&mut Thread> {
        self.threads.iter_mut().find(|t| t.tid == tid && t.state != RunState::Exited)
    }

    /// Position of the thread on the vCPU in [`Linux::threads`].
    pub fn current(&self) -> usize {
        self.current
    }

    pub(super) fn set_tid_address(&mut self, addr: u64) -> u64 {
        let thread = self.thread_mut();
        thread.clear_child_tid = addr;
        thread.tid
    }

    pub(super) fn set_robust_list(&mut self, head: u64, len: u64) -> std::result::Result<u64, i32> {
        const ROBUST_LIST_HEAD_SIZE: u64 = 24;
        if len != ROBUST_LIST_HEAD_SIZE {
            return Err(errno::EINVAL);
        }
        self.thread_mut().robust_list = head;
        Ok(0)
    }

    pub(super) fn arch_prctl(&mut self, env: &SyscallEnv, code: u64, addr: u64) -> std::result::Result<u64, i32> {
        const SET_GS: u64 = 0x1001;
        const SET_FS: u64 = 0x1002;
        const GET_FS: u64 = 0x1003;
        const GET_GS: u64 = 0x1004;
        match code {
            SET_FS | SET_GS => {
                // Non-canonical bases would make the next guest entry fail.
                if addr >= 0x0000_8000_0000_0000 {
                    return Err(errno::EPERM);
                }
                let update = &mut self.thread_mut().cpu_update;
                if code == SET_FS {
                    update.fs_base = Some(addr);
                } else {
                    update.gs_base = Some(addr);
                }
                Ok(0)
            }
            GET_FS | GET_GS => {
                let base = if code == GET_FS { env.cpu.fs_base } else { env.cpu.gs_base };
                env.user().write_u64(addr, base)?;
                Ok(0)
            }
            _ => Err(errno::EINVAL),
        }
    }

    // ---- creation and exit ------------------------------------------------------------------

    pub(super) fn clone(&mut self, env: &SyscallEnv, a: &[u64; 6]) -> std::result::Result<u64, i32> {
        // x86-64 order: flags, stack, parent_tid, child_tid, tls. The low byte is the exit
        // signal, meaningless for threads.
        self.spawn(env, CloneArgs { flags: a[0] & !0xff, stack: a[1], parent_tid: a[2], child_tid: a[3], tls: a[4] })
    }

    pub(super) fn clone3(&mut self, env: &SyscallEnv, args: u64, size: u64) -> std::result::Result<u64, i32> {
        const CLONE_ARGS_SIZE_VER0: u64 = 64;
        if !(CLONE_ARGS_SIZE_VER0..=4096).contains(&size) {
            return Err(errno::EINVAL);
        }
        // flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, then
        // set_tid, set_tid_size, cgroup (which must be unused here).
        let mut raw = [0u64; 11];
        let words = usize::try_from(size / 8).unwrap_or(0).min(raw.len());
        for (i, w) in raw.iter_mut().enumerate().take(words) {
            *w = env.user().read_u64(args.checked_add(8u64.saturating_mul(i as u64)).ok_or(errno::EFAULT)?)?;
        }
        let [flags, _pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup] = raw;
        if exit_signal > 64 || set_tid != 0 || set_tid_size != 0 || cgroup != 0 {
            return Err(errno::EINVAL);
        }
        let stack = match (stack, stack_size) {
            (0, 0) => 0,
            (0, _) | (_, 0) => return Err(errno::EINVAL),
            (base, len) => base.checked_add(len).ok_or(errno::EINVAL)?,
        };
        self.spawn(env, CloneArgs { flags, stack, parent_tid, child_tid, tls })
    }

    /// Create a thread that continues from the caller's syscall with rax 0 (the caller gets
    /// its tid). Only threads of this process can be made: a new process (fork, vfork) is
    /// ENOSYS, as there is no second address space to give it.
    fn spawn(&mut self, env: &SyscallEnv, c: CloneArgs) -> std::result::Result<u64, i32> {
        if c.flags & (CLONE_VM | CLONE_THREAD) != (CLONE_VM | CLONE_THREAD) || c.flags & CLONE_VFORK != 0 {
            // Linux's own rules first: a thread shares signal handlers, which share memory.
            if c.flags & CLONE_THREAD != 0 && c.flags & CLONE_SIGHAND == 0 || c.flags & CLONE_SIGHAND != 0 && c.flags & CLONE_VM == 0 {
                return Err(errno::EINVAL);
            }
            return Err(errno::ENOSYS);
        }
        if c.flags & CLONE_SIGHAND == 0 {
            return Err(errno::EINVAL);
        }
        if c.flags & (CLONE_PIDFD | CLONE_NEWNS) != 0 || c.flags & !THREAD_FLAGS != 0 {
            return Err(errno::EINVAL);
        }
        if self.threads.len() >= MAX_THREADS {
            return Err(errno::EAGAIN);
        }
        if c.flags & CLONE_SETTLS != 0 && c.tls >= 0x0000_8000_0000_0000 {
            return Err(errno::EPERM);
        }
        let tid = self.next_tid;
        let tid32 = u32::try_from(tid).map_err(|_| errno::EAGAIN)?;
        // The ids are written before the thread exists, as Linux does (a fault: EFAULT, no thread).
        if c.flags & CLONE_PARENT_SETTID != 0 {
            env.user().write(c.parent_tid, &tid32.to_le_bytes())?;
        }
        if c.flags & CLONE_CHILD_SETTID != 0 {
            env.user().write(c.child_tid, &tid32.to_le_bytes())?;
        }
        self.next_tid = self.next_tid.saturating_add(1);
        let mut user = env.cpu;
        user.regs.rax = 0;
        if c.stack != 0 {
            user.regs.rsp = c.stack;
        }
        // The TLS bases the caller has now, including one it set earlier in this exit.
        let pending = self.thread().cpu_update;
        user.fs_base = pending.fs_base.unwrap_or(user.fs_base);
        user.gs_base = pending.gs_base.unwrap_or(user.gs_base);
        if c.flags & CLONE_SETTLS != 0 {
            user.fs_base = c.tls;
        }
        let parent = self.thread();
        let thread = Thread {
            tid,
            sigmask: parent.sigmask,
            // A thread sharing memory starts without the alternate stack (it would be shared).
            altstack: [0, 2 /* SS_DISABLE */, 0],
            clear_child_tid: if c.flags & CLONE_CHILD_CLEARTID != 0 { c.child_tid } else { 0 },
            robust_list: 0,
            cpu_update: CpuUpdate::default(),
            state: RunState::Runnable,
            resume_rax: None,
            saved: Some(Box::new(SavedCpu { user, xsave: None })),
            pending: Vec::new(),
            restart: None,
            blocked_nr: 0,
            saved_mask: None,
            wait_deadline: None,
            rerun: false,
            sleep_rem: None,
        };
        self.threads.push(thread);
        Ok(tid)
    }

    /// A thread created since the last call whose FPU state is still to be copied from its
    /// creator (the machine copies the vCPU's, which is the creator's, right after the clone).
    pub fn take_unfilled_fpu(&mut self) -> Option<&mut SavedCpu> {
        // Checked after every syscall, so O(1): a clone appends its thread, and the machine
        // fills it before the next syscall; only the newest thread can be unfilled.
        self.threads.last_mut().and_then(|t| t.saved.as_deref_mut()).filter(|s| s.xsave.is_none())
    }

    /// `exit`: the calling thread ends. Its clear_child_tid word is zeroed and woken (how
    /// pthread_join learns of it), robust futexes it held are marked OWNER_DIED; the last
    /// thread's exit ends the process with its status.
    pub(super) fn exit_thread(&mut self, env: &SyscallEnv, status: u64) -> Flow {
        let code = (status & 0xff) as i32;
        if self.threads.iter().filter(|t| t.state != RunState::Exited).count() <= 1 {
            return Flow::Exit(ExitStatus::Code(code));
        }
        let (tid, clear, robust) = {
            let t = self.thread();
            (t.tid, t.clear_child_tid, t.robust_list)
        };
        self.release_robust_futexes(env, tid, robust);
        // Errors are ignored, as Linux does: the thread is gone either way.
        if clear != 0 && env.user().write(clear, &0u32.to_le_bytes()).is_ok() {
            self.wake(clear, 1, u32::MAX);
        }
        self.thread_mut().state = RunState::Exited;
        Flow::Block
    }

    /// Walk the exiting thread's robust list (bounded, like Linux) and mark each futex it
    /// still owns as OWNER_DIED, waking one waiter.
    fn release_robust_futexes(&mut self, env: &SyscallEnv, tid: u64, head: u64) {
        if head == 0 {
            return;
        }
        let user = env.user();
        // struct robust_list_head { next, futex_offset, list_op_pending }
        let (Ok(mut entry), Ok(offset), Ok(pending)) =
            (user.read_u64(head), user.read_u64(head.wrapping_add(8)), user.read_u64(head.wrapping_add(16)))
        else {
            return;
        };
        let release = |this: &mut Linux, entry: u64| {
            let word_at = (entry & !1).wrapping_add(offset);
            let mut word = [0u8; 4];
            if user.read(word_at, &mut word).is_err() {
                return;
            }
            let word = u32::from_le_bytes(word);
            if u64::from(word & FUTEX_TID_MASK) != tid {
                return;
            }
            let new = (word & FUTEX_WAITERS) | FUTEX_OWNER_DIED;
            if user.write(word_at, &new.to_le_bytes()).is_ok() && word & FUTEX_WAITERS != 0 {
                this.wake(word_at, 1, u32::MAX);
            }
        };
        for _ in 0..ROBUST_LIST_LIMIT {
            if entry == head || entry == 0 {
                break;
            }
            if entry != pending {
                release(self, entry);
            }
            match user.read_u64(entry & !1) {
                Ok(next) => entry = next,
                Err(_) => break,
            }
        }
        if pending != 0 {
            release(self, pending);
        }
    }

    // ---- futexes ----------------------------------------------------------------------------

    pub(super) fn futex(&mut self, env: &SyscallEnv, a: &[u64; 6]) -> Flow {
        match self.futex_op(env, a) {
            Ok(Some(v)) => Flow::Return(v),
            Ok(None) => Flow::Block,
            Err(e) => Flow::Return(err(e)),
        }
    }

    /// `Ok(None)`: the caller now waits.
    fn futex_op(&mut self, env: &SyscallEnv, a: &[u64; 6]) -> std::result::Result<Option<u64>, i32> {
        let (uaddr, op, val) = (a[0], a[1], a[2]);
        let cmd = op & !(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME);
        if op & FUTEX_CLOCK_REALTIME != 0 && !matches!(cmd, FUTEX_WAIT | FUTEX_WAIT_BITSET) {
            return Err(errno::ENOSYS);
        }
        if !uaddr.is_multiple_of(4) {
            return Err(errno::EINVAL);
        }
        let word = |at: u64| -> std::result::Result<u32, i32> {
            let mut b = [0u8; 4];
            env.user().read(at, &mut b)?;
            Ok(u32::from_le_bytes(b))
        };
        let count = |v: u64| -> usize { usize::try_from(v as u32 as i32).unwrap_or(0) };
        match cmd {
            FUTEX_WAIT | FUTEX_WAIT_BITSET => {
                let bitset = if cmd == FUTEX_WAIT { u32::MAX } else { a[5] as u32 };
                if bitset == 0 {
                    return Err(errno::EINVAL);
                }
                let until = match (self.thread().wait_deadline, a[3]) {
                    (Some(kept), _) => kept, // run again after a signal: the same deadline
                    (None, 0) => None,
                    (None, ts) => {
                        let clock = if op & FUTEX_CLOCK_REALTIME != 0 { libc::CLOCK_REALTIME } else { libc::CLOCK_MONOTONIC };
                        // FUTEX_WAIT's timeout is relative; FUTEX_WAIT_BITSET's absolute.
                        wake_time(env, ts, clock, cmd == FUTEX_WAIT_BITSET, self.mono_offset)?
                    }
                };
                if word(uaddr)? != val as u32 {
                    return Err(errno::EAGAIN);
                }
                if until.is_some_and(|u| u <= Instant::now()) {
                    return Err(errno::ETIMEDOUT);
                }
                let seq = self.futex_seq;
                self.futex_seq = self.futex_seq.wrapping_add(1);
                let t = self.thread_mut();
                t.state = RunState::Futex { addr: uaddr, bitset, until, seq };
                t.wait_deadline = Some(until);
                Ok(None)
            }
            FUTEX_WAKE | FUTEX_WAKE_BITSET => {
                let bitset = if cmd == FUTEX_WAKE { u32::MAX } else { a[5] as u32 };
                if bitset == 0 {
                    return Err(errno::EINVAL);
                }
                word(uaddr)?;
                Ok(Some(self.wake(uaddr, count(val), bitset) as u64))
            }
            FUTEX_REQUEUE | FUTEX_CMP_REQUEUE => {
                let (requeue, uaddr2) = (count(a[3]), a[4]);
                if !uaddr2.is_multiple_of(4) {
                    return Err(errno::EINVAL);
                }
                word(uaddr2)?;
                if cmd == FUTEX_CMP_REQUEUE && word(uaddr)? != a[5] as u32 {
                    return Err(errno::EAGAIN);
                }
                // Requeue wakes exactly nr_wake (0 is none, unlike FUTEX_WAKE).
                let woken = if count(val) == 0 { 0 } else { self.wake(uaddr, count(val), u32::MAX) };
                let moved = self.requeue(uaddr, uaddr2, requeue);
                Ok(Some(if cmd == FUTEX_CMP_REQUEUE { woken.saturating_add(moved) } else { woken } as u64))
            }
            FUTEX_WAKE_OP => {
                let (uaddr2, wake2, encoded) = (a[4], count(a[3]), a[5] as u32);
                if !uaddr2.is_multiple_of(4) {
                    return Err(errno::EINVAL);
                }
                let old = word(uaddr2)?;
                let (new, condition) = wake_op(encoded, old).ok_or(errno::ENOSYS)?;
                env.user().write(uaddr2, &new.to_le_bytes())?;
                let mut woken = self.wake(uaddr, count(val), u32::MAX);
                if condition {
                    woken = woken.saturating_add(self.wake(uaddr2, wake2, u32::MAX));
                }
                Ok(Some(woken as u64))
            }
            // Priority-inheritance futexes are not emulated.
            _ => Err(errno::ENOSYS),
        }
    }

    /// Wake up to `n` (at least one, as Linux) threads waiting on `addr` whose bitset meets
    /// `bitset`, first waiters first. Returns how many woke.
    fn wake(&mut self, addr: u64, n: usize, bitset: u32) -> usize {
        let mut woken = 0;
        while woken < n.max(1) {
            let first = self
                .threads
                .iter()
                .enumerate()
                .filter_map(|(i, t)| match t.state {
                    RunState::Futex { addr: a, bitset: b, seq, .. } if a == addr && b & bitset != 0 => Some((seq, i)),
                    _ => None,
                })
                .min();
            let Some((_, i)) = first else { break };
            let t = &mut self.threads[i];
            t.state = RunState::Runnable;
            t.resume_rax = Some(0);
            woken = woken.saturating_add(1);
        }
        woken
    }

    /// Move up to `n` waiters from `from` to `to` (they keep their place in line).
    fn requeue(&mut self, from: u64, to: u64, n: usize) -> usize {
        let mut waiting: Vec<(u64, usize)> = self
            .threads
            .iter()
            .enumerate()
            .filter_map(|(i, t)| match t.state {
                RunState::Futex { addr, seq, .. } if addr == from => Some((seq, i)),
                _ => None,
            })
            .collect();
        waiting.sort_unstable();
        let moved = waiting.len().min(n);
        for &(_, i) in waiting.iter().take(moved) {
            if let RunState::Futex { addr, .. } = &mut self.threads[i].state {
                *addr = to;
            }
        }
        moved
    }

    // ---- sleeping and yielding ----------------------------------------------------------------

    /// The calling thread sleeps until `until` (`None`: until the run ends); if a signal
    /// interrupts it, the time left goes to `rem`.
    pub(super) fn sleep(&mut self, until: Option<Instant>, rem: u64) -> Flow {
        let t = self.thread_mut();
        t.state = RunState::Sleep { until, rem };
        t.wait_deadline = Some(until);
        Flow::Block
    }

    // ---- scheduling -------------------------------------------------------------------------

    /// Pick the thread to run next, waking those whose timeout has passed: the first runnable
    /// thread after the current one (round robin), else the current one if it can run. With
    /// every thread blocked: when the first timeout ends, or a deadlock.
    pub fn schedule(&mut self, now: Instant) -> Next {
        self.wake_due(now);
        // Round robin: the first runnable thread after the current one, else from the start
        // (which may be the current one).
        let next = self.current.saturating_add(1).min(self.threads.len());
        let (head, tail) = self.threads.split_at(next);
        let runnable = |t: &Thread| t.state == RunState::Runnable;
        if let Some(i) = tail.iter().position(runnable).map(|i| i.saturating_add(next)).or_else(|| head.iter().position(runnable)) {
            return Next::Run(i);
        }
        let blocked = || self.threads.iter().filter(|t| t.state != RunState::Exited);
        let first_timer = self.next_timer();
        if let Some(at) = blocked().filter_map(|t| t.state.until()).chain(first_timer).min() {
            return Next::Wait(Some(at));
        }
        // A thread asleep for ever (or waiting for a signal) is waiting for the run to end (its
        // timeout, an interrupt), as natively it would wait for a signal from outside; futex
        // waiters alone can never wake.
        let for_a_signal = |t: &Thread| matches!(t.state, RunState::Sleep { until: None, .. } | RunState::Pause | RunState::SigWait { .. });
        if blocked().any(for_a_signal) {
            return Next::Wait(None);
        }
        Next::Deadlock
    }

    /// Fire the timers due by `now` and end the waits whose timeout has passed; true if a
    /// thread became runnable.
    pub fn wake_due(&mut self, now: Instant) -> bool {
        self.fire_timers(now);
        let mut woke = false;
        for t in &mut self.threads {
            if t.state.until().is_some_and(|u| u <= now) {
                t.resume_rax = Some(match t.state {
                    RunState::Futex { .. } => err(errno::ETIMEDOUT),
                    RunState::SigWait { .. } => err(errno::EAGAIN),
                    _ => 0,
                });
                t.state = RunState::Runnable;
                t.wait_deadline = None;
                // A ppoll/epoll_pwait that timed out puts its caller's mask back.
                if let Some(mask) = t.saved_mask.take() {
                    t.sigmask = mask;
                }
                woke = true;
            }
        }
        woke
    }

    /// When the first waiting thread's timeout ends (the run's timer must fire then, even
    /// while another thread spins without syscalls).
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.threads.iter().filter_map(|t| t.state.until()).min()
    }

    /// Whether a thread other than the current one can run (the machine then preempts the
    /// current one at the end of its time slice).
    pub fn others_runnable(&self) -> bool {
        self.threads.len() > 1 && self.threads.iter().enumerate().any(|(i, t)| i != self.current && t.state == RunState::Runnable)
    }

    /// Put the current thread's CPU state aside (it stops running; an exited thread's is dropped).
    pub fn park_current(&mut self, saved: SavedCpu) {
        let t = self.thread_mut();
        if t.state != RunState::Exited {
            t.saved = Some(Box::new(saved));
        }
    }

    /// Make thread `i` current, dropping exited threads. Returns its saved CPU state with the
    /// syscall result it is owed, or `None` if it already is on the vCPU (then `resume_rax`
    /// is what the machine puts in rax).
    pub fn switch_to(&mut self, i: usize) -> (Option<Box<SavedCpu>>, Option<u64>) {
        let tid = self.threads[i].tid;
        let stay = i == self.current;
        self.threads.retain(|t| t.state != RunState::Exited);
        self.current = self.threads.iter().position(|t| t.tid == tid).unwrap_or(0);
        let t = &mut self.threads[self.current];
        let rax = t.resume_rax.take();
        if stay {
            return (None, rax);
        }
        (t.saved.take(), rax)
    }
}

/// FUTEX_WAKE_OP: the new value of the second word and whether its waiters are woken too,
/// from the encoded operation and the old value; `None` for an unknown operation.
fn wake_op(encoded: u32, old: u32) -> Option<(u32, bool)> {
    let op = (encoded >> 28) & 0x7;
    let shift = encoded & (8 << 28) != 0;
    let cmp = (encoded >> 24) & 0xf;
    // 12-bit signed fields.
    let sext12 = |v: u32| ((v << 20) as i32) >> 20;
    let mut oparg = sext12((encoded >> 12) & 0xfff);
    let cmparg = sext12(encoded & 0xfff);
    if shift {
        oparg = 1i32.wrapping_shl((oparg & 31) as u32); // Linux masks a bad shift to 0–31
    }
    let oparg = oparg as u32;
    let new = match op {
        0 => oparg,
        1 => old.wrapping_add(oparg),
        2 => old | oparg,
        3 => old & !oparg,
        4 => old ^ oparg,
        _ => return None,
    };
    let (o, c) = (old as i32, cmparg);
    let condition = match cmp {
        0 => o == c,
        1 => o != c,
        2 => o < c,
        3 => o <= c,
        4 => o > c,
        5 => o >= c,
        _ => return None,
    };
    Some((new, condition))
}

/// The instant a futex or sleep timeout (a `timespec` at `ts` on `clock`, relative or
/// absolute) ends; `None` when it is too far away to matter (a wait for ever).
pub(super) fn wake_time(
    env: &SyscallEnv,
    ts: u64,
    clock: i32,
    absolute: bool,
    mono_offset: u64,
) -> std::result::Result<Option<Instant>, i32> {
    let t: libc::timespec = env.user().read_pod(ts)?;
    if t.tv_sec < 0 || !(0..1_000_000_000).contains(&t.tv_nsec) {
        return Err(errno::EINVAL);
    }
    let target = Duration::new(t.tv_sec.unsigned_abs(), t.tv_nsec as u32);
    let wait = if absolute {
        let now = host_clock(clock as u64, mono_offset)?;
        target.saturating_sub(Duration::new(now.tv_sec.max(0).unsigned_abs(), now.tv_nsec.clamp(0, 999_999_999) as u32))
    } else {
        target
    };
    Ok(Instant::now().checked_add(wait))
}

#[cfg(test)]
mod tests {
    use super::wake_op;

    #[test]
    fn wake_op_decodes_like_linux() {
        // FUTEX_OP(FUTEX_OP_SET, 0, FUTEX_OP_CMP_GT, 1): glibc's condvar/lll wake idiom.
        let encoded = (4 << 24) | 1;
        assert_eq!(wake_op(encoded, 5), Some((0, true)));
        assert_eq!(wake_op(encoded, 1), Some((0, false)));
        // ADD with a negative 12-bit argument; OPARG_SHIFT.
        assert_eq!(wake_op((1 << 28) | (0xfff << 12), 10), Some((9, false)));
        assert_eq!(wake_op((8 << 28) | (2 << 28) | (3 << 12), 1), Some((9, false)));
        assert_eq!(wake_op(6 << 24, 0), None);
    }
}

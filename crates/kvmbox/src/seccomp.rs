//! A seccomp filter (plus a Landlock ruleset) for the threads that run guests: defence in depth
//! for the host process.
//!
//! Everything a guest can make the host do passes through the run loop and the syscall
//! emulation, on the thread that called `run`/`call`. If a bug there were ever exploited, this
//! limits that thread to what running a guest needs: KVM ioctls, memory management without
//! executable mappings, opening files read-only, reads and writes on descriptors it holds,
//! clocks and timers, signals to its own process, futexes. Everything else — new processes or
//! threads, `execve`, sockets, `ptrace` and cross-process memory access, `mount`/namespaces,
//! `bpf`, `perf_event_open`, `io_uring`, `userfaultfd`, `keyctl`, other ioctls — fails with
//! `EPERM` (rather than killing the process: an embedding server should survive a kvmbox bug).
//! `openat2` must stay allowed (the file policy resolves paths with it) and seccomp cannot see
//! its flags, so where the kernel has Landlock (5.13+) the thread also gets a ruleset that
//! denies every write-like file access (writing, creating, removing, renaming, truncating):
//! opening a file for writing then fails whichever syscall tries it.
//!
//! A filter applies to one thread and cannot be removed, so it is for threads dedicated to
//! guests: the Node binding's per-machine vCPU thread (`seccomp: true`), or a thread of your
//! own in Rust. [`crate::MachineOptions::seccomp`] makes a machine refuse to run anywhere else.
//! Measured (PVM host): no measurable cost on the call round trip (docs/performance.md).

use std::cell::Cell;
use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule};

use crate::error::{Error, Result};

thread_local! {
    static RESTRICTED: Cell<Option<Restriction>> = const { Cell::new(None) };
}

/// Whether [`restrict_current_thread`] was applied to the calling thread.
pub fn current_thread_restricted() -> bool {
    RESTRICTED.with(Cell::get).is_some()
}

/// What [`restrict_current_thread`] could enforce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restriction {
    /// The Landlock ruleset denying file writes is in force (false where the kernel lacks
    /// Landlock; `openat2` could then still open a file for writing).
    pub file_writes_denied: bool,
}

/// Install kvmbox's Landlock ruleset (where the kernel has Landlock) and seccomp filter on the
/// calling thread. Afterwards the thread can run and call guests but cannot, among others,
/// start processes or threads, open files for writing, map executable memory, use the network
/// or issue non-KVM ioctls (`EPERM`). Calling it again changes nothing.
pub fn restrict_current_thread() -> Result<Restriction> {
    if let Some(r) = RESTRICTED.with(Cell::get) {
        return Ok(r);
    }
    // Threads kvmbox may start lazily are started now, while the thread still may.
    crate::reaper::start();
    let restriction = Restriction { file_writes_denied: deny_file_writes()? };
    let program = filter()?;
    seccompiler::apply_filter(&program).map_err(|e| Error::Internal(format!("installing the seccomp filter: {e}")))?;
    RESTRICTED.with(|r| r.set(Some(restriction)));
    Ok(restriction)
}

/// A Landlock ruleset that handles every write-like file access and allows none of them.
/// Best effort: returns whether the kernel enforces it.
fn deny_file_writes() -> Result<bool> {
    use landlock::{AccessFs, Ruleset, RulesetAttr, RulesetStatus, ABI};
    let fail = |e: landlock::RulesetError| Error::Internal(format!("installing the Landlock ruleset: {e}"));
    let status = Ruleset::default()
        .handle_access(AccessFs::from_write(ABI::V3))
        .map_err(fail)?
        .create()
        .map_err(fail)?
        .restrict_self()
        .map_err(fail)?;
    Ok(status.ruleset != RulesetStatus::NotEnforced)
}

fn condition(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value).map_err(|e| Error::Internal(format!("seccomp rule: {e}")))
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule> {
    SeccompRule::new(conditions).map_err(|e| Error::Internal(format!("seccomp rule: {e}")))
}

/// The BPF program: an allowlist of syscalls, some with argument checks.
fn filter() -> Result<BpfProgram> {
    const KVMIO: u64 = 0xAE;
    const TCGETS: u64 = 0x5401;
    const TIOCGWINSZ: u64 = 0x5413;
    let no_exec = || rule(vec![condition(2, SeccompCmpOp::MaskedEq(libc::PROT_EXEC as u64), 0)?]);
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let unconditional = [
        // Files the guest reads (descriptors from the allowlist) and output it writes.
        libc::SYS_read,
        libc::SYS_pread64,
        libc::SYS_readv,
        libc::SYS_write,
        libc::SYS_writev,
        libc::SYS_lseek,
        libc::SYS_close,
        libc::SYS_fstat,
        libc::SYS_newfstatat,
        libc::SYS_statx,
        libc::SYS_fstatfs,
        libc::SYS_fcntl,
        libc::SYS_getdents64,
        // Waiting for an inherited stdin or a slow stdout reader in slices, so a blocked read or
        // write never outlasts the timeout (syscalls/files.rs wait_ready).
        libc::SYS_poll,
        libc::SYS_ppoll,
        // Its flags live in memory the filter cannot see; the Landlock ruleset denies writes.
        libc::SYS_openat2,
        // Memory without new executable mappings (mmap/mprotect below).
        libc::SYS_munmap,
        libc::SYS_mremap,
        libc::SYS_madvise,
        libc::SYS_brk,
        // Time, timeouts and the timer signal that stops a runaway guest.
        libc::SYS_clock_gettime,
        libc::SYS_clock_getres,
        libc::SYS_clock_nanosleep,
        libc::SYS_nanosleep,
        libc::SYS_timer_create,
        libc::SYS_timer_settime,
        libc::SYS_timer_gettime,
        libc::SYS_timer_delete,
        libc::SYS_rt_sigaction,
        libc::SYS_rt_sigprocmask,
        libc::SYS_rt_sigreturn,
        libc::SYS_sigaltstack,
        libc::SYS_restart_syscall,
        // Threads of this process: locks, wake-ups of the JS thread, its own identity.
        libc::SYS_futex,
        libc::SYS_sched_yield,
        libc::SYS_gettid,
        libc::SYS_getpid,
        libc::SYS_rseq,
        libc::SYS_set_robust_list,
        libc::SYS_exit,
        libc::SYS_exit_group,
        // What the emulation reports to the guest.
        libc::SYS_getrandom,
        libc::SYS_uname,
        libc::SYS_getuid,
        libc::SYS_getgid,
        libc::SYS_geteuid,
        libc::SYS_getegid,
    ];
    for nr in unconditional {
        rules.insert(nr, vec![]);
    }
    // Signals only to threads of this process (the timer that stops a runaway guest).
    // SAFETY: getpid cannot fail.
    let pid = unsafe { libc::getpid() } as u64;
    rules.insert(libc::SYS_tgkill, vec![rule(vec![condition(0, SeccompCmpOp::Eq, pid)?])?]);
    // Guest memory given back (munmap, madvise, brk shrink) is punched out of its memfd.
    let punch = (libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE) as u64;
    rules.insert(libc::SYS_fallocate, vec![rule(vec![condition(1, SeccompCmpOp::Eq, punch)?])?]);
    rules.insert(libc::SYS_mmap, vec![no_exec()?]);
    rules.insert(libc::SYS_mprotect, vec![no_exec()?]);
    // Read-only opens (the O_PATH-checked file is reopened through /proc/self/fd).
    let write_flags = (libc::O_ACCMODE | libc::O_CREAT | libc::O_TRUNC | libc::O_APPEND) as u64;
    rules.insert(libc::SYS_openat, vec![rule(vec![condition(2, SeccompCmpOp::MaskedEq(write_flags), 0)?])?]);
    // KVM's ioctls, and the two terminal queries the emulation forwards for inherited stdio.
    rules.insert(
        libc::SYS_ioctl,
        vec![
            rule(vec![condition(1, SeccompCmpOp::MaskedEq(0xff00), KVMIO << 8)?])?,
            rule(vec![condition(1, SeccompCmpOp::Eq, TCGETS)?])?,
            rule(vec![condition(1, SeccompCmpOp::Eq, TIOCGWINSZ)?])?,
        ],
    );
    let arch = std::env::consts::ARCH.try_into().map_err(|e| Error::Internal(format!("seccomp: {e:?}")))?;
    let filter = SeccompFilter::new(rules, SeccompAction::Errno(libc::EPERM as u32), SeccompAction::Allow, arch)
        .map_err(|e| Error::Internal(format!("seccomp filter: {e}")))?;
    filter.try_into().map_err(|e| Error::Internal(format!("seccomp filter: {e:?}")))
}

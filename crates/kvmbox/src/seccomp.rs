//! A seccomp filter for the threads that run guests: defence in depth for the host process.
//!
//! Everything a guest can make the host do passes through the run loop and the syscall
//! emulation, on the thread that called `run`/`call`. If a bug there were ever exploited, this
//! filter limits that thread to what running a guest needs: KVM ioctls, memory management
//! without executable mappings, reading files (never opening one for writing), clocks and
//! timers, signals to its own threads, futexes. Everything else — new processes or threads,
//! `execve`, sockets, `ptrace` and cross-process memory access, `mount`/namespaces, `bpf`,
//! `perf_event_open`, `io_uring`, `userfaultfd`, `keyctl`, other ioctls — fails with `EPERM`.
//! (`EPERM` rather than killing the process: an embedding server should survive a kvmbox bug.)
//!
//! A filter applies to one thread and cannot be removed, so it is for threads dedicated to
//! guests: the Node binding's per-machine vCPU thread (`seccomp: true`), or a thread of your
//! own in Rust. [`crate::MachineOptions::seccomp`] makes a machine refuse to run anywhere else.
//! Measured (PVM host): no measurable cost on the call round trip (see the README).

use std::cell::Cell;
use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule};

use crate::error::{Error, Result};

thread_local! {
    static RESTRICTED: Cell<bool> = const { Cell::new(false) };
}

/// Whether [`restrict_current_thread`] was applied to the calling thread.
pub fn current_thread_restricted() -> bool {
    RESTRICTED.with(Cell::get)
}

/// Install kvmbox's seccomp filter on the calling thread (idempotent). Afterwards the thread
/// can run and call guests but cannot, among others, start processes or threads, open files for
/// writing, map executable memory, use the network or issue non-KVM ioctls (`EPERM`).
pub fn restrict_current_thread() -> Result<()> {
    if current_thread_restricted() {
        return Ok(());
    }
    // Threads kvmbox may start lazily are started now, while the thread still may.
    crate::reaper::start();
    let program = filter()?;
    seccompiler::apply_filter(&program).map_err(|e| Error::Internal(format!("installing the seccomp filter: {e}")))?;
    RESTRICTED.with(|r| r.set(true));
    Ok(())
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
        // Its flags live in memory the filter cannot see; kvmbox only passes O_PATH opens.
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
        libc::SYS_tgkill,
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

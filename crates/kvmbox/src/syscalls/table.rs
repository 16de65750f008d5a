//! The one syscall table: number → name, argument kinds and handler. Dispatch, the syscall
//! trace and the fuzzer all read it, so a syscall is added in one place.

use super::{err, errno, fs_write, ipc, ret, Flow, Linux, SyscallEnv, AT_FDCWD};
use crate::error::Result;
use crate::host::Host;

/// What an argument is, for traces (paths are shown as strings) and for the fuzzer (which
/// picks values that make sense for the kind as well as hostile ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    /// A descriptor number.
    Fd,
    /// A guest pointer to a NUL-terminated path.
    Path,
    /// A guest pointer to a buffer or struct.
    Ptr,
    /// A size or count.
    Len,
    /// Flags, a mode, a command, a clock id, a signal number, an id…
    Int,
}

/// A handler: the process, what it may use, the embedder (host calls, output) and rdi, rsi,
/// rdx, r10, r8, r9.
pub type Handler = fn(&mut Linux, &SyscallEnv, &mut dyn Host, &[u64; 6]) -> Result<Flow>;

/// One emulated syscall.
pub struct Syscall {
    pub nr: u64,
    pub name: &'static str,
    pub args: &'static [Arg],
    pub run: Handler,
}

/// Handlers that report errors as an errno.
fn errno(r: std::result::Result<u64, i32>) -> Result<Flow> {
    Ok(Flow::Return(ret(r)))
}

/// Handlers that may block, reporting errors as an errno.
fn flow(r: std::result::Result<Flow, i32>) -> Result<Flow> {
    Ok(r.unwrap_or_else(|e| Flow::Return(err(e))))
}

/// Handlers that return a raw value (already -errno where they failed), or stop the run.
fn value(r: Result<u64>) -> Result<Flow> {
    r.map(Flow::Return)
}

macro_rules! sys {
    ($nr:literal $name:literal [$($arg:ident),*] $run:expr) => {
        Syscall { nr: $nr, name: $name, args: &[$(Arg::$arg),*], run: $run }
    };
}

const CWD: u64 = AT_FDCWD as u64;
const AT_SYMLINK_NOFOLLOW: u64 = super::AT_SYMLINK_NOFOLLOW;
const AT_REMOVEDIR: u64 = 0x200;

/// Every syscall kvmbox emulates, by number. Numbers not here are ENOSYS.
pub const TABLE: &[Syscall] = &[
    sys!(0 "read" [Fd, Ptr, Len] |l, e, _, a| l.read(e, a[0], a[1], a[2], None)),
    sys!(1 "write" [Fd, Ptr, Len] |l, e, h, a| l.write(e, h, a[0], a[1], a[2])),
    sys!(2 "open" [Path, Int, Int] |l, e, _, a| errno(l.open(e, CWD, a[0], a[1], a[2]))),
    sys!(3 "close" [Fd] |l, _, _, a| errno(l.close_fd(a[0]))),
    sys!(4 "stat" [Path, Ptr] |l, e, _, a| errno(l.stat_path(e, CWD, a[0], a[1], 0))),
    sys!(5 "fstat" [Fd, Ptr] |l, e, _, a| errno(l.fstat(e, a[0], a[1]))),
    sys!(6 "lstat" [Path, Ptr] |l, e, _, a| errno(l.stat_path(e, CWD, a[0], a[1], AT_SYMLINK_NOFOLLOW))),
    sys!(7 "poll" [Ptr, Len, Int] |l, e, _, a| flow(l.poll(e, a[0], a[1], ipc::deadline_in_ms(a[2])))),
    sys!(8 "lseek" [Fd, Int, Int] |l, _, _, a| errno(l.lseek(a[0], a[1], a[2]))),
    sys!(9 "mmap" [Ptr, Len, Int, Int, Fd, Int] |l, e, _, a| value(l.mmap(e, *a))),
    sys!(10 "mprotect" [Ptr, Len, Int] |l, _, _, a| errno(l.mm.mprotect(a[0], a[1], a[2]))),
    sys!(11 "munmap" [Ptr, Len] |l, e, _, a| errno(l.mm.munmap(e.mem, a[0], a[1]))),
    sys!(12 "brk" [Ptr] |l, e, _, a| Ok(Flow::Return(l.mm.brk(e.mem, a[0])))),
    sys!(13 "rt_sigaction" [Int, Ptr, Ptr, Len] |l, e, _, a| errno(l.rt_sigaction(e, a[0], a[1], a[2], a[3]))),
    sys!(14 "rt_sigprocmask" [Int, Ptr, Ptr, Len] |l, e, _, a| errno(l.rt_sigprocmask(e, a[0], a[1], a[2], a[3]))),
    sys!(15 "rt_sigreturn" [] |l, e, _, _| Ok(l.rt_sigreturn(e))),
    sys!(16 "ioctl" [Fd, Int, Ptr] |l, e, _, a| errno(l.ioctl(e, a[0], a[1], a[2]))),
    sys!(17 "pread64" [Fd, Ptr, Len, Int] |l, e, _, a| l.read(e, a[0], a[1], a[2], Some(a[3]))),
    sys!(18 "pwrite64" [Fd, Ptr, Len, Int] |l, e, _, a| errno(l.pwrite(e, a[0], a[1], a[2], a[3]))),
    sys!(19 "readv" [Fd, Ptr, Len] |l, e, _, a| l.readv(e, a[0], a[1], a[2])),
    sys!(20 "writev" [Fd, Ptr, Len] |l, e, h, a| l.writev(e, h, a[0], a[1], a[2])),
    sys!(21 "access" [Path, Int] |l, e, _, a| errno(l.access(e, CWD, a[0], a[1]))),
    sys!(22 "pipe" [Ptr] |l, e, _, a| errno(l.pipe2(e, a[0], 0))),
    sys!(23 "select" [Int, Ptr, Ptr, Ptr, Ptr] |l, e, _, a| flow(timeval_deadline(e, a[4]).and_then(|t| l.select(e, a[0], [a[1], a[2], a[3]], t)))),
    sys!(24 "sched_yield" [] |_, _, _, _| Ok(Flow::Yield)),
    sys!(25 "mremap" [Ptr, Len, Len, Int, Ptr] |l, e, _, a| match l.mm.mremap(e.mem, e.deadline, a[0], a[1], a[2], a[3], a[4]) {
        // The move stopped at the deadline: the run ends with that (see Mappings::mremap).
        Err(errno::EINTR) => e.deadline.check().map(|()| Flow::Return(err(errno::EINTR))),
        r => errno(r),
    }),
    sys!(28 "madvise" [Ptr, Len, Int] |l, e, _, a| errno(l.mm.madvise(e.mem, a[0], a[1], a[2]))),
    sys!(32 "dup" [Fd] |l, _, _, a| errno(l.fds.duplicate(a[0]).and_then(|k| l.fds.insert(k, 0)))),
    sys!(33 "dup2" [Fd, Fd] |l, _, _, a| errno(l.dup2(a[0], a[1]))),
    sys!(34 "pause" [] |l, _, _, _| Ok(l.pause())),
    sys!(35 "nanosleep" [Ptr, Ptr] |l, e, _, a| Ok(l.nanosleep(e, libc::CLOCK_MONOTONIC as u64, 0, a[0], a[1]))),
    sys!(36 "getitimer" [Int, Ptr] |l, e, _, a| errno(l.getitimer(e, a[0], a[1]))),
    sys!(37 "alarm" [Int] |l, _, _, a| Ok(Flow::Return(l.alarm(a[0] & 0xffff_ffff)))),
    sys!(38 "setitimer" [Int, Ptr, Ptr] |l, e, _, a| errno(l.setitimer(e, a[0], a[1], a[2]))),
    sys!(39 "getpid" [] |l, _, _, _| Ok(Flow::Return(l.pid()))),
    sys!(44 "sendto" [Fd, Ptr, Len, Int, Ptr, Len] |l, e, _, a| flow(l.sendto(e, a[0], a[1], a[2], a[3], a[4]))),
    sys!(45 "recvfrom" [Fd, Ptr, Len, Int, Ptr, Ptr] |l, e, _, a| flow(l.recvfrom(e, a[0], a[1], a[2], a[3], (a[4], a[5])))),
    sys!(46 "sendmsg" [Fd, Ptr, Int] |l, e, _, a| flow(l.sendmsg(e, a[0], a[1], a[2]))),
    sys!(47 "recvmsg" [Fd, Ptr, Int] |l, e, _, a| flow(l.recvmsg(e, a[0], a[1], a[2]))),
    sys!(48 "shutdown" [Fd, Int] |l, _, _, a| errno(l.shutdown(a[0], a[1]))),
    sys!(51 "getsockname" [Fd, Ptr, Ptr] |l, e, _, a| errno(l.socket_name(e, a[0], a[1], a[2]))),
    sys!(52 "getpeername" [Fd, Ptr, Ptr] |l, e, _, a| errno(l.socket_name(e, a[0], a[1], a[2]))),
    sys!(53 "socketpair" [Int, Int, Int, Ptr] |l, e, _, a| errno(l.socketpair(e, a[0], a[1], a[2], a[3]))),
    sys!(54 "setsockopt" [Fd, Int, Int, Ptr, Len] |l, _, _, a| errno(l.setsockopt(a[0], a[1], a[2]))),
    sys!(55 "getsockopt" [Fd, Int, Int, Ptr, Ptr] |l, e, _, a| errno(l.getsockopt(e, a[0], a[1], a[2], a[3], a[4]))),
    sys!(56 "clone" [Int, Ptr, Ptr, Ptr, Ptr] |l, e, _, a| errno(l.clone(e, a))),
    sys!(60 "exit" [Int] |l, e, _, a| Ok(l.exit_thread(e, a[0]))),
    sys!(62 "kill" [Int, Int] |l, _, _, a| l.kill(a[0] as i64, a[1])),
    sys!(63 "uname" [Ptr] |l, e, _, a| errno(l.uname(e, a[0]))),
    sys!(72 "fcntl" [Fd, Int, Int] |l, e, _, a| errno(l.fcntl(e, a[0], a[1], a[2]))),
    sys!(73 "flock" [Fd, Int] |l, _, _, a| errno(l.flock(a[0], a[1]))),
    sys!(74 "fsync" [Fd] |l, _, _, a| errno(l.fsync(a[0]))),
    sys!(75 "fdatasync" [Fd] |l, _, _, a| errno(l.fsync(a[0]))),
    sys!(76 "truncate" [Path, Len] |l, e, _, a| errno(l.truncate(e, 0, Some(a[0]), a[1]))),
    sys!(77 "ftruncate" [Fd, Len] |l, e, _, a| errno(l.truncate(e, a[0], None, a[1]))),
    sys!(79 "getcwd" [Ptr, Len] |l, e, _, a| errno(l.getcwd(e, a[0], a[1]))),
    sys!(80 "chdir" [Path] |l, e, _, a| errno(l.chdir(e, Some(a[0]), 0))),
    sys!(81 "fchdir" [Fd] |l, e, _, a| errno(l.chdir(e, None, a[0]))),
    sys!(82 "rename" [Path, Path] |l, e, _, a| errno(l.rename(e, CWD, a[0], CWD, a[1], 0))),
    sys!(83 "mkdir" [Path, Int] |l, e, _, a| errno(l.mkdir(e, CWD, a[0], a[1]))),
    sys!(84 "rmdir" [Path] |l, e, _, a| errno(l.unlink(e, CWD, a[0], AT_REMOVEDIR))),
    sys!(85 "creat" [Path, Int] |l, e, _, a| errno(l.open(e, CWD, a[0], (libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC) as u64, a[1]))),
    sys!(86 "link" [Path, Path] |l, e, _, a| errno(l.link(e, CWD, a[0], CWD, a[1], 0))),
    sys!(87 "unlink" [Path] |l, e, _, a| errno(l.unlink(e, CWD, a[0], 0))),
    sys!(88 "symlink" [Path, Path] |l, e, _, a| errno(l.symlink(e, a[0], CWD, a[1]))),
    sys!(89 "readlink" [Path, Ptr, Len] |l, e, _, a| errno(l.readlink(e, CWD, a[0], a[1], a[2]))),
    sys!(90 "chmod" [Path, Int] |l, e, _, a| errno(l.chmod(e, CWD, Some(a[0]), a[1], 0))),
    sys!(91 "fchmod" [Fd, Int] |l, e, _, a| errno(l.chmod(e, a[0], None, a[1], 0))),
    sys!(92 "chown" [Path, Int, Int] |l, e, _, a| errno(l.chown(e, CWD, Some(a[0]), a[1], a[2], 0))),
    sys!(93 "fchown" [Fd, Int, Int] |l, e, _, a| errno(l.chown(e, a[0], None, a[1], a[2], 0))),
    sys!(94 "lchown" [Path, Int, Int] |l, e, _, a| errno(l.chown(e, CWD, Some(a[0]), a[1], a[2], AT_SYMLINK_NOFOLLOW))),
    sys!(95 "umask" [Int] |l, _, _, a| Ok(Flow::Return(l.set_umask(a[0])))),
    sys!(96 "gettimeofday" [Ptr, Ptr] |l, e, _, a| errno(l.gettimeofday(e, a[0]))),
    sys!(97 "getrlimit" [Int, Ptr] |l, e, _, a| errno(l.prlimit(e, 0, a[0], 0, a[1]))),
    sys!(98 "getrusage" [Int, Ptr] |_, e, _, a| errno(e.user().write(a[1], &[0u8; 144]).map(|_| 0).map_err(i32::from))),
    sys!(99 "sysinfo" [Ptr] |l, e, _, a| errno(l.sysinfo(e, a[0]))),
    sys!(102 "getuid" [] |l, _, _, _| Ok(Flow::Return(u64::from(l.uid)))),
    sys!(104 "getgid" [] |l, _, _, _| Ok(Flow::Return(u64::from(l.gid)))),
    sys!(107 "geteuid" [] |l, _, _, _| Ok(Flow::Return(u64::from(l.uid)))),
    sys!(108 "getegid" [] |l, _, _, _| Ok(Flow::Return(u64::from(l.gid)))),
    sys!(110 "getppid" [] |_, _, _, _| Ok(Flow::Return(0))),
    sys!(111 "getpgrp" [] |l, _, _, _| Ok(Flow::Return(l.pid()))),
    sys!(112 "setsid" [] |l, _, _, _| Ok(Flow::Return(l.pid()))),
    sys!(127 "rt_sigpending" [Ptr, Len] |l, e, _, a| errno(l.rt_sigpending(e, a[0], a[1]))),
    sys!(128 "rt_sigtimedwait" [Ptr, Ptr, Ptr, Len] |l, e, _, a| flow(l.rt_sigtimedwait(e, a[0], a[1], a[2], a[3]))),
    sys!(130 "rt_sigsuspend" [Ptr, Len] |l, e, _, a| flow(l.rt_sigsuspend(e, a[0], a[1]))),
    sys!(131 "sigaltstack" [Ptr, Ptr] |l, e, _, a| errno(l.sigaltstack(e, a[0], a[1]))),
    sys!(132 "utime" [Path, Ptr] |l, e, _, a| errno(fs_write::read_utimbuf(e, a[1]).and_then(|t| l.utimens(e, CWD, a[0], t, 0)))),
    sys!(137 "statfs" [Path, Ptr] |l, e, _, a| errno(l.statfs(e, Some(a[0]), 0, a[1]))),
    sys!(138 "fstatfs" [Fd, Ptr] |l, e, _, a| errno(l.statfs(e, None, a[0], a[1]))),
    sys!(158 "arch_prctl" [Int, Ptr] |l, e, _, a| errno(l.arch_prctl(e, a[0], a[1]))),
    sys!(162 "sync" [] |_, _, _, _| Ok(Flow::Return(0))),
    sys!(186 "gettid" [] |l, _, _, _| Ok(Flow::Return(l.tid()))),
    sys!(191 "getxattr" [Path, Path, Ptr, Len] |l, e, _, a| errno(l.xattr_path(e, a[0], false, false))),
    sys!(192 "lgetxattr" [Path, Path, Ptr, Len] |l, e, _, a| errno(l.xattr_path(e, a[0], false, true))),
    sys!(193 "fgetxattr" [Fd, Path, Ptr, Len] |l, _, _, a| errno(l.xattr_fd(a[0], false))),
    sys!(194 "listxattr" [Path, Ptr, Len] |l, e, _, a| errno(l.xattr_path(e, a[0], true, false))),
    sys!(195 "llistxattr" [Path, Ptr, Len] |l, e, _, a| errno(l.xattr_path(e, a[0], true, true))),
    sys!(196 "flistxattr" [Fd, Ptr, Len] |l, _, _, a| errno(l.xattr_fd(a[0], true))),
    sys!(200 "tkill" [Int, Int] |l, _, _, a| l.thread_kill(None, a[0], a[1])),
    sys!(201 "time" [Ptr] |l, e, _, a| errno(l.time(e, a[0]))),
    sys!(202 "futex" [Ptr, Int, Int, Ptr, Ptr, Int] |l, e, _, a| Ok(l.futex(e, a))),
    sys!(204 "sched_getaffinity" [Int, Len, Ptr] |l, e, _, a| errno(l.sched_getaffinity(e, a[1], a[2]))),
    sys!(213 "epoll_create" [Int] |l, _, _, a| errno(if a[0] as i32 <= 0 { Err(errno::EINVAL) } else { l.epoll_create1(0) })),
    sys!(217 "getdents64" [Fd, Ptr, Len] |l, e, _, a| errno(l.getdents64(e, a[0], a[1], a[2]))),
    sys!(218 "set_tid_address" [Ptr] |l, _, _, a| Ok(Flow::Return(l.set_tid_address(a[0])))),
    sys!(221 "fadvise64" [Fd, Int, Len, Int] |l, _, _, a| errno(l.fds.get(a[0]).map(|_| 0).ok_or(errno::EBADF))),
    sys!(222 "timer_create" [Int, Ptr, Ptr] |l, e, _, a| errno(l.timer_create(e, a[0], a[1], a[2]))),
    sys!(223 "timer_settime" [Int, Int, Ptr, Ptr] |l, e, _, a| errno(l.timer_settime(e, a[0], a[1], a[2], a[3]))),
    sys!(224 "timer_gettime" [Int, Ptr] |l, e, _, a| errno(l.timer_gettime(e, a[0], a[1]))),
    sys!(225 "timer_getoverrun" [Int] |l, _, _, a| errno(l.timer_getoverrun(a[0]))),
    sys!(226 "timer_delete" [Int] |l, _, _, a| errno(l.timer_delete(a[0]))),
    sys!(228 "clock_gettime" [Int, Ptr] |l, e, _, a| errno(l.clock_gettime(e, a[0], a[1]))),
    sys!(229 "clock_getres" [Int, Ptr] |l, e, _, a| errno(l.clock_getres(e, a[0], a[1]))),
    sys!(230 "clock_nanosleep" [Int, Int, Ptr, Ptr] |l, e, _, a| Ok(l.nanosleep(e, a[0], a[1], a[2], a[3]))),
    sys!(231 "exit_group" [Int] |_, _, _, a| Ok(Flow::Exit(super::ExitStatus::Code((a[0] & 0xff) as i32)))),
    sys!(232 "epoll_wait" [Fd, Ptr, Int, Int] |l, e, _, a| flow(l.epoll_wait(e, a[0], a[1], a[2], ipc::deadline_in_ms(a[3])))),
    sys!(233 "epoll_ctl" [Fd, Int, Fd, Ptr] |l, e, _, a| errno(l.epoll_ctl(e, a[0], a[1], a[2], a[3]))),
    sys!(234 "tgkill" [Int, Int, Int] |l, _, _, a| l.thread_kill(Some(a[0]), a[1], a[2])),
    sys!(235 "utimes" [Path, Ptr] |l, e, _, a| errno(fs_write::read_timevals(e, a[1]).and_then(|t| l.utimens(e, CWD, a[0], t, 0)))),
    sys!(257 "openat" [Fd, Path, Int, Int] |l, e, _, a| errno(l.open(e, a[0], a[1], a[2], a[3]))),
    sys!(258 "mkdirat" [Fd, Path, Int] |l, e, _, a| errno(l.mkdir(e, a[0], a[1], a[2]))),
    sys!(260 "fchownat" [Fd, Path, Int, Int, Int] |l, e, _, a| errno(l.chown(e, a[0], Some(a[1]), a[2], a[3], a[4]))),
    sys!(261 "futimesat" [Fd, Path, Ptr] |l, e, _, a| errno(fs_write::read_timevals(e, a[2]).and_then(|t| l.utimens(e, a[0], a[1], t, 0)))),
    sys!(262 "newfstatat" [Fd, Path, Ptr, Int] |l, e, _, a| errno(l.stat_path(e, a[0], a[1], a[2], a[3]))),
    sys!(263 "unlinkat" [Fd, Path, Int] |l, e, _, a| errno(l.unlink(e, a[0], a[1], a[2]))),
    sys!(264 "renameat" [Fd, Path, Fd, Path] |l, e, _, a| errno(l.rename(e, a[0], a[1], a[2], a[3], 0))),
    sys!(265 "linkat" [Fd, Path, Fd, Path, Int] |l, e, _, a| errno(l.link(e, a[0], a[1], a[2], a[3], a[4]))),
    sys!(266 "symlinkat" [Path, Fd, Path] |l, e, _, a| errno(l.symlink(e, a[0], a[1], a[2]))),
    sys!(267 "readlinkat" [Fd, Path, Ptr, Len] |l, e, _, a| errno(l.readlink(e, a[0], a[1], a[2], a[3]))),
    sys!(268 "fchmodat" [Fd, Path, Int] |l, e, _, a| errno(l.chmod(e, a[0], Some(a[1]), a[2], 0))),
    sys!(269 "faccessat" [Fd, Path, Int] |l, e, _, a| errno(l.access(e, a[0], a[1], a[2]))),
    sys!(270 "pselect6" [Int, Ptr, Ptr, Ptr, Ptr, Ptr] |l, e, _, a| {
        // The sixth argument points to { const sigset_t *set; size_t size; } (or is NULL).
        let mask = if a[5] == 0 { Ok([0u64; 2]) } else { e.user().read_pod::<[u64; 2]>(a[5]).map(|w| [w[0], w[1]]).map_err(|_| errno::EFAULT) };
        flow(mask.and_then(|[set, size]| {
            timespec_deadline(e, a[4]).and_then(|t| l.with_wait_mask(e, set, size, |l| l.select(e, a[0], [a[1], a[2], a[3]], t)))
        }))
    }),
    sys!(271 "ppoll" [Ptr, Len, Ptr, Ptr, Len] |l, e, _, a| {
        flow(timespec_deadline(e, a[2]).and_then(|t| l.with_wait_mask(e, a[3], a[4], |l| l.poll(e, a[0], a[1], t))))
    }),
    sys!(273 "set_robust_list" [Ptr, Len] |l, _, _, a| errno(l.set_robust_list(a[0], a[1]))),
    sys!(277 "sync_file_range" [Fd, Int, Int, Int] |l, _, _, a| errno(l.fds.get(a[0]).map(|_| 0).ok_or(errno::EBADF))),
    sys!(280 "utimensat" [Fd, Path, Ptr, Int] |l, e, _, a| errno(fs_write::read_timespecs(e, a[2]).and_then(|t| l.utimens(e, a[0], a[1], t, a[3])))),
    sys!(281 "epoll_pwait" [Fd, Ptr, Int, Int, Ptr, Len] |l, e, _, a| {
        flow(l.with_wait_mask(e, a[4], a[5], |l| l.epoll_wait(e, a[0], a[1], a[2], ipc::deadline_in_ms(a[3]))))
    }),
    sys!(282 "signalfd" [Fd, Ptr, Len] |l, e, _, a| errno(l.signalfd4(e, a[0], a[1], a[2], 0))),
    sys!(283 "timerfd_create" [Int, Int] |l, _, _, a| errno(l.timerfd_create(a[0], a[1]))),
    sys!(284 "eventfd" [Int] |l, _, _, a| errno(l.eventfd2(a[0], 0))),
    sys!(285 "fallocate" [Fd, Int, Int, Len] |l, _, _, a| errno(l.fallocate(a[0], a[1], a[2], a[3]))),
    sys!(286 "timerfd_settime" [Fd, Int, Ptr, Ptr] |l, e, _, a| errno(l.timerfd_settime(e, a[0], a[1], a[2], a[3]))),
    sys!(287 "timerfd_gettime" [Fd, Ptr] |l, e, _, a| errno(l.timerfd_gettime(e, a[0], a[1]))),
    sys!(289 "signalfd4" [Fd, Ptr, Len, Int] |l, e, _, a| errno(l.signalfd4(e, a[0], a[1], a[2], a[3]))),
    sys!(290 "eventfd2" [Int, Int] |l, _, _, a| errno(l.eventfd2(a[0], a[1]))),
    sys!(291 "epoll_create1" [Int] |l, _, _, a| errno(l.epoll_create1(a[0]))),
    sys!(292 "dup3" [Fd, Fd, Int] |l, _, _, a| errno(l.dup2(a[0], a[1]))),
    sys!(293 "pipe2" [Ptr, Int] |l, e, _, a| errno(l.pipe2(e, a[0], a[1]))),
    sys!(302 "prlimit64" [Int, Int, Ptr, Ptr] |l, e, _, a| errno(l.prlimit(e, a[0], a[1], a[2], a[3]))),
    sys!(306 "syncfs" [Fd] |l, _, _, a| errno(l.fds.get(a[0]).map(|_| 0).ok_or(errno::EBADF))),
    sys!(316 "renameat2" [Fd, Path, Fd, Path, Int] |l, e, _, a| errno(l.rename(e, a[0], a[1], a[2], a[3], a[4]))),
    sys!(318 "getrandom" [Ptr, Len, Int] |l, e, _, a| errno(l.getrandom(e, a[0], a[1], a[2]))),
    sys!(332 "statx" [Fd, Path, Int, Int, Ptr] |l, e, _, a| errno(l.statx(e, a[0], a[1], a[2], a[4]))),
    sys!(435 "clone3" [Ptr, Len] |l, e, _, a| errno(l.clone3(e, a[0], a[1]))),
    sys!(439 "faccessat2" [Fd, Path, Int, Int] |l, e, _, a| errno(l.access(e, a[0], a[1], a[2]))),
    sys!(452 "fchmodat2" [Fd, Path, Int, Int] |l, e, _, a| errno(l.chmod(e, a[0], Some(a[1]), a[2], a[3]))),
    sys!(441 "epoll_pwait2" [Fd, Ptr, Int, Ptr, Ptr, Len] |l, e, _, a| {
        flow(timespec_deadline(e, a[3]).and_then(|t| l.with_wait_mask(e, a[4], a[5], |l| l.epoll_wait(e, a[0], a[1], a[2], t))))
    }),
];

/// A timeout given as a `struct timeval *` (NULL: none) as a deadline.
fn timeval_deadline(env: &SyscallEnv, tv: u64) -> std::result::Result<Option<Option<std::time::Instant>>, i32> {
    if tv == 0 {
        return Ok(Some(None));
    }
    let t: libc::timeval = env.user().read_pod(tv)?;
    if t.tv_sec < 0 || !(0..1_000_000).contains(&t.tv_usec) {
        return Err(errno::EINVAL);
    }
    let wait = std::time::Duration::new(t.tv_sec.unsigned_abs(), (t.tv_usec as u32).saturating_mul(1000));
    Ok(Some(std::time::Instant::now().checked_add(wait)))
}

/// A timeout given as a `struct timespec *` (NULL: none) as a deadline.
fn timespec_deadline(env: &SyscallEnv, ts: u64) -> std::result::Result<Option<Option<std::time::Instant>>, i32> {
    if ts == 0 {
        return Ok(Some(None));
    }
    Ok(Some(super::threads::wake_time(env, ts, libc::CLOCK_MONOTONIC, false, 0)?))
}

/// Syscall numbers the table can hold (Linux's x86-64 numbers are below 512).
const SLOTS: usize = 512;
const NONE: u16 = u16::MAX;

/// Table position of each syscall number, so dispatch is one array lookup.
static INDEX: [u16; SLOTS] = build_index();

// Compile-time only: `i` is bounded by the table's length.
#[allow(clippy::arithmetic_side_effects)]
const fn build_index() -> [u16; SLOTS] {
    let mut index = [NONE; SLOTS];
    let mut i = 0;
    while i < TABLE.len() {
        let nr = TABLE[i].nr as usize;
        assert!(nr < SLOTS && index[nr] == NONE, "syscall numbers must be unique and below 512");
        index[nr] = i as u16;
        i += 1;
    }
    index
}

/// The emulated syscall `nr`, if kvmbox has one.
pub fn lookup(nr: u64) -> Option<&'static Syscall> {
    let slot = *INDEX.get(usize::try_from(nr).ok()?)?;
    TABLE.get(usize::from(slot))
}

/// Name of syscall `nr` for traces ("syscall_N" when kvmbox has no handler for it, host calls
/// included).
pub fn name(nr: u64) -> std::borrow::Cow<'static, str> {
    match lookup(nr) {
        Some(s) => s.name.into(),
        None => format!("syscall_{nr}").into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_is_found_by_its_number() {
        for s in TABLE {
            assert_eq!(lookup(s.nr).map(|f| f.name), Some(s.name));
            assert!(s.args.len() <= 6, "{} has more than six arguments", s.name);
        }
        assert!(lookup(57).is_none()); // fork: no second process
        assert!(lookup(u64::MAX).is_none());
        assert_eq!(name(0x1_0000), "syscall_65536");
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = TABLE.iter().map(|s| s.name).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}

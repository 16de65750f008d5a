//! Linux syscall emulation: the host side of every guest `syscall`.
//!
//! [`Linux`] holds the emulated process state (memory map, descriptors, signal dispositions)
//! and [`Linux::handle`] runs one syscall. Guest memory is only reached through
//! `UserMemory` (checked access), so a bad pointer becomes EFAULT for the guest, never a host access.
//! Every number here may come from the guest: arithmetic is checked or saturating (clippy's
//! `arithmetic_side_effects` is denied for this module and its children, and CI runs clippy).

#![deny(clippy::arithmetic_side_effects)]

pub mod files;
pub mod mm;

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_msr_entry, Msrs};
use kvm_ioctls::VcpuFd;

use crate::arch::{MSR_FS_BASE, MSR_GS_BASE};
use crate::error::{Error, Result};
use crate::host::{Host, HostCall, Stream};
use crate::interrupt::Deadline;
use crate::layout::AddressSpace;
use crate::memory::{Efault, GuestMemory, UserMemory};
use files::{FdKind, FdSpec, FdTable, FilePolicy, Input, Output};
use mm::Mappings;

/// errno values (x86-64 Linux numbering, the same as the host's).
pub mod errno {
    pub use libc::{
        EACCES, EAGAIN, EBADF, EBUSY, EEXIST, EFAULT, EINTR, EINVAL, EIO, EISDIR, ELOOP, EMFILE, ENAMETOOLONG, ENOENT, ENOMEM, ENOSYS,
        ENOTDIR, ENOTTY, EOVERFLOW, EPERM, ERANGE, EROFS, ESPIPE, ESRCH, ETIMEDOUT,
    };
}

/// `struct sigaction` (handler, flags, restorer, mask) of signals 0–64, kept in place so a
/// reset copies it without allocating.
type SignalTable = [[u64; 4]; 65];

/// The emulated process's state as a snapshot keeps it.
#[derive(Clone)]
pub struct LinuxState {
    mm: Mappings,
    fds: Vec<(usize, FdSpec)>,
    stdin: Input,
    sigactions: SignalTable,
    sigmask: u64,
    altstack: [u64; 3],
}

impl LinuxState {
    pub(crate) fn heap(&self) -> &Mappings {
        &self.mm
    }

    pub(crate) fn encode(&self, w: &mut crate::snapfile::Writer) {
        self.mm.encode(w);
        w.u64(self.fds.len() as u64);
        for (slot, spec) in &self.fds {
            w.u64(*slot as u64);
            match spec {
                FdSpec::Stdin => w.u8(0),
                FdSpec::Stdout => w.u8(1),
                FdSpec::Stderr => w.u8(2),
                FdSpec::File { path, is_dir, offset, .. } => {
                    w.u8(3);
                    w.bytes(path.as_os_str().as_encoded_bytes());
                    w.u8(*is_dir as u8);
                    w.u64(*offset);
                }
            }
        }
        match &self.stdin {
            Input::Empty | Input::Inherit => w.u8(0),
            Input::Bytes { data, pos } => {
                w.u8(1);
                w.bytes(data);
                w.u64(*pos as u64);
            }
        }
        for a in &self.sigactions {
            for v in a {
                w.u64(*v);
            }
        }
        w.u64(self.sigmask);
        for v in self.altstack {
            w.u64(v);
        }
    }

    pub(crate) fn decode(r: &mut crate::snapfile::Reader, heap_limit: u64) -> Result<LinuxState> {
        let bad = |what: &str| Error::InvalidArgument(format!("invalid snapshot file: {what}"));
        let mm = Mappings::decode(r, heap_limit)?;
        let n = r.count(9)?;
        if n > files::MAX_FDS {
            return Err(bad("too many descriptors"));
        }
        let mut fds = Vec::with_capacity(n);
        for _ in 0..n {
            let slot = r.u64()? as usize;
            if slot >= files::MAX_FDS {
                return Err(bad("descriptor number out of range"));
            }
            let spec = match r.u8()? {
                0 => FdSpec::Stdin,
                1 => FdSpec::Stdout,
                2 => FdSpec::Stderr,
                3 => {
                    let path = PathBuf::from(std::ffi::OsStr::from_bytes(r.bytes()?));
                    if !path.is_absolute() {
                        return Err(bad("relative path of an open file"));
                    }
                    FdSpec::File { path: files::normalize(&path), is_dir: r.u8()? != 0, offset: r.u64()?, handle: None }
                }
                _ => return Err(bad("unknown descriptor kind")),
            };
            fds.push((slot, spec));
        }
        let stdin = match r.u8()? {
            0 => Input::Empty,
            1 => {
                let data = r.bytes()?.to_vec();
                let pos = r.u64()? as usize;
                if pos > data.len() {
                    return Err(bad("stdin position out of range"));
                }
                Input::Bytes { data, pos }
            }
            _ => return Err(bad("unknown stdin kind")),
        };
        let mut sigactions: SignalTable = [[0; 4]; 65];
        for a in sigactions.iter_mut() {
            for v in a.iter_mut() {
                *v = r.u64()?;
            }
        }
        let sigmask = r.u64()?;
        let altstack = [r.u64()?, r.u64()?, r.u64()?];
        Ok(LinuxState { mm, fds, stdin, sigactions, sigmask, altstack })
    }
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
    /// Resume the guest with this value in rax.
    Return(u64),
    /// The guest process ended.
    Exit(ExitStatus),
}

/// The most bytes one read or write moves, as on Linux (INT_MAX rounded down to a page).
const MAX_RW_COUNT: u64 = 0x7fff_f000;

/// What a syscall handler may use besides the process state.
pub struct SyscallEnv<'a> {
    pub mem: &'a GuestMemory,
    pub space: &'a AddressSpace,
    pub vcpu: &'a VcpuFd,
    /// When the current run must stop (its timeout, an interrupt): long host work checks it.
    pub deadline: &'a Deadline,
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

/// Emulated Linux process state.
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
    pub uid: u32,
    pub gid: u32,
    pub trace: bool,
    pub memory: u64,
    pub stack_size: u64,
    sigactions: SignalTable,
    sigmask: u64,
    altstack: [u64; 3],
}

const PID: u64 = 1;
const PATH_MAX: usize = 4096;
const AT_FDCWD: i32 = -100;
const AT_EMPTY_PATH: u64 = 0x1000;

impl Linux {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        mm: Mappings,
        policy: Arc<FilePolicy>,
        stdin: Input,
        stdout: Output,
        stderr: Output,
        exe_path: PathBuf,
        cwd: PathBuf,
        memory: u64,
        stack_size: u64,
        trace: bool,
    ) -> Linux {
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Linux {
            mm,
            fds: FdTable::new(),
            policy,
            stdin,
            stdout,
            stderr,
            exe_path,
            cwd,
            uid,
            gid,
            trace,
            memory,
            stack_size,
            sigactions: [[0; 4]; 65],
            sigmask: 0,
            altstack: [0, 2 /* SS_DISABLE */, 0],
        }
    }

    /// Everything a snapshot must remember of the emulated process.
    pub fn capture(&self) -> LinuxState {
        LinuxState {
            mm: self.mm.clone(),
            fds: self.fds.describe(),
            stdin: self.stdin.clone(),
            sigactions: self.sigactions,
            sigmask: self.sigmask,
            altstack: self.altstack,
        }
    }

    /// Return to `state` (captured from this process or from the one a snapshot came from).
    /// Output destinations stay as configured, with nothing captured.
    pub fn restore(&mut self, state: &LinuxState) -> Result<()> {
        self.fds = FdTable::rebuild(&state.fds, &self.policy)?;
        self.mm = state.mm.clone();
        self.stdin = state.stdin.clone();
        self.sigactions = state.sigactions;
        self.sigmask = state.sigmask;
        self.altstack = state.altstack;
        self.stdout = self.stdout.fresh_like();
        self.stderr = self.stderr.fresh_like();
        Ok(())
    }

    /// A new process like this one but in `state` (for a fork), with fresh output buffers.
    pub fn fork_from(&self, state: &LinuxState) -> Result<Linux> {
        let mut child = Linux {
            mm: state.mm.clone(),
            fds: FdTable::new(),
            policy: Arc::clone(&self.policy),
            stdin: state.stdin.clone(),
            stdout: self.stdout.fresh_like(),
            stderr: self.stderr.fresh_like(),
            exe_path: self.exe_path.clone(),
            cwd: self.cwd.clone(),
            uid: self.uid,
            gid: self.gid,
            trace: self.trace,
            memory: self.memory,
            stack_size: self.stack_size,
            sigactions: [[0; 4]; 65],
            sigmask: 0,
            altstack: [0; 3],
        };
        child.restore(state)?;
        Ok(child)
    }

    /// Run syscall `nr` with arguments `a`.
    pub fn handle(&mut self, env: &SyscallEnv, host: &mut dyn Host, nr: u64, a: [u64; 6]) -> Result<Flow> {
        let flow = self.dispatch(env, host, nr, a);
        self.trace_syscall(host, nr, &a, &flow);
        flow
    }

    /// Report one traced syscall to the host, or print it to stderr, if tracing is on (host calls
    /// are traced too).
    fn trace_syscall(&self, host: &mut dyn Host, nr: u64, a: &[u64; 6], flow: &Result<Flow>) {
        if self.trace {
            let shown = match flow {
                Ok(Flow::Return(v)) if (*v as i64) < 0 && (*v as i64) > -4096 => {
                    format!("-{}", errno_name((*v as i64).wrapping_neg() as i32))
                }
                Ok(Flow::Return(v)) => format!("{v:#x}"),
                Ok(Flow::Exit(s)) => format!("exit {s:?}"),
                Err(e) => format!("stopped: {e}"),
            };
            let name = syscall_name(nr);
            if host.trace(&crate::host::TraceEvent { nr, name: &name, args: *a, result: &shown }) {
                return;
            }
            eprintln!("[kvmbox] {}({:#x}, {:#x}, {:#x}, {:#x}, {:#x}, {:#x}) = {shown}", name, a[0], a[1], a[2], a[3], a[4], a[5]);
        }
    }

    fn dispatch(&mut self, env: &SyscallEnv, host: &mut dyn Host, nr: u64, a: [u64; 6]) -> Result<Flow> {
        // The embedder's own syscall numbers (host calls), or Linux ones it took over.
        if host.intercepts(nr) {
            let mut call = HostCall { nr, args: a, memory: env.user(), deadline: env.deadline };
            return match host.syscall(&mut call) {
                Ok(v) => Ok(Flow::Return(v)),
                // A handler that gave up because the run must stop ends it that way.
                Err(e) => env.deadline.check().and(Err(Error::HostCallback(e))),
            };
        }
        let mem = env.user();
        let r = match nr {
            0 => self.read(env, a[0], a[1], a[2], None)?,
            1 => return self.write(env, host, a[0], a[1], a[2]),
            2 => ret(self.open(env, AT_FDCWD as u64, a[0], a[1])),
            3 => ret(self.fds.close(a[0])),
            4 | 6 => ret(self.stat_path(env, AT_FDCWD as u64, a[0], a[1], 0)),
            5 => ret(self.fstat(env, a[0], a[1])),
            7 => ret(self.poll(env, a[0], a[1])),
            8 => ret(self.lseek(a[0], a[1], a[2])),
            9 => self.mmap(env, a)?,
            10 => ret(self.mm.mprotect(a[0], a[1], a[2])),
            11 => ret(self.mm.munmap(env.mem, a[0], a[1])),
            12 => self.mm.brk(env.mem, a[0]),
            13 => ret(self.rt_sigaction(env, a[0], a[1], a[2], a[3])),
            14 => ret(self.rt_sigprocmask(env, a[0], a[1], a[2], a[3])),
            16 => ret(self.ioctl(env, a[0], a[1], a[2])),
            17 => self.read(env, a[0], a[1], a[2], Some(a[3]))?,
            18 => ret(self.pwrite(a[0])),
            19 => self.readv(env, a[0], a[1], a[2])?,
            20 => return self.writev(env, host, a[0], a[1], a[2]),
            21 => ret(self.access(env, AT_FDCWD as u64, a[0], a[1])),
            24 => 0,
            25 => match self.mm.mremap(env.mem, env.deadline, a[0], a[1], a[2], a[3], a[4]) {
                // The move stopped at the deadline: the run ends with that (see Mappings::mremap).
                Err(errno::EINTR) => return env.deadline.check().map(|()| Flow::Return(err(errno::EINTR))),
                r => ret(r),
            },
            28 => ret(self.mm.madvise(env.mem, a[0], a[1], a[2])),
            32 => ret(self.fds.duplicate(a[0]).and_then(|k| self.fds.insert(k, 0))),
            33 => ret(self.dup2(a[0], a[1])),
            35 => self.nanosleep(env, libc::CLOCK_MONOTONIC as u64, 0, a[0], a[1])?,
            39 | 186 => PID,
            60 | 231 => return Ok(Flow::Exit(ExitStatus::Code((a[0] & 0xff) as i32))),
            62 => return self.kill(a[0] as i64, a[1]),
            63 => ret(self.uname(env, a[0])),
            72 => ret(self.fcntl(a[0], a[1], a[2])),
            79 => ret(self.getcwd(env, a[0], a[1])),
            89 => ret(self.readlink(env, AT_FDCWD as u64, a[0], a[1], a[2])),
            96 => ret(self.gettimeofday(env, a[0])),
            97 => ret(self.prlimit(env, 0, a[0], 0, a[1])),
            98 => ret(mem.write(a[1], &[0u8; 144]).map(|_| 0).map_err(i32::from)),
            99 => ret(self.sysinfo(env, a[0])),
            102 | 107 => self.uid as u64,
            104 | 108 => self.gid as u64,
            110 => 0,
            111 | 112 => PID,
            131 => ret(self.sigaltstack(env, a[0], a[1])),
            158 => ret(self.arch_prctl(env, a[0], a[1])),
            200 => return self.kill(a[0] as i64, a[1]),
            201 => ret(self.time(env, a[0])),
            202 => ret(self.futex(env, a[0], a[1], a[2])),
            204 => ret(self.sched_getaffinity(env, a[1], a[2])),
            217 => ret(self.getdents64(env, a[0], a[1], a[2])),
            218 => PID,
            228 => ret(self.clock_gettime(env, a[0], a[1])),
            229 => ret(self.clock_getres(env, a[0], a[1])),
            230 => self.nanosleep(env, a[0], a[1], a[2], a[3])?,
            234 => return self.kill(a[1] as i64, a[2]),
            257 => ret(self.open(env, a[0], a[1], a[2])),
            262 => ret(self.stat_path(env, a[0], a[1], a[2], a[3])),
            267 => ret(self.readlink(env, a[0], a[1], a[2], a[3])),
            269 | 439 => ret(self.access(env, a[0], a[1], a[2])),
            271 => ret(self.poll(env, a[0], a[1])),
            273 => 0,
            292 => ret(self.dup2(a[0], a[1])),
            302 => ret(self.prlimit(env, a[0], a[1], a[2], a[3])),
            318 => ret(self.getrandom(env, a[0], a[1], a[2])),
            332 => ret(self.statx(env, a[0], a[1], a[2], a[4])),
            _ => err(errno::ENOSYS),
        };
        Ok(Flow::Return(r))
    }

    // ---- I/O ----------------------------------------------------------------------------

    fn write(&mut self, env: &SyscallEnv, host: &mut dyn Host, fd: u64, buf: u64, len: u64) -> Result<Flow> {
        let len = len.min(MAX_RW_COUNT);
        let Ok(ptr) = env.user().host_range(buf, len, false) else {
            return Ok(Flow::Return(if self.fds.get(fd).is_none() { err(errno::EBADF) } else { err(errno::EFAULT) }));
        };
        // SAFETY: the range is checked, inside the guest mapping, and nothing else writes it
        // while the vCPU (on this thread) is stopped in this exit.
        let data = unsafe { std::slice::from_raw_parts(ptr as *const u8, len as usize) };
        self.write_parts(env, host, fd, &[data])
    }

    /// Write `parts` in order, as one write/writev: streamed from guest memory in bounded
    /// chunks (no host buffer of the guest's size), the deadline checked between chunks, and
    /// stopping at the first short write.
    fn write_parts(&mut self, env: &SyscallEnv, host: &mut dyn Host, fd: u64, parts: &[&[u8]]) -> Result<Flow> {
        const CHUNK: usize = 1 << 20;
        let (out, stream) = match self.fds.get(fd) {
            None | Some(FdKind::Stdin) | Some(FdKind::File { .. }) => return Ok(Flow::Return(err(errno::EBADF))),
            Some(FdKind::Stdout) => (&mut self.stdout, Stream::Stdout),
            Some(FdKind::Stderr) => (&mut self.stderr, Stream::Stderr),
        };
        let mut total = 0u64;
        for chunk in parts.iter().flat_map(|p| p.chunks(CHUNK)) {
            if total > 0 {
                env.deadline.check()?;
            }
            match out.write(stream, chunk, host, env.deadline)? {
                Ok(n) => {
                    total = total.saturating_add(n as u64);
                    if n < chunk.len() {
                        break;
                    }
                }
                Err(_) if total > 0 => break, // what got through, as a short write
                // A closed reader raises SIGPIPE, which ends the process unless ignored.
                Err(libc::EPIPE) => return Ok(self.raise(libc::SIGPIPE as u64).map_or(Flow::Return(err(libc::EPIPE)), Flow::Exit)),
                Err(e) => return Ok(Flow::Return(err(e))),
            }
        }
        Ok(Flow::Return(total))
    }

    fn read_iovecs(&self, env: &SyscallEnv, iov: u64, count: u64) -> std::result::Result<Vec<(u64, u64)>, i32> {
        if count > 1024 {
            return Err(errno::EINVAL);
        }
        let mut out = Vec::with_capacity(count as usize);
        let mut total: u64 = 0;
        for i in 0..count {
            let v: libc::iovec = env.user().read_pod(iov.checked_add(i.saturating_mul(16)).ok_or(errno::EFAULT)?)?;
            let (base, len) = (v.iov_base as u64, v.iov_len as u64);
            total = total.checked_add(len).filter(|&t| t <= isize::MAX as u64).ok_or(errno::EINVAL)?;
            out.push((base, len));
        }
        Ok(out)
    }

    fn writev(&mut self, env: &SyscallEnv, host: &mut dyn Host, fd: u64, iov: u64, count: u64) -> Result<Flow> {
        let vecs = match self.read_iovecs(env, iov, count) {
            Ok(v) => v,
            Err(e) => return Ok(Flow::Return(err(e))),
        };
        if self.fds.get(fd).is_none() {
            return Ok(Flow::Return(err(errno::EBADF)));
        }
        // The iovecs' bytes in guest memory, without copying them out; like Linux, one call
        // moves at most MAX_RW_COUNT bytes (the rest is a short write).
        let user = env.user();
        let mut parts: Vec<&[u8]> = Vec::with_capacity(vecs.len());
        let mut budget = MAX_RW_COUNT;
        for (base, len) in vecs {
            let len = len.min(budget);
            match user.host_range(base, len, false) {
                Ok(ptr) => {
                    if len > 0 {
                        // SAFETY: the range is checked and inside the guest mapping; nothing
                        // else writes it while the vCPU (on this thread) is stopped in this exit.
                        parts.push(unsafe { std::slice::from_raw_parts(ptr as *const u8, len as usize) });
                        budget = budget.saturating_sub(len);
                    }
                }
                // Nothing gathered yet: the whole call faults; else a short write, as on Linux.
                Err(_) if parts.is_empty() => return Ok(Flow::Return(err(errno::EFAULT))),
                Err(_) => break,
            }
            if budget == 0 {
                break;
            }
        }
        self.write_parts(env, host, fd, &parts)
    }

    /// read/pread64 into guest memory.
    fn read(&mut self, env: &SyscallEnv, fd: u64, buf: u64, len: u64, offset: Option<u64>) -> Result<u64> {
        let len = len.min(MAX_RW_COUNT);
        let Ok(ptr) = env.user().host_range(buf, len, true) else {
            return Ok(if self.fds.get(fd).is_none() { err(errno::EBADF) } else { err(errno::EFAULT) });
        };
        Ok(match self.fds.get(fd) {
            None => err(errno::EBADF),
            Some(FdKind::Stdout) | Some(FdKind::Stderr) => err(errno::EBADF),
            Some(FdKind::Stdin) if offset.is_some() => err(errno::ESPIPE),
            Some(FdKind::Stdin) => match &mut self.stdin {
                Input::Empty => 0,
                Input::Bytes { data, pos } => {
                    let n = data.len().saturating_sub(*pos).min(len as usize);
                    // SAFETY: ptr covers `len` checked, writable guest bytes; n ≤ len.
                    unsafe { std::ptr::copy_nonoverlapping(data[*pos..].as_ptr(), ptr, n) };
                    *pos = pos.saturating_add(n);
                    n as u64
                }
                Input::Inherit => match files::read_host_fd(0, ptr, len as usize, env.deadline)? {
                    Ok(n) => n as u64,
                    Err(e) => err(e),
                },
            },
            Some(FdKind::File { is_dir: true, .. }) => err(errno::EISDIR),
            Some(FdKind::File { host, .. }) => {
                let fd = host.as_raw_fd();
                if offset.is_some_and(|off| (off as i64) < 0) {
                    return Ok(err(errno::EINVAL));
                }
                // A regular file read is not interrupted by signals: read in 16 MiB steps with
                // the deadline checked in between, so gigabytes cannot outrun the timeout.
                const STEP: u64 = 16 << 20;
                let mut done = 0u64;
                loop {
                    let step = len.saturating_sub(done).min(STEP) as usize;
                    // SAFETY: host read/pread into the checked guest range `[ptr, ptr+len)`;
                    // done + step <= len.
                    let n = unsafe {
                        let at = ptr.add(done as usize).cast();
                        match offset {
                            Some(off) => libc::pread(fd, at, step, (off as i64).saturating_add(done as i64)),
                            None => libc::read(fd, at, step),
                        }
                    };
                    if n < 0 {
                        break if done > 0 { done } else { ret(host_result(n as i64)) };
                    }
                    done = done.saturating_add(n.unsigned_abs() as u64);
                    if n.unsigned_abs() < step || done >= len {
                        break done;
                    }
                    env.deadline.check()?;
                }
            }
        })
    }

    fn readv(&mut self, env: &SyscallEnv, fd: u64, iov: u64, count: u64) -> Result<u64> {
        let vecs = match self.read_iovecs(env, iov, count) {
            Ok(v) => v,
            Err(e) => return Ok(err(e)),
        };
        // Like Linux, one call moves at most MAX_RW_COUNT in all; the deadline is checked
        // between iovecs (1024 of them may all name the same buffer).
        let mut total = 0u64;
        for (base, len) in vecs {
            let len = len.min(MAX_RW_COUNT.saturating_sub(total));
            if len == 0 && total > 0 {
                break;
            }
            if total > 0 {
                env.deadline.check()?;
            }
            let n = self.read(env, fd, base, len, None)?;
            if (n as i64) < 0 {
                return Ok(if total > 0 { total } else { n });
            }
            total = total.saturating_add(n);
            if n < len {
                break;
            }
        }
        Ok(total)
    }

    fn pwrite(&self, fd: u64) -> std::result::Result<u64, i32> {
        match self.fds.get(fd) {
            None | Some(FdKind::Stdin) | Some(FdKind::File { .. }) => Err(errno::EBADF),
            Some(_) => Err(errno::ESPIPE),
        }
    }

    fn lseek(&self, fd: u64, off: u64, whence: u64) -> std::result::Result<u64, i32> {
        match self.fds.get(fd) {
            None => Err(errno::EBADF),
            Some(FdKind::File { host, .. }) => {
                // SAFETY: lseek on our own host fd.
                let r = unsafe { libc::lseek(host.as_raw_fd(), off as i64, whence as i32) };
                host_result(r)
            }
            Some(_) => Err(errno::ESPIPE),
        }
    }

    fn dup2(&mut self, old: u64, new: u64) -> std::result::Result<u64, i32> {
        if new as usize >= files::MAX_FDS {
            return Err(errno::EBADF);
        }
        let kind = self.fds.duplicate(old)?;
        if old == new {
            return Ok(new);
        }
        let _ = self.fds.close(new);
        self.fds.install_at(new as usize, kind);
        Ok(new)
    }

    fn fcntl(&mut self, fd: u64, cmd: u64, arg: u64) -> std::result::Result<u64, i32> {
        let kind = self.fds.get(fd).ok_or(errno::EBADF)?;
        match cmd as i32 {
            libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
                let k = self.fds.duplicate(fd)?;
                self.fds.insert(k, arg as usize)
            }
            libc::F_GETFD | libc::F_SETFD | libc::F_SETFL => Ok(0),
            libc::F_GETFL => Ok(match kind {
                FdKind::Stdin | FdKind::File { .. } => libc::O_RDONLY as u64,
                _ => libc::O_WRONLY as u64,
            }),
            _ => Err(errno::EINVAL),
        }
    }

    fn poll(&mut self, env: &SyscallEnv, fds: u64, n: u64) -> std::result::Result<u64, i32> {
        if n > files::MAX_FDS as u64 {
            return Err(errno::EINVAL);
        }
        let mut ready: u64 = 0;
        for i in 0..n {
            let at = fds.checked_add(i.saturating_mul(8)).ok_or(errno::EFAULT)?;
            let mut p: libc::pollfd = env.user().read_pod(at)?;
            p.revents = if p.fd < 0 {
                0
            } else {
                match self.fds.get(p.fd as u64) {
                    None => libc::POLLNVAL,
                    Some(FdKind::Stdin) | Some(FdKind::File { .. }) => p.events & libc::POLLIN,
                    Some(_) => p.events & libc::POLLOUT,
                }
            };
            if p.revents != 0 {
                ready = ready.saturating_add(1);
            }
            env.user().write_pod(at, &p)?;
        }
        Ok(ready)
    }

    /// The host descriptor behind guest `fd`: an inherited stdio stream or an open file
    /// (`None` for captured or fed stdio); `with_files` false leaves files out.
    fn host_fd_of(&self, fd: u64, with_files: bool) -> std::result::Result<Option<RawFd>, i32> {
        Ok(match self.fds.get(fd).ok_or(errno::EBADF)? {
            FdKind::Stdin => matches!(self.stdin, Input::Inherit).then_some(0),
            FdKind::Stdout => self.stdout.host_fd(),
            FdKind::Stderr => self.stderr.host_fd(),
            FdKind::File { host, .. } => with_files.then(|| host.as_raw_fd()),
        })
    }

    fn ioctl(&mut self, env: &SyscallEnv, fd: u64, req: u64, arg: u64) -> std::result::Result<u64, i32> {
        // Terminal queries only reach inherited stdio, never files.
        let host = self.host_fd_of(fd, false)?;
        let size = match req {
            0x5401 => 36, // TCGETS: struct termios
            0x5413 => 8,  // TIOCGWINSZ: struct winsize
            _ => return Err(errno::ENOTTY),
        };
        let host = host.ok_or(errno::ENOTTY)?;
        let mut buf = [0u8; 64];
        // SAFETY: TCGETS/TIOCGWINSZ write at most 36 bytes into our 64-byte buffer.
        let r = unsafe { libc::ioctl(host, req as _, buf.as_mut_ptr()) };
        if r < 0 {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(errno::ENOTTY));
        }
        env.user().write(arg, &buf[..size])?;
        Ok(0)
    }

    // ---- files ----------------------------------------------------------------------------

    /// The normalised absolute guest path for (dirfd, path).
    fn resolve(&self, env: &SyscallEnv, dirfd: u64, path: u64) -> std::result::Result<PathBuf, i32> {
        let raw = env.user().read_cstring(path, PATH_MAX)?.ok_or(errno::ENAMETOOLONG)?;
        if raw.is_empty() {
            return Err(errno::ENOENT);
        }
        let p = Path::new(std::ffi::OsStr::from_bytes(&raw));
        let base = if p.is_absolute() {
            PathBuf::from("/")
        } else if dirfd as i32 == AT_FDCWD {
            self.cwd.clone()
        } else {
            self.fds.path_of_dir(dirfd)?
        };
        Ok(files::normalize(&base.join(p)))
    }

    fn open(&mut self, env: &SyscallEnv, dirfd: u64, path: u64, flags: u64) -> std::result::Result<u64, i32> {
        let p = self.resolve(env, dirfd, path)?;
        let (host, is_dir) = self.policy.open(&p, flags as i32)?;
        self.fds.insert(FdKind::File { host, path: p, is_dir }, 0)
    }

    fn fstat(&self, env: &SyscallEnv, fd: u64, buf: u64) -> std::result::Result<u64, i32> {
        let st = self.stat_fd(fd)?;
        env.user().write_pod(buf, &st)?;
        Ok(0)
    }

    fn stat_fd(&self, fd: u64) -> std::result::Result<libc::stat, i32> {
        match self.host_fd_of(fd, true)? {
            None => Ok(files::pipe_stat(self.uid, self.gid)),
            Some(h) => {
                // SAFETY: fstat into a local struct.
                let mut st: libc::stat = unsafe { std::mem::zeroed() };
                if unsafe { libc::fstat(h, &mut st) } != 0 {
                    return Err(errno::EBADF);
                }
                Ok(st)
            }
        }
    }

    /// AT_EMPTY_PATH with an empty path: the call is about `dirfd` itself.
    fn is_empty_path(env: &SyscallEnv, path: u64, flags: u64) -> std::result::Result<bool, i32> {
        Ok(flags & AT_EMPTY_PATH != 0 && env.user().read_cstring(path, 1)?.is_some_and(|p| p.is_empty()))
    }

    fn stat_path(&mut self, env: &SyscallEnv, dirfd: u64, path: u64, buf: u64, flags: u64) -> std::result::Result<u64, i32> {
        if Self::is_empty_path(env, path, flags)? {
            if dirfd as i32 == AT_FDCWD {
                return self.stat_path_resolved(env, &self.cwd, buf);
            }
            return self.fstat(env, dirfd, buf);
        }
        let p = self.resolve(env, dirfd, path)?;
        self.stat_path_resolved(env, &p, buf)
    }

    fn stat_path_resolved(&self, env: &SyscallEnv, p: &Path, buf: u64) -> std::result::Result<u64, i32> {
        let (host, _) = self.policy.lookup(p, libc::O_RDONLY)?;
        // SAFETY: fstat into a local struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(host.as_raw_fd(), &mut st) } != 0 {
            return Err(errno::EIO);
        }
        env.user().write_pod(buf, &st)?;
        Ok(0)
    }

    fn statx(&mut self, env: &SyscallEnv, dirfd: u64, path: u64, flags: u64, buf: u64) -> std::result::Result<u64, i32> {
        let empty = Self::is_empty_path(env, path, flags)?;
        let owned;
        let host = if empty && dirfd as i32 != AT_FDCWD {
            match self.fds.get(dirfd).ok_or(errno::EBADF)? {
                FdKind::File { host, .. } => host.as_raw_fd(),
                _ => return self.statx_from_stat(env, dirfd, buf),
            }
        } else {
            let p = if empty { self.cwd.clone() } else { self.resolve(env, dirfd, path)? };
            owned = self.policy.lookup(&p, libc::O_RDONLY)?.0;
            owned.as_raw_fd()
        };
        // SAFETY: statx with AT_EMPTY_PATH on our own fd into a local struct.
        let mut stx: libc::statx = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::statx(host, c"".as_ptr(), libc::AT_EMPTY_PATH, libc::STATX_BASIC_STATS, &mut stx) };
        if r != 0 {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(errno::EIO));
        }
        env.user().write_pod(buf, &stx)?;
        Ok(0)
    }

    /// statx for stdio streams, synthesised from their `struct stat`.
    fn statx_from_stat(&self, env: &SyscallEnv, fd: u64, buf: u64) -> std::result::Result<u64, i32> {
        let st = self.stat_fd(fd)?;
        // SAFETY: statx is plain old data.
        let mut stx: libc::statx = unsafe { std::mem::zeroed() };
        stx.stx_mask = libc::STATX_BASIC_STATS;
        stx.stx_mode = st.st_mode as u16;
        stx.stx_nlink = st.st_nlink as u32;
        stx.stx_uid = st.st_uid;
        stx.stx_gid = st.st_gid;
        stx.stx_blksize = st.st_blksize as u32;
        stx.stx_ino = st.st_ino;
        env.user().write_pod(buf, &stx)?;
        Ok(0)
    }

    fn access(&mut self, env: &SyscallEnv, dirfd: u64, path: u64, mode: u64) -> std::result::Result<u64, i32> {
        let p = self.resolve(env, dirfd, path)?;
        // R_OK needs the file to be readable (as natively); F_OK only that it is there.
        if mode & 4 != 0 {
            self.policy.open(&p, libc::O_RDONLY)?;
        } else {
            self.policy.lookup(&p, libc::O_RDONLY)?;
        }
        if mode & 2 != 0 {
            return Err(errno::EROFS);
        }
        if mode & 1 != 0 {
            return Err(errno::EACCES);
        }
        Ok(0)
    }

    fn getdents64(&mut self, env: &SyscallEnv, fd: u64, buf: u64, len: u64) -> std::result::Result<u64, i32> {
        let host = match self.fds.get(fd).ok_or(errno::EBADF)? {
            FdKind::File { host, is_dir: true, .. } => host.as_raw_fd(),
            _ => return Err(errno::ENOTDIR),
        };
        let len = len.min(1 << 20);
        let ptr = env.user().host_range(buf, len, true)?;
        // SAFETY: getdents64 into the checked guest range.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, host, ptr, len as usize) };
        host_result(n)
    }

    fn readlink(&mut self, env: &SyscallEnv, dirfd: u64, path: u64, buf: u64, size: u64) -> std::result::Result<u64, i32> {
        let p = self.resolve(env, dirfd, path)?;
        if size as i64 <= 0 {
            return Err(errno::EINVAL);
        }
        if p == Path::new("/proc/self/exe") {
            let target = self.exe_path.as_os_str().as_encoded_bytes();
            let n = target.len().min(size as usize);
            env.user().write(buf, &target[..n])?;
            return Ok(n as u64);
        }
        // Allowed paths are opened through their canonical form: never symlinks.
        self.policy.lookup(&p, libc::O_RDONLY)?;
        Err(errno::EINVAL)
    }

    fn getcwd(&self, env: &SyscallEnv, buf: u64, size: u64) -> std::result::Result<u64, i32> {
        let mut bytes = self.cwd.as_os_str().as_encoded_bytes().to_vec();
        bytes.push(0);
        if (size as usize) < bytes.len() {
            return Err(errno::ERANGE);
        }
        env.user().write(buf, &bytes)?;
        Ok(bytes.len() as u64)
    }

    // ---- memory ---------------------------------------------------------------------------

    /// mmap. A private file mapping is emulated by copying the file's bytes in, in bounded
    /// steps that stop at the run's deadline.
    fn mmap(&mut self, env: &SyscallEnv, a: [u64; 6]) -> Result<u64> {
        let (addr, len, prot, flags, fd, off) = (a[0], a[1], a[2], a[3], a[4] as i32, a[5]);
        const MAP_ANONYMOUS: u64 = 0x20;
        if flags & MAP_ANONYMOUS != 0 {
            return Ok(ret(self.mm.mmap(env.mem, addr, len, prot, flags)));
        }
        let host = match self.fds.get(fd as u64) {
            Some(FdKind::File { host, is_dir: false, .. }) => host.as_raw_fd(),
            Some(_) => return Ok(err(errno::EACCES)),
            None => return Ok(err(errno::EBADF)),
        };
        // The offset is checked before anything is mapped (a MAP_FIXED mapping replaces what was
        // there): page-aligned, and off + len representable as a file offset.
        if off % 4096 != 0 {
            return Ok(err(errno::EINVAL));
        }
        let Some(file_off) = i64::try_from(off).ok().filter(|o| o.checked_add(i64::try_from(len).unwrap_or(i64::MAX)).is_some()) else {
            return Ok(err(errno::EOVERFLOW));
        };
        if flags & 0x3 != 0x2 && prot & 2 != 0 {
            return Ok(err(errno::EACCES)); // shared writable mapping of a read-only file
        }
        let start = match self.mm.mmap(env.mem, addr, len, prot, flags) {
            Ok(start) => start,
            Err(e) => return Ok(err(e)),
        };
        // The file's bytes go in through the recorded path (so a reset restores what was there),
        // 16 MiB at a time with the deadline checked in between; the rest of the mapping past
        // the end of the file reads as zero.
        const STEP: u64 = 16 << 20;
        let mut done = 0u64;
        while done < len {
            if done > 0 {
                env.deadline.check()?;
            }
            let step = len.saturating_sub(done).min(STEP) as usize;
            let at = start.saturating_add(done);
            let pos = file_off.saturating_add(done as i64);
            let got = env
                .mem
                .write_with(at, step, |ptr, step| {
                    // SAFETY: pread into `[ptr, ptr+step)`, which write_with checked is guest memory.
                    let n = unsafe { libc::pread(host, ptr.cast(), step, pos) };
                    n.max(0).unsigned_abs()
                })
                .unwrap_or(0);
            done = done.saturating_add(got as u64);
            if got < step {
                break; // end of file (or a read error: the rest stays zero)
            }
        }
        Ok(start)
    }

    // ---- time -----------------------------------------------------------------------------

    fn clock_gettime(&self, env: &SyscallEnv, clock: u64, tp: u64) -> std::result::Result<u64, i32> {
        let ts = host_clock(clock)?;
        env.user().write_pod(tp, &ts)?;
        Ok(0)
    }

    fn clock_getres(&self, env: &SyscallEnv, clock: u64, tp: u64) -> std::result::Result<u64, i32> {
        host_clock(clock)?;
        // SAFETY: clock_getres into a local struct for a validated clock id.
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        unsafe { libc::clock_getres(clock as i32, &mut ts) };
        if tp != 0 {
            env.user().write_pod(tp, &ts)?;
        }
        Ok(0)
    }

    fn gettimeofday(&self, env: &SyscallEnv, tv: u64) -> std::result::Result<u64, i32> {
        if tv != 0 {
            let ts = host_clock(libc::CLOCK_REALTIME as u64)?;
            let v = libc::timeval { tv_sec: ts.tv_sec, tv_usec: ts.tv_nsec / 1000 };
            env.user().write_pod(tv, &v)?;
        }
        Ok(0)
    }

    fn time(&self, env: &SyscallEnv, tloc: u64) -> std::result::Result<u64, i32> {
        let secs = host_clock(libc::CLOCK_REALTIME as u64)?.tv_sec as u64;
        if tloc != 0 {
            env.user().write_u64(tloc, secs)?;
        }
        Ok(secs)
    }

    /// nanosleep / clock_nanosleep, cut short (as a timeout) at the run's deadline.
    fn nanosleep(&self, env: &SyscallEnv, clock: u64, flags: u64, req: u64, _rem: u64) -> Result<u64> {
        let ts: libc::timespec = match env.user().read_pod(req) {
            Ok(t) => t,
            Err(_) => return Ok(err(errno::EFAULT)),
        };
        if ts.tv_sec < 0 || !(0..1_000_000_000).contains(&ts.tv_nsec) {
            return Ok(err(errno::EINVAL));
        }
        let now = match host_clock(clock) {
            Ok(n) => n,
            Err(e) => return Ok(err(e)),
        };
        let target = Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
        let wait = if flags & 1 != 0 {
            target.saturating_sub(Duration::new(now.tv_sec.max(0) as u64, now.tv_nsec.clamp(0, 999_999_999) as u32))
        } else {
            target
        };
        // Too far away to represent (tv_sec up to i64::MAX): a sleep for ever, which only the
        // deadline or an interrupt ends.
        env.deadline.sleep_until(Instant::now().checked_add(wait))?;
        Ok(0)
    }

    // ---- identity, limits, system ---------------------------------------------------------

    fn uname(&self, env: &SyscallEnv, buf: u64) -> std::result::Result<u64, i32> {
        // SAFETY: uname into a local struct.
        let mut u: libc::utsname = unsafe { std::mem::zeroed() };
        unsafe { libc::uname(&mut u) };
        // The sandbox has its own host name.
        u.nodename = [0; 65];
        for (d, s) in u.nodename.iter_mut().zip(b"kvmbox") {
            *d = *s as libc::c_char;
        }
        u.domainname = [0; 65];
        for (d, s) in u.domainname.iter_mut().zip(b"(none)") {
            *d = *s as libc::c_char;
        }
        env.user().write_pod(buf, &u)?;
        Ok(0)
    }

    fn prlimit(&self, env: &SyscallEnv, pid: u64, resource: u64, new: u64, old: u64) -> std::result::Result<u64, i32> {
        if pid != 0 && pid != PID {
            return Err(errno::ESRCH);
        }
        const INF: u64 = u64::MAX;
        let (cur, max) = match resource {
            3 => (self.stack_size, INF),                         // RLIMIT_STACK
            7 => (files::MAX_FDS as u64, files::MAX_FDS as u64), // RLIMIT_NOFILE
            9 | 2 => (self.memory, self.memory),                 // RLIMIT_AS, RLIMIT_DATA
            4 => (0, INF),                                       // RLIMIT_CORE
            0..=15 => (INF, INF),
            _ => return Err(errno::EINVAL),
        };
        if new != 0 {
            env.user().read_vec(new, 16)?;
        }
        if old != 0 {
            env.user().write_u64(old, cur)?;
            env.user().write_u64(old.checked_add(8).ok_or(errno::EFAULT)?, max)?;
        }
        Ok(0)
    }

    fn sysinfo(&self, env: &SyscallEnv, buf: u64) -> std::result::Result<u64, i32> {
        // SAFETY: sysinfo is plain old data.
        let mut si: libc::sysinfo = unsafe { std::mem::zeroed() };
        si.uptime = host_clock(libc::CLOCK_BOOTTIME as u64).map(|t| t.tv_sec).unwrap_or(0);
        si.totalram = self.memory;
        si.freeram = self.mm.free_bytes();
        si.procs = 1;
        si.mem_unit = 1;
        env.user().write_pod(buf, &si)?;
        Ok(0)
    }

    fn sched_getaffinity(&self, env: &SyscallEnv, len: u64, mask: u64) -> std::result::Result<u64, i32> {
        if len < 8 || !len.is_multiple_of(8) {
            return Err(errno::EINVAL);
        }
        env.user().write_u64(mask, 1)?; // one vCPU
        Ok(8)
    }

    fn getrandom(&self, env: &SyscallEnv, buf: u64, len: u64, flags: u64) -> std::result::Result<u64, i32> {
        if flags & !0x7 != 0 {
            return Err(errno::EINVAL);
        }
        let len = len.min(32 << 20);
        let ptr = env.user().host_range(buf, len, true)?;
        // SAFETY: ptr covers len checked, writable guest bytes.
        host_random(unsafe { std::slice::from_raw_parts_mut(ptr, len as usize) }).map(|n| n as u64)
    }

    fn arch_prctl(&self, env: &SyscallEnv, code: u64, addr: u64) -> std::result::Result<u64, i32> {
        const SET_GS: u64 = 0x1001;
        const SET_FS: u64 = 0x1002;
        const GET_FS: u64 = 0x1003;
        const GET_GS: u64 = 0x1004;
        let msr = match code {
            SET_FS | GET_FS => MSR_FS_BASE,
            SET_GS | GET_GS => MSR_GS_BASE,
            _ => return Err(errno::EINVAL),
        };
        if code == SET_FS || code == SET_GS {
            // Non-canonical bases would make the next guest entry fail.
            if addr >= 0x0000_8000_0000_0000 {
                return Err(errno::EPERM);
            }
            let msrs = Msrs::from_entries(&[kvm_msr_entry { index: msr, data: addr, ..Default::default() }]).map_err(|_| errno::EINVAL)?;
            crate::arch::set_msrs(env.vcpu, &msrs).map_err(|_| errno::EINVAL)?;
            return Ok(0);
        }
        let mut msrs = Msrs::from_entries(&[kvm_msr_entry { index: msr, ..Default::default() }]).map_err(|_| errno::EINVAL)?;
        env.vcpu.get_msrs(&mut msrs).map_err(|_| errno::EINVAL)?;
        env.user().write_u64(addr, msrs.as_slice()[0].data)?;
        Ok(0)
    }

    fn futex(&self, env: &SyscallEnv, uaddr: u64, op: u64, val: u64) -> std::result::Result<u64, i32> {
        // One thread: nobody can wake a waiter, and wakes find nobody.
        match op & 0x7f {
            0 | 9 => {
                let mut b = [0u8; 4];
                env.user().read(uaddr, &mut b)?;
                if u32::from_le_bytes(b) != val as u32 {
                    Err(errno::EAGAIN)
                } else {
                    Err(errno::ETIMEDOUT)
                }
            }
            1 | 10 => Ok(0),
            _ => Err(errno::ENOSYS),
        }
    }

    // ---- signals (recorded; delivery comes later) -------------------------------------------

    fn rt_sigaction(&mut self, env: &SyscallEnv, sig: u64, act: u64, oact: u64, size: u64) -> std::result::Result<u64, i32> {
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

    fn rt_sigprocmask(&mut self, env: &SyscallEnv, how: u64, set: u64, oset: u64, size: u64) -> std::result::Result<u64, i32> {
        if size != 8 {
            return Err(errno::EINVAL);
        }
        let old = self.sigmask;
        if set != 0 {
            let s = env.user().read_u64(set)? & !((1 << 8) | (1 << 18)); // SIGKILL, SIGSTOP
            self.sigmask = match how {
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

    fn sigaltstack(&mut self, env: &SyscallEnv, ss: u64, oss: u64) -> std::result::Result<u64, i32> {
        let new: Option<[u64; 3]> = if ss != 0 { Some(env.user().read_pod(ss)?) } else { None };
        if oss != 0 {
            env.user().write_pod(oss, &self.altstack)?;
        }
        if let Some(n) = new {
            self.altstack = n;
        }
        Ok(0)
    }

    /// kill/tkill/tgkill. Signals to ourselves end the process the way their default action
    /// would (abort() → SIGABRT); delivery to handlers is not emulated yet.
    fn kill(&mut self, pid: i64, sig: u64) -> Result<Flow> {
        if pid != PID as i64 && pid != 0 && pid != -1 {
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

    /// What signal `sig` (1–64) does to the process: `None` if it is ignored (explicitly, or
    /// by default), else how the process ends (handlers are not run: no signal delivery yet).
    fn raise(&self, sig: u64) -> Option<ExitStatus> {
        let handler = self.sigactions[sig as usize][0];
        let default_ignored = matches!(sig as i32, libc::SIGCHLD | libc::SIGURG | libc::SIGWINCH | libc::SIGCONT);
        if handler == 1 /* SIG_IGN */ || (handler == 0 && default_ignored) {
            None
        } else {
            Some(ExitStatus::Signal(sig as i32))
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

fn host_clock(clock: u64) -> std::result::Result<libc::timespec, i32> {
    // Only the clocks that make sense for one sandboxed process; CPU-time clocks report the
    // host thread's time, which is the guest's (the vCPU runs on this thread).
    let id = match clock as i32 {
        c @ (libc::CLOCK_REALTIME
        | libc::CLOCK_MONOTONIC
        | libc::CLOCK_MONOTONIC_RAW
        | libc::CLOCK_REALTIME_COARSE
        | libc::CLOCK_MONOTONIC_COARSE
        | libc::CLOCK_BOOTTIME
        | libc::CLOCK_TAI) => c,
        libc::CLOCK_PROCESS_CPUTIME_ID | libc::CLOCK_THREAD_CPUTIME_ID => libc::CLOCK_THREAD_CPUTIME_ID,
        _ => return Err(errno::EINVAL),
    };
    // SAFETY: clock_gettime into a local struct.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(id, &mut ts) };
    Ok(ts)
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

/// Name of a syscall number for traces.
pub fn syscall_name(nr: u64) -> String {
    let name = match nr {
        0 => "read",
        1 => "write",
        2 => "open",
        3 => "close",
        4 => "stat",
        5 => "fstat",
        6 => "lstat",
        7 => "poll",
        8 => "lseek",
        9 => "mmap",
        10 => "mprotect",
        11 => "munmap",
        12 => "brk",
        13 => "rt_sigaction",
        14 => "rt_sigprocmask",
        16 => "ioctl",
        17 => "pread64",
        18 => "pwrite64",
        19 => "readv",
        20 => "writev",
        21 => "access",
        24 => "sched_yield",
        25 => "mremap",
        28 => "madvise",
        32 => "dup",
        33 => "dup2",
        35 => "nanosleep",
        39 => "getpid",
        60 => "exit",
        62 => "kill",
        63 => "uname",
        72 => "fcntl",
        79 => "getcwd",
        89 => "readlink",
        96 => "gettimeofday",
        97 => "getrlimit",
        98 => "getrusage",
        99 => "sysinfo",
        102 => "getuid",
        104 => "getgid",
        107 => "geteuid",
        108 => "getegid",
        110 => "getppid",
        131 => "sigaltstack",
        158 => "arch_prctl",
        186 => "gettid",
        200 => "tkill",
        201 => "time",
        202 => "futex",
        204 => "sched_getaffinity",
        217 => "getdents64",
        218 => "set_tid_address",
        228 => "clock_gettime",
        229 => "clock_getres",
        230 => "clock_nanosleep",
        231 => "exit_group",
        234 => "tgkill",
        257 => "openat",
        262 => "newfstatat",
        267 => "readlinkat",
        269 => "faccessat",
        271 => "ppoll",
        273 => "set_robust_list",
        292 => "dup3",
        302 => "prlimit64",
        318 => "getrandom",
        332 => "statx",
        334 => "rseq",
        439 => "faccessat2",
        _ => return format!("syscall_{nr}"),
    };
    name.to_string()
}

//! The emulated process's state as a snapshot keeps it, and its encoding in snapshot files.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::files::{self, FdSpec, Input, LocalSpec};
use super::ipc::{Interest, MAX_INTEREST, PIPE_CAPACITY};
use super::mm::Mappings;
use super::signals::{RestartWhen, SigInfo, Timer, KNOWN_FLAGS, UNBLOCKABLE};
use super::threads::{RunState, SavedCpu, Thread, UserCpu, MAX_THREADS};
use crate::error::{Error, Result};

/// The emulated process's state as a snapshot keeps it.
#[derive(Clone)]
pub struct LinuxState {
    pub(super) mm: Mappings,
    pub(super) fds: Vec<(usize, FdSpec)>,
    pub(super) stdin: Input,
    pub(super) sigactions: super::SignalTable,
    pub(super) threads: Vec<Thread>,
    pub(super) current: usize,
    pub(super) next_tid: u64,
    pub(super) futex_seq: u64,
    pub(super) shared_pending: Vec<SigInfo>,
    pub(super) timers: Vec<Timer>,
    /// The in-memory files, the working directory and the umask.
    pub(super) fs: super::memfs::MemFs,
    pub(super) cwd: std::path::PathBuf,
    pub(super) cwd_ino: Option<super::memfs::Ino>,
    pub(super) umask: u32,
    /// The guest's monotonic clock's lead over the host's, and its reading at the capture.
    pub(super) mono_offset: u64,
    pub(super) mono_at_capture: u64,
    /// When the state was captured: timeouts are kept as time left from then.
    pub(super) captured_at: Instant,
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
                FdSpec::Device(d) => {
                    w.u8(5);
                    w.u8(d.code());
                }
                FdSpec::Mem { desc, ino, offset, read, write, append, path_only, .. } => {
                    w.u8(6);
                    w.u64(*desc);
                    w.u64(*ino);
                    w.u64(*offset);
                    w.u8(*read as u8 | (*write as u8) << 1 | (*append as u8) << 2 | (*path_only as u8) << 3);
                }
                FdSpec::File { path, is_dir, offset, flags, .. } => {
                    w.u8(3);
                    w.bytes(path.as_os_str().as_encoded_bytes());
                    w.u8(*is_dir as u8);
                    w.u64(*offset);
                    w.u64(*flags as u64);
                }
                FdSpec::Local { desc, nonblock, object } => {
                    w.u8(4);
                    w.u64(*desc);
                    w.u8(*nonblock as u8);
                    match object {
                        LocalSpec::PipeRead { pipe, data } | LocalSpec::PipeWrite { pipe, data } => {
                            w.u8(if matches!(object, LocalSpec::PipeRead { .. }) { 0 } else { 1 });
                            w.u64(*pipe);
                            w.bytes(data);
                        }
                        LocalSpec::EventFd { value, semaphore } => {
                            w.u8(2);
                            w.u64(*value);
                            w.u8(*semaphore as u8);
                        }
                        LocalSpec::TimerFd { clock, left_ns, interval_ns, expirations } => {
                            w.u8(5);
                            w.u8(*clock as u8);
                            w.u64(*left_ns);
                            w.u64(*interval_ns);
                            w.u64(*expirations);
                        }
                        LocalSpec::SignalFd { mask } => {
                            w.u8(6);
                            w.u64(*mask);
                        }
                        LocalSpec::Socket { rx, tx, kind, shut_rd, shut_wr } => {
                            w.u8(4);
                            for p in [rx, tx] {
                                w.u64(p.pipe);
                                w.bytes(&p.data);
                                w.u64(p.msgs.len() as u64);
                                for &m in &p.msgs {
                                    w.u64(m);
                                }
                            }
                            w.u8(*kind as u8);
                            w.u8(*shut_rd as u8 | (*shut_wr as u8) << 1);
                        }
                        LocalSpec::Epoll { interest } => {
                            w.u8(3);
                            w.u64(interest.len() as u64);
                            for i in interest {
                                w.u64(i.fd);
                                w.u64(u64::from(i.events));
                                w.u64(i.data);
                                w.u64(i.reported.map_or(u64::MAX, |r| r));
                            }
                        }
                    }
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
        w.u64(self.threads.len() as u64);
        w.u64(self.current as u64);
        w.u64(self.next_tid);
        w.u64(self.futex_seq);
        for t in &self.threads {
            encode_thread(w, t, self.captured_at);
        }
        encode_signals(w, &self.shared_pending);
        w.u64(self.timers.len() as u64);
        for t in &self.timers {
            w.u64(t.id as u64);
            w.u64(t.clock as u64);
            w.u64(t.signo);
            w.u64(t.thread.unwrap_or(0));
            w.u64(t.value);
            w.u64(time_left(t.next, self.captured_at));
            w.u64(u64::try_from(t.interval.as_nanos()).unwrap_or(u64::MAX));
            w.u64(t.overrun);
        }
        self.fs.encode(w);
        w.bytes(self.cwd.as_os_str().as_encoded_bytes());
        w.u64(self.cwd_ino.unwrap_or(u64::MAX));
        w.u64(u64::from(self.umask));
        w.u64(self.mono_offset);
        w.u64(self.mono_at_capture);
    }

    pub(crate) fn decode(r: &mut crate::snapfile::Reader, layout: &crate::layout::Layout, fs: &super::memfs::MemFs) -> Result<LinuxState> {
        let bad = |what: &str| Error::InvalidArgument(format!("invalid snapshot file: {what}"));
        let mm = Mappings::decode(r, layout)?;
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
                5 => FdSpec::Device(files::Device::from_code(r.u8()?).ok_or_else(|| bad("unknown device"))?),
                6 => {
                    let (desc, ino, offset, bits) = (r.u64()?, r.u64()?, r.u64()?, r.u8()?);
                    FdSpec::Mem {
                        desc,
                        ino,
                        offset,
                        read: bits & 1 != 0,
                        write: bits & 2 != 0,
                        append: bits & 4 != 0,
                        lower: None,
                        path_only: bits & 8 != 0,
                    }
                }
                3 => {
                    let path = PathBuf::from(std::ffi::OsStr::from_bytes(r.bytes()?));
                    if !path.is_absolute() {
                        return Err(bad("relative path of an open file"));
                    }
                    let (is_dir, offset, flags) = (r.u8()? != 0, r.u64()?, r.u64()?);
                    let flags = i32::try_from(flags)
                        .ok()
                        .filter(|f| f & !(libc::O_ACCMODE | libc::O_APPEND) == 0)
                        .ok_or_else(|| bad("file flags"))?;
                    FdSpec::File { path: files::normalize(&path), is_dir, offset, handle: None, flags }
                }
                4 => {
                    let (desc, nonblock) = (r.u64()?, r.u8()? != 0);
                    let object = match r.u8()? {
                        k @ (0 | 1) => {
                            let pipe = r.u64()?;
                            let data = r.bytes()?;
                            if data.len() > PIPE_CAPACITY {
                                return Err(bad("pipe contents"));
                            }
                            let data = data.to_vec();
                            if k == 0 {
                                LocalSpec::PipeRead { pipe, data }
                            } else {
                                LocalSpec::PipeWrite { pipe, data }
                            }
                        }
                        2 => LocalSpec::EventFd { value: r.u64()?, semaphore: r.u8()? != 0 },
                        3 => {
                            let n = r.count(32)?;
                            if n > MAX_INTEREST {
                                return Err(bad("epoll interest list"));
                            }
                            let mut interest = Vec::with_capacity(n);
                            for _ in 0..n {
                                let (fd, events, data, reported) = (r.u64()?, r.u64()?, r.u64()?, r.u64()?);
                                let events = u32::try_from(events).map_err(|_| bad("epoll events"))?;
                                interest.push(Interest { fd, events, data, reported: (reported != u64::MAX).then_some(reported) });
                            }
                            LocalSpec::Epoll { interest }
                        }
                        4 => {
                            let mut one = || -> Result<files::PipeSpec> {
                                let pipe = r.u64()?;
                                let data = r.bytes()?.to_vec();
                                let n = r.count(8)?;
                                let mut msgs = Vec::with_capacity(n);
                                for _ in 0..n {
                                    msgs.push(r.u64()?);
                                }
                                // Within a pipe's capacity, and messages that add up to the bytes.
                                let total = msgs.iter().try_fold(0u64, |s, &m| s.checked_add(m));
                                if data.len() > PIPE_CAPACITY || (!msgs.is_empty() && total != Some(data.len() as u64)) {
                                    return Err(bad("socket contents"));
                                }
                                Ok(files::PipeSpec { pipe, data, msgs })
                            };
                            let (rx, tx) = (one()?, one()?);
                            let kind = i32::from(r.u8()?);
                            if ![libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_SEQPACKET].contains(&kind) {
                                return Err(bad("socket type"));
                            }
                            let shut = r.u8()?;
                            LocalSpec::Socket { rx, tx, kind, shut_rd: shut & 1 != 0, shut_wr: shut & 2 != 0 }
                        }
                        5 => {
                            let clock = i32::from(r.u8()?);
                            if ![libc::CLOCK_REALTIME, libc::CLOCK_MONOTONIC, libc::CLOCK_BOOTTIME].contains(&clock) {
                                return Err(bad("timerfd clock"));
                            }
                            LocalSpec::TimerFd { clock, left_ns: r.u64()?, interval_ns: r.u64()?, expirations: r.u64()? }
                        }
                        6 => LocalSpec::SignalFd { mask: r.u64()? & !super::signals::UNBLOCKABLE },
                        _ => return Err(bad("unknown in-machine object")),
                    };
                    FdSpec::Local { desc, nonblock, object }
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
        let mut sigactions: super::SignalTable = [[0; 4]; 65];
        for a in sigactions.iter_mut() {
            for v in a.iter_mut() {
                *v = r.u64()?;
            }
            // Only what rt_sigaction could have set: known flags, a mask without SIGKILL/SIGSTOP.
            a[1] &= KNOWN_FLAGS;
            a[3] &= !UNBLOCKABLE;
        }
        // SIGKILL and SIGSTOP keep their default action.
        sigactions[9] = [0; 4];
        sigactions[19] = [0; 4];
        let n = r.count(64)?;
        let (current, next_tid, futex_seq) = (r.u64()?, r.u64()?, r.u64()?);
        if n == 0 || n > MAX_THREADS {
            return Err(bad("thread count"));
        }
        let captured_at = Instant::now();
        let mut threads: Vec<Thread> = Vec::with_capacity(n);
        for _ in 0..n {
            let t = decode_thread(r, captured_at)?;
            if t.tid == 0 || t.tid >= next_tid || threads.iter().any(|o| o.tid == t.tid) {
                return Err(bad("thread ids"));
            }
            threads.push(t);
        }
        let current = usize::try_from(current).ok().filter(|&c| c < n).ok_or_else(|| bad("current thread"))?;
        // The current thread's CPU state is the snapshot's vCPU state; every other thread has
        // its own, complete, to be switched to.
        for (i, t) in threads.iter().enumerate() {
            let complete = t.saved.as_ref().is_some_and(|s| s.xsave.is_some());
            if (i == current) == complete || (i == current && t.state != RunState::Runnable) {
                return Err(bad("thread CPU state"));
            }
        }
        let shared_pending = decode_signals(r)?;
        let n = r.count(64)?;
        if n > 1025 {
            return Err(bad("too many timers"));
        }
        let mut timers = Vec::with_capacity(n);
        for _ in 0..n {
            let (id, clock, signo, thread, value, left, interval, overrun) =
                (r.u64()? as i64, r.u64()?, r.u64()?, r.u64()?, r.u64()?, r.u64()?, r.u64()?, r.u64()?);
            if signo > 64 || !matches!(clock as i32, libc::CLOCK_REALTIME | libc::CLOCK_MONOTONIC | libc::CLOCK_BOOTTIME) || id < -1 {
                return Err(bad("timer"));
            }
            let thread = (thread != 0).then_some(thread);
            let next = time_until(left, captured_at);
            timers.push(Timer { id, clock: clock as i32, signo, thread, value, next, interval: Duration::from_nanos(interval), overrun });
        }
        let fs = super::memfs::MemFs::decode(r, fs)?;
        let cwd = PathBuf::from(std::ffi::OsStr::from_bytes(r.bytes()?));
        let cwd_ino = Some(r.u64()?).filter(|&i| i != u64::MAX);
        if cwd_ino.is_some_and(|i| !fs.inode(i).is_some_and(super::memfs::Inode::is_dir)) {
            return Err(bad("working directory"));
        }
        let umask = r.u64()?;
        let (mono_offset, mono_at_capture) = (r.u64()?, r.u64()?);
        if !cwd.is_absolute() || umask > 0o777 {
            return Err(bad("working directory or umask"));
        }
        let cwd = files::normalize(&cwd);
        let umask = umask as u32;
        Ok(LinuxState {
            mm,
            fds,
            stdin,
            sigactions,
            threads,
            current,
            next_tid,
            futex_seq,
            shared_pending,
            timers,
            fs,
            cwd,
            cwd_ino,
            umask,
            mono_offset,
            mono_at_capture,
            captured_at,
        })
    }
}

/// Time left until `until` from `from`, in nanoseconds (`u64::MAX`: no timeout).
fn time_left(until: Option<Instant>, from: Instant) -> u64 {
    until.map_or(u64::MAX, |u| u64::try_from(u.saturating_duration_since(from).as_nanos()).unwrap_or(u64::MAX - 1))
}

fn time_until(left: u64, from: Instant) -> Option<Instant> {
    if left == u64::MAX {
        return None;
    }
    from.checked_add(Duration::from_nanos(left))
}

fn encode_thread(w: &mut crate::snapfile::Writer, t: &Thread, captured_at: Instant) {
    w.u64(t.tid);
    w.u64(t.sigmask);
    for v in t.altstack {
        w.u64(v);
    }
    w.u64(t.clear_child_tid);
    w.u64(t.robust_list);
    match t.state {
        RunState::Runnable => w.u8(0),
        RunState::Futex { addr, bitset, until, seq } => {
            w.u8(1);
            w.u64(addr);
            w.u64(u64::from(bitset));
            w.u64(time_left(until, captured_at));
            w.u64(seq);
        }
        RunState::Sleep { until, rem } => {
            w.u8(2);
            w.u64(time_left(until, captured_at));
            w.u64(rem);
        }
        RunState::Exited => w.u8(3),
        RunState::Pause => w.u8(4),
        RunState::IoWait { until, on_signal } => {
            w.u8(6);
            w.u64(time_left(until, captured_at));
            w.u8(restart_code(Some(on_signal)));
        }
        RunState::SigWait { set, until } => {
            w.u8(5);
            w.u64(set);
            w.u64(time_left(until, captured_at));
        }
    }
    encode_signals(w, &t.pending);
    w.u8(restart_code(t.restart));
    w.u64(t.wait_deadline.is_some() as u64 | (t.rerun as u64) << 1);
    w.u64(t.wait_deadline.map_or(u64::MAX, |d| time_left(d, captured_at)));
    w.u64(t.blocked_nr);
    w.u64(t.saved_mask.is_some() as u64);
    w.u64(t.saved_mask.unwrap_or(0));
    w.u64(t.resume_rax.is_some() as u64);
    w.u64(t.resume_rax.unwrap_or(0));
    match &t.saved {
        None => w.u8(0),
        Some(s) => {
            w.u8(1);
            w.pod(&s.user.regs);
            w.u64(s.user.fs_base);
            w.u64(s.user.gs_base);
            match &s.xsave {
                None => w.u8(0),
                Some(x) => {
                    w.u8(1);
                    w.pod(&x.region);
                }
            }
        }
    }
}

fn decode_thread(r: &mut crate::snapfile::Reader, captured_at: Instant) -> Result<Thread> {
    let bad = |what: &str| Error::InvalidArgument(format!("invalid snapshot file: {what}"));
    let mut t = Thread::main();
    t.tid = r.u64()?;
    t.sigmask = r.u64()? & !UNBLOCKABLE;
    t.altstack = [r.u64()?, r.u64()?, r.u64()?];
    t.clear_child_tid = r.u64()?;
    t.robust_list = r.u64()?;
    t.state = match r.u8()? {
        0 => RunState::Runnable,
        1 => {
            let (addr, bitset, left, seq) = (r.u64()?, r.u64()?, r.u64()?, r.u64()?);
            let bitset = u32::try_from(bitset).ok().filter(|&b| b != 0).ok_or_else(|| bad("futex bitset"))?;
            RunState::Futex { addr, bitset, until: time_until(left, captured_at), seq }
        }
        2 => RunState::Sleep { until: time_until(r.u64()?, captured_at), rem: r.u64()? },
        4 => RunState::Pause,
        5 => RunState::SigWait { set: r.u64()?, until: time_until(r.u64()?, captured_at) },
        6 => {
            let until = time_until(r.u64()?, captured_at);
            let on_signal = restart_of(r.u8()?)?.ok_or_else(|| bad("I/O wait"))?;
            RunState::IoWait { until, on_signal }
        }
        _ => return Err(bad("thread run state")),
    };
    t.pending = decode_signals(r)?;
    t.restart = restart_of(r.u8()?)?;
    let (has_deadline, left) = (r.u64()?, r.u64()?);
    t.wait_deadline = (has_deadline & 1 != 0).then(|| time_until(left, captured_at));
    t.rerun = has_deadline & 2 != 0;
    t.blocked_nr = r.u64()?;
    let (has_mask, mask) = (r.u64()?, r.u64()?);
    t.saved_mask = (has_mask != 0).then_some(mask & !UNBLOCKABLE);
    let (has_rax, rax) = (r.u64()?, r.u64()?);
    t.resume_rax = (has_rax != 0).then_some(rax);
    t.saved = match r.u8()? {
        0 => None,
        1 => {
            let regs: kvm_bindings::kvm_regs = r.pod()?;
            let (fs_base, gs_base) = (r.u64()?, r.u64()?);
            if regs.rip >= 0x0000_8000_0000_0000 {
                return Err(bad("thread instruction pointer")); // VM entry would fail
            }
            if fs_base >= 0x0000_8000_0000_0000 || gs_base >= 0x0000_8000_0000_0000 {
                return Err(bad("thread TLS base"));
            }
            let xsave = match r.u8()? {
                0 => None,
                _ => {
                    let x = kvm_bindings::kvm_xsave { region: r.pod()?, ..Default::default() };
                    if !plausible_xsave(&x) {
                        return Err(bad("thread FPU state"));
                    }
                    Some(Box::new(x))
                }
            };
            Some(Box::new(SavedCpu { user: UserCpu { regs, fs_base, gs_base }, xsave }))
        }
        _ => return Err(bad("thread CPU state")),
    };
    Ok(t)
}

fn encode_signals(w: &mut crate::snapfile::Writer, q: &[SigInfo]) {
    w.u64(q.len() as u64);
    for s in q {
        w.u64(s.signo as u32 as u64 | (u64::from(s.code as u32) << 32));
        w.u64(s.errno as u32 as u64);
        w.u64(s.a);
        w.u64(s.b);
    }
}

fn decode_signals(r: &mut crate::snapfile::Reader) -> Result<Vec<SigInfo>> {
    let n = r.count(32)?;
    if n > 1024 {
        return Err(Error::InvalidArgument("invalid snapshot file: too many pending signals".into()));
    }
    let mut q = Vec::with_capacity(n);
    for _ in 0..n {
        let (head, errno, a, b) = (r.u64()?, r.u64()?, r.u64()?, r.u64()?);
        let signo = (head & 0xffff_ffff) as i32;
        if !(1..=64).contains(&signo) {
            return Err(Error::InvalidArgument("invalid snapshot file: pending signal number".into()));
        }
        q.push(SigInfo { signo, code: (head >> 32) as i32, errno: errno as i32, a, b });
    }
    Ok(q)
}

fn restart_code(r: Option<RestartWhen>) -> u8 {
    match r {
        None => 0,
        Some(RestartWhen::NoHandlerOrSaRestart) => 1,
        Some(RestartWhen::NoHandler) => 2,
        Some(RestartWhen::Always) => 3,
    }
}

fn restart_of(code: u8) -> Result<Option<RestartWhen>> {
    Ok(match code {
        0 => None,
        1 => Some(RestartWhen::NoHandlerOrSaRestart),
        2 => Some(RestartWhen::NoHandler),
        3 => Some(RestartWhen::Always),
        _ => return Err(Error::InvalidArgument("invalid snapshot file: thread restart".into())),
    })
}

/// An XSAVE image KVM_SET_XSAVE can take: standard format (XCOMP_BV 0), reserved header bytes
/// zero, no reserved MXCSR bits. (KVM checks the rest when the thread is switched in; a
/// refusal then ends the run with an error, never reaches the host's own state.)
fn plausible_xsave(x: &kvm_bindings::kvm_xsave) -> bool {
    let word = |i: usize| x.region.get(i).copied().unwrap_or(0);
    let mxcsr = word(6);
    let xcomp_bv = u64::from(word(130)) | (u64::from(word(131)) << 32);
    let reserved = (132..144).any(|i| word(i) != 0);
    mxcsr & 0xffff_0000 == 0 && xcomp_bv == 0 && !reserved
}

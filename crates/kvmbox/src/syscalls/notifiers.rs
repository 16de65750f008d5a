//! timerfd and signalfd: timer expirations and signals read from a descriptor, so an event loop
//! can wait for them in epoll/poll/select with everything else. Both are in-machine objects
//! (see `ipc`): readiness, blocking reads, snapshots and resets work as for pipes. A timerfd
//! expires from the run loop's timer (`fire_timerfds`, with the POSIX timers); a signal sent
//! while a signalfd exists wakes the threads waiting for I/O.

use std::time::{Duration, Instant};

use super::files::FdKind;
use super::ipc::{lock, Desc, Description, Local};
use super::signals::{SigInfo, UNBLOCKABLE};
use super::{errno, Flow, Linux, SyscallEnv};

const TFD_NONBLOCK: u64 = 0o4000;
const TFD_CLOEXEC: u64 = 0o2000000;
const TFD_TIMER_ABSTIME: u64 = 1;
/// `struct signalfd_siginfo`.
const SIGNALFD_SIGINFO: usize = 128;

/// A timer as a descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerFd {
    pub clock: i32,
    /// When it expires next (None: disarmed).
    pub next: Option<Instant>,
    /// Period of a periodic timer (zero: one-shot).
    pub interval: Duration,
    /// Expirations not read yet.
    pub expirations: u64,
}

impl TimerFd {
    /// Count the expirations due by `now` and reload a periodic timer; true if any.
    pub fn expire(&mut self, now: Instant) -> bool {
        let Some(next) = self.next.filter(|n| *n <= now) else { return false };
        let (missed, reloaded) = super::signals::reload(next, self.interval, now);
        self.next = reloaded;
        self.expirations = self.expirations.saturating_add(missed).saturating_add(1);
        true
    }
}

fn timespec_of(d: Duration) -> [i64; 2] {
    [i64::try_from(d.as_secs()).unwrap_or(i64::MAX), i64::from(d.subsec_nanos())]
}

fn duration_of(t: [i64; 2]) -> std::result::Result<Duration, i32> {
    if t[0] < 0 || !(0..1_000_000_000).contains(&t[1]) {
        return Err(errno::EINVAL);
    }
    Ok(Duration::new(t[0].unsigned_abs(), t[1] as u32))
}

impl Linux {
    fn timerfd_of(&self, fd: u64) -> std::result::Result<Desc, i32> {
        match self.fds.get(fd).ok_or(errno::EBADF)? {
            FdKind::Local(d) if matches!(lock(d).local, Local::TimerFd(_)) => Ok(std::sync::Arc::clone(d)),
            _ => Err(errno::EINVAL),
        }
    }

    pub(super) fn timerfd_create(&mut self, clock: u64, flags: u64) -> std::result::Result<u64, i32> {
        if ![libc::CLOCK_REALTIME, libc::CLOCK_MONOTONIC, libc::CLOCK_BOOTTIME].contains(&(clock as i32)) {
            return Err(errno::EINVAL);
        }
        if flags & !(TFD_NONBLOCK | TFD_CLOEXEC) != 0 {
            return Err(errno::EINVAL);
        }
        let t = TimerFd { clock: clock as i32, next: None, interval: Duration::ZERO, expirations: 0 };
        self.has_notifiers = true;
        self.fds.insert(FdKind::Local(Description::new(flags & TFD_NONBLOCK != 0, Local::TimerFd(t))), 0)
    }

    /// The setting of `t` as `struct itimerspec` (interval, time left).
    fn itimerspec(t: &TimerFd) -> [i64; 4] {
        let left = t.next.map_or(Duration::ZERO, |n| n.saturating_duration_since(Instant::now()).max(Duration::from_nanos(1)));
        let [a, b] = timespec_of(t.interval);
        let [c, d] = timespec_of(if t.next.is_some() { left } else { Duration::ZERO });
        [a, b, c, d]
    }

    pub(super) fn timerfd_settime(&mut self, env: &SyscallEnv, fd: u64, flags: u64, new: u64, old: u64) -> std::result::Result<u64, i32> {
        let d = self.timerfd_of(fd)?;
        if flags & !(TFD_TIMER_ABSTIME | 2) != 0 {
            return Err(errno::EINVAL);
        }
        let spec: [i64; 4] = env.user().read_pod(new)?;
        let (interval, value) = (duration_of([spec[0], spec[1]])?, duration_of([spec[2], spec[3]])?);
        let mut g = lock(&d);
        let Local::TimerFd(t) = &mut g.local else { return Err(errno::EINVAL) };
        let before = Self::itimerspec(t);
        let wait = if flags & TFD_TIMER_ABSTIME != 0 {
            let now = super::time::host_clock(t.clock as u64, self.mono_offset)?;
            value.saturating_sub(duration_of([now.tv_sec, now.tv_nsec]).unwrap_or_default())
        } else {
            value
        };
        t.next = if value.is_zero() { None } else { Instant::now().checked_add(wait) };
        t.interval = interval;
        t.expirations = 0;
        g.gen = g.gen.wrapping_add(1);
        drop(g);
        if old != 0 {
            env.user().write_pod(old, &before)?;
        }
        self.io_changed();
        Ok(0)
    }

    pub(super) fn timerfd_gettime(&mut self, env: &SyscallEnv, fd: u64, cur: u64) -> std::result::Result<u64, i32> {
        let d = self.timerfd_of(fd)?;
        let spec = match &lock(&d).local {
            Local::TimerFd(t) => Self::itimerspec(t),
            _ => return Err(errno::EINVAL),
        };
        env.user().write_pod(cur, &spec)?;
        Ok(0)
    }

    /// The timerfds and signalfds among the descriptors (only looked for once one was made).
    fn notifier_descs(&self) -> Vec<Desc> {
        if !self.has_notifiers {
            return Vec::new();
        }
        self.fds.iter_locals().filter(|d| matches!(lock(d).local, Local::TimerFd(_) | Local::SignalFd { .. })).collect()
    }

    /// When the first timerfd expires.
    pub fn next_timerfd(&self) -> Option<Instant> {
        self.notifier_descs()
            .iter()
            .filter_map(|d| match &lock(d).local {
                Local::TimerFd(t) => t.next,
                _ => None,
            })
            .min()
    }

    /// Count the timerfd expirations due by `now`; threads waiting for I/O look again.
    pub fn fire_timerfds(&mut self, now: Instant) {
        let mut any = false;
        for d in self.notifier_descs() {
            let mut g = lock(&d);
            if let Local::TimerFd(t) = &mut g.local {
                if t.expire(now) {
                    g.gen = g.gen.wrapping_add(1);
                    any = true;
                }
            }
        }
        if any {
            self.io_changed();
        }
    }

    /// A signal was sent: signalfd readers look again.
    pub(super) fn signal_for_signalfds(&mut self) {
        if self.has_notifiers {
            self.io_changed();
        }
    }

    pub(super) fn signalfd4(&mut self, env: &SyscallEnv, fd: u64, mask: u64, size: u64, flags: u64) -> std::result::Result<u64, i32> {
        if size != 8 || flags & !(TFD_NONBLOCK | TFD_CLOEXEC) != 0 {
            return Err(errno::EINVAL);
        }
        let mask = env.user().read_u64(mask)? & !UNBLOCKABLE;
        if fd as i32 != -1 {
            let FdKind::Local(d) = self.fds.get(fd).ok_or(errno::EBADF)? else { return Err(errno::EINVAL) };
            let mut g = lock(d);
            let Local::SignalFd { mask: m } = &mut g.local else { return Err(errno::EINVAL) };
            *m = mask;
            g.gen = g.gen.wrapping_add(1);
            return Ok(fd);
        }
        self.has_notifiers = true;
        self.fds.insert(FdKind::Local(Description::new(flags & TFD_NONBLOCK != 0, Local::SignalFd { mask })), 0)
    }

    /// read(2) of a timerfd (the expirations since the last read) or a signalfd (pending
    /// signals in its mask, one `signalfd_siginfo` each). None for other objects.
    pub(super) fn read_notifier(&mut self, desc: &Desc, env: &SyscallEnv, buf: u64, len: u64) -> Option<std::result::Result<Flow, i32>> {
        let mut g = lock(desc);
        let nonblock = g.nonblock;
        let result = match &mut g.local {
            Local::TimerFd(t) => {
                if len < 8 {
                    Err(errno::EINVAL)
                } else if t.expirations == 0 {
                    Err(errno::EAGAIN)
                } else {
                    let n = std::mem::take(&mut t.expirations);
                    g.gen = g.gen.wrapping_add(1);
                    drop(g);
                    return Some(env.user().write_u64(buf, n).map(|()| Flow::Return(8)).map_err(Into::into));
                }
            }
            Local::SignalFd { mask } => {
                let mask = *mask;
                drop(g);
                if (len as usize) < SIGNALFD_SIGINFO {
                    return Some(Err(errno::EINVAL));
                }
                // As many whole records as fit, each taken from the queue only when written.
                let mut written = 0u64;
                let room = len.saturating_sub(127); // a record starts before len - 127: it fits
                while written < room {
                    let Some(info) = self.dequeue(!mask) else { break };
                    if let Err(e) = env.user().write(buf.saturating_add(written), &signalfd_siginfo(&info)) {
                        return Some(Err(e.into()));
                    }
                    written = written.saturating_add(SIGNALFD_SIGINFO as u64);
                }
                if written > 0 {
                    return Some(Ok(Flow::Return(written)));
                }
                Err(errno::EAGAIN)
            }
            _ => return None,
        };
        Some(match result {
            Err(errno::EAGAIN) if !nonblock => Ok(self.wait_io(None, super::signals::RestartWhen::NoHandlerOrSaRestart)),
            Err(e) => Err(e),
            Ok(()) => unreachable!(),
        })
    }

    /// Whether a signal in `mask` is pending for the current thread (signalfd readiness).
    pub(super) fn signal_pending_in(&self, mask: u64) -> bool {
        self.deliverable_in(mask)
    }
}

/// A pending signal as `struct signalfd_siginfo`.
fn signalfd_siginfo(info: &SigInfo) -> [u8; SIGNALFD_SIGINFO] {
    let mut b = [0u8; SIGNALFD_SIGINFO];
    b[0..4].copy_from_slice(&(info.signo as u32).to_le_bytes());
    b[4..8].copy_from_slice(&info.errno.to_le_bytes());
    b[8..12].copy_from_slice(&info.code.to_le_bytes());
    if info.code == super::signals::SI_TIMER {
        b[24..28].copy_from_slice(&(info.a as u32).to_le_bytes()); // ssi_tid: the timer id
        b[32..36].copy_from_slice(&((info.a >> 32) as u32).to_le_bytes()); // ssi_overrun
    } else if info.code > 0 {
        b[72..80].copy_from_slice(&info.a.to_le_bytes()); // ssi_addr of a fault
    } else {
        b[12..16].copy_from_slice(&(info.a as u32).to_le_bytes()); // ssi_pid
        b[16..20].copy_from_slice(&((info.a >> 32) as u32).to_le_bytes()); // ssi_uid
    }
    b[44..48].copy_from_slice(&(info.b as i32).to_le_bytes()); // ssi_int
    b[48..56].copy_from_slice(&info.b.to_le_bytes()); // ssi_ptr
    b
}

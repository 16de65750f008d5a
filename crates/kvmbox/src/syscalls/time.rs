//! Clocks and sleeping.

use super::threads::wake_time;
use super::{err, errno, Flow, Linux, SyscallEnv};

impl Linux {
    pub(super) fn clock_gettime(&self, env: &SyscallEnv, clock: u64, tp: u64) -> std::result::Result<u64, i32> {
        let ts = host_clock(clock, self.mono_offset)?;
        env.user().write_pod(tp, &ts)?;
        Ok(0)
    }

    pub(super) fn clock_getres(&self, env: &SyscallEnv, clock: u64, tp: u64) -> std::result::Result<u64, i32> {
        host_clock(clock, 0)?;
        // SAFETY: clock_getres into a local struct for a validated clock id.
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        unsafe { libc::clock_getres(clock as i32, &mut ts) };
        if tp != 0 {
            env.user().write_pod(tp, &ts)?;
        }
        Ok(0)
    }

    pub(super) fn gettimeofday(&self, env: &SyscallEnv, tv: u64) -> std::result::Result<u64, i32> {
        if tv != 0 {
            let ts = host_clock(libc::CLOCK_REALTIME as u64, 0)?;
            let v = libc::timeval { tv_sec: ts.tv_sec, tv_usec: ts.tv_nsec / 1000 };
            env.user().write_pod(tv, &v)?;
        }
        Ok(0)
    }

    pub(super) fn time(&self, env: &SyscallEnv, tloc: u64) -> std::result::Result<u64, i32> {
        let secs = host_clock(libc::CLOCK_REALTIME as u64, 0)?.tv_sec as u64;
        if tloc != 0 {
            env.user().write_u64(tloc, secs)?;
        }
        Ok(secs)
    }

    /// nanosleep / clock_nanosleep: the calling thread blocks (others run meanwhile); a sleep
    /// too long to represent lasts until the run ends (its timeout or an interrupt).
    pub(super) fn nanosleep(&mut self, env: &SyscallEnv, clock: u64, flags: u64, req: u64, rem: u64) -> Flow {
        const TIMER_ABSTIME: u64 = 1;
        if let Err(e) = host_clock(clock, 0) {
            return Flow::Return(err(e));
        }
        // Run again after a signal with no handler: the sleep goes on to the same end.
        if let Some(until) = self.thread().wait_deadline {
            return self.sleep(until, if flags & TIMER_ABSTIME != 0 { 0 } else { rem });
        }
        match wake_time(env, req, clock as i32, flags & TIMER_ABSTIME != 0, self.mono_offset) {
            // An absolute sleep has no time left to report.
            Ok(until) => self.sleep(until, if flags & TIMER_ABSTIME != 0 { 0 } else { rem }),
            Err(e) => Flow::Return(err(e)),
        }
    }
}

/// A timespec in nanoseconds (negative parts count as 0).
pub(super) fn timespec_ns(t: &libc::timespec) -> u64 {
    t.tv_sec.max(0).unsigned_abs().saturating_mul(1_000_000_000).saturating_add(t.tv_nsec.max(0).unsigned_abs())
}

/// The guest's clock `clock` now: the host's, with the monotonic clocks moved on by
/// `mono_offset` nanoseconds (see `Linux::mono_offset`).
pub(super) fn host_clock(clock: u64, mono_offset: u64) -> std::result::Result<libc::timespec, i32> {
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
    if mono_offset != 0
        && matches!(id, libc::CLOCK_MONOTONIC | libc::CLOCK_MONOTONIC_RAW | libc::CLOCK_MONOTONIC_COARSE | libc::CLOCK_BOOTTIME)
    {
        let ns = timespec_ns(&ts).saturating_add(mono_offset);
        ts.tv_sec = i64::try_from(ns / 1_000_000_000).unwrap_or(i64::MAX);
        ts.tv_nsec = (ns % 1_000_000_000) as i64;
    }
    Ok(ts)
}

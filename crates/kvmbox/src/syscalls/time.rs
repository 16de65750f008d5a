//! Clocks and sleeping.

use std::time::{Duration, Instant};

use super::{err, errno, Linux, SyscallEnv};
use crate::error::Result;

impl Linux {
    pub(super) fn clock_gettime(&self, env: &SyscallEnv, clock: u64, tp: u64) -> std::result::Result<u64, i32> {
        let ts = host_clock(clock)?;
        env.user().write_pod(tp, &ts)?;
        Ok(0)
    }

    pub(super) fn clock_getres(&self, env: &SyscallEnv, clock: u64, tp: u64) -> std::result::Result<u64, i32> {
        host_clock(clock)?;
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
            let ts = host_clock(libc::CLOCK_REALTIME as u64)?;
            let v = libc::timeval { tv_sec: ts.tv_sec, tv_usec: ts.tv_nsec / 1000 };
            env.user().write_pod(tv, &v)?;
        }
        Ok(0)
    }

    pub(super) fn time(&self, env: &SyscallEnv, tloc: u64) -> std::result::Result<u64, i32> {
        let secs = host_clock(libc::CLOCK_REALTIME as u64)?.tv_sec as u64;
        if tloc != 0 {
            env.user().write_u64(tloc, secs)?;
        }
        Ok(secs)
    }

    /// nanosleep / clock_nanosleep, cut short (as a timeout) at the run's deadline.
    pub(super) fn nanosleep(&self, env: &SyscallEnv, clock: u64, flags: u64, req: u64, _rem: u64) -> Result<u64> {
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
}

pub(super) fn host_clock(clock: u64) -> std::result::Result<libc::timespec, i32> {
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

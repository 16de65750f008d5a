//! Run timeouts without a thread per run: one POSIX timer per vCPU thread (created on first
//! use) that sends a real-time signal to that thread only (SIGEV_THREAD_ID). The handler sets
//! `immediate_exit` in the running vCPU's `kvm_run`, so KVM_RUN returns EINTR at once even if
//! the signal lands just before entry; the run loop then sees the deadline has passed.

use std::cell::Cell;
use std::sync::Once;
use std::time::Duration;

use kvm_bindings::kvm_run;

use crate::error::{Error, Result};

/// SIGRTMAX-3: clear of glibc's internal signals (SIGRTMIN, SIGRTMIN+1), of Node/libuv
/// (which uses no real-time signals) and of the usual application choices near SIGRTMIN.
fn timeout_signal() -> i32 {
    libc::SIGRTMAX() - 3
}

thread_local! {
    static CURRENT_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
    static TIMER: Cell<Option<usize>> = const { Cell::new(None) };
}

extern "C" fn on_timeout_signal(_: libc::c_int) {
    let run = CURRENT_RUN.with(|c| c.get());
    if !run.is_null() {
        // SAFETY: the pointer is set only while the owning vCPU's kvm_run mapping is alive
        // on this very thread (see `arm`); a volatile byte store is async-signal-safe.
        unsafe { std::ptr::addr_of_mut!((*run).immediate_exit).write_volatile(1) };
    }
}

fn install_handler() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: installing a handler that only performs a volatile store; no SA_RESTART so
        // blocking host calls return EINTR too.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_timeout_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(timeout_signal(), &sa, std::ptr::null_mut());
        }
    });
}

/// Make sure this thread can receive the kick signal (handler installed, signal unblocked).
/// Once per thread: every run calls it, and the run loop is no place for a sigprocmask.
pub fn prepare_thread() {
    thread_local!(static PREPARED: Cell<bool> = const { Cell::new(false) });
    if PREPARED.with(|p| p.replace(true)) {
        return;
    }
    install_handler();
    // SAFETY: changing this thread's signal mask for one signal.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, timeout_signal());
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

/// Make the vCPU running on `thread` (a pthread_t) leave KVM_RUN now (it sees EINTR).
pub fn kick(thread: usize) {
    // SAFETY: sending our own signal to a live thread of this process; its handler only sets
    // immediate_exit.
    unsafe { libc::pthread_kill(thread as libc::pthread_t, timeout_signal()) };
}

fn thread_timer() -> Result<libc::timer_t> {
    if let Some(t) = TIMER.with(|t| t.get()) {
        return Ok(t as libc::timer_t);
    }
    prepare_thread();
    // SAFETY: plain libc calls with valid out-pointers; the timer lives as long as the thread
    // (one per thread, reused by every run on it).
    unsafe {
        let mut sev: libc::sigevent = std::mem::zeroed();
        sev.sigev_notify = libc::SIGEV_THREAD_ID;
        sev.sigev_signo = timeout_signal();
        sev.sigev_notify_thread_id = libc::gettid();
        let mut timer: libc::timer_t = std::ptr::null_mut();
        if libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut timer) != 0 {
            return Err(Error::Internal(format!("timer_create: {}", std::io::Error::last_os_error())));
        }
        TIMER.with(|t| t.set(Some(timer as usize)));
        Ok(timer)
    }
}

fn set_timer(timer: libc::timer_t, after: Duration) {
    let spec = libc::itimerspec {
        it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
        it_value: libc::timespec { tv_sec: after.as_secs() as i64, tv_nsec: after.subsec_nanos() as i64 },
    };
    // SAFETY: arming/disarming our own timer.
    unsafe { libc::timer_settime(timer, 0, &spec, std::ptr::null_mut()) };
}

/// An armed timeout; disarms on drop.
pub struct ArmedTimeout {
    timer: Option<libc::timer_t>,
}

/// Arm a timeout for the vCPU whose `kvm_run` is `run`, firing after `after`
/// (or only register the vCPU, if `after` is None, so nothing fires).
pub fn arm(run: *mut kvm_run, after: Option<Duration>) -> Result<ArmedTimeout> {
    CURRENT_RUN.with(|c| c.set(run));
    let timer = match after {
        Some(d) => {
            let t = thread_timer()?;
            // A zero it_value would disarm; fire at once instead.
            set_timer(t, d.max(Duration::from_nanos(1)));
            Some(t)
        }
        None => None,
    };
    Ok(ArmedTimeout { timer })
}

impl ArmedTimeout {
    /// Fire after `after` instead (`None`: never), e.g. at the end of a time slice.
    pub fn rearm(&mut self, after: Option<Duration>) -> Result<()> {
        match after {
            Some(d) => {
                let t = match self.timer {
                    Some(t) => t,
                    None => thread_timer()?,
                };
                set_timer(t, d.max(Duration::from_nanos(1)));
                self.timer = Some(t);
            }
            None => {
                if let Some(t) = self.timer {
                    set_timer(t, Duration::ZERO);
                }
            }
        }
        Ok(())
    }
}

impl Drop for ArmedTimeout {
    fn drop(&mut self) {
        if let Some(t) = self.timer {
            set_timer(t, Duration::ZERO);
        }
        CURRENT_RUN.with(|c| c.set(std::ptr::null_mut()));
    }
}

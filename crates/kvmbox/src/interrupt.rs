//! Stopping a guest: the [`InterruptHandle`] any thread may use, and the [`Deadline`] that every
//! piece of long host work inside a run (the vCPU itself, sleeps, blocking reads and writes,
//! waits for host-call handlers and output consumers) checks, so neither a timeout nor an
//! interrupt waits for a guest-chosen amount of host work.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::timer;

#[derive(Default)]
struct Shared {
    requested: AtomicBool,
    waiters: Mutex<Waiters>,
    wake: Condvar,
}

#[derive(Default)]
struct Waiters {
    /// The thread running the guest (a pthread_t), while a run is in progress: the one to kick
    /// out of KVM_RUN or a blocking host call. Only ever kicked under this lock, so never after
    /// the run ended.
    vcpu_thread: Option<usize>,
    /// A task waiting for an async host-call handler or an output consumer.
    waker: Option<Waker>,
}

/// Stops a machine's guest from any thread (`Send + Sync`, cheap to clone).
///
/// [`interrupt`](InterruptHandle::interrupt) ends the run or call in progress within about a
/// millisecond with [`Error::Interrupted`] — whatever the guest is doing: running, sleeping,
/// blocked on I/O, or waiting for an async host-call handler. When nothing is running, the
/// request is kept and the next run or call stops at once; [`clear`](InterruptHandle::clear)
/// drops a pending request. The machine is finished afterwards, as after a timeout (a fork can
/// be reset).
#[derive(Clone, Default)]
pub struct InterruptHandle(Arc<Shared>);

impl InterruptHandle {
    /// Stop the guest (see the type's documentation).
    pub fn interrupt(&self) {
        self.0.requested.store(true, Ordering::SeqCst);
        let waiters = self.0.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(thread) = waiters.vcpu_thread {
            timer::kick(thread);
        }
        if let Some(waker) = &waiters.waker {
            waker.wake_by_ref();
        }
        self.0.wake.notify_all();
    }

    /// Whether an interrupt is pending.
    pub fn is_requested(&self) -> bool {
        self.0.requested.load(Ordering::SeqCst)
    }

    /// Forget a pending interrupt.
    pub fn clear(&self) {
        self.0.requested.store(false, Ordering::SeqCst);
    }

    /// Mark the calling thread as the one running the guest until the guard drops.
    pub(crate) fn enter(&self) -> RunningGuard<'_> {
        timer::prepare_thread();
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() } as usize;
        self.0.waiters.lock().unwrap_or_else(|e| e.into_inner()).vcpu_thread = Some(me);
        RunningGuard(self)
    }

    /// Register `waker` to be woken by an interrupt (replacing any earlier one).
    pub(crate) fn set_waker(&self, waker: Option<Waker>) {
        self.0.waiters.lock().unwrap_or_else(|e| e.into_inner()).waker = waker;
    }
}

/// While alive, interrupts kick the thread that created it.
pub(crate) struct RunningGuard<'a>(&'a InterruptHandle);

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        let mut w = self.0 .0.waiters.lock().unwrap_or_else(|e| e.into_inner());
        w.vcpu_thread = None;
        w.waker = None;
    }
}

/// When the current run must stop: its timeout, and its machine's interrupt.
#[derive(Clone)]
pub struct Deadline {
    at: Option<Instant>,
    timeout_ms: u64,
    interrupt: InterruptHandle,
}

impl Deadline {
    /// A deadline `timeout` from now (none for `None`, or one so far away that it cannot be
    /// represented: that run simply has no deadline).
    pub(crate) fn after(timeout: Option<Duration>, interrupt: InterruptHandle) -> Deadline {
        let at = timeout.and_then(|t| Instant::now().checked_add(t));
        let timeout_ms = timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0);
        Deadline { at, timeout_ms, interrupt }
    }

    /// `Err(Interrupted)` or `Err(Timeout)` once the run must stop.
    pub fn check(&self) -> Result<()> {
        if self.interrupt.is_requested() {
            return Err(Error::Interrupted);
        }
        match self.at {
            Some(at) if Instant::now() >= at => Err(Error::Timeout(self.timeout_ms)),
            _ => Ok(()),
        }
    }

    /// When the run must stop by its timeout (`None`: no timeout).
    pub fn at(&self) -> Option<Instant> {
        self.at
    }

    /// Time left before the timeout (`None`: no timeout).
    pub fn remaining(&self) -> Option<Duration> {
        self.at.map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// The interrupt this deadline watches.
    pub fn interrupt(&self) -> &InterruptHandle {
        &self.interrupt
    }

    /// Sleep until `until` (`None`: for ever), or fail as [`check`](Deadline::check) as soon as
    /// the run must stop.
    pub fn sleep_until(&self, until: Option<Instant>) -> Result<()> {
        let shared = &self.interrupt.0;
        let mut guard = shared.waiters.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            self.check()?;
            let now = Instant::now();
            if until.is_some_and(|u| now >= u) {
                return Ok(());
            }
            let wake_at = match (until, self.at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            guard = match wake_at {
                Some(t) => shared.wake.wait_timeout(guard, t.saturating_duration_since(now)).unwrap_or_else(|e| e.into_inner()).0,
                None => shared.wake.wait(guard).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }

    /// Drive `fut` (e.g. an async host-call handler's promise) on this thread until it is
    /// ready, or fail as [`check`](Deadline::check) as soon as the run must stop — the future is
    /// then dropped unfinished. An interrupt wakes the wait at once.
    pub fn block_on<F: Future>(&self, fut: F) -> Result<F::Output> {
        struct Unpark(std::thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        self.interrupt.set_waker(Some(waker.clone()));
        let result = (|| {
            let mut cx = Context::from_waker(&waker);
            let mut fut = std::pin::pin!(fut);
            loop {
                if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                    return Ok(v);
                }
                self.check()?;
                match self.remaining() {
                    Some(left) => std::thread::park_timeout(left),
                    None => std::thread::park(),
                }
            }
        })();
        self.interrupt.set_waker(None);
        result
    }

    /// How long a blocking host call may wait before it looks at the deadline again: what is
    /// left of the timeout, at most `slice` (a signal that lands just before the call blocks
    /// would otherwise be missed until the call returns by itself).
    pub fn poll_slice(&self, slice: Duration) -> Duration {
        self.remaining().map_or(slice, |r| r.min(slice))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_on_returns_ready_futures_and_stops_at_the_deadline_or_an_interrupt() {
        let d = Deadline::after(Some(Duration::from_secs(60)), InterruptHandle::default());
        assert_eq!(d.block_on(async { 7 }).unwrap(), 7);
        let d = Deadline::after(Some(Duration::from_millis(20)), InterruptHandle::default());
        assert!(matches!(d.block_on(std::future::pending::<()>()), Err(Error::Timeout(20))));
        let handle = InterruptHandle::default();
        let d = Deadline::after(None, handle.clone());
        let h = handle.clone();
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            h.interrupt();
        });
        assert!(matches!(d.block_on(std::future::pending::<()>()), Err(Error::Interrupted)));
        stopper.join().unwrap();
    }

    #[test]
    fn a_deadline_too_far_away_is_no_deadline() {
        let d = Deadline::after(Some(Duration::MAX), InterruptHandle::default());
        assert!(d.check().is_ok());
        assert_eq!(d.remaining(), None);
        assert_eq!(d.timeout_ms, u64::MAX);
    }

    #[test]
    fn sleep_ends_at_its_time_at_the_deadline_or_at_an_interrupt() {
        let none = InterruptHandle::default();
        let d = Deadline::after(None, none.clone());
        let t = Instant::now();
        d.sleep_until(Some(t + Duration::from_millis(20))).unwrap();
        assert!(t.elapsed() >= Duration::from_millis(20));

        let d = Deadline::after(Some(Duration::from_millis(20)), none);
        assert!(matches!(d.sleep_until(None), Err(Error::Timeout(20))));

        let handle = InterruptHandle::default();
        let d = Deadline::after(None, handle.clone());
        let h = handle.clone();
        let t = Instant::now();
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            h.interrupt();
        });
        assert!(matches!(d.sleep_until(None), Err(Error::Interrupted)), "a sleep for ever ends at the interrupt");
        assert!(t.elapsed() < Duration::from_secs(10));
        stopper.join().unwrap();
        handle.clear();
        assert!(d.check().is_ok());
    }
}

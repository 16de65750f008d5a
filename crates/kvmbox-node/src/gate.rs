//! Interrupts that reach exactly one operation: a machine's `OpGate` knows whether a run or
//! call (sync or async, queued or running) is in progress. An interrupt while one is stops it;
//! one while none is does nothing; and the core's interrupt flag is cleared when each operation
//! ends, under the same lock — so an interrupt meant for one request can never stop the next.
//! Gates are also registered by id, so another JS thread (the pool's main thread, for a fork
//! living in a worker) can interrupt a machine it cannot hold.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use kvmbox::InterruptHandle;
use napi_derive::napi;

pub(crate) struct OpGate {
    active: Mutex<bool>,
    handle: InterruptHandle,
    pub(crate) id: u64,
}

static GATES: LazyLock<Mutex<HashMap<u64, Weak<OpGate>>>> = LazyLock::new(|| Mutex::new(HashMap::new()));
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl OpGate {
    /// A registered gate for the machine whose interrupt handle this is.
    pub(crate) fn register(handle: InterruptHandle) -> Arc<OpGate> {
        let gate = Arc::new(OpGate { active: Mutex::new(false), handle, id: NEXT_ID.fetch_add(1, Ordering::Relaxed) });
        GATES.lock().unwrap_or_else(|e| e.into_inner()).insert(gate.id, Arc::downgrade(&gate));
        gate
    }

    /// An operation starts (or is queued).
    pub(crate) fn begin(&self) {
        *self.active.lock().unwrap_or_else(|e| e.into_inner()) = true;
    }

    /// The operation ended: a pending interrupt is dropped with it.
    pub(crate) fn end(&self) {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        self.handle.clear();
        *active = false;
    }

    /// Stop the operation in progress, if there is one.
    pub(crate) fn interrupt(&self) -> bool {
        let active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        if *active {
            self.handle.interrupt();
        }
        *active
    }
}

impl Drop for OpGate {
    fn drop(&mut self) {
        GATES.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
    }
}

/// Interrupt the run or call in progress on the machine with this interrupt id (from
/// `NativeMachine.interruptId`), from any JS thread of this process. False if that machine has
/// nothing in progress or no longer exists.
#[napi]
#[cfg_attr(test, allow(dead_code))] // called from JS only
pub fn interrupt_machine(id: f64) -> bool {
    if !(id.is_finite() && id >= 1.0 && id.fract() == 0.0) {
        return false;
    }
    let gate = GATES.lock().unwrap_or_else(|e| e.into_inner()).get(&(id as u64)).and_then(Weak::upgrade);
    gate.is_some_and(|g| g.interrupt())
}

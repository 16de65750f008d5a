//! Background teardown. Destroying a VM (KVM's shadow MMU, the memslot, the vCPU mapping) and
//! unmapping its guest memory costs ~0.5–1 ms on PVM; a dropped machine hands both to one
//! reaper thread so the caller — typically the request path — does not wait for it.

use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};

use crate::memory::GuestMemory;
use crate::vcpu::Vm;

type Remains = (Vm, Arc<GuestMemory>);

fn reaper() -> Option<&'static Mutex<SyncSender<Remains>>> {
    static REAPER: OnceLock<Option<Mutex<SyncSender<Remains>>>> = OnceLock::new();
    REAPER
        .get_or_init(|| {
            // Bounded: if teardown ever falls behind, droppers wait instead of piling up VMs.
            let (tx, rx) = sync_channel::<Remains>(64);
            std::thread::Builder::new()
                .name("kvmbox-reaper".into())
                .spawn(move || {
                    for (vm, mem) in rx {
                        drop(vm); // the VM (and its vCPU) before the memory it maps
                        drop(mem);
                    }
                })
                .ok()
                .map(|_| Mutex::new(tx))
        })
        .as_ref()
}

/// Tear down `vm` and then `mem`, in the background when possible.
pub fn dispose(vm: Vm, mem: Arc<GuestMemory>) {
    match reaper() {
        Some(tx) => {
            let tx = tx.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Err(e) = tx.send((vm, mem)) {
                drop(e.0);
            }
        }
        None => drop((vm, mem)),
    }
}

/// Start the reaper thread now (before the calling thread loses the right to start threads).
pub fn start() {
    let _ = reaper();
}

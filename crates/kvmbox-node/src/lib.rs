//! Node binding for kvmbox: type conversion and nothing else. The TypeScript SDK (src/) wraps
//! these raw classes in the public API and turns error records into typed error classes.

mod async_host;
mod convert;
mod gate;
mod machine;
mod memory;
mod sync_host;

use napi::bindgen_prelude::*;
use napi_derive::napi;

use convert::throw;

/// First syscall number of the embedder's host-call range (guest/include/kvmbox.h).
#[napi]
pub const HOSTCALL_FIRST: u32 = kvmbox::HOSTCALL_FIRST as u32;
/// Last syscall number of the host-call range; kvmbox's own numbers (kvmbox_pause(), the call
/// return) come right after it.
#[napi]
pub const HOSTCALL_LAST: u32 = kvmbox::HOSTCALL_LAST as u32;

/// Result of the KVM probe.
#[napi(object)]
pub struct ProbeResult {
    pub available: bool,
    /// "pvm", "vmx", "svm" or "unknown": decided from a real syscall exit and the CPU vendor.
    pub backend: String,
    /// Why KVM is unusable, if it is.
    pub error: Option<String>,
    /// Observed from a real syscall exit: true where `syscall` stays in ring 3 (PVM).
    pub syscall_in_ring3: Option<bool>,
}

#[napi]
pub fn probe() -> ProbeResult {
    let report = kvmbox::probe();
    ProbeResult {
        available: report.available,
        backend: report.backend.name().into(),
        error: report.error,
        syscall_in_ring3: report.syscall_in_ring3,
    }
}

/// Keep about `n` blank VMs created ahead of time (on a background thread) for forks.
/// What a dynamic executable's loader reads on this host (the interpreter, its cache, the
/// library directories that exist), for `allowRead`.
#[napi]
pub fn system_libraries() -> Vec<String> {
    kvmbox::system_libraries()
}

#[napi]
pub fn set_vm_pool_size(n: u32) {
    kvmbox::VmPool::global().keep_ready(n as usize);
}

/// Benchmark support: the mean cost in nanoseconds of a bare host → guest call (a raw VM whose
/// only code is `ret`, resumed through the synced registers), over `iterations`.
#[napi]
pub fn measure_call_floor(iterations: u32) -> std::result::Result<f64, Error<String>> {
    let mut l = kvmbox::floor::RawCallLoop::new().map_err(throw)?;
    Ok(l.measure(iterations.max(1)).map_err(throw)?.as_nanos() as f64)
}

/// Benchmark support: the mean cost in nanoseconds of the bare syscall mechanism (a raw VM
/// doing `syscall` in a loop, resumed by the host with no dispatch), over `iterations`.
#[napi]
pub fn measure_syscall_floor(iterations: u32) -> std::result::Result<f64, Error<String>> {
    let mut l = kvmbox::floor::RawSyscallLoop::new().map_err(throw)?;
    Ok(l.measure(iterations.max(1)).map_err(throw)?.as_nanos() as f64)
}

//! The process-wide KVM handle: `/dev/kvm`, checked once, with the CPUID KVM supports.

use std::sync::OnceLock;

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Cap, Kvm};

use crate::error::{Error, Result};

struct KvmHandle {
    kvm: Kvm,
    cpuid: CpuId,
}

static KVM: OnceLock<std::result::Result<KvmHandle, String>> = OnceLock::new();

/// The KVM device: `/dev/kvm`, or `$KVMBOX_KVM_DEVICE` (lets tests exercise the failure path).
fn device_path() -> String {
    std::env::var("KVMBOX_KVM_DEVICE").unwrap_or_else(|_| "/dev/kvm".into())
}

fn open() -> std::result::Result<KvmHandle, String> {
    let dev = device_path();
    if !std::path::Path::new(&dev).exists() {
        return Err(format!("{dev} does not exist (no KVM module loaded, or the device is not passed into this container)"));
    }
    let c_dev = std::ffi::CString::new(dev.clone()).map_err(|_| format!("bad device path {dev:?}"))?;
    let kvm = Kvm::new_with_path(&c_dev).map_err(|e| match e.errno() {
        libc::EACCES | libc::EPERM => format!("cannot open {dev}: permission denied (add the user to the 'kvm' group): {e}"),
        _ => format!("cannot open {dev}: {e}"),
    })?;
    let api = kvm.get_api_version();
    if api < 0 {
        return Err(format!("{dev} is not a KVM device"));
    }
    if api != 12 {
        return Err(format!("unexpected KVM API version {api}"));
    }
    for (cap, name) in [(Cap::SyncRegs, "KVM_CAP_SYNC_REGS"), (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT")] {
        if !kvm.check_extension(cap) {
            return Err(format!("KVM lacks {name}, which kvmbox needs"));
        }
    }
    let cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(|e| format!("KVM_GET_SUPPORTED_CPUID: {e}"))?;
    Ok(KvmHandle { kvm, cpuid })
}

fn handle() -> Result<&'static KvmHandle> {
    KVM.get_or_init(open).as_ref().map_err(|e| Error::KvmUnavailable(e.clone()))
}

pub(crate) fn kvm() -> Result<&'static Kvm> {
    handle().map(|h| &h.kvm)
}

pub(crate) fn supported_cpuid() -> Result<&'static CpuId> {
    handle().map(|h| &h.cpuid)
}

//! Which kind of KVM serves `/dev/kvm`, decided from behaviour rather than module names (a
//! kernel with KVM built in, or several modules loaded, would mislead): one real syscall exit
//! shows where `syscall` runs the entry stub, and the CPUID vendor tells VMX from SVM.

use std::sync::OnceLock;

use crate::arch::exit::SyscallEntry;
use crate::error::{Error, Result};
use crate::{floor, kvm};

/// The KVM backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Paravirtual KVM (`kvm_pvm`, inside a cloud VM): `syscall` stays in ring 3, ring-0 code
    /// is interpreted.
    Pvm,
    /// Intel VT-x: `syscall` enters ring 0, on an Intel CPU.
    Vmx,
    /// AMD-V: `syscall` enters ring 0, on an AMD (or Hygon) CPU.
    Svm,
    /// KVM is unavailable, or `syscall` entered ring 0 on a CPU of another vendor.
    Unknown,
}

impl Backend {
    /// Short name: "pvm", "vmx", "svm" or "unknown".
    pub fn name(self) -> &'static str {
        match self {
            Backend::Pvm => "pvm",
            Backend::Vmx => "vmx",
            Backend::Svm => "svm",
            Backend::Unknown => "unknown",
        }
    }
}

/// What [`probe`] found out about the host's KVM.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// Whether kvmbox can create and run VMs here.
    pub available: bool,
    /// The backend serving `/dev/kvm`.
    pub backend: Backend,
    /// Whether `syscall` exits to the host in ring 3 (PVM) rather than ring 0 (VMX/SVM);
    /// `None` when KVM is unavailable.
    pub syscall_in_ring3: Option<bool>,
    /// Why KVM is unusable, when it is.
    pub error: Option<String>,
}

static ENTRY: OnceLock<std::result::Result<SyscallEntry, String>> = OnceLock::new();

/// Where this host runs the syscall entry stub, observed once per process on a minimal VM.
pub(crate) fn syscall_entry() -> Result<SyscallEntry> {
    let observed = ENTRY.get_or_init(|| match floor::syscall_exits_in_ring3() {
        Ok(true) => Ok(SyscallEntry::Ring3),
        Ok(false) => Ok(SyscallEntry::Ring0),
        Err(e) => Err(e.to_string()),
    });
    observed.clone().map_err(|e| Error::KvmUnavailable(format!("a minimal VM could not run a syscall: {e}")))
}

/// The CPU vendor as KVM reports it to guests (CPUID leaf 0).
fn cpu_vendor() -> Result<[u8; 12]> {
    let cpuid = kvm::supported_cpuid()?;
    let leaf0 = cpuid.as_slice().iter().find(|e| e.function == 0).copied().unwrap_or_default();
    let mut v = [0u8; 12];
    v[..4].copy_from_slice(&leaf0.ebx.to_le_bytes());
    v[4..8].copy_from_slice(&leaf0.edx.to_le_bytes());
    v[8..].copy_from_slice(&leaf0.ecx.to_le_bytes());
    Ok(v)
}

fn classify(entry: SyscallEntry, vendor: &[u8; 12]) -> Backend {
    match (entry, vendor) {
        (SyscallEntry::Ring3, _) => Backend::Pvm,
        (SyscallEntry::Ring0, b"GenuineIntel") => Backend::Vmx,
        (SyscallEntry::Ring0, b"AuthenticAMD" | b"HygonGenuine") => Backend::Svm,
        (SyscallEntry::Ring0, _) => Backend::Unknown,
    }
}

/// Find out whether KVM is usable here and which backend serves it (runs one syscall in a
/// minimal VM the first time it is called in a process).
pub fn probe() -> ProbeReport {
    let found = syscall_entry().and_then(|entry| Ok((entry, cpu_vendor()?)));
    match found {
        Ok((entry, vendor)) => ProbeReport {
            available: true,
            backend: classify(entry, &vendor),
            syscall_in_ring3: Some(entry == SyscallEntry::Ring3),
            error: None,
        },
        Err(e) => ProbeReport { available: false, backend: Backend::Unknown, syscall_in_ring3: None, error: Some(e.to_string()) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_follows_the_syscall_ring_then_the_vendor() {
        assert_eq!(classify(SyscallEntry::Ring3, b"GenuineIntel"), Backend::Pvm);
        assert_eq!(classify(SyscallEntry::Ring3, b"AuthenticAMD"), Backend::Pvm);
        assert_eq!(classify(SyscallEntry::Ring0, b"GenuineIntel"), Backend::Vmx);
        assert_eq!(classify(SyscallEntry::Ring0, b"AuthenticAMD"), Backend::Svm);
        assert_eq!(classify(SyscallEntry::Ring0, b"HygonGenuine"), Backend::Svm);
        assert_eq!(classify(SyscallEntry::Ring0, b"VIA VIA VIA "), Backend::Unknown);
    }

    #[test]
    fn probe_sees_a_working_backend() {
        let p = probe();
        assert!(p.available, "KVM is required for this test: {:?}", p.error);
        assert_ne!(p.backend, Backend::Unknown);
        assert_eq!(p.syscall_in_ring3, Some(p.backend == Backend::Pvm));
    }
}

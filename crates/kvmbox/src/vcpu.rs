//! VM and vCPU creation: one memslot over all guest memory, the initial register state, and
//! KVM_SYNC_REGS so the hot path (syscall exits) needs no register ioctls.

use kvm_ioctls::{SyncReg, VcpuFd, VmFd};

use crate::arch;
use crate::error::{Error, Result};
use crate::kvm;
use crate::layout::Layout;
use crate::memory::GuestMemory;

pub struct Vm {
    // Field order matters for drop: the vCPU goes before the VM.
    pub vcpu: VcpuFd,
    #[allow(dead_code)] // kept alive for the vCPU; later used for memslot changes
    pub vm: VmFd,
}

/// Create a VM over `mem` and a vCPU set up for ring-3 long mode, starting at `entry` with
/// stack pointer `rsp`.
pub fn create(mem: &GuestMemory, layout: &Layout, cr3: u64, entry: u64, rsp: u64) -> Result<Vm> {
    let kvm = kvm::kvm()?;
    let vm = kvm.create_vm().map_err(|e| Error::kvm("KVM_CREATE_VM", e))?;
    let region = kvm_bindings::kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: mem.size(),
        userspace_addr: mem.host_base() as u64,
    };
    // SAFETY: the region maps memory we own for as long as the VM lives (Machine keeps the
    // GuestMemory alive longer than the VmFd).
    unsafe { vm.set_user_memory_region(region) }.map_err(|e| Error::kvm("KVM_SET_USER_MEMORY_REGION", e))?;
    let mut vcpu = vm.create_vcpu(0).map_err(|e| Error::kvm("KVM_CREATE_VCPU", e))?;

    let cpuid = kvm::supported_cpuid()?;
    vcpu.set_cpuid2(cpuid).map_err(|e| Error::kvm("KVM_SET_CPUID2", e))?;
    let sregs = vcpu.get_sregs().map_err(|e| Error::kvm("KVM_GET_SREGS", e))?;
    vcpu.set_sregs(&arch::initial_sregs(sregs, layout, cr3)).map_err(|e| Error::kvm("KVM_SET_SREGS", e))?;
    // XCR0 needs CR4.OSXSAVE, set just above.
    arch::set_xcr0(&vcpu, arch::xcr0_from_cpuid(cpuid))?;
    vcpu.set_msrs(&arch::initial_msrs(layout)?).map_err(|e| Error::kvm("KVM_SET_MSRS", e))?;
    vcpu.set_fpu(&arch::initial_fpu()).map_err(|e| Error::kvm("KVM_SET_FPU", e))?;
    let regs = kvm_bindings::kvm_regs { rip: entry, rsp, rflags: 0x2, ..Default::default() };
    vcpu.set_regs(&regs).map_err(|e| Error::kvm("KVM_SET_REGS", e))?;

    vcpu.set_sync_valid_reg(SyncReg::Register);
    vcpu.set_sync_valid_reg(SyncReg::SystemRegister);
    Ok(Vm { vcpu, vm })
}

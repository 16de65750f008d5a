//! The physical floor of the syscall mechanism, for benchmarks and the backend probe: a raw
//! VM whose only code is `mov $39,%eax; syscall; jmp back`, resumed by the host at once with
//! no dispatch at all. It shares every piece of machine setup with real guests.

use std::time::{Duration, Instant};

use kvm_ioctls::{SyncReg, VcpuExit};

use crate::arch::{
    self,
    exit::{self, ExitRegs, GuestExit, SyscallEntry},
};
use crate::error::{Error, Result};
use crate::layout::{AddressSpace, Layout, Perm, Region, PIE_BASE};
use crate::memory::GuestMemory;
use crate::paging;
use crate::vcpu::{self, Vm};

const LOOP_CODE: &[u8] = &[
    0xB8, 0x27, 0x00, 0x00, 0x00, // mov $39, %eax   (getpid)
    0x0F, 0x05, // syscall
    0xEB, 0xF7, // jmp back to mov
];

/// A minimal VM running the syscall loop.
pub struct RawSyscallLoop {
    vm: Vm,
    _mem: GuestMemory,
    layout: Layout,
}

/// The smallest machine kvmbox can build: `code` at PIE_BASE (one page, user R+X), the stub
/// pages and page tables, and a vCPU about to run it with stack pointer `stack_top - sp_below`.
/// The stack's top word is the call-return trampoline address.
fn raw_vm(code: &[u8], sp_below: u64) -> Result<(Vm, GuestMemory, Layout)> {
    let memory = crate::layout::MIN_MEMORY;
    let layout = Layout::new(memory);
    let region = Region { start: PIE_BASE, end: PIE_BASE + 4096, perm: Perm::USER_RX };
    let space = AddressSpace::new(layout.regions(&[region, layout.stack_region()]));
    let mem = GuestMemory::new(memory)?;
    arch::write_system_pages(&mem, &layout)?;
    let cr3 = paging::build(&mem, &layout, space.regions())?;
    mem.write(PIE_BASE, code)?;
    let sp = layout.stack_top - sp_below;
    mem.write_u64(sp, layout.sys.call_return)?;
    let vm = vcpu::create(&mem, &layout, cr3, PIE_BASE, sp)?;
    Ok((vm, mem, layout))
}

impl RawSyscallLoop {
    /// Build the raw VM (needs KVM).
    pub fn new() -> Result<RawSyscallLoop> {
        let (vm, mem, layout) = raw_vm(LOOP_CODE, 64)?;
        Ok(RawSyscallLoop { vm, _mem: mem, layout })
    }

    /// Run one syscall exit and resume; returns whether the exit happened in ring 3.
    pub fn step(&mut self) -> Result<bool> {
        match self.vm.vcpu.run() {
            Ok(VcpuExit::IoOut(arch::SYSCALL_PORT, _)) => {}
            Ok(other) => return Err(Error::Internal(format!("floor loop: unexpected exit {other:?}"))),
            Err(e) => return Err(Error::kvm("KVM_RUN", e)),
        }
        let sync = self.vm.vcpu.sync_regs_mut();
        let ring3 = sync.sregs.cs.dpl == 3;
        // The loop's own code is the only guest code, so whichever way this host reports the
        // exit is genuine: decode it with the entry mode the exit itself shows.
        let entry = if ring3 { SyscallEntry::Ring3 } else { SyscallEntry::Ring0 };
        match exit::decode(arch::SYSCALL_PORT, ExitRegs::of(&sync.regs, sync.sregs.cs.dpl), &self.layout.sys, entry) {
            GuestExit::Syscall { sysret_in_guest: true, .. } => {}
            GuestExit::Syscall { user_rip, user_rflags, sysret_in_guest: false } => {
                sync.regs.rip = user_rip;
                sync.regs.rflags = user_rflags;
                self.vm.vcpu.set_sync_dirty_reg(SyncReg::Register);
            }
            other => return Err(Error::Internal(format!("floor loop: syscall exit decoded as {other:?}"))),
        }
        Ok(ring3)
    }

    /// Time `iterations` round trips; returns the mean per round trip.
    pub fn measure(&mut self, iterations: u32) -> Result<Duration> {
        self.step()?; // warm up the shadow MMU / first entry
        let start = Instant::now();
        for _ in 0..iterations {
            self.step()?;
        }
        Ok(start.elapsed() / iterations.max(1))
    }
}

/// The floor of a host → guest function call: a raw VM whose only code is `ret`; each round
/// trip sets rip/rsp through the synced registers, runs, and takes the exit of the call-return
/// trampoline (its syscall) the `ret` lands on. No argument marshalling, no kvmbox state.
pub struct RawCallLoop {
    vm: Vm,
    _mem: GuestMemory,
    entry: u64,
    entry_sp: u64,
}

impl RawCallLoop {
    /// Build the raw VM (needs KVM).
    pub fn new() -> Result<RawCallLoop> {
        let (vm, mem, layout) = raw_vm(&[0xC3], 24)?; // ret
        Ok(RawCallLoop { vm, _mem: mem, entry: PIE_BASE, entry_sp: layout.stack_top - 24 })
    }

    /// One call round trip.
    pub fn step(&mut self) -> Result<()> {
        match self.vm.vcpu.run() {
            Ok(VcpuExit::IoOut(arch::SYSCALL_PORT, _)) => {}
            Ok(other) => return Err(Error::Internal(format!("call floor: unexpected exit {other:?}"))),
            Err(e) => return Err(Error::kvm("KVM_RUN", e)),
        }
        // The trampoline's syscall exits in ring 0 on VMX/SVM: back to user mode for the next call.
        let regs = kvm_bindings::kvm_regs { rip: self.entry, rsp: self.entry_sp, rflags: 0x202, ..self.vm.vcpu.sync_regs_mut().regs };
        self.vm.enter_user(regs);
        Ok(())
    }

    /// Time `iterations` round trips; returns the mean per call.
    pub fn measure(&mut self, iterations: u32) -> Result<Duration> {
        self.step()?;
        let start = Instant::now();
        for _ in 0..iterations {
            self.step()?;
        }
        Ok(start.elapsed() / iterations.max(1))
    }
}

/// Does `syscall` stay in ring 3 on this host (PVM) rather than entering ring 0 (VMX/SVM)?
/// Observed from CS.dpl at the exit of one real syscall.
pub fn syscall_exits_in_ring3() -> Result<bool> {
    RawSyscallLoop::new()?.step()
}

#[cfg(test)]
mod tests {
    #[test]
    fn raw_call_loop_round_trips() {
        let mut l = super::RawCallLoop::new().expect("KVM is required for this test (/dev/kvm)");
        assert!(l.measure(50).unwrap().as_nanos() > 0);
    }

    #[test]
    fn raw_loop_round_trips() {
        let mut l = super::RawSyscallLoop::new().expect("KVM is required for this test (/dev/kvm)");
        for _ in 0..10 {
            l.step().unwrap();
        }
        let per = l.measure(100).unwrap();
        assert!(per.as_nanos() > 0);
    }
}

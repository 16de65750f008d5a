//! VMs and their one vCPU: creation (also ahead of time, in a pool), the memory slot, the
//! initial register state, CPU-state capture/restore for snapshots, and KVM_SYNC_REGS so the
//! hot path (syscall exits) needs no register ioctls.

use std::sync::{Condvar, Mutex, OnceLock};

use kvm_bindings::{kvm_regs, kvm_sregs, kvm_xsave, KVM_MEM_LOG_DIRTY_PAGES};
use kvm_ioctls::{SyncReg, VcpuFd, VmFd};

use crate::arch;
use crate::error::{Error, Result};
use crate::kvm;
use crate::layout::Layout;
use crate::memory::GuestMemory;

/// The guest's CPU state as a snapshot keeps it (user mode, at the pause point).
pub struct CpuState {
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    /// x87/SSE/AVX state.
    pub xsave: Box<kvm_xsave>,
}

pub struct Vm {
    // Field order matters for drop: the vCPU goes before the VM.
    pub vcpu: VcpuFd,
    pub vm: VmFd,
    /// KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 is on: reading the dirty log does not re-protect
    /// pages; `clear_dirty_log` does, for the pages we choose.
    manual_protect: bool,
}

/// `_IOWR(KVMIO, 0xc0, struct kvm_clear_dirty_log)` (kvm-ioctls does not wrap it).
const KVM_CLEAR_DIRTY_LOG: libc::c_ulong = 0xC018_AEC0;

const SLOT: u32 = 0;

impl Vm {
    /// A VM with its vCPU and CPUID, but no memory yet: what the pool keeps ready.
    pub fn blank() -> Result<Vm> {
        let kvm = kvm::kvm()?;
        let vm = kvm.create_vm().map_err(|e| Error::kvm("KVM_CREATE_VM", e))?;
        let mut vcpu = vm.create_vcpu(0).map_err(|e| Error::kvm("KVM_CREATE_VCPU", e))?;
        vcpu.set_cpuid2(kvm::supported_cpuid()?).map_err(|e| Error::kvm("KVM_SET_CPUID2", e))?;
        vcpu.set_sync_valid_reg(SyncReg::Register);
        vcpu.set_sync_valid_reg(SyncReg::SystemRegister);
        let cap = kvm_bindings::kvm_enable_cap {
            cap: kvm_bindings::KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
            args: [kvm_bindings::KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE as u64, 0, 0, 0],
            ..Default::default()
        };
        let manual_protect = vm.enable_cap(&cap).is_ok();
        disable_hypercall_patching(&vm);
        Ok(Vm { vcpu, vm, manual_protect })
    }

    /// Register `mem` as guest physical memory (slot 0), optionally with KVM dirty logging.
    pub fn attach(&self, mem: &GuestMemory, log_dirty: bool) -> Result<()> {
        self.set_slot(mem.size(), mem.host_base() as u64, if log_dirty { KVM_MEM_LOG_DIRTY_PAGES } else { 0 })
    }

    /// Remove and re-add the memory slot. This is the one way to make the shadow MMU (PVM)
    /// forget guest page tables it has cached — needed when the page-table pages change.
    pub fn reattach(&self, mem: &GuestMemory, log_dirty: bool) -> Result<()> {
        self.set_slot(0, 0, 0)?;
        self.attach(mem, log_dirty)
    }

    fn set_slot(&self, size: u64, host: u64, flags: u32) -> Result<()> {
        let region =
            kvm_bindings::kvm_userspace_memory_region { slot: SLOT, flags, guest_phys_addr: 0, memory_size: size, userspace_addr: host };
        // SAFETY: the region maps guest memory that the owning Machine keeps alive longer than
        // the VM (both are torn down together, VM first); size 0 deletes the slot.
        unsafe { self.vm.set_user_memory_region(region) }.map_err(|e| Error::kvm("KVM_SET_USER_MEMORY_REGION", e))
    }

    /// Pages the guest wrote (one bit per page) since they were last cleared. With manual
    /// protection the log is not cleared by reading it: pages stay writable (no further
    /// write faults) and stay in the log until `clear_dirty_log`.
    pub fn dirty_log(&self, size: u64) -> Result<Vec<u64>> {
        self.vm.get_dirty_log(SLOT, size as usize).map_err(|e| Error::kvm("KVM_GET_DIRTY_LOG", e))
    }

    /// Forget the pages in `bitmap` and write-protect them again, so the next guest write to
    /// each is logged (and costs one write fault).
    pub fn clear_dirty_log(&self, bitmap: &mut [u64], size: u64) -> Result<()> {
        if !self.manual_protect {
            return Ok(()); // reading the log already cleared it
        }
        let clear = kvm_bindings::kvm_clear_dirty_log {
            slot: SLOT,
            num_pages: (size / crate::layout::PAGE_SIZE) as u32,
            first_page: 0,
            __bindgen_anon_1: kvm_bindings::kvm_clear_dirty_log__bindgen_ty_1 { dirty_bitmap: bitmap.as_mut_ptr().cast() },
        };
        // SAFETY: KVM_CLEAR_DIRTY_LOG reads `num_pages` bits from `bitmap`, which holds one bit
        // per page of the slot (it came from KVM_GET_DIRTY_LOG for the same size).
        let rc = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&self.vm), KVM_CLEAR_DIRTY_LOG, &clear) };
        if rc != 0 {
            return Err(Error::kvm("KVM_CLEAR_DIRTY_LOG", std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Start the log afresh (after the memory behind the slot changed wholesale).
    pub fn reset_dirty_log(&self, size: u64) -> Result<()> {
        let mut log = self.dirty_log(size)?;
        self.clear_dirty_log(&mut log, size)
    }

    /// Descriptor tables, control registers, MSRs and XCR0 for our layout (not the
    /// general-purpose registers).
    pub fn set_system_state(&mut self, layout: &Layout, cr3: u64) -> Result<()> {
        let sregs = self.vcpu.get_sregs().map_err(|e| Error::kvm("KVM_GET_SREGS", e))?;
        let cpuid = kvm::supported_cpuid()?;
        self.vcpu.set_sregs(&arch::initial_sregs(sregs, layout, cr3, cpuid)).map_err(|e| Error::kvm("KVM_SET_SREGS", e))?;
        // XCR0 needs CR4.OSXSAVE, set just above.
        arch::set_xcr0(&self.vcpu, arch::xcr0_from_cpuid(cpuid))?;
        arch::set_msrs(&self.vcpu, &arch::initial_msrs(layout)?)
    }

    /// Set up a fresh process: system state plus an initial FPU and entry registers.
    pub fn boot(&mut self, layout: &Layout, cr3: u64, entry: u64, rsp: u64) -> Result<()> {
        self.set_system_state(layout, cr3)?;
        self.vcpu.set_fpu(&arch::initial_fpu()).map_err(|e| Error::kvm("KVM_SET_FPU", e))?;
        let regs = kvm_regs { rip: entry, rsp, rflags: 0x2, ..Default::default() };
        self.vcpu.set_regs(&regs).map_err(|e| Error::kvm("KVM_SET_REGS", e))
    }

    /// Continue in ring 3 with `regs` at the next KVM_RUN (through the synced registers). After an
    /// exit in ring 0 (VMX/SVM: the syscall stub, the call return) the user segments are loaded
    /// too; moving RIP also cancels KVM's pending skip of the `out` it exited on.
    pub fn enter_user(&mut self, regs: kvm_regs) {
        let sync = self.vcpu.sync_regs_mut();
        sync.regs = regs;
        let to_user = sync.sregs.cs.dpl != 3;
        if to_user {
            (sync.sregs.cs, sync.sregs.ss) = arch::user_segments();
            self.vcpu.set_sync_dirty_reg(SyncReg::SystemRegister);
        }
        self.vcpu.set_sync_dirty_reg(SyncReg::Register);
    }

    /// The CPU state to resume a paused guest with `resume` registers (user mode).
    pub fn capture(&mut self, resume: &kvm_regs) -> Result<CpuState> {
        let mut sregs = self.vcpu.get_sregs().map_err(|e| Error::kvm("KVM_GET_SREGS", e))?;
        let (cs, ss) = arch::user_segments();
        sregs.cs = cs;
        sregs.ss = ss;
        let xsave = Box::new(self.vcpu.get_xsave().map_err(|e| Error::kvm("KVM_GET_XSAVE", e))?);
        Ok(CpuState { regs: *resume, sregs, xsave })
    }

    /// Load `cpu` into the vCPU: FPU state now, registers and segments at the next KVM_RUN.
    pub fn restore(&mut self, cpu: &CpuState) -> Result<()> {
        // SAFETY: `xsave` is a complete kvm_xsave taken from a vCPU with the same CPUID.
        unsafe { self.vcpu.set_xsave(&cpu.xsave) }.map_err(|e| Error::kvm("KVM_SET_XSAVE", e))?;
        let sync = self.vcpu.sync_regs_mut();
        sync.regs = cpu.regs;
        sync.sregs = cpu.sregs;
        self.vcpu.set_sync_dirty_reg(SyncReg::Register);
        self.vcpu.set_sync_dirty_reg(SyncReg::SystemRegister);
        Ok(())
    }
}

/// By default KVM rewrites a guest's `vmcall`/`vmmcall` into the host vendor's instruction (so
/// guests migrated between Intel and AMD keep working), which writes into guest memory behind
/// the dirty log. The guest has no business with hypercalls: turn that off where KVM lets us
/// (KVM_CAP_DISABLE_QUIRKS2; best effort, older kernels lack it). The instruction itself then
/// fails in the guest as on any host (#UD, or -KVM_EPERM in rax from ring 3).
fn disable_hypercall_patching(vm: &VmFd) {
    let quirk = kvm_bindings::KVM_X86_QUIRK_FIX_HYPERCALL_INSN as u64;
    let supported = vm.check_extension_raw(kvm_bindings::KVM_CAP_DISABLE_QUIRKS2 as libc::c_ulong);
    if supported > 0 && supported as u64 & quirk != 0 {
        let cap = kvm_bindings::kvm_enable_cap { cap: kvm_bindings::KVM_CAP_DISABLE_QUIRKS2, args: [quirk, 0, 0, 0], ..Default::default() };
        let _ = vm.enable_cap(&cap);
    }
}

/// Create a VM over `mem` and a vCPU set up for ring-3 long mode, starting at `entry` with
/// stack pointer `rsp`.
pub fn create(mem: &GuestMemory, layout: &Layout, cr3: u64, entry: u64, rsp: u64) -> Result<Vm> {
    let mut vm = Vm::blank()?;
    vm.attach(mem, false)?;
    vm.boot(layout, cr3, entry, rsp)?;
    Ok(vm)
}

/// Blank VMs created ahead of time on a background thread, so a fork does not pay for
/// KVM_CREATE_VM and KVM_CREATE_VCPU on the request path.
pub struct VmPool {
    ready: Mutex<Vec<Vm>>,
    wanted: Mutex<usize>,
    refill: Condvar,
}

impl VmPool {
    /// The process-wide pool; it starts empty and fills once someone asks for a target size.
    pub fn global() -> &'static VmPool {
        static POOL: OnceLock<&'static VmPool> = OnceLock::new();
        POOL.get_or_init(|| {
            let pool: &'static VmPool =
                Box::leak(Box::new(VmPool { ready: Mutex::new(Vec::new()), wanted: Mutex::new(0), refill: Condvar::new() }));
            let _ = std::thread::Builder::new().name("kvmbox-vm-pool".into()).spawn(move || pool.refill_loop());
            pool
        })
    }

    /// Keep about `n` blank VMs ready.
    pub fn keep_ready(&self, n: usize) {
        *self.wanted.lock().unwrap_or_else(|e| e.into_inner()) = n;
        self.refill.notify_one();
    }

    /// A blank VM: from the pool if one is ready, else created now.
    pub fn take(&self) -> Result<Vm> {
        let vm = self.ready.lock().unwrap_or_else(|e| e.into_inner()).pop();
        self.refill.notify_one();
        match vm {
            Some(vm) => Ok(vm),
            None => Vm::blank(),
        }
    }

    fn refill_loop(&self) {
        loop {
            let missing = {
                let wanted = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
                let have = self.ready.lock().unwrap_or_else(|e| e.into_inner()).len();
                if have >= *wanted {
                    drop(self.refill.wait(wanted));
                    continue;
                }
                *wanted - have
            };
            for _ in 0..missing {
                match Vm::blank() {
                    Ok(vm) => self.ready.lock().unwrap_or_else(|e| e.into_inner()).push(vm),
                    Err(_) => break,
                }
            }
        }
    }
}

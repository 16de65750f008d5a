//! The guest CPU state as debuggers and tools see it.

use super::*;

impl Machine {
    /// Run one emulated Linux syscall as if the paused guest had issued it, with a 2 ms
    /// deadline for anything that sleeps; `None` when it ended the process. For fuzzing the
    /// emulation layer (not a stable API).
    #[doc(hidden)]
    pub fn emulate_syscall(&mut self, nr: u64, args: [u64; 6]) -> Result<Option<u64>> {
        let deadline = Deadline::after(Some(Duration::from_millis(2)), self.interrupt.clone());
        let regs = self.regs();
        let (fs_base, gs_base) = self.segment_bases();
        let space = Arc::clone(&self.space);
        let flow = {
            let space = read_space(&space);
            let env = SyscallEnv { mem: &self.mem, space: &space, deadline: &deadline, cpu: UserCpu { regs, fs_base, gs_base } };
            self.linux.handle(&env, &mut crate::host::NoHost, nr, args)
        };
        self.apply_cpu_update()?;
        self.give_new_threads_fpu()?;
        self.commit_rights_changes()?;
        Ok(match flow? {
            Flow::Return(v) => Some(v),
            Flow::Exit(_) => None,
            // Nothing else runs here: a blocking syscall returns at once, as if woken.
            Flow::Block | Flow::Yield => {
                let t = self.linux.thread_mut();
                if t.state != crate::syscalls::threads::RunState::Exited {
                    t.state = crate::syscalls::threads::RunState::Runnable;
                }
                Some(t.resume_rax.take().unwrap_or(0))
            }
            Flow::Replace(saved) => Some(saved.user.regs.rax),
        })
    }

    /// Make the next exception unrecoverable (an empty IDT: the CPU escalates to a triple
    /// fault and KVM reports a shutdown), so tests can check what reset does after one. Not a
    /// stable API.
    #[doc(hidden)]
    pub fn break_interrupt_table(&mut self) {
        let sync = self.vm.vcpu.sync_regs_mut();
        sync.sregs.idt.limit = 0;
        self.vm.vcpu.set_sync_dirty_reg(SyncReg::SystemRegister);
    }

    /// The paused guest's stack pointer (for fuzzing: a base for valid pointers).
    #[doc(hidden)]
    pub fn stack_pointer(&mut self) -> u64 {
        self.regs().rsp
    }

    /// The vCPU's registers as of the last exit (user mode between runs), or as set up for
    /// the first run.
    pub(crate) fn regs(&mut self) -> kvm_regs {
        if !self.ran {
            return self.vm.vcpu.get_regs().unwrap_or_default();
        }
        let sync = self.vm.vcpu.sync_regs_mut();
        // A stop inside the syscall stub is shown (and, once written back by set_regs, resumed)
        // as the user state around the syscall.
        exit::user_state_in_syscall_stub(&sync.regs, sync.sregs.cs.dpl, &self.layout.sys).unwrap_or(sync.regs)
    }

    /// Change the registers the guest continues with.
    pub(crate) fn set_regs(&mut self, regs: kvm_regs) {
        if !self.ran {
            let _ = self.vm.vcpu.set_regs(&regs);
            return;
        }
        self.vm.enter_user(regs);
    }

    /// The x87/SSE state, read from the XSAVE image (KVM_GET_FPU is not reliable for MXCSR
    /// on every backend).
    pub(crate) fn fpu(&self) -> Result<kvm_bindings::kvm_fpu> {
        let x = self.vm.vcpu.get_xsave().map_err(|e| Error::kvm("KVM_GET_XSAVE", e))?;
        Ok(fpu_of(&x))
    }

    /// Write XMM registers and MXCSR back into the XSAVE image.
    pub(crate) fn set_fpu(&self, fpu: &kvm_bindings::kvm_fpu) -> Result<()> {
        let mut x = self.vm.vcpu.get_xsave().map_err(|e| Error::kvm("KVM_GET_XSAVE", e))?;
        patch_fpu(&mut x, fpu);
        // SAFETY: a complete kvm_xsave read from this vCPU, with only MXCSR/XMM changed.
        unsafe { self.vm.vcpu.set_xsave(&x) }.map_err(|e| Error::kvm("KVM_SET_XSAVE", e))
    }

    /// The guest's thread ids, in creation order, and the one on the vCPU.
    pub(crate) fn thread_ids(&self) -> (Vec<u64>, u64) {
        let ids = self.linux.threads().iter().filter(|t| t.state != crate::syscalls::threads::RunState::Exited).map(|t| t.tid).collect();
        (ids, self.linux.tid())
    }

    /// Registers, TLS bases and x87/SSE state of thread `tid` as a debugger shows them (the
    /// running thread's from the vCPU, the others' as they were put aside).
    pub(crate) fn thread_state(&mut self, tid: u64) -> Result<Option<ThreadState>> {
        if tid == self.linux.tid() {
            return Ok(Some(ThreadState { regs: self.regs(), tls: self.segment_bases(), fpu: self.fpu()? }));
        }
        let Some(saved) = self.linux.threads().iter().find(|t| t.tid == tid).and_then(|t| t.saved.as_deref()) else { return Ok(None) };
        let fpu = saved.xsave.as_deref().map(fpu_of).unwrap_or_default();
        Ok(Some(ThreadState { regs: saved.user.regs, tls: (saved.user.fs_base, saved.user.gs_base), fpu }))
    }

    /// Change a thread's registers and x87/SSE state (see [`Machine::thread_state`]); false if
    /// there is no such thread.
    pub(crate) fn set_thread_state(&mut self, tid: u64, regs: kvm_regs, fpu: &kvm_bindings::kvm_fpu) -> Result<bool> {
        if tid == self.linux.tid() {
            self.set_regs(regs);
            self.set_fpu(fpu)?;
            return Ok(true);
        }
        let Some(saved) = self.linux.thread_by_tid_mut(tid).and_then(|t| t.saved.as_deref_mut()) else { return Ok(false) };
        saved.user.regs = regs;
        if let Some(x) = saved.xsave.as_deref_mut() {
            patch_fpu(x, fpu);
        }
        Ok(true)
    }

    /// FS and GS base (the guest's TLS pointers) as of the last exit.
    pub(crate) fn segment_bases(&mut self) -> (u64, u64) {
        if !self.ran {
            return self.vm.vcpu.get_sregs().map(|s| (s.fs.base, s.gs.base)).unwrap_or_default();
        }
        let s = &self.vm.vcpu.sync_regs_mut().sregs;
        (s.fs.base, s.gs.base)
    }

    /// Debugger memory access: anything the guest may read, including its read-only code
    /// (to plant breakpoints); never the system area.
    pub(crate) fn debug_read(&self, addr: u64, out: &mut [u8]) -> bool {
        read_space(&self.space).user_accessible(addr, out.len() as u64, false) && self.mem.read(addr, out).is_ok()
    }

    pub(crate) fn debug_write(&self, addr: u64, data: &[u8]) -> bool {
        read_space(&self.space).user_accessible(addr, data.len() as u64, false) && self.mem.write(addr, data).is_ok()
    }
}

/// A thread's registers as a debugger sees them.
pub(crate) struct ThreadState {
    pub regs: kvm_regs,
    /// FS and GS base.
    pub tls: (u64, u64),
    pub fpu: kvm_bindings::kvm_fpu,
}

/// The x87/SSE state in an XSAVE image (legacy area: FCW, FSW, FTW, FOP, FIP, FDP, MXCSR, ST0–7,
/// XMM0–15).
fn fpu_of(x: &kvm_bindings::kvm_xsave) -> kvm_bindings::kvm_fpu {
    let b: Vec<u8> = x.region.iter().flat_map(|w| w.to_le_bytes()).collect();
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
    let mut fpu = kvm_bindings::kvm_fpu {
        fcw: u16_at(0),
        fsw: u16_at(2),
        ftwx: b[4],
        last_opcode: u16_at(6),
        last_ip: u64_at(8),
        last_dp: u64_at(16),
        mxcsr: u32::from_le_bytes(b[24..28].try_into().unwrap_or([0; 4])),
        ..Default::default()
    };
    for i in 0..8 {
        fpu.fpr[i].copy_from_slice(&b[32 + 16 * i..48 + 16 * i]);
    }
    for i in 0..16 {
        fpu.xmm[i].copy_from_slice(&b[160 + 16 * i..176 + 16 * i]);
    }
    fpu
}

/// Write MXCSR and XMM0–15 of `fpu` into an XSAVE image.
fn patch_fpu(x: &mut kvm_bindings::kvm_xsave, fpu: &kvm_bindings::kvm_fpu) {
    let mut b: Vec<u8> = x.region.iter().flat_map(|w| w.to_le_bytes()).collect();
    b[24..28].copy_from_slice(&fpu.mxcsr.to_le_bytes());
    for i in 0..16 {
        b[160 + 16 * i..176 + 16 * i].copy_from_slice(&fpu.xmm[i]);
    }
    for (w, c) in x.region.iter_mut().zip(b.chunks_exact(4)) {
        *w = u32::from_le_bytes(c.try_into().unwrap_or([0; 4]));
    }
}

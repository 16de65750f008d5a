//! Guest threads on the machine's one vCPU: the only place that moves a thread's CPU state
//! in or out of the vCPU (on a block, a yield, an exit, or preemption at the end of a time
//! slice). Which thread runs next is the Linux personality's choice (`Linux::schedule`).

use std::time::{Duration, Instant};

use kvm_bindings::kvm_msr_entry;
use kvm_ioctls::SyncReg;

use super::Machine;
use crate::arch::{self, exit::GuestExit};
use crate::error::{Error, Result};
use crate::interrupt::Deadline;
use crate::syscalls::{Linux, Next, SavedCpu, UserCpu};
use crate::timer::ArmedTimeout;

/// How long a thread runs before another runnable thread gets the vCPU.
pub const TIME_SLICE: Duration = Duration::from_millis(10);

/// One VM exit as the run loop sees it.
pub(super) enum Exit {
    /// The guest reached one of the stubs (a syscall, the call return, an exception).
    Guest(GuestExit),
    /// The vCPU was kicked out: the run's timer (deadline or time slice), an interrupt, or a
    /// host signal.
    Kick,
}

/// The running thread's time slice: armed (on the run's timer, together with its deadline)
/// only while another thread is waiting to run.
#[derive(Default)]
pub(super) struct TimeSlice {
    ends: Option<Instant>,
}

impl TimeSlice {
    /// Arm or disarm the slice as the set of runnable threads requires; the timer fires at
    /// the slice's end or the deadline, whichever is first.
    pub(super) fn follow(&mut self, linux: &Linux, timer: &mut ArmedTimeout, deadline: &Deadline) -> Result<()> {
        let wanted = linux.others_runnable();
        if wanted == self.ends.is_some() {
            return Ok(());
        }
        self.ends = wanted.then(|| Instant::now() + TIME_SLICE);
        let fire = match (self.ends.map(|_| TIME_SLICE), deadline.remaining()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        timer.rearm(fire)
    }

    pub(super) fn expired(&self) -> bool {
        self.ends.is_some_and(|e| Instant::now() >= e)
    }

    /// Start over (the next `follow` arms a new slice if still needed).
    pub(super) fn restart(&mut self) {
        self.ends = None;
    }
}

impl Machine {
    /// The vCPU stopped in the guest's own user code (not inside a stub between a `syscall`
    /// and its exit), so its thread can be put aside as it is.
    pub(super) fn preemptible(&mut self) -> bool {
        let sync = self.vm.vcpu.sync_regs_mut();
        sync.sregs.cs.dpl == 3 && sync.regs.rip < self.layout.sys_base
    }

    /// The running thread's slice is over: it stays runnable, the next one runs.
    pub(super) fn preempt(&mut self) -> Result<()> {
        match self.linux.schedule(Instant::now()) {
            Next::Run(i) => self.switch_thread(i),
            // Only runnable threads ask for a slice; should none be left, go on.
            Next::Wait(_) | Next::Deadlock => Ok(()),
        }
    }

    /// The running thread blocked, yielded or ended: run the next thread, waiting (until the
    /// run's deadline) for one to wake if all are blocked.
    pub(super) fn reschedule(&mut self, deadline: &Deadline) -> Result<()> {
        loop {
            match self.linux.schedule(Instant::now()) {
                Next::Run(i) => return self.switch_thread(i),
                Next::Wait(until) => deadline.sleep_until(until)?,
                Next::Deadlock => {
                    let n = self.linux.threads().iter().filter(|t| t.state != crate::syscalls::threads::RunState::Exited).count();
                    return Err(Error::Deadlock(format!(
                        "all {n} guest thread{} wait on futexes that nothing can wake",
                        if n == 1 { "" } else { "s" }
                    )));
                }
            }
        }
    }

    /// Put the running thread aside and load thread `i` (or, if `i` is the running thread,
    /// only give it its syscall result).
    fn switch_thread(&mut self, i: usize) -> Result<()> {
        if i != self.linux.current() {
            let saved = self.save_cpu()?;
            self.linux.park_current(saved);
        }
        let (saved, rax) = self.linux.switch_to(i);
        if let Some(saved) = saved {
            self.load_cpu(&saved)?;
        }
        if let Some(rax) = rax {
            self.vm.vcpu.sync_regs_mut().regs.rax = rax;
            self.vm.vcpu.set_sync_dirty_reg(SyncReg::Register);
        }
        Ok(())
    }

    /// The running thread's CPU state, which must be user mode (after a finished syscall, or
    /// preempted in its own code).
    fn save_cpu(&mut self) -> Result<SavedCpu> {
        let sync = self.vm.vcpu.sync_regs_mut();
        let user = UserCpu { regs: sync.regs, fs_base: sync.sregs.fs.base, gs_base: sync.sregs.gs.base };
        let xsave = self.vm.vcpu.get_xsave().map_err(|e| Error::kvm("KVM_GET_XSAVE", e))?;
        Ok(SavedCpu { user, xsave: Some(Box::new(xsave)) })
    }

    /// Load a thread's CPU state into the vCPU: registers (rflags sanitised like a sysret's:
    /// a snapshot file may carry any), TLS bases and FPU.
    fn load_cpu(&mut self, saved: &SavedCpu) -> Result<()> {
        let mut regs = saved.user.regs;
        regs.rflags = arch::sysret_rflags(regs.rflags & !0x100);
        self.vm.enter_user(regs);
        let entries = [
            kvm_msr_entry { index: arch::MSR_FS_BASE, data: saved.user.fs_base, ..Default::default() },
            kvm_msr_entry { index: arch::MSR_GS_BASE, data: saved.user.gs_base, ..Default::default() },
        ];
        let msrs = kvm_bindings::Msrs::from_entries(&entries).map_err(|e| Error::Internal(format!("MSR list: {e:?}")))?;
        arch::set_msrs(&self.vm.vcpu, &msrs)?;
        let sregs = &mut self.vm.vcpu.sync_regs_mut().sregs;
        sregs.fs.base = saved.user.fs_base;
        sregs.gs.base = saved.user.gs_base;
        if let Some(xsave) = &saved.xsave {
            // SAFETY: a complete kvm_xsave taken from a vCPU with the same CPUID (or read from
            // a snapshot file, whose contents KVM validates).
            unsafe { self.vm.vcpu.set_xsave(xsave) }.map_err(|e| Error::kvm("KVM_SET_XSAVE", e))?;
        }
        Ok(())
    }

    /// Threads just created start with their creator's FPU state (control words included),
    /// which is the vCPU's right after the clone.
    pub(super) fn give_new_threads_fpu(&mut self) -> Result<()> {
        if self.linux.take_unfilled_fpu().is_none() {
            return Ok(());
        }
        let xsave = self.vm.vcpu.get_xsave().map_err(|e| Error::kvm("KVM_GET_XSAVE", e))?;
        while let Some(saved) = self.linux.take_unfilled_fpu() {
            saved.xsave = Some(Box::new(kvm_bindings::kvm_xsave { region: xsave.region, ..Default::default() }));
        }
        Ok(())
    }
}

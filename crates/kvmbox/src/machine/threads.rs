//! Guest threads on the machine's one vCPU: the only place that moves a thread's CPU state
//! in or out of the vCPU (on a block, a yield, an exit, or preemption at the end of a time
//! slice). Which thread runs next is the Linux personality's choice (`Linux::schedule`).

use std::time::{Duration, Instant};

use kvm_bindings::kvm_msr_entry;
use kvm_ioctls::SyncReg;

use kvm_bindings::kvm_regs;

use super::{Machine, Stop};
use crate::arch::{self, exit::GuestExit};
use crate::error::{Error, Result};
use crate::interrupt::Deadline;
use crate::memory::{read_space, UserMemory};
use crate::syscalls::signals::{Delivery, FaultContext, SigInfo, SI_KERNEL};
use crate::syscalls::threads::RunState;
use crate::syscalls::{ExitStatus, Linux, Next, SavedCpu, UserCpu};
use crate::timer::ArmedTimeout;
use std::sync::Arc;

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

/// When the run's timer fires: at the end of the running thread's time slice (only while
/// another thread waits to run), at the first guest timer (alarm, POSIX timers), when the
/// first waiting thread's timeout ends (a sleeper must wake while another thread spins), or at
/// the run's deadline — whichever is first.
pub(super) struct TimeSlice {
    ends: Option<Instant>,
    /// A kick found the vCPU inside a stub with a signal to deliver: try again this soon.
    retry: Option<Instant>,
    /// What the timer is set to now.
    armed: Option<Instant>,
    /// The thread on the vCPU, and since when.
    on_cpu: (u64, Instant),
    /// A sleeper woke: it preempts the running thread once that has had `MIN_RUN`.
    woken: bool,
}

/// How long a thread runs before a woken one may preempt it: without it, a thread that sleeps
/// for microseconds at a time (Go's sysmon) would take the vCPU back before the one it
/// preempted ever ran (a livelock).
const MIN_RUN: Duration = Duration::from_millis(1);

/// How soon to look again when a kick lands inside a stub (a few instructions from user code).
const RETRY_SOON: Duration = Duration::from_millis(1);

impl TimeSlice {
    /// The run's timer starts armed for the deadline.
    pub(super) fn new(deadline: &Deadline) -> TimeSlice {
        TimeSlice { ends: None, retry: None, armed: deadline.at(), on_cpu: (0, Instant::now()), woken: false }
    }

    /// A sleeper woke at this kick.
    pub(super) fn woke(&mut self) {
        self.woken = true;
    }

    /// A woken thread waits, and the running one has had its minimum: switch.
    pub(super) fn wake_preempts(&self) -> bool {
        self.woken && self.on_cpu.1.elapsed() >= MIN_RUN
    }

    /// Arm or disarm the slice as the set of runnable threads requires, and set the timer to
    /// the first thing due.
    pub(super) fn follow(&mut self, linux: &Linux, timer: &mut ArmedTimeout, deadline: &Deadline) -> Result<()> {
        if linux.tid() != self.on_cpu.0 {
            self.on_cpu = (linux.tid(), Instant::now());
        }
        let wanted = linux.others_runnable();
        if wanted != self.ends.is_some() {
            self.ends = wanted.then(|| Instant::now() + TIME_SLICE);
        }
        self.woken &= wanted;
        // A woken thread's turn comes when the running one has had its minimum (once that has
        // passed, a kick that found the vCPU inside a stub looks again through `retry`).
        let wake_turn = self.woken.then(|| self.on_cpu.1 + MIN_RUN).filter(|&t| t > Instant::now());
        let first = [self.ends, self.retry, wake_turn, linux.next_timer(), linux.next_wakeup(), deadline.at()].into_iter().flatten().min();
        if first == self.armed {
            return Ok(());
        }
        self.armed = first;
        timer.rearm(first.map(|at| at.saturating_duration_since(Instant::now())))
    }

    /// The timer fired (one-shot: it is no longer armed): the next `follow` arms it again for
    /// whatever is due next, and a retry it was armed for is used up.
    pub(super) fn kicked(&mut self) {
        self.armed = None;
        self.retry = None;
    }

    pub(super) fn expired(&self) -> bool {
        self.ends.is_some_and(|e| Instant::now() >= e)
    }

    /// Start over (the next `follow` arms a new slice if still needed).
    pub(super) fn restart(&mut self) {
        self.ends = None;
        self.retry = None;
        self.woken = false;
    }

    /// The timer fired while the vCPU was not in user code (inside a stub, between a syscall
    /// and its return): nothing could be put aside there. Start a new slice, and if a signal
    /// waits for delivery, look again very soon — the one-shot timer would otherwise never fire
    /// again for a thread that now spins without syscalls.
    pub(super) fn missed(&mut self, signal_waiting: bool) {
        self.ends = None;
        self.retry = (signal_waiting || self.woken).then(|| Instant::now() + RETRY_SOON);
    }
}

impl Machine {
    /// The vCPU stopped in the guest's own user code (not inside a stub between a `syscall`
    /// and its exit), so its thread can be put aside as it is. The vDSO is user code like the
    /// program's (a thread spinning on clock reads is mostly in there).
    pub(super) fn preemptible(&mut self) -> bool {
        let sync = self.vm.vcpu.sync_regs_mut();
        let rip = sync.regs.rip;
        sync.sregs.cs.dpl == 3 && (rip < self.layout.sys_base || self.layout.in_vdso(rip))
    }

    /// The running thread's slice is over: it stays runnable, the next one runs.
    pub(super) fn preempt(&mut self) -> Result<Option<Stop>> {
        match self.linux.schedule(Instant::now()) {
            Next::Run(i) => self.switch_thread(i)?,
            // Only runnable threads ask for a slice; should none be left, go on.
            Next::Wait(_) | Next::Deadlock => {}
        }
        self.deliver_signals()
    }

    /// The running thread blocked, yielded or ended: run the next thread, waiting (until the
    /// run's deadline) for one to wake if all are blocked.
    pub(super) fn reschedule(&mut self, deadline: &Deadline) -> Result<Option<Stop>> {
        loop {
            match self.linux.schedule(Instant::now()) {
                Next::Run(i) => {
                    self.switch_thread(i)?;
                    return self.deliver_signals();
                }
                Next::Wait(until) => deadline.sleep_until(until)?,
                Next::Deadlock => {
                    let n = self.linux.threads().iter().filter(|t| t.state != RunState::Exited).count();
                    return Err(Error::Deadlock(format!(
                        "all {n} guest thread{} wait on futexes that nothing can wake",
                        if n == 1 { "" } else { "s" }
                    )));
                }
            }
        }
    }

    /// On the way back to user mode (the vCPU holds the thread's user state): act on its
    /// pending signals — a handler frame, a restarted syscall, or the end of the process.
    pub(super) fn deliver_signals(&mut self) -> Result<Option<Stop>> {
        // Every deliverable signal gets its frame, each on top of the last (the newest handler
        // runs first), as Linux loops on its way back to user mode; bounded by the signals.
        for _ in 0..=64 {
            if !self.linux.signal_pending() {
                break;
            }
            if let Some(stop) = self.deliver_one_signal()? {
                return Ok(Some(stop));
            }
        }
        Ok(None)
    }

    fn deliver_one_signal(&mut self) -> Result<Option<Stop>> {
        let sync = self.vm.vcpu.sync_regs_mut();
        let user = UserCpu { regs: sync.regs, fs_base: sync.sregs.fs.base, gs_base: sync.sregs.gs.base };
        let vcpu = &self.vm.vcpu;
        let mut xsave = || vcpu.get_xsave().ok().map(|x| x.region.iter().flat_map(|w| w.to_le_bytes()).collect());
        let space = Arc::clone(&self.space);
        let space = read_space(&space);
        let mem = UserMemory { mem: &self.mem, space: &space };
        match self.linux.deliver(&mem, &user, &mut xsave) {
            Delivery::None => Ok(None),
            Delivery::Continue(regs) => {
                self.vm.enter_user(regs);
                Ok(None)
            }
            Delivery::Terminate(sig) => Ok(Some(Stop::Exit(ExitStatus::Signal(sig)))),
        }
    }

    /// A CPU exception in user code: enter the handler of the signal it raises, if the thread
    /// has one (true); false when the fault is fatal (no handler, or not from user code).
    pub(super) fn fault_to_handler(&mut self, vector: u8) -> Result<bool> {
        let Error::GuestFault(fault) = self.fault(vector, true) else { return Ok(false) };
        let sync = self.vm.vcpu.sync_regs_mut();
        let mut frame = sync.regs.rsp;
        if arch::has_error_code(vector) {
            frame = frame.wrapping_add(8);
        }
        // The CPU's frame: rip, cs, rflags, rsp, ss.
        let word = |i: u64| self.mem.read_u64(frame.wrapping_add(i * 8)).ok();
        let (Some(rip), Some(cs), Some(rflags), Some(rsp)) = (word(0), word(1), word(2), word(3)) else { return Ok(false) };
        if cs & 3 != 3 {
            return Ok(false);
        }
        let sync = self.vm.vcpu.sync_regs_mut();
        let regs = kvm_regs { rip, rflags: arch::sysret_rflags(rflags), rsp, ..sync.regs };
        let user = UserCpu { regs, fs_base: sync.sregs.fs.base, gs_base: sync.sregs.gs.base };
        let err = fault.error_code.unwrap_or(0);
        let (signo, code, addr) = match vector {
            14 => (
                libc::SIGSEGV,
                // As Linux decides: by whether a mapping holds the address (a PROT_NONE page
                // is ACCERR though its entry is absent).
                if self.linux.is_mapped(fault.address) {
                    2 /* SEGV_ACCERR */
                } else {
                    1 /* SEGV_MAPERR */
                },
                fault.address,
            ),
            0 => (libc::SIGFPE, 1 /* FPE_INTDIV */, rip),
            6 => (libc::SIGILL, 2 /* ILL_ILLOPN */, rip),
            17 => (libc::SIGBUS, 1 /* BUS_ADRALN */, rip),
            _ => (fault.signal(), SI_KERNEL, 0),
        };
        let info = SigInfo { signo, code, errno: 0, a: addr, b: 0 };
        let context = FaultContext { trapno: u64::from(vector), err, cr2: if vector == 14 { fault.address } else { 0 } };
        let xsave = self.vm.vcpu.get_xsave().ok().map(|x| x.region.iter().flat_map(|w| w.to_le_bytes()).collect::<Vec<u8>>());
        let space = Arc::clone(&self.space);
        let space = read_space(&space);
        let mem = UserMemory { mem: &self.mem, space: &space };
        match self.linux.deliver_fault(&mem, info, &user, context, xsave.as_deref()) {
            Some(entry) => {
                self.vm.enter_user(entry);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// rt_sigreturn: continue with the frame's registers and FPU state (TLS bases stay). An
    /// XSAVE image KVM refuses kills the process with SIGSEGV, as Linux's bad-frame check does.
    pub(super) fn load_registers(&mut self, saved: &SavedCpu) -> Result<Option<Stop>> {
        let mut regs = saved.user.regs;
        regs.rflags = arch::sysret_rflags(regs.rflags);
        self.vm.enter_user(regs);
        if let Some(xsave) = &saved.xsave {
            // SAFETY: KVM checks the XSAVE header the guest wrote; a bad one fails the ioctl.
            if unsafe { self.vm.vcpu.set_xsave(xsave) }.is_err() {
                return Ok(Some(Stop::Exit(ExitStatus::Signal(libc::SIGSEGV))));
            }
        }
        Ok(None)
    }

    /// For a debugger: put thread `tid` on the vCPU if it is runnable (else leave things as
    /// they are: it runs when what it waits for happens).
    pub(crate) fn debug_select_thread(&mut self, tid: u64) -> Result<()> {
        if !self.preemptible() {
            return Ok(()); // stopped inside a stub: its state is not a thread's to put aside
        }
        let Some(i) = self.linux.threads().iter().position(|t| t.tid == tid && t.state == RunState::Runnable) else { return Ok(()) };
        if i != self.linux.current() {
            self.switch_thread(i)?;
        }
        Ok(())
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

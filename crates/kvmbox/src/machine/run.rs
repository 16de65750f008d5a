//! Running the guest: the run loop, which turns decoded VM exits into emulated syscalls,
//! typed faults, timeouts and exits.

use super::*;

impl Machine {
    /// Run the program (with the machine's timeout) until it exits, pauses, faults or times out.
    pub fn run(&mut self) -> Result<RunOutcome> {
        self.run_with(self.timeout, &mut NoHost)
    }

    /// The timeout given at creation (used by `run` and as the default for calls).
    pub fn default_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// `run` with this timeout instead of the machine's.
    pub fn run_with_timeout(&mut self, timeout: Option<Duration>) -> Result<RunOutcome> {
        self.run_with(timeout, &mut NoHost)
    }

    /// Run (or continue after a pause) with `host` handling host calls and output.
    pub fn run_with(&mut self, timeout: Option<Duration>, host: &mut dyn Host) -> Result<RunOutcome> {
        self.prepare_run()?;
        let result = self.run_loop(timeout, host, false);
        self.finish_run(result)
    }

    /// Like `run_with`, but first wait for gdb to connect on `listener` and let it drive the
    /// guest (breakpoints, single steps, registers, memory, Ctrl-C). When gdb detaches (or the
    /// connection drops) the guest runs on undebugged, exactly as it would have; breakpoints
    /// never outlive the session.
    pub fn run_debug(&mut self, listener: &std::net::TcpListener, timeout: Option<Duration>, host: &mut dyn Host) -> Result<RunOutcome> {
        self.prepare_run()?;
        let conn = accept_gdb(listener)?;
        let result = self.run_debugged(conn, timeout, host, false);
        self.finish_run(result)
    }

    /// Before a run: the right thread, and registers where the guest continues.
    fn prepare_run(&mut self) -> Result<()> {
        self.check_thread()?;
        if matches!(self.state, State::Paused { .. }) {
            self.reseed_if_pending()?;
        }
        match self.state {
            State::Finished => return Err(Error::InvalidState("the guest has already finished".into())),
            State::Paused { resume } => self.vm.enter_user(resume),
            State::Ready => {}
        }
        Ok(())
    }

    /// Let gdb on `conn` drive the guest; after a detach the run goes on undebugged.
    pub(super) fn run_debugged(
        &mut self,
        conn: std::net::TcpStream,
        timeout: Option<Duration>,
        host: &mut dyn Host,
        in_call: bool,
    ) -> Result<Stop> {
        match crate::debug::session(self, host, timeout, conn, in_call)? {
            crate::debug::SessionEnd::Stopped(stop) => Ok(stop),
            crate::debug::SessionEnd::Detached => self.run_loop(timeout, host, in_call),
            crate::debug::SessionEnd::Killed => Ok(Stop::Exit(ExitStatus::Signal(libc::SIGKILL))),
        }
    }

    /// A machine created with `seccomp` runs only on a restricted thread.
    pub(super) fn check_thread(&self) -> Result<()> {
        if self.seccomp && !crate::seccomp::current_thread_restricted() {
            return Err(Error::InvalidState(
                "this machine was created with seccomp and runs only on a seccomp-restricted thread (in Node: runAsync/callAsync)".into(),
            ));
        }
        Ok(())
    }

    /// Whether this machine runs only on seccomp-restricted threads.
    pub fn requires_seccomp(&self) -> bool {
        self.seccomp
    }

    fn finish_run(&mut self, result: Result<Stop>) -> Result<RunOutcome> {
        match result {
            Ok(Stop::Pause(resume)) => {
                self.state = State::Paused { resume };
                Ok(RunOutcome::Paused)
            }
            Ok(Stop::Exit(status)) => {
                self.state = State::Finished;
                Ok(outcome(status))
            }
            Ok(Stop::CallReturn(_) | Stop::Trap(_) | Stop::Interrupted) => unreachable!("only inside call() or a debug session"),
            Err(e) => {
                self.state = State::Finished;
                Err(e)
            }
        }
    }

    pub(crate) fn run_loop(&mut self, timeout: Option<Duration>, host: &mut dyn Host, in_call: bool) -> Result<Stop> {
        let deadline = Deadline::after(timeout, self.interrupt.clone());
        let started = std::time::Instant::now();
        self.stats = RunStats { pages_restored: self.stats.pages_restored, reset: self.stats.reset, ..RunStats::default() };
        let result = self.run_loop_inner(&deadline, host, in_call);
        self.stats.wall_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        result
    }

    fn run_loop_inner(&mut self, deadline: &Deadline, host: &mut dyn Host, in_call: bool) -> Result<Stop> {
        let run_ptr = self.vm.vcpu.get_kvm_run() as *mut kvm_bindings::kvm_run;
        let mut timer = timer::arm(run_ptr, deadline.remaining())?;
        let interrupt = self.interrupt.clone();
        let _running = interrupt.enter();
        // An interrupt that came before the run stops it before the guest runs at all.
        deadline.check()?;
        self.ran = true;
        if self.clock.due() {
            self.clock.refresh(&self.mem, &self.layout, self.linux.mono_offset)?;
        }
        let mut slice = TimeSlice::new(deadline);
        loop {
            slice.follow(&self.linux, &mut timer, deadline)?;
            let exit = self.next_exit();
            self.stats.exits = self.stats.exits.saturating_add(1);
            match exit? {
                Exit::Guest(GuestExit::Syscall { user_rip, user_rflags, sysret_in_guest }) => {
                    self.stats.syscalls = self.stats.syscalls.saturating_add(1);
                    if let Some(stop) = self.syscall(user_rip, user_rflags, sysret_in_guest, deadline, host, in_call)? {
                        return Ok(stop);
                    }
                    if self.clock.due() {
                        self.clock.refresh(&self.mem, &self.layout, self.linux.mono_offset)?;
                    }
                }
                Exit::Guest(GuestExit::CallReturn { value }) if in_call && self.linux.tid() == self.call_thread => {
                    return Ok(Stop::CallReturn(value))
                }
                Exit::Guest(GuestExit::Exception(vector)) => {
                    if self.debug_interrupt.is_some() && (vector == 1 || vector == 3) {
                        self.return_from_trap()?;
                        return Ok(Stop::Trap(vector));
                    }
                    if vector == 14 && self.spurious_page_fault()? {
                        continue;
                    }
                    // A handler for the signal it raises (SIGSEGV, SIGFPE…) runs; else it is fatal.
                    if !self.fault_to_handler(vector)? {
                        return Err(self.fault(vector, true));
                    }
                }
                // The trampoline reached outside a call (or by another thread than the one
                // called): as if the guest jumped there, #GP at the trampoline.
                Exit::Guest(GuestExit::CallReturn { .. }) => return Err(general_protection(self.layout.sys.call_return)),
                // A port only the stubs may use, a jump into a stub, a syscall returning to a
                // non-canonical address: the #GP it would be on real hardware (or under Linux).
                Exit::Guest(GuestExit::GeneralProtection { rip }) => return Err(general_protection(rip)),
                Exit::Kick => {
                    if self.debug_interrupt.as_ref().is_some_and(|f| f.swap(false, std::sync::atomic::Ordering::SeqCst)) {
                        return Ok(Stop::Interrupted);
                    }
                    deadline.check()?;
                    slice.kicked();
                    // A sleeper whose time came runs soon (as Linux preempts for a woken thread),
                    // once the running thread has had a minimum of time.
                    let woke = self.linux.wake_due(std::time::Instant::now());
                    if woke {
                        slice.woke();
                    }
                    if self.preemptible() {
                        let stop = if slice.expired() || slice.wake_preempts() {
                            slice.restart();
                            self.preempt()?
                        } else {
                            self.deliver_signals()?
                        };
                        if let Some(stop) = stop {
                            return Ok(stop);
                        }
                    } else {
                        slice.missed(self.linux.signal_pending() || woke);
                    }
                }
            }
        }
    }

    /// Run the vCPU until its next exit and say what it was. Exits that end the run whatever
    /// the guest state (a triple fault, an access outside guest memory, hlt) come back as errors.
    fn next_exit(&mut self) -> Result<Exit> {
        let port = match self.vm.vcpu.run() {
            Ok(VcpuExit::IoOut(port, _)) => port,
            Ok(VcpuExit::Shutdown) => {
                // A triple fault. SVM then INITs the vCPU (STAR/LSTAR/SFMASK, XCR0 and
                // the control registers are lost); reset() sets them again.
                self.system_state_lost = true;
                return Err(self.fault(8, false));
            }
            Ok(VcpuExit::MmioRead(addr, _)) | Ok(VcpuExit::MmioWrite(addr, _)) => {
                let rip = self.vm.vcpu.sync_regs_mut().regs.rip;
                return Err(Error::GuestFault(GuestFault { vector: 14, rip, address: addr, error_code: None }));
            }
            Ok(VcpuExit::Intr) => return Ok(Exit::Kick),
            Ok(VcpuExit::Hlt) => return Err(self.fault(13, false)),
            Ok(VcpuExit::IoIn(..)) => return Err(general_protection(self.vm.vcpu.sync_regs_mut().regs.rip)),
            Ok(VcpuExit::InternalError) => return Err(Error::Internal("KVM internal error while running the guest".into())),
            Ok(VcpuExit::FailEntry(reason, _)) => return Err(Error::Internal(format!("VM entry failed (reason {reason:#x})"))),
            Ok(other) => return Err(Error::Internal(format!("unexpected VM exit {other:?}"))),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                self.vm.vcpu.set_kvm_immediate_exit(0);
                return Ok(Exit::Kick);
            }
            Err(e) if e.errno() == libc::EFAULT || e.errno() == libc::ENOMEM => {
                return Err(Error::OutOfMemory(format!("the host could not back guest memory: {e}")))
            }
            Err(e) => return Err(Error::kvm("KVM_RUN", e)),
        };
        let sync = self.vm.vcpu.sync_regs_mut();
        let at = ExitRegs::of(&sync.regs, sync.sregs.cs.dpl);
        Ok(Exit::Guest(exit::decode(port, at, &self.layout.sys, self.syscall_entry)))
    }

    /// Handle a decoded syscall exit (see [`exit::GuestExit::Syscall`]); `Some(stop)` if the
    /// guest exited or paused.
    fn syscall(
        &mut self,
        user_rip: u64,
        user_rflags: u64,
        sysret_in_guest: bool,
        deadline: &Deadline,
        host: &mut dyn Host,
        in_call: bool,
    ) -> Result<Option<Stop>> {
        let r = self.vm.vcpu.sync_regs_mut().regs;
        let (nr, args) = (r.rax, [r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9]);
        let user_regs = kvm_regs { rip: user_rip, rflags: user_rflags, ..r };
        let value = if nr == SYS_PAUSE {
            if !in_call {
                // Where the guest continues: just after its syscall, returning 0.
                return Ok(Some(Stop::Pause(kvm_regs { rax: 0, ..user_regs })));
            }
            crate::syscalls::err(crate::syscalls::errno::EBUSY)
        } else {
            let sregs = &self.vm.vcpu.sync_regs_mut().sregs;
            let cpu = UserCpu { regs: user_regs, fs_base: sregs.fs.base, gs_base: sregs.gs.base };
            let space = Arc::clone(&self.space);
            let flow = {
                let space = read_space(&space);
                let env = SyscallEnv { mem: &self.mem, space: &space, deadline, cpu };
                self.linux.handle(&env, host, nr, args)
            };
            self.apply_cpu_update()?;
            self.give_new_threads_fpu()?;
            self.last_spurious = (0, 0);
            // New page rights take effect before the guest runs again. The commit stub ran on
            // this vCPU, so the syscall then returns explicitly (never through the entry stub's
            // `sysretq`), and a kick it swallowed is passed on to the loop.
            let committed = self.commit_rights_changes()?;
            if committed.kicked {
                self.vm.vcpu.set_kvm_immediate_exit(1);
            }
            match flow? {
                Flow::Return(v) if committed.stub_ran => {
                    self.vm.enter_user(kvm_regs { rax: v, ..user_regs });
                    return if self.linux.signal_pending() { self.deliver_signals() } else { Ok(None) };
                }
                Flow::Return(v) => v,
                Flow::Exit(status) => return Ok(Some(Stop::Exit(status))),
                Flow::Block | Flow::Yield => {
                    // The syscall is finished in user mode (a yield returns 0; a blocked
                    // thread gets its result when it wakes), then another thread may run.
                    self.vm.enter_user(kvm_regs { rax: 0, ..user_regs });
                    return self.reschedule(deadline);
                }
                Flow::Replace(saved) => {
                    if let Some(stop) = self.load_registers(&saved)? {
                        return Ok(Some(stop));
                    }
                    return self.deliver_signals();
                }
            }
        };
        if self.linux.signal_pending() {
            // Finished in user mode, where a signal frame can be built over it.
            self.vm.enter_user(kvm_regs { rax: value, ..user_regs });
            return self.deliver_signals();
        }
        let sync = self.vm.vcpu.sync_regs_mut();
        sync.regs.rax = value;
        if !sysret_in_guest {
            // PVM: `syscall` did not change privilege; finish it as sysretq would. (VMX/SVM:
            // RIP stays on the stub, so KVM skips its `out` and `sysretq` runs; moving RIP
            // would cancel that skip.)
            sync.regs.rip = user_rip;
            sync.regs.rflags = user_rflags;
        }
        self.vm.vcpu.set_sync_dirty_reg(SyncReg::Register);
        Ok(None)
    }

    /// Load what the last syscall changed in the calling thread's CPU state (TLS bases) into the
    /// vCPU. Through the MSRs: the synced segment registers would rewrite every system register.
    pub(super) fn apply_cpu_update(&mut self) -> Result<()> {
        let update = self.linux.take_cpu_update();
        let entries: Vec<kvm_bindings::kvm_msr_entry> = [(arch::MSR_FS_BASE, update.fs_base), (arch::MSR_GS_BASE, update.gs_base)]
            .into_iter()
            .filter_map(|(index, value)| value.map(|data| kvm_bindings::kvm_msr_entry { index, data, ..Default::default() }))
            .collect();
        if entries.is_empty() {
            return Ok(());
        }
        let msrs = kvm_bindings::Msrs::from_entries(&entries).map_err(|e| Error::Internal(format!("MSR list: {e:?}")))?;
        arch::set_msrs(&self.vm.vcpu, &msrs)?;
        // The synced copy must agree, should the segment registers be written back later.
        let sregs = &mut self.vm.vcpu.sync_regs_mut().sregs;
        if let Some(fs) = update.fs_base {
            sregs.fs.base = fs;
        }
        if let Some(gs) = update.gs_base {
            sregs.gs.base = gs;
        }
        Ok(())
    }

    /// After a trap (no error code) the CPU left rip, cs, rflags, rsp, ss on the ring-0 stack;
    /// go back to user mode there, as the stub's `iretq` would (trap flag cleared).
    fn return_from_trap(&mut self) -> Result<()> {
        let sync = self.vm.vcpu.sync_regs_mut();
        let mut regs = sync.regs;
        let frame = regs.rsp;
        regs.rip = self.mem.read_u64(frame)?;
        regs.rflags = (self.mem.read_u64(frame + 16)? & !0x100) | 0x2;
        regs.rsp = self.mem.read_u64(frame + 24)?;
        self.vm.enter_user(regs);
        Ok(())
    }

    /// Build the fault error for `vector`. With `frame`, the CPU pushed an exception frame on
    /// the ring-0 stack; the faulting rip comes from there.
    pub(super) fn fault(&mut self, vector: u8, frame: bool) -> Error {
        let sync = self.vm.vcpu.sync_regs_mut();
        let (rsp, rip_now, cr2) = (sync.regs.rsp, sync.regs.rip, sync.sregs.cr2);
        let mut fault = GuestFault { vector, rip: rip_now, address: 0, error_code: None };
        if frame {
            let mut at = rsp;
            if arch::has_error_code(vector) {
                fault.error_code = self.mem.read_u64(at).ok();
                at += 8;
            }
            fault.rip = self.mem.read_u64(at).unwrap_or(0);
        }
        if vector == 14 {
            fault.address = cr2;
        }
        Error::GuestFault(fault)
    }
}

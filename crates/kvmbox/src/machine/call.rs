//! Calling guest functions while the guest is paused.

use super::*;

impl Machine {
    /// Call the guest function at `addr` (System V ABI, at most six arguments) while the guest
    /// is paused, and return its rax. Strings and buffers are copied onto the guest stack below
    /// the paused frame; buffers are copied back afterwards. The guest may make syscalls and
    /// host calls meanwhile. After a fault, timeout, host error or exit during the call the
    /// machine is finished (unusable), since its memory may be half-updated.
    pub fn call(&mut self, addr: u64, args: &mut [CallArg<'_>], timeout: Option<Duration>, host: &mut dyn Host) -> Result<u64> {
        self.call_impl(addr, args, timeout, host, None)
    }

    /// Like `call`, but first wait for gdb on `listener` and let it drive the call (the session
    /// ends when the function returns; see `run_debug`).
    pub fn call_debug(
        &mut self,
        listener: &std::net::TcpListener,
        addr: u64,
        args: &mut [CallArg<'_>],
        timeout: Option<Duration>,
        host: &mut dyn Host,
    ) -> Result<u64> {
        self.call_impl(addr, args, timeout, host, Some(listener))
    }

    fn call_impl(
        &mut self,
        addr: u64,
        args: &mut [CallArg<'_>],
        timeout: Option<Duration>,
        host: &mut dyn Host,
        debug: Option<&std::net::TcpListener>,
    ) -> Result<u64> {
        self.check_thread()?;
        let State::Paused { resume } = self.state else {
            return Err(Error::InvalidState(match self.state {
                State::Finished => "the guest has already finished".into(),
                _ => "call() needs a paused guest: run() until the program calls kvmbox_pause()".into(),
            }));
        };
        if args.len() > 6 {
            return Err(Error::InvalidArgument(format!("at most 6 arguments can be passed, got {}", args.len())));
        }
        self.reseed_if_pending()?;
        if !read_space(&self.space).user_executable(addr) {
            return Err(Error::InvalidArgument(format!("{addr:#x} is not in the guest's executable code")));
        }
        let (regs, placed) = self.call_frame(&resume, addr, args)?;
        self.call_thread = self.linux.tid();
        self.vm.enter_user(regs);
        let result = match debug {
            None => self.run_loop(timeout, host, true),
            Some(listener) => {
                let conn = accept_gdb(listener)?;
                self.run_debugged(conn, timeout, host, true)
            }
        };
        match result {
            Ok(Stop::CallReturn(value)) => {
                for (arg, at) in args.iter_mut().zip(&placed) {
                    if let CallArg::Bytes(buf) = arg {
                        self.mem.read(*at, buf)?;
                    }
                }
                Ok(value)
            }
            Ok(Stop::Exit(status)) => {
                self.state = State::Finished;
                Err(Error::GuestExited(outcome(status)))
            }
            Ok(Stop::Pause(_) | Stop::Trap(_) | Stop::Interrupted) => {
                unreachable!("kvmbox_pause() inside a call returns EBUSY; traps only in debug sessions")
            }
            Err(e) => {
                self.state = State::Finished;
                Err(e)
            }
        }
    }

    /// Registers for calling `addr`: arguments copied below the paused stack, a return
    /// address pointing at the call-return trampoline. Returns the registers and the guest
    /// address of each argument.
    fn call_frame(&self, resume: &kvm_regs, addr: u64, args: &[CallArg<'_>]) -> Result<(kvm_regs, [u64; 6])> {
        let top = (resume.rsp.wrapping_sub(RED_ZONE)) & !15;
        let mut sp = top;
        // At most six arguments (call_impl checks): register values, or where the bytes went.
        let mut values = [0u64; 6];
        let too_big = || Error::InvalidArgument("call arguments do not fit in the guest's stack scratch area".into());
        for (arg, value) in args.iter().zip(&mut values) {
            let bytes: &[u8] = match arg {
                CallArg::Int(v) => {
                    *value = *v;
                    continue;
                }
                CallArg::Str(b) => b,
                CallArg::Bytes(b) => b,
            };
            let extra = matches!(arg, CallArg::Str(_)) as u64;
            sp = sp.checked_sub(bytes.len() as u64 + extra).ok_or_else(too_big)? & !15;
            *value = sp;
        }
        // The return address; rsp ≡ 8 (mod 16) at function entry, as after a `call`.
        let entry_sp = sp.checked_sub(8).ok_or_else(too_big)?;
        let low = entry_sp.checked_sub(CALL_STACK_RESERVE).ok_or_else(too_big)?;
        if !read_space(&self.space).user_accessible(low, top - low, true) {
            return Err(too_big());
        }
        for (arg, &at) in args.iter().zip(&values) {
            match arg {
                CallArg::Int(_) => {}
                CallArg::Str(b) => {
                    self.mem.write(at, b)?;
                    self.mem.write(at + b.len() as u64, &[0])?;
                }
                CallArg::Bytes(b) => self.mem.write(at, b)?,
            }
        }
        self.mem.write_u64(entry_sp, self.layout.sys.call_return)?;
        let mut regs = kvm_regs { rip: addr, rsp: entry_sp, rflags: 0x2, ..Default::default() };
        let slots = [&mut regs.rdi, &mut regs.rsi, &mut regs.rdx, &mut regs.rcx, &mut regs.r8, &mut regs.r9];
        for (slot, v) in slots.into_iter().zip(&values) {
            *slot = *v;
        }
        Ok((regs, values))
    }
}

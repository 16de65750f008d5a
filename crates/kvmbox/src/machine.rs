//! [`Machine`]: one guest program in its own VM, and the run loop that turns VM exits into
//! emulated syscalls, typed faults, timeouts and exits.

use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kvm_ioctls::{SyncReg, VcpuExit};

use crate::arch;
use crate::elf::Program;
use crate::error::{Error, GuestFault, Result};
use crate::kvm;
use crate::layout::{self, AddressSpace, Layout};
use crate::memory::GuestMemory;
use crate::paging;
use crate::stack;
use crate::syscalls::files::{FilePolicy, Input, Output};
use crate::syscalls::mm::Mappings;
use crate::syscalls::{ExitStatus, Flow, Linux, SyscallEnv};
use crate::timer;
use crate::vcpu::{self, Vm};

/// Default guest memory: 128 MiB of address space (only touched pages use host memory).
pub const DEFAULT_MEMORY: u64 = 128 << 20;
/// Default cap on captured stdout/stderr, each.
pub const DEFAULT_OUTPUT_LIMIT: usize = 64 << 20;

/// How to create a machine.
pub struct MachineOptions {
    /// argv; empty means `[program path]`.
    pub args: Vec<String>,
    /// Environment as `KEY=value` strings.
    pub env: Vec<String>,
    /// Guest memory size in bytes (rounded up to 2 MiB).
    pub memory: u64,
    /// Default timeout for [`Machine::run`].
    pub timeout: Option<Duration>,
    pub stdin: Input,
    pub stdout: Output,
    pub stderr: Output,
    /// Host files and directories the guest may open read-only.
    pub allow_read: Vec<String>,
    /// Print every syscall to the host's stderr.
    pub trace: bool,
    /// Absolute path the guest sees as its executable (readlink /proc/self/exe).
    /// Defaults to the canonical path of the file, or `/guest` for in-memory programs.
    pub exe_path: Option<String>,
    /// The guest's working directory; defaults to the host's.
    pub cwd: Option<String>,
}

impl Default for MachineOptions {
    fn default() -> Self {
        MachineOptions {
            args: Vec::new(),
            env: Vec::new(),
            memory: DEFAULT_MEMORY,
            timeout: None,
            stdin: Input::Empty,
            stdout: Output::capture(DEFAULT_OUTPUT_LIMIT),
            stderr: Output::capture(DEFAULT_OUTPUT_LIMIT),
            allow_read: Vec::new(),
            trace: false,
            exe_path: None,
            cwd: None,
        }
    }
}

/// Where a machine is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ready,
    Finished,
}

/// A guest program in its own KVM virtual machine.
pub struct Machine {
    // Both are handed to the reaper on drop (the VM first, then the memory it maps).
    vm: ManuallyDrop<Vm>,
    mem: ManuallyDrop<GuestMemory>,
    layout: Layout,
    space: AddressSpace,
    program: Program,
    linux: Linux,
    timeout: Option<Duration>,
    state: State,
    /// Learned at the first syscall exit from CS.dpl: does `syscall` stay in ring 3 here?
    syscall_in_ring3: Option<bool>,
}

/// Result of a completed run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    Exited(i32),
    Signaled(i32),
}

impl Machine {
    /// Load the static executable at `path`.
    pub fn from_file(path: impl AsRef<Path>, mut opts: MachineOptions) -> Result<Machine> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::Elf(format!("cannot read {}: {e}", path.display())))?;
        if opts.args.is_empty() {
            opts.args.push(path.to_string_lossy().into_owned());
        }
        if opts.exe_path.is_none() {
            opts.exe_path = Some(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()).to_string_lossy().into_owned());
        }
        Self::from_bytes(bytes, opts)
    }

    /// Load a static executable from memory.
    pub fn from_bytes(bytes: Vec<u8>, mut opts: MachineOptions) -> Result<Machine> {
        // Fail fast and clearly without KVM, before any parsing work.
        kvm::kvm()?;
        let memory = layout::round_memory(opts.memory).map_err(Error::InvalidArgument)?;
        let program = Program::parse(bytes)?;
        let layout = Layout::new(memory);
        let segments = program.regions(&layout)?;
        let space = AddressSpace::new(layout.regions(&segments));

        let host_cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let policy = FilePolicy::new(&opts.allow_read, &host_cwd)?;
        let exe_path = opts.exe_path.take().unwrap_or_else(|| "/guest".into());
        if !exe_path.starts_with('/') {
            return Err(Error::InvalidArgument(format!("exe_path must be absolute, got {exe_path:?}")));
        }
        if opts.args.is_empty() {
            opts.args.push(exe_path.clone());
        }
        let cwd = opts.cwd.take().map(PathBuf::from).unwrap_or(host_cwd);

        let mem = GuestMemory::new(memory)?;
        arch::write_system_pages(&mem, &layout)?;
        let cr3 = paging::build(&mem, &layout, space.regions())?;
        program.load(&mem)?;
        let cpuid = kvm::supported_cpuid()?;
        let facts = stack::AuxFacts {
            // SAFETY: getuid/getgid cannot fail.
            uid: unsafe { libc::getuid() },
            gid: unsafe { libc::getgid() },
            hwcap: arch::hwcap_from_cpuid(cpuid),
            hwcap2: 1 << 1, // HWCAP2_FSGSBASE: CR4.FSGSBASE is set
            execfn: opts.args[0].clone(),
        };
        let stack_limit = layout.stack_bottom + layout.stack_size() / 2;
        let rsp = stack::build(&mem, layout.stack_top, stack_limit, &program, &opts.args, &opts.env, &facts)?;
        let vm = vcpu::create(&mem, &layout, cr3, program.entry, rsp)?;

        let mm = Mappings::new(program.image_end, layout.heap_limit());
        let linux = Linux::new(
            mm,
            policy,
            opts.stdin,
            opts.stdout,
            opts.stderr,
            PathBuf::from(exe_path),
            cwd,
            memory,
            layout.stack_size(),
            opts.trace,
        );
        Ok(Machine {
            vm: ManuallyDrop::new(vm),
            mem: ManuallyDrop::new(mem),
            layout,
            space,
            program,
            linux,
            timeout: opts.timeout,
            state: State::Ready,
            syscall_in_ring3: None,
        })
    }

    /// Address of a symbol from the program's ELF symbol table.
    pub fn symbol(&self, name: &str) -> Option<u64> {
        self.program.symbols.get(name).copied()
    }

    /// The program's symbol table (name → address), shareable beyond the machine's life.
    pub fn symbols(&self) -> std::sync::Arc<std::collections::HashMap<String, u64>> {
        self.program.symbols.clone()
    }

    /// Guest memory size in bytes.
    pub fn memory_size(&self) -> u64 {
        self.mem.size()
    }

    /// Replace where stdout goes from now on; returns the previous sink.
    pub fn set_stdout(&mut self, out: Output) -> Output {
        std::mem::replace(&mut self.linux.stdout, out)
    }

    /// Replace where stderr goes from now on; returns the previous sink.
    pub fn set_stderr(&mut self, out: Output) -> Output {
        std::mem::replace(&mut self.linux.stderr, out)
    }

    /// Captured stdout so far (emptied by the call).
    pub fn take_stdout(&mut self) -> Vec<u8> {
        self.linux.stdout.take_captured()
    }

    pub fn take_stderr(&mut self) -> Vec<u8> {
        self.linux.stderr.take_captured()
    }

    /// True if captured output hit its limit and some was dropped.
    pub fn output_truncated(&self) -> (bool, bool) {
        (self.linux.stdout.truncated(), self.linux.stderr.truncated())
    }

    /// Whether `syscall` was seen to stay in ring 3 (PVM) or enter ring 0 (VMX/SVM);
    /// `None` until the guest made its first syscall.
    pub fn syscall_stays_in_ring3(&self) -> Option<bool> {
        self.syscall_in_ring3
    }

    /// Run the program until it exits, faults or times out (with the machine's timeout).
    pub fn run(&mut self) -> Result<RunOutcome> {
        self.run_with_timeout(self.timeout)
    }

    pub fn run_with_timeout(&mut self, timeout: Option<Duration>) -> Result<RunOutcome> {
        if self.state != State::Ready {
            return Err(Error::InvalidState("the guest has already finished; create a new machine".into()));
        }
        let result = self.run_loop(timeout);
        // Any way out of the loop ends the process: exit, fault, timeout or host error.
        self.state = State::Finished;
        result.map(|s| match s {
            ExitStatus::Code(c) => RunOutcome::Exited(c),
            ExitStatus::Signal(s) => RunOutcome::Signaled(s),
        })
    }

    fn run_loop(&mut self, timeout: Option<Duration>) -> Result<ExitStatus> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let timeout_ms = timeout.map(|t| t.as_millis() as u64).unwrap_or(0);
        let run_ptr = self.vm.vcpu.get_kvm_run() as *mut kvm_bindings::kvm_run;
        let _armed = timer::arm(run_ptr, timeout)?;
        loop {
            let port = match self.vm.vcpu.run() {
                Ok(VcpuExit::IoOut(port, _)) => port,
                Ok(VcpuExit::Shutdown) => return Err(self.fault(8, None)),
                Ok(VcpuExit::MmioRead(addr, _)) | Ok(VcpuExit::MmioWrite(addr, _)) => {
                    let rip = self.vm.vcpu.sync_regs_mut().regs.rip;
                    return Err(Error::GuestFault(GuestFault { vector: 14, rip, address: addr, error_code: None }));
                }
                Ok(VcpuExit::Intr) => {
                    self.check_deadline(deadline, timeout_ms)?;
                    continue;
                }
                Ok(VcpuExit::Hlt) => return Err(self.fault(13, None)),
                Ok(VcpuExit::IoIn(..)) => return Err(self.forged_port_access()),
                Ok(VcpuExit::InternalError) => return Err(Error::Internal("KVM internal error while running the guest".into())),
                Ok(VcpuExit::FailEntry(reason, _)) => return Err(Error::Internal(format!("VM entry failed (reason {reason:#x})"))),
                Ok(other) => return Err(Error::Internal(format!("unexpected VM exit {other:?}"))),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.vm.vcpu.set_kvm_immediate_exit(0);
                    self.check_deadline(deadline, timeout_ms)?;
                    continue;
                }
                Err(e) if e.errno() == libc::EFAULT || e.errno() == libc::ENOMEM => {
                    return Err(Error::OutOfMemory(format!("the host could not back guest memory: {e}")))
                }
                Err(e) => return Err(Error::kvm("KVM_RUN", e)),
            };
            match port {
                arch::SYSCALL_PORT => {
                    if let Some(status) = self.syscall(deadline, timeout_ms)? {
                        return Ok(status);
                    }
                }
                p if (arch::EXCEPTION_PORT_BASE..arch::EXCEPTION_PORT_BASE + arch::EXCEPTION_VECTORS as u16).contains(&p) => {
                    let vector = (p - arch::EXCEPTION_PORT_BASE) as u8;
                    return Err(self.fault(vector, Some(())));
                }
                // Ring 3 can reach only the ports in the TSS bitmap; using them other than
                // through the stubs is treated as the #GP it would be on real hardware.
                _ => return Err(self.forged_port_access()),
            }
        }
    }

    fn check_deadline(&self, deadline: Option<Instant>, timeout_ms: u64) -> Result<()> {
        match deadline {
            Some(d) if Instant::now() >= d => Err(Error::Timeout(timeout_ms)),
            _ => Ok(()),
        }
    }

    /// Handle a syscall exit; `Some(status)` if the process ended.
    fn syscall(&mut self, deadline: Option<Instant>, timeout_ms: u64) -> Result<Option<ExitStatus>> {
        let sync = self.vm.vcpu.sync_regs_mut();
        let r = sync.regs;
        let in_ring3 = sync.sregs.cs.dpl == 3;
        if r.rip != self.layout.sys.syscall_entry + arch::SYSCALL_EXIT_RIP_OFFSET {
            // Only the LSTAR stub may use the syscall port; anything else is a forged exit.
            return Err(Error::GuestFault(GuestFault { vector: 13, rip: r.rip, address: 0, error_code: Some(0) }));
        }
        self.syscall_in_ring3 = Some(in_ring3);
        let env = SyscallEnv { mem: &self.mem, space: &self.space, vcpu: &self.vm.vcpu, deadline, timeout_ms };
        let args = [r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9];
        let value = match self.linux.handle(&env, r.rax, args)? {
            Flow::Return(v) => v,
            Flow::Exit(status) => return Ok(Some(status)),
        };
        let sync = self.vm.vcpu.sync_regs_mut();
        sync.regs.rax = value;
        if in_ring3 {
            // PVM: `syscall` did not change privilege; finish it as sysretq would.
            sync.regs.rip = r.rcx;
            sync.regs.rflags = (r.r11 & 0x3C_7FD7) | 0x2;
        }
        // VMX/SVM: the vCPU is in ring 0 at the stub and runs `sysretq` itself.
        self.vm.vcpu.set_sync_dirty_reg(SyncReg::Register);
        Ok(None)
    }

    /// A port exit that did not come from one of our stubs.
    fn forged_port_access(&mut self) -> Error {
        let rip = self.vm.vcpu.sync_regs_mut().regs.rip;
        Error::GuestFault(GuestFault { vector: 13, rip, address: 0, error_code: Some(0) })
    }

    /// Build the fault error for `vector`. With `frame`, the CPU pushed an exception frame on
    /// the ring-0 stack; the faulting rip comes from there.
    fn fault(&mut self, vector: u8, frame: Option<()>) -> Error {
        let sync = self.vm.vcpu.sync_regs_mut();
        let (rsp, rip_now, cr2) = (sync.regs.rsp, sync.regs.rip, sync.sregs.cr2);
        let mut fault = GuestFault { vector, rip: rip_now, address: 0, error_code: None };
        if frame.is_some() {
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

impl Drop for Machine {
    fn drop(&mut self) {
        // SAFETY: both fields are taken exactly once, here, and never touched again.
        let (vm, mem) = unsafe { (ManuallyDrop::take(&mut self.vm), ManuallyDrop::take(&mut self.mem)) };
        crate::reaper::dispose(vm, mem);
    }
}

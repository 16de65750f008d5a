//! [`Machine`]: one guest program in its own VM, and the run loop that turns VM exits into
//! emulated syscalls, typed faults, timeouts and exits.

use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use kvm_bindings::kvm_regs;
use kvm_ioctls::{SyncReg, VcpuExit};

use crate::arch::{
    self,
    exit::{self, ExitRegs, GuestExit, SyscallEntry},
};
use crate::backend;
use crate::elf::Program;
use crate::error::{Error, GuestFault, Result};
use crate::host::{Host, NoHost, SYS_PAUSE};
use crate::interrupt::{Deadline, InterruptHandle};
use crate::kvm;
use crate::layout::{self, AddressSpace, Layout};
use crate::memory::{read_space, SharedSpace};
use crate::memory::{GuestMemory, HugePages, MemoryView};
use crate::paging;
use crate::snapshot::{Image, Snapshot, SnapshotData};
use crate::stack;
use crate::syscalls::files::{FilePolicy, Input, Output};
use crate::syscalls::memfs::{self, MountSpec};
use crate::syscalls::mm::Mappings;
use crate::syscalls::{ExitStatus, Flow, Linux, ProcessConfig, SyscallEnv, UserCpu};
use crate::timer;
use crate::vcpu::{self, Vm, VmPool};

mod call;
mod clock;
mod cpu;
mod libraries;
mod lifecycle;
mod pagetables;
mod run;
mod threads;

pub(crate) use cpu::ThreadState;
use threads::{Exit, TimeSlice};

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
    /// The guest's standard input.
    pub stdin: Input,
    /// Where the guest's stdout goes.
    pub stdout: Output,
    /// Where the guest's stderr goes.
    pub stderr: Output,
    /// Host files and directories the guest may open read-only.
    pub allow_read: Vec<String>,
    /// In-memory mounts (guest path → what is there); `/tmp` is always one (over what
    /// allowRead shows of /tmp) unless named here (see the README, "Writable files").
    pub mounts: Vec<(String, MountSpec)>,
    /// Most bytes the in-memory files may take (file contents, plus 256 per file and the
    /// names): ENOSPC beyond.
    pub fs_limit: u64,
    /// Print every syscall to the host's stderr.
    pub trace: bool,
    /// Absolute path the guest sees as its executable (readlink /proc/self/exe).
    /// Defaults to the canonical path of the file, or `/guest` for in-memory programs.
    pub exe_path: Option<String>,
    /// The guest's working directory; defaults to the host's.
    pub cwd: Option<String>,
    /// Back guest memory with huge pages (hugetlbfs when reserved, else transparent huge
    /// pages). Guest page tables use 2 MiB pages wherever a 2 MiB chunk has uniform rights
    /// either way. Forks of a snapshot use 4 KiB pages (see the README).
    pub hugepages: bool,
    /// Run only on threads restricted by [`crate::seccomp::restrict_current_thread`]: run and
    /// call fail with `InvalidState` anywhere else. Forks and snapshots keep the setting.
    pub seccomp: bool,
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
            mounts: Vec::new(),
            fs_limit: crate::syscalls::memfs::DEFAULT_LIMIT,
            trace: false,
            exe_path: None,
            cwd: None,
            hugepages: false,
            seccomp: false,
        }
    }
}

/// Where a machine is in its life.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Created, never run.
    Ready,
    /// Stopped in `kvmbox_pause()`; `resume` is the user-mode register state that returns 0
    /// from it. Functions may be called; `run` continues from here.
    Paused { resume: kvm_regs },
    /// Exited, faulted, timed out or stopped by a host error: nothing more can run.
    Finished,
}

/// Why the run loop stopped (the non-error ways).
pub(crate) enum Stop {
    Exit(ExitStatus),
    Pause(kvm_regs),
    CallReturn(u64),
    /// Debugging only: a breakpoint (#BP, vector 3) or single-step (#DB, vector 1) trap; the
    /// vCPU is back in user mode at the trapping point.
    Trap(u8),
    /// Debugging only: the debugger asked to stop the guest.
    Interrupted,
}

/// An argument of [`Machine::call`].
pub enum CallArg<'a> {
    /// An integer or pointer, passed as is.
    Int(u64),
    /// Bytes copied into guest memory with a NUL appended; the function gets their address.
    Str(&'a [u8]),
    /// Bytes copied into guest memory (the function gets their address) and copied back
    /// into the slice when the call returns, so the function can fill them in.
    Bytes(&'a mut [u8]),
}

/// How many resets keep the guest's written pages unprotected before the dirty log is
/// cleared to re-learn which pages requests write: often when the set is large (copying it
/// back costs), rarely when it is small (the re-learning request pays a write fault per page).
const RELEARN_EVERY: u32 = 64;
const RELEARN_EVERY_SMALL: u32 = 1024;
const SMALL_DIRTY_SET: usize = 256;

/// Stack the called function keeps for itself below the copied arguments.
const CALL_STACK_RESERVE: u64 = 64 << 10;
/// The System V ABI's red zone below the stack pointer, which the paused code may be using.
const RED_ZONE: u64 = 128;

/// A guest program in its own KVM virtual machine.
pub struct Machine {
    // Both are handed to the reaper on drop (the VM first, then the memory it maps).
    vm: ManuallyDrop<Vm>,
    mem: ManuallyDrop<Arc<GuestMemory>>,
    layout: Layout,
    space: SharedSpace,
    cr3: u64,
    symbols: Arc<HashMap<String, u64>>,
    linux: Linux,
    timeout: Option<Duration>,
    /// Only runs on seccomp-restricted threads (see [`MachineOptions::seccomp`]).
    seccomp: bool,
    state: State,
    /// The snapshot this machine was forked from (or took), which `reset` returns to.
    snapshot: Option<Snapshot>,
    /// Resets since the dirty log was last cleared (see `reset_with`).
    resets_since_clear: u32,
    /// Which huge pages back guest memory.
    huge: HugePages,
    /// Set while a debugger is attached: #BP/#DB traps stop the run loop instead of being
    /// faults, and the flag lets the debugger interrupt a running guest.
    pub(crate) debug_interrupt: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// The vCPU has entered the guest at least once (its synced registers are valid).
    ran: bool,
    /// How this host's KVM runs the syscall entry stub (how syscall exits look).
    syscall_entry: SyscallEntry,
    /// A triple fault may have re-initialized the vCPU (SVM does): `reset` must set the
    /// descriptor tables, control registers and MSRs again.
    system_state_lost: bool,
    /// Stops the guest from any thread (see [`Machine::interrupt_handle`]).
    interrupt: InterruptHandle,
    /// What the last run or call cost, and the last reset.
    stats: RunStats,
    /// Forked or reset since the last run or call: the guest's `kvmbox_reseed`, if any, is
    /// called first.
    reseed_pending: bool,
    /// The guest thread a call runs on (the one that paused): only its return ends the call.
    call_thread: u64,
    /// The vDSO's clock parameters (see `clock`).
    clock: clock::GuestClock,
    /// The last spurious #PF's address and how many came there in a row (see
    /// `spurious_page_fault`).
    last_spurious: (u64, u32),
    /// A dynamic program's `_r_debug` (in its interpreter), where the loaded shared objects are
    /// listed (see `libraries`).
    r_debug: Option<u64>,
    library_symbols: libraries::LibrarySymbols,
}

/// How `reset` restores guest memory. Measured on PVM (docs/performance.md, "Reset strategies"): copying the dirty
/// pages back keeps every page mapped, so the next request runs at full speed; dropping them
/// (or remapping everything) is cheaper for the reset itself but every page touched again
/// faults back in through the shadow MMU (~7 µs each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetStrategy {
    /// Copy each page written since the snapshot back from the snapshot image (default).
    CopyDirty,
    /// MADV_DONTNEED the written pages: they read as the snapshot again, faulting on next use.
    DropDirty,
    /// Replace the whole mapping with a fresh private mapping of the snapshot image.
    RemapAll,
}

/// Host memory accounting of one machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUsage {
    /// Memory only this machine uses: its private copies of pages (or, for a machine that
    /// never took or came from a snapshot, all of its resident guest memory).
    pub private_bytes: u64,
    /// The snapshot image it maps copy-on-write, shared with every other fork of it.
    pub shared_bytes: u64,
    /// The guest memory size (address space).
    pub memory_size: u64,
    /// Bytes of guest memory currently backed by huge pages.
    pub huge_bytes: u64,
    /// Which huge pages the memory was set up with.
    pub hugepages: HugePages,
}

/// Seal a snapshot's memfd against any further change (defence in depth: nothing writes it).
pub(crate) fn seal(memfd: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on our own descriptor; failure (no MFD_ALLOW_SEALING) is harmless.
    unsafe {
        libc::fcntl(memfd.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL)
    };
}

/// What the last run or call cost (see [`Machine::last_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Wall-clock time of the run or call, in nanoseconds.
    pub wall_ns: u64,
    /// VM exits (every return from KVM_RUN: syscalls, faults, the call return, timer kicks).
    pub exits: u64,
    /// Syscalls the guest made (host calls included).
    pub syscalls: u64,
    /// Pages the last reset restored (0 when the machine was not reset since it last ran).
    pub pages_restored: u64,
    /// Runs of the ring-0 page-table commit stub (rights taken away: munmap, mprotect, a
    /// reset undoing mappings), each one VM entry.
    pub page_table_commits: u64,
    /// Where the last reset's time went (zero when the machine was not reset since it last ran).
    pub reset: ResetCost,
}

/// The parts of a reset, in nanoseconds (see [`RunStats::reset`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResetCost {
    /// Reading the pages the guest wrote from KVM (KVM_GET_DIRTY_LOG).
    pub dirty_log_ns: u64,
    /// Putting memory back: the host-written pages, page rights, the pages' contents.
    pub memory_ns: u64,
    /// The vCPU state (XSAVE, registers) and, now and then, re-protecting the written pages.
    pub cpu_ns: u64,
    /// The emulated process (descriptors, threads, in-memory files, timers).
    pub process_ns: u64,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// exit/exit_group with this status.
    Exited(i32),
    /// The guest killed itself with this signal (abort() → SIGABRT).
    Signaled(i32),
    /// The guest called `kvmbox_pause()`: it is initialized and ready for [`Machine::call`];
    /// the next run continues after the pause.
    Paused,
}

impl Machine {
    /// Load the static executable at `path`.
    pub fn from_file(path: impl AsRef<Path>, mut opts: MachineOptions) -> Result<Machine> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::File(crate::error::FileError::of("read", path, &e)))?;
        if opts.args.is_empty() {
            opts.args.push(path.to_string_lossy().into_owned());
        }
        if opts.exe_path.is_none() {
            opts.exe_path = Some(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()).to_string_lossy().into_owned());
        }
        Self::from_bytes(bytes, opts)
    }

    /// Load an executable from memory. A dynamic one's interpreter (`ld.so`) is read through
    /// `allow_read`, like every file the guest opens.
    pub fn from_bytes(bytes: Vec<u8>, mut opts: MachineOptions) -> Result<Machine> {
        // Fail fast and clearly without KVM, before any parsing work.
        kvm::kvm()?;
        let syscall_entry = backend::syscall_entry()?;
        let memory = layout::round_memory(opts.memory).map_err(Error::InvalidArgument)?;
        let program = Program::parse(bytes)?;
        let layout = Layout::new(memory);
        let host_cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let policy = Arc::new(FilePolicy::new(&opts.allow_read, &host_cwd)?);
        let interp = match &program.interp {
            Some(path) => Some(Program::parse_interpreter(read_interpreter(&policy, path)?, layout.heap_limit())?),
            None => None,
        };
        let mut segments = program.regions(&layout)?;
        if let Some(interp) = &interp {
            let theirs = interp.regions(&layout)?;
            if segments.iter().any(|a| theirs.iter().any(|b| a.start < b.end && b.start < a.end)) {
                return Err(Error::Elf("the program and its interpreter overlap; raise `memory`".into()));
            }
            segments.extend(theirs);
            segments.sort_by_key(|r| r.start);
        }
        let mm = Mappings::new(&layout, &segments, program.image_end);
        let space = AddressSpace::new(layout.regions(&mm.regions()));

        let exe_path = opts.exe_path.take().unwrap_or_else(|| "/guest".into());
        if !exe_path.starts_with('/') {
            return Err(Error::InvalidArgument(format!("exe_path must be absolute, got {exe_path:?}")));
        }
        if opts.args.is_empty() {
            opts.args.push(exe_path.clone());
        }
        let fs = memfs::build(&opts.mounts, opts.fs_limit, &host_cwd)?;
        if opts.seccomp && !fs.writable_mounts().is_empty() {
            return Err(Error::InvalidArgument("a writable host mount needs seccomp off (the filter refuses host writes)".into()));
        }
        let cwd = opts.cwd.take().map(PathBuf::from).unwrap_or(host_cwd);

        let (mem, huge) = if opts.hugepages { GuestMemory::new_huge(memory)? } else { (GuestMemory::new(memory)?, HugePages::None) };
        arch::write_system_pages(&mem, &layout)?;
        let cr3 = paging::build(&mem, &layout, space.regions())?;
        program.load(&mem)?;
        if let Some(interp) = &interp {
            interp.load(&mem)?;
        }
        let cpuid = kvm::supported_cpuid()?;
        let facts = stack::AuxFacts {
            // SAFETY: getuid/getgid cannot fail.
            uid: unsafe { libc::getuid() },
            gid: unsafe { libc::getgid() },
            hwcap: arch::hwcap_from_cpuid(cpuid),
            hwcap2: if arch::has_fsgsbase(cpuid) { 1 << 1 } else { 0 }, // HWCAP2_FSGSBASE: CR4.FSGSBASE is set
            execfn: opts.args[0].clone(),
            interp_base: interp.as_ref().map_or(0, |i| i.base),
            vdso: layout.sys.vdso,
        };
        let stack_limit = layout.stack_bottom + layout.stack_size() / 2;
        let rsp = stack::build(&mem, layout.stack_top, stack_limit, &program, &opts.args, &opts.env, &facts)?;
        // A dynamic program starts in its interpreter, which finds it through the auxv.
        let entry = interp.as_ref().map_or(program.entry, |i| i.entry);
        let vm = vcpu::create(&mem, &layout, cr3, entry, rsp)?;

        let linux = Linux::new(ProcessConfig {
            mm,
            policy,
            stdin: opts.stdin,
            stdout: opts.stdout,
            stderr: opts.stderr,
            exe_path: PathBuf::from(exe_path),
            cwd,
            fs,
            memory,
            stack_size: layout.stack_size(),
            trace: opts.trace,
            xsave_size: arch::xsave_size_from_cpuid(cpuid),
            xfeatures: arch::xcr0_from_cpuid(cpuid),
        });
        let clock = clock::GuestClock::new(&vm.vcpu);
        Ok(Machine {
            vm: ManuallyDrop::new(vm),
            mem: ManuallyDrop::new(Arc::new(mem)),
            layout,
            space: Arc::new(std::sync::RwLock::new(space)),
            cr3,
            symbols: Arc::clone(&program.symbols),
            linux,
            timeout: opts.timeout,
            seccomp: opts.seccomp,
            state: State::Ready,
            snapshot: None,
            resets_since_clear: 0,
            huge,
            debug_interrupt: None,
            ran: false,
            syscall_entry,
            system_state_lost: false,
            interrupt: InterruptHandle::default(),
            stats: RunStats::default(),
            reseed_pending: false,
            call_thread: 0,
            clock,
            last_spurious: (0, 0),
            r_debug: interp.as_ref().and_then(|i| i.symbols.get("_r_debug").copied()),
            library_symbols: Default::default(),
        })
    }

    /// Address of a symbol: from the program's own symbol tables, else (a dynamic program) from
    /// the shared objects it has loaded, in load order.
    pub fn symbol(&self, name: &str) -> Option<u64> {
        self.symbols.get(name).copied().or_else(|| self.library_symbol(name))
    }

    /// The program's own symbol table (name → address), shareable beyond the machine's life.
    pub fn symbols(&self) -> Arc<HashMap<String, u64>> {
        Arc::clone(&self.symbols)
    }

    /// A handle that stops this machine's guest from any thread (see [`InterruptHandle`]); it
    /// stays valid across resets and serves every later run and call of this machine.
    pub fn interrupt_handle(&self) -> InterruptHandle {
        self.interrupt.clone()
    }

    /// What the last run or call cost: wall time, VM exits, syscalls; and how many pages the
    /// reset before it restored.
    pub fn last_stats(&self) -> RunStats {
        self.stats
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

    /// Captured stderr so far (emptied by the call).
    pub fn take_stderr(&mut self) -> Vec<u8> {
        self.linux.stderr.take_captured()
    }

    /// True if captured output hit its limit and some was dropped.
    pub fn output_truncated(&self) -> (bool, bool) {
        (self.linux.stdout.truncated(), self.linux.stderr.truncated())
    }

    /// A checked view of guest memory that stays valid as long as it is held.
    pub fn memory(&self) -> MemoryView {
        MemoryView::new(Arc::clone(&self.mem), Arc::clone(&self.space))
    }

    /// True while the guest is stopped in `kvmbox_pause()` (functions may be called).
    pub fn is_paused(&self) -> bool {
        matches!(self.state, State::Paused { .. })
    }

    /// True once the guest exited, faulted, timed out or was stopped by a host error.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Finished)
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        // SAFETY: both fields are taken exactly once, here, and never touched again.
        let (vm, mem) = unsafe { (ManuallyDrop::take(&mut self.vm), ManuallyDrop::take(&mut self.mem)) };
        crate::reaper::dispose(vm, mem);
    }
}

/// Wait for gdb to connect.
fn accept_gdb(listener: &std::net::TcpListener) -> Result<std::net::TcpStream> {
    let (conn, _) = listener.accept().map_err(|e| Error::InvalidArgument(format!("waiting for gdb: {e}")))?;
    Ok(conn)
}

/// The #GP a forged exit (see [`exit::GuestExit::GeneralProtection`]) is reported as.
fn general_protection(rip: u64) -> Error {
    Error::GuestFault(GuestFault { vector: 13, rip, address: 0, error_code: Some(0) })
}

fn outcome(status: ExitStatus) -> RunOutcome {
    match status {
        ExitStatus::Code(c) => RunOutcome::Exited(c),
        ExitStatus::Signal(s) => RunOutcome::Signaled(s),
    }
}

/// The largest interpreter kvmbox reads (glibc's ld.so is about 200 KiB).
const MAX_INTERPRETER: u64 = 64 << 20;

/// Read the interpreter a dynamic executable names, as the guest would open it: through the
/// file policy (so it must be allowed, e.g. with `system_libraries()`), symlinks followed.
fn read_interpreter(policy: &FilePolicy, path: &str) -> Result<Vec<u8>> {
    policy.read_file(Path::new(path), MAX_INTERPRETER).map_err(|e| {
        Error::Elf(format!(
            "this dynamic executable needs its interpreter {path}, which cannot be read ({}) (allow it with allowRead, e.g. systemLibraries())",
            crate::syscalls::errno_name(e)
        ))
    })
}

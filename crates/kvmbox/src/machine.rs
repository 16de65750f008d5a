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
use crate::memory::{GuestMemory, HugePages, MemoryView};
use crate::paging;
use crate::snapshot::{Image, Snapshot, SnapshotData};
use crate::stack;
use crate::syscalls::files::{FilePolicy, Input, Output};
use crate::syscalls::mm::Mappings;
use crate::syscalls::{ExitStatus, Flow, Linux, ProcessConfig, SyscallEnv, UserCpu};
use crate::timer;
use crate::vcpu::{self, Vm, VmPool};

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
    space: Arc<AddressSpace>,
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

    /// Load a static executable from memory.
    pub fn from_bytes(bytes: Vec<u8>, mut opts: MachineOptions) -> Result<Machine> {
        // Fail fast and clearly without KVM, before any parsing work.
        kvm::kvm()?;
        let syscall_entry = backend::syscall_entry()?;
        let memory = layout::round_memory(opts.memory).map_err(Error::InvalidArgument)?;
        let program = Program::parse(bytes)?;
        let layout = Layout::new(memory);
        let segments = program.regions(&layout)?;
        let space = AddressSpace::new(layout.regions(&segments));

        let host_cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let policy = Arc::new(FilePolicy::new(&opts.allow_read, &host_cwd)?);
        let exe_path = opts.exe_path.take().unwrap_or_else(|| "/guest".into());
        if !exe_path.starts_with('/') {
            return Err(Error::InvalidArgument(format!("exe_path must be absolute, got {exe_path:?}")));
        }
        if opts.args.is_empty() {
            opts.args.push(exe_path.clone());
        }
        let cwd = opts.cwd.take().map(PathBuf::from).unwrap_or(host_cwd);

        let (mem, huge) = if opts.hugepages { GuestMemory::new_huge(memory)? } else { (GuestMemory::new(memory)?, HugePages::None) };
        arch::write_system_pages(&mem, &layout)?;
        let cr3 = paging::build(&mem, &layout, space.regions())?;
        program.load(&mem)?;
        let cpuid = kvm::supported_cpuid()?;
        let facts = stack::AuxFacts {
            // SAFETY: getuid/getgid cannot fail.
            uid: unsafe { libc::getuid() },
            gid: unsafe { libc::getgid() },
            hwcap: arch::hwcap_from_cpuid(cpuid),
            hwcap2: if arch::has_fsgsbase(cpuid) { 1 << 1 } else { 0 }, // HWCAP2_FSGSBASE: CR4.FSGSBASE is set
            execfn: opts.args[0].clone(),
        };
        let stack_limit = layout.stack_bottom + layout.stack_size() / 2;
        let rsp = stack::build(&mem, layout.stack_top, stack_limit, &program, &opts.args, &opts.env, &facts)?;
        let vm = vcpu::create(&mem, &layout, cr3, program.entry, rsp)?;

        let mm = Mappings::new(program.image_end, layout.heap_limit());
        let linux = Linux::new(ProcessConfig {
            mm,
            policy,
            stdin: opts.stdin,
            stdout: opts.stdout,
            stderr: opts.stderr,
            exe_path: PathBuf::from(exe_path),
            cwd,
            memory,
            stack_size: layout.stack_size(),
            trace: opts.trace,
        });
        Ok(Machine {
            vm: ManuallyDrop::new(vm),
            mem: ManuallyDrop::new(Arc::new(mem)),
            layout,
            space: Arc::new(space),
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
        })
    }

    /// Address of a symbol from the program's ELF symbol table.
    pub fn symbol(&self, name: &str) -> Option<u64> {
        self.symbols.get(name).copied()
    }

    /// The program's symbol table (name → address), shareable beyond the machine's life.
    pub fn symbols(&self) -> Arc<HashMap<String, u64>> {
        Arc::clone(&self.symbols)
    }

    /// Take a snapshot of the paused guest: memory, CPU state (registers, FPU/SSE/AVX, FS/GS
    /// base) and the emulated process (heap and mmap allocator, descriptors, signal
    /// dispositions). The machine keeps running on a private copy-on-write copy of its memory,
    /// as if it were a fork of the new snapshot (so `reset` returns it there).
    pub fn snapshot(&mut self) -> Result<Snapshot> {
        let State::Paused { resume } = self.state else {
            return Err(Error::InvalidState("snapshot() needs a paused guest: run() until the program calls kvmbox_pause()".into()));
        };
        let cpu = self.vm.capture(&resume)?;
        let (memfd, extents) = self.mem.freeze()?;
        seal(&memfd);
        // The shadow pages KVM built over the shared mapping are dropped by the MMU notifier;
        // from now on track the guest's writes so resets know what to copy back.
        self.vm.attach(&self.mem, true)?;
        self.vm.reset_dirty_log(self.layout.memory)?;
        self.mem.clear_host_dirty();
        let linux = self.linux.capture();
        let proto = self.linux.fork_from(&linux)?;
        let snap = Snapshot {
            data: Arc::new(SnapshotData {
                image: Image::new(memfd, extents, self.layout.memory)?,
                layout: self.layout.clone(),
                space: Arc::clone(&self.space),
                cr3: self.cr3,
                symbols: Arc::clone(&self.symbols),
                cpu,
                linux,
                proto,
                timeout: self.timeout,
                seccomp: self.seccomp,
            }),
        };
        self.snapshot = Some(snap.clone());
        Ok(snap)
    }

    /// A new machine that shares `snap`'s memory copy-on-write, paused where the snapshot was
    /// taken. Its VM comes from the background pool when one is ready.
    pub fn fork(snap: &Snapshot) -> Result<Machine> {
        let d = &snap.data;
        let syscall_entry = backend::syscall_entry()?;
        let mut vm = VmPool::global().take()?;
        let mem = GuestMemory::private_over(&d.image.memfd, d.layout.memory, &d.image.extents)?;
        vm.attach(&mem, true)?;
        vm.set_system_state(&d.layout, d.cr3)?;
        vm.restore(&d.cpu)?;
        let linux = d.proto.fork_from(&d.linux)?;
        let mut machine = Machine {
            vm: ManuallyDrop::new(vm),
            mem: ManuallyDrop::new(Arc::new(mem)),
            layout: d.layout.clone(),
            space: Arc::clone(&d.space),
            cr3: d.cr3,
            symbols: Arc::clone(&d.symbols),
            linux,
            timeout: d.timeout,
            seccomp: d.seccomp,
            state: State::Paused { resume: d.cpu.regs },
            snapshot: Some(snap.clone()),
            resets_since_clear: 0,
            huge: HugePages::None,
            debug_interrupt: None,
            ran: true,
            syscall_entry,
            system_state_lost: false,
            interrupt: InterruptHandle::default(),
            stats: RunStats::default(),
            reseed_pending: false,
        };
        machine.reseed_pending = true;
        Ok(machine)
    }

    /// A handle that stops this machine's guest from any thread (see [`InterruptHandle`]); it
    /// stays valid across resets and serves every later run and call of this machine.
    pub fn interrupt_handle(&self) -> InterruptHandle {
        self.interrupt.clone()
    }

    /// Per-request entropy: if the guest exports `kvmbox_reseed(bytes, len)` (kvmbox.h), call it
    /// with fresh host random bytes before the first run or call after a fork or reset (which
    /// otherwise all start from the same PRNG state) — on the thread that runs the guest, so a
    /// seccomp machine's hook runs where its guest does. A hook that faults or runs past a
    /// second fails that run or call and finishes the machine, like any failed call.
    fn reseed_if_pending(&mut self) -> Result<()> {
        const BYTES: usize = 32; // KVMBOX_RESEED_BYTES
        if !std::mem::take(&mut self.reseed_pending) {
            return Ok(());
        }
        let Some(hook) = self.symbol("kvmbox_reseed") else { return Ok(()) };
        let mut bytes = [0u8; BYTES];
        crate::syscalls::fill_random(&mut bytes, "kvmbox_reseed")?;
        let mut args = [CallArg::Bytes(&mut bytes), CallArg::Int(BYTES as u64)];
        self.call(hook, &mut args, Some(Duration::from_secs(1)), &mut NoHost)?;
        Ok(())
    }

    /// What the last run or call cost: wall time, VM exits, syscalls; and how many pages the
    /// reset before it restored.
    pub fn last_stats(&self) -> RunStats {
        self.stats
    }

    /// The snapshot `reset` returns to, if any.
    pub fn snapshot_of(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// Return to exactly the state of the snapshot this machine was forked from (or took):
    /// every page written since (by the guest or by the host) is copied back, the CPU state
    /// and the emulated process are restored, and captured output is cleared. Works after a
    /// fault, timeout or exit too. Returns the number of pages restored.
    pub fn reset(&mut self) -> Result<usize> {
        self.reset_with(ResetStrategy::CopyDirty)
    }

    /// `reset` with a chosen way of restoring memory (see [`ResetStrategy`]; the others exist
    /// to be measured against the default).
    pub fn reset_with(&mut self, strategy: ResetStrategy) -> Result<usize> {
        let snap = self
            .snapshot
            .clone()
            .ok_or_else(|| Error::InvalidState("reset() needs a machine forked from a snapshot (or one that took a snapshot)".into()))?;
        let d = &snap.data;
        // Pages the guest wrote (KVM's log) or kvmbox wrote for it (the host log).
        let mut dirty = self.vm.dirty_log(self.layout.memory)?;
        self.mem.take_host_dirty_into(&mut dirty);
        let restored = match strategy {
            ResetStrategy::CopyDirty => self.mem.restore_pages(&dirty, d.image.bytes(), &d.image.data_pages),
            ResetStrategy::DropDirty => self.mem.drop_pages(&dirty),
            ResetStrategy::RemapAll => {
                self.mem.remap_private(&d.image.memfd, &d.image.extents)?;
                dirty.iter().map(|w| w.count_ones() as usize).sum()
            }
        };
        // Pages the guest writes stay writable and in the log (copied back at every reset, no
        // write faults on the request path); now and then the log is cleared, so pages the
        // guest stopped writing drop out of the set.
        self.resets_since_clear += 1;
        let period = if restored <= SMALL_DIRTY_SET { RELEARN_EVERY_SMALL } else { RELEARN_EVERY };
        if self.resets_since_clear >= period || strategy != ResetStrategy::CopyDirty {
            // KVM only re-protects pages its log has dirty; the host-written bits are ignored.
            self.vm.clear_dirty_log(&mut dirty, self.layout.memory)?;
            self.resets_since_clear = 0;
        }
        if self.system_state_lost {
            self.vm.set_system_state(&self.layout, self.cr3)?;
            self.system_state_lost = false;
        }
        self.vm.restore(&d.cpu)?;
        self.linux.restore(&d.linux)?;
        self.state = State::Paused { resume: d.cpu.regs };
        self.stats = RunStats { pages_restored: restored as u64, ..RunStats::default() };
        self.reseed_pending = true;
        Ok(restored)
    }

    /// Reset to `snap`, which need not be the snapshot this machine came from. When its page
    /// tables differ (another program or memory size), the memory slot is re-registered: on
    /// PVM the shadow MMU caches guest page tables and would not see them change otherwise.
    pub fn reset_to(&mut self, snap: &Snapshot) -> Result<usize> {
        if self.snapshot.as_ref().is_some_and(|s| Snapshot::same(s, snap)) {
            return self.reset();
        }
        let d = &snap.data;
        let same_tables = self.layout.memory == d.layout.memory && self.cr3 == d.cr3 && self.space.regions() == d.space.regions();
        if same_tables {
            self.mem.remap_private(&d.image.memfd, &d.image.extents)?;
            // Start the guest-write log afresh for the new image.
            self.vm.reset_dirty_log(self.layout.memory)?;
        } else {
            let mem = Arc::new(GuestMemory::private_over(&d.image.memfd, d.layout.memory, &d.image.extents)?);
            self.vm.reattach(&mem, true)?;
            let old = std::mem::replace(&mut *self.mem, mem);
            drop(old);
        }
        self.vm.set_system_state(&d.layout, d.cr3)?;
        self.system_state_lost = false;
        self.vm.restore(&d.cpu)?;
        self.linux = d.proto.fork_from(&d.linux)?;
        self.layout = d.layout.clone();
        self.space = Arc::clone(&d.space);
        self.cr3 = d.cr3;
        self.symbols = Arc::clone(&d.symbols);
        self.timeout = d.timeout;
        self.seccomp = d.seccomp;
        self.state = State::Paused { resume: d.cpu.regs };
        self.snapshot = Some(snap.clone());
        self.reseed_pending = true;
        Ok(0)
    }

    /// How much host memory this machine uses: pages private to it, and the snapshot image it
    /// shares with other forks.
    pub fn memory_usage(&self) -> MemoryUsage {
        MemoryUsage {
            private_bytes: self.mem.private_pages() * layout::PAGE_SIZE,
            shared_bytes: self.snapshot.as_ref().map(|s| s.resident_bytes()).unwrap_or(0),
            memory_size: self.layout.memory,
            huge_bytes: self.mem.huge_bytes(),
            hugepages: self.huge,
        }
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
    fn run_debugged(&mut self, conn: std::net::TcpStream, timeout: Option<Duration>, host: &mut dyn Host, in_call: bool) -> Result<Stop> {
        match crate::debug::session(self, host, timeout, conn, in_call)? {
            crate::debug::SessionEnd::Stopped(stop) => Ok(stop),
            crate::debug::SessionEnd::Detached => self.run_loop(timeout, host, in_call),
            crate::debug::SessionEnd::Killed => Ok(Stop::Exit(ExitStatus::Signal(libc::SIGKILL))),
        }
    }

    /// A machine created with `seccomp` runs only on a restricted thread.
    fn check_thread(&self) -> Result<()> {
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
        if !self.space.user_executable(addr) {
            return Err(Error::InvalidArgument(format!("{addr:#x} is not in the guest's executable code")));
        }
        let (regs, placed) = self.call_frame(&resume, addr, args)?;
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
        if !self.space.user_accessible(low, top - low, true) {
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

    pub(crate) fn run_loop(&mut self, timeout: Option<Duration>, host: &mut dyn Host, in_call: bool) -> Result<Stop> {
        let deadline = Deadline::after(timeout, self.interrupt.clone());
        let started = std::time::Instant::now();
        self.stats = RunStats { pages_restored: self.stats.pages_restored, ..RunStats::default() };
        let result = self.run_loop_inner(&deadline, host, in_call);
        self.stats.wall_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        result
    }

    fn run_loop_inner(&mut self, deadline: &Deadline, host: &mut dyn Host, in_call: bool) -> Result<Stop> {
        let run_ptr = self.vm.vcpu.get_kvm_run() as *mut kvm_bindings::kvm_run;
        let _armed = timer::arm(run_ptr, deadline.remaining())?;
        let interrupt = self.interrupt.clone();
        let _running = interrupt.enter();
        // An interrupt that came before the run stops it before the guest runs at all.
        deadline.check()?;
        self.ran = true;
        loop {
            let exit = self.vm.vcpu.run();
            self.stats.exits = self.stats.exits.saturating_add(1);
            let port = match exit {
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
                Ok(VcpuExit::Intr) => {
                    deadline.check()?;
                    continue;
                }
                Ok(VcpuExit::Hlt) => return Err(self.fault(13, false)),
                Ok(VcpuExit::IoIn(..)) => return Err(general_protection(self.vm.vcpu.sync_regs_mut().regs.rip)),
                Ok(VcpuExit::InternalError) => return Err(Error::Internal("KVM internal error while running the guest".into())),
                Ok(VcpuExit::FailEntry(reason, _)) => return Err(Error::Internal(format!("VM entry failed (reason {reason:#x})"))),
                Ok(other) => return Err(Error::Internal(format!("unexpected VM exit {other:?}"))),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.vm.vcpu.set_kvm_immediate_exit(0);
                    if self.debug_interrupt.as_ref().is_some_and(|f| f.swap(false, std::sync::atomic::Ordering::SeqCst)) {
                        return Ok(Stop::Interrupted);
                    }
                    deadline.check()?;
                    continue;
                }
                Err(e) if e.errno() == libc::EFAULT || e.errno() == libc::ENOMEM => {
                    return Err(Error::OutOfMemory(format!("the host could not back guest memory: {e}")))
                }
                Err(e) => return Err(Error::kvm("KVM_RUN", e)),
            };
            let sync = self.vm.vcpu.sync_regs_mut();
            let at = ExitRegs::of(&sync.regs, sync.sregs.cs.dpl);
            match exit::decode(port, at, &self.layout.sys, self.syscall_entry) {
                GuestExit::Syscall { user_rip, user_rflags, sysret_in_guest } => {
                    self.stats.syscalls = self.stats.syscalls.saturating_add(1);
                    if let Some(stop) = self.syscall(user_rip, user_rflags, sysret_in_guest, deadline, host, in_call)? {
                        return Ok(stop);
                    }
                }
                GuestExit::CallReturn { value } if in_call => return Ok(Stop::CallReturn(value)),
                GuestExit::Exception(vector) => {
                    if self.debug_interrupt.is_some() && (vector == 1 || vector == 3) {
                        self.return_from_trap()?;
                        return Ok(Stop::Trap(vector));
                    }
                    return Err(self.fault(vector, true));
                }
                // The trampoline reached outside a call: as if the guest jumped there (a call
                // return nobody waits for), #GP at the trampoline.
                GuestExit::CallReturn { .. } => return Err(general_protection(self.layout.sys.call_return)),
                // A port only the stubs may use, a jump into a stub, a syscall returning to a
                // non-canonical address: the #GP it would be on real hardware (or under Linux).
                GuestExit::GeneralProtection { rip } => return Err(general_protection(rip)),
            }
        }
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
        let value = if nr == SYS_PAUSE {
            if !in_call {
                // Where the guest continues: just after its syscall, returning 0.
                let resume = kvm_regs { rax: 0, rip: user_rip, rflags: user_rflags, ..r };
                return Ok(Some(Stop::Pause(resume)));
            }
            crate::syscalls::err(crate::syscalls::errno::EBUSY)
        } else {
            let sregs = &self.vm.vcpu.sync_regs_mut().sregs;
            let cpu =
                UserCpu { regs: kvm_regs { rip: user_rip, rflags: user_rflags, ..r }, fs_base: sregs.fs.base, gs_base: sregs.gs.base };
            let env = SyscallEnv { mem: &self.mem, space: &self.space, deadline, cpu };
            let flow = self.linux.handle(&env, host, nr, args);
            self.apply_cpu_update()?;
            match flow? {
                Flow::Return(v) => v,
                Flow::Exit(status) => return Ok(Some(Stop::Exit(status))),
            }
        };
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
    fn apply_cpu_update(&mut self) -> Result<()> {
        let update = self.linux.take_cpu_update();
        let entries: Vec<kvm_bindings::kvm_msr_entry> = [(arch::MSR_FS_BASE, update.fs_base), (arch::MSR_GS_BASE, update.gs_base)]
            .into_iter()
            .filter_map(|(index, value)| value.map(|data| kvm_bindings::kvm_msr_entry { index, data, ..Default::default() }))
            .collect();
        if entries.is_empty() {
            return Ok(());
        }
        let msrs = kvm_bindings::Msrs::from_entries(&entries).map_err(|e| Error::Internal(format!("MSR list: {e:?}")))?;
        arch::set_msrs(&self.vm.vcpu, &msrs)
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

    /// Run one emulated Linux syscall as if the paused guest had issued it, with a 2 ms
    /// deadline for anything that sleeps; `None` when it ended the process. For fuzzing the
    /// emulation layer (not a stable API).
    #[doc(hidden)]
    pub fn emulate_syscall(&mut self, nr: u64, args: [u64; 6]) -> Result<Option<u64>> {
        let deadline = Deadline::after(Some(Duration::from_millis(2)), self.interrupt.clone());
        let regs = self.regs();
        let (fs_base, gs_base) = self.segment_bases();
        let env = SyscallEnv { mem: &self.mem, space: &self.space, deadline: &deadline, cpu: UserCpu { regs, fs_base, gs_base } };
        let flow = self.linux.handle(&env, &mut crate::host::NoHost, nr, args);
        self.apply_cpu_update()?;
        Ok(match flow? {
            Flow::Return(v) => Some(v),
            Flow::Exit(_) => None,
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
        let b: Vec<u8> = x.region.iter().flat_map(|w| w.to_le_bytes()).collect();
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let mut fpu = kvm_bindings::kvm_fpu {
            fcw: u16_at(0),
            fsw: u16_at(2),
            ftwx: b[4],
            last_opcode: u16_at(6),
            last_ip: u64_at(8),
            last_dp: u64_at(16),
            mxcsr: u32::from_le_bytes(b[24..28].try_into().unwrap()),
            ..Default::default()
        };
        for i in 0..8 {
            fpu.fpr[i].copy_from_slice(&b[32 + 16 * i..48 + 16 * i]);
        }
        for i in 0..16 {
            fpu.xmm[i].copy_from_slice(&b[160 + 16 * i..176 + 16 * i]);
        }
        Ok(fpu)
    }

    /// Write XMM registers and MXCSR back into the XSAVE image.
    pub(crate) fn set_fpu(&self, fpu: &kvm_bindings::kvm_fpu) -> Result<()> {
        let mut x = self.vm.vcpu.get_xsave().map_err(|e| Error::kvm("KVM_GET_XSAVE", e))?;
        let mut b: Vec<u8> = x.region.iter().flat_map(|w| w.to_le_bytes()).collect();
        b[24..28].copy_from_slice(&fpu.mxcsr.to_le_bytes());
        for i in 0..16 {
            b[160 + 16 * i..176 + 16 * i].copy_from_slice(&fpu.xmm[i]);
        }
        for (w, c) in x.region.iter_mut().zip(b.chunks_exact(4)) {
            *w = u32::from_le_bytes(c.try_into().unwrap());
        }
        // SAFETY: a complete kvm_xsave read from this vCPU, with only MXCSR/XMM changed.
        unsafe { self.vm.vcpu.set_xsave(&x) }.map_err(|e| Error::kvm("KVM_SET_XSAVE", e))
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
        self.space.user_accessible(addr, out.len() as u64, false) && self.mem.read(addr, out).is_ok()
    }

    pub(crate) fn debug_write(&self, addr: u64, data: &[u8]) -> bool {
        self.space.user_accessible(addr, data.len() as u64, false) && self.mem.write(addr, data).is_ok()
    }

    /// Build the fault error for `vector`. With `frame`, the CPU pushed an exception frame on
    /// the ring-0 stack; the faulting rip comes from there.
    fn fault(&mut self, vector: u8, frame: bool) -> Error {
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

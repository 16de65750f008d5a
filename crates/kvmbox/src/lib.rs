//! kvmbox: run static x86-64 Linux programs inside KVM with no guest kernel.
//!
//! Every `syscall` the guest makes exits to the host (through a one-instruction stub), where
//! kvmbox emulates Linux. Guest code runs in ring 3 only; page tables are built once.
//!
//! ```no_run
//! use kvmbox::{Machine, MachineOptions, RunOutcome};
//! let mut vm = Machine::from_file("./hello", MachineOptions::default())?;
//! let outcome = vm.run()?;
//! assert_eq!(outcome, RunOutcome::Exited(0));
//! print!("{}", String::from_utf8_lossy(&vm.take_stdout()));
//! # Ok::<(), kvmbox::Error>(())
//! ```

#![warn(missing_docs)]

mod arch;
mod backend;
mod debug;
mod elf;
pub mod error;
pub mod floor;
mod host;
mod interrupt;
mod kvm;
/// The guest address-space layout (exposed for tests and tools; not a stable API).
#[doc(hidden)]
pub mod layout;
mod machine;
mod memory;
mod paging;
mod reaper;
mod snapfile;
mod snapshot;
mod stack;
mod syscalls;
mod timer;
mod vcpu;
mod vdso;

pub use error::{Error, FileError, GuestFault, Result};
pub use interrupt::{Deadline, InterruptHandle};

/// Entry points for fuzzing (not a stable API).
#[doc(hidden)]
pub mod fuzzing;
pub mod seccomp;
pub use backend::{probe, Backend, ProbeReport};
pub use host::{Host, HostCall, HostCallFn, HostCalls, NoHost, Stream, TraceEvent, HOSTCALL_FIRST, HOSTCALL_LAST, SYS_PAUSE};
pub use machine::{
    CallArg, Machine, MachineOptions, MemoryUsage, ResetCost, ResetStrategy, RunOutcome, RunStats, DEFAULT_MEMORY, DEFAULT_OUTPUT_LIMIT,
};
pub use memory::{Efault, HugePages, MemoryView, WeakMemoryView};
pub use snapshot::{LoadOptions, Snapshot};
pub use syscalls::files::{system_libraries, Input, Output};
pub use syscalls::memfs::{MountSpec, DEFAULT_LIMIT as DEFAULT_FS_LIMIT};
pub use vcpu::VmPool;

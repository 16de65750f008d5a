//! The embedder's side of a running guest: host calls (syscall numbers the embedder handles,
//! including overrides of Linux syscalls) and streamed output. The run loop borrows a
//! [`Host`] for the duration of one `run`/`call`, so handlers can be closures over anything
//! the caller has at hand (a JS environment, channels to another thread, …).

use std::collections::HashMap;

use crate::interrupt::Deadline;
use crate::memory::{Efault, UserMemory};

/// First and last syscall number of the embedder's host-call range; kvmbox's own control
/// calls sit above it. Numbers below the range are Linux syscalls.
pub const HOSTCALL_FIRST: u64 = 0x1_0000;
/// Last syscall number of the host-call range.
pub const HOSTCALL_LAST: u64 = 0xF_FFFF;
/// `kvmbox_pause()`: the guest is initialized and ready for calls.
pub const SYS_PAUSE: u64 = 0x10_0000;
/// Made by kvmbox's own call-return trampoline (a function the host called has returned; its
/// value is in rdi). From anywhere else it is an unknown syscall (-ENOSYS).
pub const SYS_CALL_RETURN: u64 = 0x10_0001;

/// Which output stream a chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The guest's file descriptor 1.
    Stdout,
    /// The guest's file descriptor 2.
    Stderr,
}

/// One syscall as `MachineOptions::trace` reports it.
#[derive(Debug, Clone, Copy)]
pub struct TraceEvent<'a> {
    /// The syscall number.
    pub nr: u64,
    /// Its name ("write", "openat", "hostcall", …).
    pub name: &'a str,
    /// rdi, rsi, rdx, r10, r8, r9.
    pub args: [u64; 6],
    /// What it returned, as strace shows it: "0x3", "-ENOENT", "exit Code(0)", "stopped: …".
    pub result: &'a str,
}

/// One syscall the embedder handles, with checked access to the guest's memory.
pub struct HostCall<'a> {
    /// The syscall number (rax).
    pub nr: u64,
    /// The arguments: rdi, rsi, rdx, r10, r8, r9.
    pub args: [u64; 6],
    pub(crate) memory: UserMemory<'a>,
    pub(crate) deadline: &'a Deadline,
}

impl HostCall<'_> {
    /// When the run must stop (its timeout, an interrupt). A handler that waits for something
    /// (e.g. an async handler's result, with [`Deadline::block_on`]) must give up at it; the
    /// run then ends with that timeout or interrupt, not a host-callback error.
    pub fn deadline(&self) -> &Deadline {
        self.deadline
    }

    /// Read `len` bytes of guest memory the guest itself may read.
    pub fn read(&self, addr: u64, len: u64) -> Result<Vec<u8>, Efault> {
        self.memory.read_vec(addr, len)
    }

    /// Write into guest memory the guest itself may write.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<(), Efault> {
        self.memory.write(addr, data)
    }

    /// Read a NUL-terminated string of at most `max` bytes.
    pub fn read_cstring(&self, addr: u64, max: usize) -> Result<Option<Vec<u8>>, Efault> {
        self.memory.read_cstring(addr, max)
    }
}

/// What the embedder provides while a guest runs. Every method has a default, so an
/// implementation only overrides what it uses.
pub trait Host {
    /// Should syscall `nr` go to [`Host::syscall`]? Host-call numbers that return false get
    /// ENOSYS; Linux numbers that return false are emulated by kvmbox.
    fn intercepts(&self, _nr: u64) -> bool {
        false
    }

    /// Handle an intercepted syscall; the value becomes the guest's rax. An error stops the
    /// guest and the run fails with [`crate::Error::HostCallback`].
    fn syscall(&mut self, call: &mut HostCall<'_>) -> Result<u64, String> {
        Err(format!("no handler for syscall {:#x}", call.nr))
    }

    /// A traced syscall (with `MachineOptions::trace`); return true if it was taken care of,
    /// false to have it printed to stderr (the default).
    fn trace(&mut self, _event: &TraceEvent<'_>) -> bool {
        false
    }

    /// A chunk the guest wrote to a stream configured as [`crate::Output::Host`]. An
    /// implementation that waits (backpressure) must give up at `deadline`.
    fn output(&mut self, _stream: Stream, _data: &[u8], _deadline: &Deadline) -> Result<(), String> {
        Ok(())
    }
}

/// A host with no handlers: plain Linux emulation.
pub struct NoHost;
impl Host for NoHost {}

/// Closure-based host calls for Rust embedders.
pub type HostCallFn = Box<dyn FnMut(&mut HostCall<'_>) -> Result<u64, String> + Send>;

/// A [`Host`] built from closures keyed by syscall number.
#[derive(Default)]
pub struct HostCalls {
    handlers: HashMap<u64, HostCallFn>,
}

impl HostCalls {
    /// No handlers yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Handle syscall `nr` with `f` (a host-call number, or a Linux number to override).
    pub fn on(&mut self, nr: u64, f: impl FnMut(&mut HostCall<'_>) -> Result<u64, String> + Send + 'static) -> &mut Self {
        self.handlers.insert(nr, Box::new(f));
        self
    }
}

impl Host for HostCalls {
    fn intercepts(&self, nr: u64) -> bool {
        self.handlers.contains_key(&nr)
    }

    fn syscall(&mut self, call: &mut HostCall<'_>) -> Result<u64, String> {
        match self.handlers.get_mut(&call.nr) {
            Some(f) => f(call),
            None => Err(format!("no handler for syscall {:#x}", call.nr)),
        }
    }
}

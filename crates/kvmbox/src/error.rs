//! The one error type of the core. Every variant maps to a stable `code()` string that the
//! Node binding forwards, so the TypeScript SDK can turn it into a typed error class.

use thiserror::Error;

/// Details of a CPU exception raised by guest code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFault {
    /// x86 exception vector (0 = #DE, 6 = #UD, 13 = #GP, 14 = #PF, …), or 8 for a triple fault.
    pub vector: u8,
    /// Guest instruction pointer of the faulting instruction.
    pub rip: u64,
    /// Faulting linear address (CR2) for page faults; 0 otherwise.
    pub address: u64,
    /// The error code the CPU pushed, where the vector has one.
    pub error_code: Option<u64>,
}

impl GuestFault {
    /// Conventional mnemonic of the vector ("#PF", "#GP", …).
    pub fn name(&self) -> &'static str {
        exception_name(self.vector)
    }

    /// The signal Linux sends a process for this exception (SIGSEGV for #PF and #GP, SIGFPE for
    /// #DE and the floating-point ones, SIGILL for #UD, SIGTRAP for #DB and #BP, SIGBUS for
    /// #AC): what a shell reports (128 + it) and what the debugger shows. The one table for it.
    pub fn signal(&self) -> i32 {
        match self.vector {
            0 | 16 | 19 => libc::SIGFPE,
            6 => libc::SIGILL,
            1 | 3 => libc::SIGTRAP,
            17 => libc::SIGBUS,
            _ => libc::SIGSEGV,
        }
    }
}

/// The mnemonic of an x86 exception vector.
pub fn exception_name(vector: u8) -> &'static str {
    match vector {
        0 => "#DE divide error",
        1 => "#DB debug",
        2 => "NMI",
        3 => "#BP breakpoint",
        4 => "#OF overflow",
        5 => "#BR bound range",
        6 => "#UD invalid opcode",
        7 => "#NM device not available",
        8 => "#DF double fault",
        10 => "#TS invalid TSS",
        11 => "#NP segment not present",
        12 => "#SS stack fault",
        13 => "#GP general protection",
        14 => "#PF page fault",
        16 => "#MF x87 floating point",
        17 => "#AC alignment check",
        18 => "#MC machine check",
        19 => "#XM SIMD floating point",
        20 => "#VE virtualization",
        21 => "#CP control protection",
        _ => "exception",
    }
}

/// A host file kvmbox was asked to read or write (a program, a snapshot file) could not be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// What kvmbox was doing: "read", "write".
    pub op: &'static str,
    /// The file.
    pub path: std::path::PathBuf,
    /// The OS error number (ENOENT, EACCES, …; EIO if the OS gave none).
    pub errno: i32,
}

impl FileError {
    /// The error for `io` while doing `op` on `path`.
    pub fn of(op: &'static str, path: &std::path::Path, io: &std::io::Error) -> FileError {
        FileError { op, path: path.to_path_buf(), errno: io.raw_os_error().unwrap_or(libc::EIO) }
    }
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reason = std::io::Error::from_raw_os_error(self.errno).to_string();
        // "No such file or directory (os error 2)" → without the number (errno has it).
        let reason = reason.split(" (os error").next().unwrap_or(&reason);
        write!(f, "cannot {} {}: {reason}", self.op, self.path.display())
    }
}

/// Everything that can go wrong while creating or running a machine.
#[derive(Debug, Error)]
pub enum Error {
    /// `/dev/kvm` is missing, not accessible, or KVM lacks a capability kvmbox needs.
    #[error("KVM is unavailable: {0}")]
    KvmUnavailable(String),
    /// A host file could not be read or written (missing program, unwritable snapshot path, …).
    #[error("{0}")]
    File(FileError),
    /// The program is not a loadable ELF executable (malformed, wrong class or machine,
    /// segments outside guest memory, dynamic executable, …).
    #[error("invalid ELF: {0}")]
    Elf(String),
    /// The guest raised a CPU exception it cannot handle (null dereference, ud2, divide by zero…).
    #[error("guest fault: {} at rip {:#x}{}", .0.name(), .0.rip,
        if .0.vector == 14 { format!(", address {:#x}", .0.address) } else { String::new() })]
    GuestFault(GuestFault),
    /// The guest ran longer than its timeout and was stopped.
    #[error("guest timed out after {0} ms")]
    Timeout(u64),
    /// The guest was stopped by [`crate::InterruptHandle::interrupt`].
    #[error("the guest was interrupted")]
    Interrupted,
    /// Every guest thread is blocked for ever (futex waits nothing can end): natively the
    /// process would hang.
    #[error("deadlock: {0}")]
    Deadlock(String),
    /// Guest memory is exhausted (or the host could not back it).
    #[error("out of guest memory: {0}")]
    OutOfMemory(String),
    /// The caller passed options kvmbox cannot honour.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A host-side callback (output sink, host call) failed; the guest was stopped.
    #[error("host callback failed: {0}")]
    HostCallback(String),
    /// The guest process ended while the host was calling one of its functions.
    #[error("the guest {} during a call", match .0 {
        crate::RunOutcome::Exited(c) => format!("exited with status {c}"),
        crate::RunOutcome::Signaled(s) => format!("was killed by signal {s}"),
        crate::RunOutcome::Paused => "paused".to_string(),
    })]
    GuestExited(crate::RunOutcome),
    /// The machine is not in a state that allows the operation (e.g. run after exit).
    #[error("invalid machine state: {0}")]
    InvalidState(String),
    /// An unexpected KVM or host failure.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Stable machine-readable code, shared with the TypeScript SDK.
    pub fn code(&self) -> &'static str {
        match self {
            Error::KvmUnavailable(_) => "KVM_UNAVAILABLE",
            Error::Elf(_) => "ELF_ERROR",
            Error::File(_) => "FILE_ERROR",
            Error::GuestFault(_) => "GUEST_FAULT",
            Error::Timeout(_) => "TIMEOUT",
            Error::Interrupted => "INTERRUPTED",
            Error::Deadlock(_) => "DEADLOCK",
            Error::OutOfMemory(_) => "OUT_OF_MEMORY",
            Error::InvalidArgument(_) => "INVALID_ARGUMENT",
            Error::HostCallback(_) => "HOST_CALLBACK_ERROR",
            Error::InvalidState(_) => "INVALID_STATE",
            Error::GuestExited(_) => "GUEST_EXITED",
            Error::Internal(_) => "INTERNAL",
        }
    }

    pub(crate) fn kvm(what: &str, err: impl std::fmt::Display) -> Self {
        Error::Internal(format!("{what}: {err}"))
    }
}

/// Result with kvmbox's [`Error`](enum@Error).
pub type Result<T> = std::result::Result<T, Error>;

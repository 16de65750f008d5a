//! Conversions between the SDK's plain JS values and the core's types.

use std::time::Duration;

use kvmbox::{Error as CoreError, Input, Machine, MachineOptions, Output, RunOutcome};
use napi::bindgen_prelude::*;
use napi_derive::napi;

/// Options as the SDK passes them (already validated and normalised there).
#[napi(object)]
pub struct NativeOptions {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub memory: Option<f64>,
    pub timeout_ms: Option<f64>,
    pub stdin: Option<Buffer>,
    pub stdin_inherit: Option<bool>,
    /// "pipe" | "inherit" | "callback"
    pub stdout: String,
    pub stderr: String,
    pub allow_read: Vec<String>,
    pub mounts: Vec<NativeMount>,
    pub fs_limit: Option<f64>,
    pub trace: Option<bool>,
    pub exe_path: Option<String>,
    pub output_limit: Option<f64>,
    pub hugepages: Option<bool>,
    pub seccomp: Option<bool>,
}

/// One in-memory mount: at guest `path`, over the host directory `host` (read-only
/// underneath), or empty when `host` is not given.
#[napi(object)]
pub struct NativeMount {
    pub path: String,
    pub host: Option<String>,
    /// The host directory is changed for real (opt-in).
    pub writable: Option<bool>,
}

/// The stable code of every error kvmbox throws — the one list the SDK's error classes are keyed
/// by (its `ErrorCode` type is derived from this enum, so a new code does not type-check there
/// until it has a class). `code_of` maps every core error to one (an exhaustive match, so a
/// new core error does not compile here until it has a code).
#[napi(string_enum)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)] // the variant names are the codes JS sees
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    KVM_UNAVAILABLE,
    ELF_ERROR,
    FILE_ERROR,
    GUEST_FAULT,
    TIMEOUT,
    INTERRUPTED,
    DEADLOCK,
    OUT_OF_MEMORY,
    INVALID_ARGUMENT,
    HOST_CALLBACK_ERROR,
    INVALID_STATE,
    GUEST_EXITED,
    INTERNAL,
}

pub(crate) fn code_of(e: &CoreError) -> ErrorCode {
    match e {
        CoreError::KvmUnavailable(_) => ErrorCode::KVM_UNAVAILABLE,
        CoreError::Elf(_) => ErrorCode::ELF_ERROR,
        CoreError::File(_) => ErrorCode::FILE_ERROR,
        CoreError::GuestFault(_) => ErrorCode::GUEST_FAULT,
        CoreError::Timeout(_) => ErrorCode::TIMEOUT,
        CoreError::Interrupted => ErrorCode::INTERRUPTED,
        CoreError::Deadlock(_) => ErrorCode::DEADLOCK,
        CoreError::OutOfMemory(_) => ErrorCode::OUT_OF_MEMORY,
        CoreError::InvalidArgument(_) => ErrorCode::INVALID_ARGUMENT,
        CoreError::HostCallback(_) => ErrorCode::HOST_CALLBACK_ERROR,
        CoreError::InvalidState(_) => ErrorCode::INVALID_STATE,
        CoreError::GuestExited(_) => ErrorCode::GUEST_EXITED,
        CoreError::Internal(_) => ErrorCode::INTERNAL,
    }
}

impl ErrorCode {
    /// The code as JS sees it (the variant's name).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorCode::KVM_UNAVAILABLE => "KVM_UNAVAILABLE",
            ErrorCode::ELF_ERROR => "ELF_ERROR",
            ErrorCode::FILE_ERROR => "FILE_ERROR",
            ErrorCode::GUEST_FAULT => "GUEST_FAULT",
            ErrorCode::TIMEOUT => "TIMEOUT",
            ErrorCode::INTERRUPTED => "INTERRUPTED",
            ErrorCode::DEADLOCK => "DEADLOCK",
            ErrorCode::OUT_OF_MEMORY => "OUT_OF_MEMORY",
            ErrorCode::INVALID_ARGUMENT => "INVALID_ARGUMENT",
            ErrorCode::HOST_CALLBACK_ERROR => "HOST_CALLBACK_ERROR",
            ErrorCode::INVALID_STATE => "INVALID_STATE",
            ErrorCode::GUEST_EXITED => "GUEST_EXITED",
            ErrorCode::INTERNAL => "INTERNAL",
        }
    }
}

/// A structured error record; the SDK maps `code` to an error class.
#[napi(object, object_from_js = false)]
pub struct NativeError {
    pub code: String,
    pub message: String,
    pub vector: Option<u32>,
    pub vector_name: Option<String>,
    pub rip: Option<BigInt>,
    pub address: Option<BigInt>,
    pub error_code: Option<BigInt>,
    pub timeout_ms: Option<f64>,
    /// For GUEST_EXITED: how the guest ended.
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// For FILE_ERROR: the OS error number and the file.
    pub errno: Option<i32>,
    pub path: Option<String>,
}

#[napi(object, object_from_js = false)]
pub struct NativeRunResult {
    /// "exited" | "signaled" | "paused" | "error"
    pub status: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: Buffer,
    pub stderr: Buffer,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub error: Option<NativeError>,
}

pub(crate) fn error_record(e: &CoreError) -> NativeError {
    let mut rec = NativeError {
        code: code_of(e).as_str().into(),
        message: e.to_string(),
        vector: None,
        vector_name: None,
        rip: None,
        address: None,
        error_code: None,
        timeout_ms: None,
        exit_code: None,
        signal: None,
        errno: None,
        path: None,
    };
    match e {
        CoreError::GuestFault(f) => {
            rec.vector = Some(f.vector as u32);
            rec.vector_name = Some(f.name().into());
            rec.rip = Some(BigInt::from(f.rip));
            rec.address = Some(BigInt::from(f.address));
            rec.error_code = f.error_code.map(BigInt::from);
            rec.signal = Some(f.signal());
        }
        CoreError::Timeout(ms) => rec.timeout_ms = Some(*ms as f64),
        CoreError::File(f) => {
            rec.errno = Some(f.errno);
            rec.path = Some(f.path.to_string_lossy().into_owned());
        }
        CoreError::GuestExited(RunOutcome::Exited(c)) => rec.exit_code = Some(*c),
        CoreError::GuestExited(RunOutcome::Signaled(s)) => {
            rec.signal = Some(*s);
            rec.exit_code = Some(128 + *s);
        }
        _ => {}
    }
    rec
}

thread_local! {
    /// The full record of the last error thrown on this JS thread (`takeThrownError`).
    static THROWN: std::cell::RefCell<Option<NativeError>> = const { std::cell::RefCell::new(None) };
}

/// Throw a JS Error whose `code` is the core's stable error code; its details (errno, fault
/// vector, …) wait for the SDK in `takeThrownError()`.
pub(crate) fn throw(e: CoreError) -> Error<String> {
    THROWN.with(|t| *t.borrow_mut() = Some(error_record(&e)));
    Error::new(code_of(&e).as_str().to_string(), e.to_string())
}

/// The details of the last error a synchronous native method threw on this thread, once.
#[napi]
#[cfg_attr(test, allow(dead_code))] // called from JS only
pub fn take_thrown_error() -> Option<NativeError> {
    THROWN.with(|t| t.borrow_mut().take())
}

fn output_mode(mode: &str, fd: i32, limit: usize) -> std::result::Result<Output, Error<String>> {
    match mode {
        "pipe" => Ok(Output::capture(limit)),
        "callback" => Ok(Output::Host),
        "inherit" => Ok(Output::Inherit(fd)),
        other => Err(Error::new("INVALID_ARGUMENT".into(), format!("unknown output mode {other:?}"))),
    }
}

pub(crate) fn core_options(o: NativeOptions) -> std::result::Result<MachineOptions, Error<String>> {
    let limit = match o.output_limit {
        Some(l) => usize::try_from(byte_count("outputLimit", l)?).unwrap_or(usize::MAX),
        None => kvmbox::DEFAULT_OUTPUT_LIMIT,
    };
    let stdin = if o.stdin_inherit.unwrap_or(false) {
        Input::Inherit
    } else {
        match o.stdin {
            Some(b) => Input::Bytes { data: b.to_vec(), pos: 0 },
            None => Input::Empty,
        }
    };
    Ok(MachineOptions {
        args: o.args,
        env: o.env,
        memory: o.memory.map(|m| byte_count("memory", m)).transpose()?.unwrap_or(kvmbox::DEFAULT_MEMORY),
        timeout: timeout_of(o.timeout_ms)?,
        stdin,
        stdout: output_mode(&o.stdout, 1, limit)?,
        stderr: output_mode(&o.stderr, 2, limit)?,
        allow_read: o.allow_read,
        mounts: o
            .mounts
            .into_iter()
            .map(|m| {
                let spec = match (m.host, m.writable.unwrap_or(false)) {
                    (Some(h), true) => kvmbox::MountSpec::HostWritable(h.into()),
                    (Some(h), false) => kvmbox::MountSpec::Host(h.into()),
                    (None, _) => kvmbox::MountSpec::Memory,
                };
                (m.path, spec)
            })
            .collect(),
        fs_limit: o.fs_limit.map(|l| byte_count("fsLimit", l)).transpose()?.unwrap_or(kvmbox::DEFAULT_FS_LIMIT),
        trace: o.trace.unwrap_or(false),
        exe_path: o.exe_path,
        cwd: None,
        hugepages: o.hugepages.unwrap_or(false),
        seccomp: o.seccomp.unwrap_or(false),
    })
}

/// A timeout in milliseconds as JS gives it: not given or 0 = none; finite and positive = that
/// long (a value too large for any deadline simply never expires); anything else (negative,
/// NaN, infinite) is refused — never a panic.
pub(crate) fn timeout_of(ms: Option<f64>) -> std::result::Result<Option<Duration>, Error<String>> {
    match ms {
        None => Ok(None),
        Some(0.0) => Ok(None),
        Some(t) if t.is_finite() && t > 0.0 => Ok(Some(Duration::try_from_secs_f64(t / 1000.0).unwrap_or(Duration::MAX))),
        Some(t) => {
            Err(Error::new("INVALID_ARGUMENT".into(), format!("a timeout must be a non-negative finite number of milliseconds, got {t}")))
        }
    }
}

/// A per-operation timeout as the SDK passes it, with one meaning for run, call and their
/// async forms: not given = the machine's own timeout, 0 = none, else that many milliseconds.
#[derive(Clone, Copy)]
pub(crate) struct RequestedTimeout(Option<Option<Duration>>);

impl RequestedTimeout {
    pub(crate) fn from_ms(ms: Option<f64>) -> std::result::Result<Self, Error<String>> {
        Ok(Self(match ms {
            None => None,
            Some(t) => Some(timeout_of(Some(t))?),
        }))
    }

    pub(crate) fn resolve(self, machine: &kvmbox::Machine) -> Option<Duration> {
        self.0.unwrap_or_else(|| machine.default_timeout())
    }
}

/// A byte count from JS: a non-negative safe integer.
fn byte_count(name: &str, v: f64) -> std::result::Result<u64, Error<String>> {
    if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= 9007199254740991.0 {
        Ok(v as u64)
    } else {
        Err(Error::new("INVALID_ARGUMENT".into(), format!("{name} must be a non-negative integer number of bytes, got {v}")))
    }
}

/// A call argument as the SDK normalises it.
pub(crate) type JsCallArg = Either4<f64, BigInt, String, Buffer>;

pub(crate) fn u64_of_bigint(b: &BigInt) -> Option<u64> {
    // Accept -2^63 ..= 2^64-1: negative values become their two's complement.
    let significant = b.words.iter().rposition(|&w| w != 0).map_or(0, |i| i + 1);
    if significant > 1 {
        return None;
    }
    let magnitude = b.words.first().copied().unwrap_or(0);
    match b.sign_bit {
        false => Some(magnitude),
        true if magnitude <= 1 << 63 => Some(magnitude.wrapping_neg()),
        true => None,
    }
}

pub(crate) fn u64_of_addr(a: &Either<f64, BigInt>) -> Option<u64> {
    match a {
        Either::A(n) if *n >= 0.0 && n.fract() == 0.0 && *n <= 9007199254740991.0 => Some(*n as u64),
        Either::A(_) => None,
        Either::B(b) => u64_of_bigint(b),
    }
}

/// The SDK's view of how a run ended (output included).
pub(crate) fn run_result(machine: &mut Machine, outcome: kvmbox::Result<RunOutcome>) -> NativeRunResult {
    let (stdout_truncated, stderr_truncated) = machine.output_truncated();
    let mut result = NativeRunResult {
        status: String::new(),
        exit_code: None,
        signal: None,
        stdout: Buffer::from(machine.take_stdout()),
        stderr: Buffer::from(machine.take_stderr()),
        stdout_truncated,
        stderr_truncated,
        error: None,
    };
    match outcome {
        Ok(RunOutcome::Exited(code)) => {
            result.status = "exited".into();
            result.exit_code = Some(code);
        }
        Ok(RunOutcome::Signaled(sig)) => {
            result.status = "signaled".into();
            result.signal = Some(sig);
            result.exit_code = Some(128 + sig);
        }
        Ok(RunOutcome::Paused) => result.status = "paused".into(),
        Err(e) => {
            result.status = "error".into();
            result.error = Some(error_record(&e));
        }
    }
    result
}

/// The result of a run that could not produce one (the core panicked).
pub(crate) fn failed_run(e: &CoreError) -> NativeRunResult {
    NativeRunResult {
        status: "error".into(),
        exit_code: None,
        signal: None,
        stdout: Buffer::from(Vec::new()),
        stderr: Buffer::from(Vec::new()),
        stdout_truncated: false,
        stderr_truncated: false,
        error: Some(error_record(e)),
    }
}

/// What a caught panic said.
pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

/// Run `f` so that a panic inside it (a bug in kvmbox, never the guest's doing) reaches JS as
/// an INTERNAL error instead of aborting Node.
pub(crate) fn no_panic<T>(f: impl FnOnce() -> std::result::Result<T, Error<String>>) -> std::result::Result<T, Error<String>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|p| Err(Error::new("INTERNAL".to_string(), format!("internal error: kvmbox panicked: {}", panic_message(&p)))))
}

/// Run core work off the JS thread: its error, or a panic, comes back as the record the SDK
/// turns into a typed error.
pub(crate) fn guarded<T>(f: impl FnOnce() -> kvmbox::Result<T>) -> std::result::Result<T, Box<NativeError>> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Box::new(error_record(&e))),
        Err(p) => Err(Box::new(error_record(&CoreError::Internal(format!("kvmbox panicked: {}", panic_message(&p)))))),
    }
}

/// rax as the SDK wants it: a Number, or a BigInt when asked (both signed).
pub(crate) fn call_value(v: u64, as_bigint: bool) -> Either<f64, BigInt> {
    if as_bigint {
        Either::B(BigInt::from(v as i64))
    } else {
        Either::A(v as i64 as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_the_cores_and_the_variant_names() {
        let errors = [
            CoreError::KvmUnavailable(String::new()),
            CoreError::Elf(String::new()),
            CoreError::File(kvmbox::FileError { op: "read", path: "/x".into(), errno: 2 }),
            CoreError::GuestFault(kvmbox::GuestFault { vector: 14, rip: 0, address: 0, error_code: None }),
            CoreError::Timeout(1),
            CoreError::Interrupted,
            CoreError::Deadlock(String::new()),
            CoreError::OutOfMemory(String::new()),
            CoreError::InvalidArgument(String::new()),
            CoreError::HostCallback(String::new()),
            CoreError::InvalidState(String::new()),
            CoreError::GuestExited(kvmbox::RunOutcome::Exited(0)),
            CoreError::Internal(String::new()),
        ];
        for e in &errors {
            let code = code_of(e);
            assert_eq!(code.as_str(), e.code(), "the core's code");
            assert_eq!(code.as_str(), format!("{code:?}"), "the name JS sees");
        }
    }
}

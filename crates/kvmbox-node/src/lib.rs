//! Node binding for kvmbox: type conversion and nothing else. The TypeScript SDK (src/) wraps
//! these raw classes in the public API and turns error records into typed error classes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use kvmbox::{CallArg, Error as CoreError, Host, HostCall, Input, Machine, MachineOptions, MemoryView, Output, RunOutcome, Stream, WeakMemoryView};
use napi::bindgen_prelude::*;
use napi_derive::napi;

/// Result of the KVM probe.
#[napi(object)]
pub struct ProbeResult {
    pub available: bool,
    /// "pvm", "vmx", "svm" or "unknown": the kernel module serving /dev/kvm.
    pub backend: String,
    /// Why KVM is unusable, if it is.
    pub error: Option<String>,
    /// Observed from a real syscall exit: true where `syscall` stays in ring 3 (PVM).
    pub syscall_in_ring3: Option<bool>,
}

#[napi]
pub fn probe() -> ProbeResult {
    let report = kvmbox::probe();
    let syscall_in_ring3 = if report.available { kvmbox::floor::syscall_exits_in_ring3().ok() } else { None };
    ProbeResult { available: report.available, backend: report.backend.name().into(), error: report.error, syscall_in_ring3 }
}

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
    pub trace: Option<bool>,
    pub exe_path: Option<String>,
    pub output_limit: Option<f64>,
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

fn error_record(e: &CoreError) -> NativeError {
    let mut rec = NativeError {
        code: e.code().into(),
        message: e.to_string(),
        vector: None,
        vector_name: None,
        rip: None,
        address: None,
        error_code: None,
        timeout_ms: None,
        exit_code: None,
        signal: None,
    };
    match e {
        CoreError::GuestFault(f) => {
            rec.vector = Some(f.vector as u32);
            rec.vector_name = Some(f.name().into());
            rec.rip = Some(BigInt::from(f.rip));
            rec.address = Some(BigInt::from(f.address));
            rec.error_code = f.error_code.map(BigInt::from);
        }
        CoreError::Timeout(ms) => rec.timeout_ms = Some(*ms as f64),
        CoreError::GuestExited(RunOutcome::Exited(c)) => rec.exit_code = Some(*c),
        CoreError::GuestExited(RunOutcome::Signaled(s)) => {
            rec.signal = Some(*s);
            rec.exit_code = Some(128 + *s);
        }
        _ => {}
    }
    rec
}

/// Throw a JS Error whose `code` is the core's stable error code.
fn throw(e: CoreError) -> Error<String> {
    Error::new(e.code().to_string(), e.to_string())
}

fn output_mode(mode: &str, fd: i32, limit: usize) -> std::result::Result<Output, Error<String>> {
    match mode {
        "pipe" => Ok(Output::capture(limit)),
        "callback" => Ok(Output::Host),
        "inherit" => Ok(Output::Inherit(fd)),
        other => Err(Error::new("INVALID_ARGUMENT".into(), format!("unknown output mode {other:?}"))),
    }
}

fn core_options(o: NativeOptions) -> std::result::Result<MachineOptions, Error<String>> {
    let limit = o.output_limit.map(|l| l as usize).unwrap_or(kvmbox::DEFAULT_OUTPUT_LIMIT);
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
        memory: o.memory.map(|m| m as u64).unwrap_or(kvmbox::DEFAULT_MEMORY),
        timeout: o.timeout_ms.filter(|&t| t > 0.0).map(|t| Duration::from_secs_f64(t / 1000.0)),
        stdin,
        stdout: output_mode(&o.stdout, 1, limit)?,
        stderr: output_mode(&o.stderr, 2, limit)?,
        allow_read: o.allow_read,
        trace: o.trace.unwrap_or(false),
        exe_path: o.exe_path,
        cwd: None,
    })
}

fn timeout_of(ms: Option<f64>) -> Option<Duration> {
    ms.filter(|&t| t > 0.0).map(|t| Duration::from_secs_f64(t / 1000.0))
}

type ChunkCallback<'a> = Function<'a, Buffer, ()>;
/// `(nr) => status`: the SDK's dispatcher reads the six arguments from the shared register
/// array (slots 0–5), runs the handler and leaves rax in slot 6; status 0 = done, else the
/// handler threw (the SDK keeps the thrown value).
type SyscallDispatch<'a> = Function<'a, u32, i32>;

/// The SDK's callbacks, registered once per machine (persistent references) so that a run or
/// call pays for them only when the guest actually writes output or makes a host call.
#[derive(Default)]
struct Hooks {
    on_stdout: Option<FunctionRef<Buffer, ()>>,
    on_stderr: Option<FunctionRef<Buffer, ()>>,
    dispatch: Option<FunctionRef<u32, i32>>,
    /// Shared with the SDK: slots 0–5 the host call's arguments, slot 6 its result.
    regs: Option<BigUint64Array>,
}

/// The JS side of one synchronous run or call.
struct JsHost<'a> {
    env: &'a Env,
    hooks: &'a mut Hooks,
    intercepted: &'a HashSet<u64>,
    /// A callback failed (the SDK knows what it threw).
    callback_failed: bool,
}

impl JsHost<'_> {
    fn fail(&mut self, e: Error) -> String {
        self.callback_failed = true;
        e.reason.clone()
    }
}

impl Host for JsHost<'_> {
    fn intercepts(&self, nr: u64) -> bool {
        self.hooks.dispatch.is_some() && self.intercepted.contains(&nr)
    }

    fn syscall(&mut self, call: &mut HostCall<'_>) -> std::result::Result<u64, String> {
        let env = self.env;
        let (Some(dispatch), Some(regs)) = (&self.hooks.dispatch, self.hooks.regs.as_mut()) else {
            return Err("no host-call dispatcher".into());
        };
        // SAFETY: the typed array is referenced by `Hooks` (so alive and attached); only the
        // SDK's dispatcher touches its elements, and not concurrently with this thread.
        let regs = unsafe { regs.as_mut() };
        if regs.len() < 7 {
            return Err("host-call register array too small".into());
        }
        regs[..6].copy_from_slice(&call.args);
        match dispatch.borrow_back(env).and_then(|f| f.call(call.nr as u32)) {
            Ok(0) => Ok(regs[6]),
            Ok(_) => Err(format!("the handler for syscall {:#x} threw", call.nr)),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn output(&mut self, stream: Stream, data: &[u8]) -> std::result::Result<(), String> {
        let cb = match stream {
            Stream::Stdout => &self.hooks.on_stdout,
            Stream::Stderr => &self.hooks.on_stderr,
        };
        match cb {
            Some(cb) => match cb.borrow_back(self.env).and_then(|f| f.call(Buffer::from(data))) {
                Ok(()) => Ok(()),
                Err(e) => Err(self.fail(e)),
            },
            None => Ok(()),
        }
    }
}

/// A call argument as the SDK normalises it.
type JsCallArg = Either4<f64, BigInt, String, Buffer>;

fn u64_of_bigint(b: &BigInt) -> Option<u64> {
    let (signed, value, lossless) = b.get_u64();
    match (signed, lossless) {
        (false, true) => Some(value),
        (true, true) if value <= 1 << 63 => Some(value.wrapping_neg()),
        _ => None,
    }
}

fn u64_of_addr(a: &Either<f64, BigInt>) -> Option<u64> {
    match a {
        Either::A(n) if *n >= 0.0 && n.fract() == 0.0 && *n <= 9007199254740991.0 => Some(*n as u64),
        Either::A(_) => None,
        Either::B(b) => u64_of_bigint(b),
    }
}

/// Output captured (in 'pipe' mode) since the last take.
#[napi(object, object_from_js = false)]
pub struct NativeOutput {
    pub stdout: Buffer,
    pub stderr: Buffer,
}

#[napi]
pub struct NativeMachine {
    /// None once the guest finished or `close()` was called: the VM, its file descriptors and
    /// guest memory are released right away instead of waiting for the JS garbage collector.
    inner: Option<Machine>,
    /// Kept apart from the VM so symbols and memory stay available after the guest finished.
    symbols: Arc<HashMap<String, u64>>,
    /// Weak: a finished machine's memory is released with it.
    memory: WeakMemoryView,
    /// Syscall numbers with a JS handler.
    intercepted: HashSet<u64>,
    hooks: Hooks,
    /// Details of the last failed call (fetched by the SDK only when one failed).
    last_error: Option<NativeError>,
    /// Output left over when a call finished the machine.
    last_output: Option<(Vec<u8>, Vec<u8>)>,
}

fn new_native(inner: Machine) -> NativeMachine {
    NativeMachine {
        symbols: inner.symbols(),
        memory: inner.memory().downgrade(),
        inner: Some(inner),
        intercepted: HashSet::new(),
        hooks: Hooks::default(),
        last_error: None,
        last_output: None,
    }
}

fn closed_error() -> Error<String> {
    Error::new("INVALID_STATE".to_string(), "the machine is closed")
}

#[napi]
impl NativeMachine {
    #[napi(factory)]
    pub fn from_file(path: String, options: NativeOptions) -> std::result::Result<NativeMachine, Error<String>> {
        Ok(new_native(Machine::from_file(&path, core_options(options)?).map_err(throw)?))
    }

    #[napi(factory)]
    pub fn from_buffer(bytes: Buffer, options: NativeOptions) -> std::result::Result<NativeMachine, Error<String>> {
        Ok(new_native(Machine::from_bytes(bytes.to_vec(), core_options(options)?).map_err(throw)?))
    }

    /// Register the SDK's callbacks (output streams, host-call dispatcher) and the shared
    /// register array. Called once; the references live as long as the machine.
    #[napi]
    pub fn set_hooks(
        &mut self,
        on_stdout: Option<ChunkCallback>,
        on_stderr: Option<ChunkCallback>,
        dispatch: Option<SyscallDispatch>,
        regs: Option<BigUint64Array>,
    ) -> Result<()> {
        self.hooks = Hooks {
            on_stdout: on_stdout.map(|f| f.create_ref()).transpose()?,
            on_stderr: on_stderr.map(|f| f.create_ref()).transpose()?,
            dispatch: dispatch.map(|f| f.create_ref()).transpose()?,
            regs,
        };
        Ok(())
    }

    /// Address of an ELF symbol, if the program has it.
    #[napi]
    pub fn symbol(&self, name: String) -> Option<BigInt> {
        self.symbols.get(&name).copied().map(BigInt::from)
    }

    /// A view of guest memory (usable while the guest is stopped, even after it finished).
    #[napi]
    pub fn memory(&self) -> NativeMemory {
        NativeMemory { view: self.memory.clone() }
    }

    /// Route syscall `nr` to the JS dispatcher (or stop doing so).
    #[napi]
    pub fn intercept(&mut self, nr: u32, on: bool) {
        if on {
            self.intercepted.insert(nr as u64);
        } else {
            self.intercepted.remove(&(nr as u64));
        }
    }

    /// Release the VM and its memory now. Idempotent.
    #[napi]
    pub fn close(&mut self) {
        self.inner = None;
    }

    /// "ready" | "paused" | "finished" | "closed"
    #[napi(getter)]
    pub fn state(&self) -> &'static str {
        match &self.inner {
            None => "closed",
            Some(m) if m.is_paused() => "paused",
            Some(m) if m.is_finished() => "finished",
            Some(_) => "ready",
        }
    }

    /// Run (or resume after a pause). Guest-level failures come back as `{ status: 'error' }`;
    /// status 'callback' means one of the SDK's callbacks threw (the SDK re-throws it).
    #[napi]
    pub fn run(&mut self, env: &Env, timeout_ms: Option<f64>) -> std::result::Result<NativeRunResult, Error<String>> {
        let Some(machine) = self.inner.as_mut() else { return Err(closed_error()) };
        let mut host = JsHost { env, hooks: &mut self.hooks, intercepted: &self.intercepted, callback_failed: false };
        let outcome = match timeout_ms {
            Some(_) => machine.run_with(timeout_of(timeout_ms), &mut host),
            None => machine.run_with_default_timeout(&mut host),
        };
        let callback_failed = host.callback_failed;
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
                result.status = if callback_failed { "callback".into() } else { "error".into() };
                result.error = Some(error_record(&e));
            }
        }
        if machine.is_finished() {
            // Nothing can run any more: give the VM back right away.
            self.inner = None;
        }
        Ok(result)
    }

    /// Call the guest function at `addr` while the guest is paused; returns rax (signed) as
    /// a Number, or a BigInt when asked. On failure throws an Error whose `code` is the core's
    /// error code (or CALLBACK_THREW); `takeLastError()` has the details.
    #[napi]
    pub fn call(
        &mut self,
        env: &Env,
        addr: Either<f64, BigInt>,
        mut args: Vec<JsCallArg>,
        as_bigint: bool,
        timeout_ms: Option<f64>,
    ) -> std::result::Result<Either<f64, BigInt>, Error<String>> {
        let Some(machine) = self.inner.as_mut() else { return Err(closed_error()) };
        let invalid = |m: &str| Error::new("INVALID_ARGUMENT".to_string(), m.to_string());
        let addr = u64_of_addr(&addr).ok_or_else(|| invalid("function address out of range"))?;
        let mut core_args = Vec::with_capacity(args.len());
        for a in args.iter_mut() {
            core_args.push(match a {
                Either4::A(n) => CallArg::Int((*n as i64) as u64),
                Either4::B(b) => CallArg::Int(u64_of_bigint(b).ok_or_else(|| invalid("bigint argument does not fit in 64 bits"))?),
                Either4::C(s) => CallArg::Str(s.as_bytes()),
                Either4::D(buf) => CallArg::Bytes(buf.as_mut()),
            });
        }
        let mut host = JsHost { env, hooks: &mut self.hooks, intercepted: &self.intercepted, callback_failed: false };
        let timeout = timeout_of(timeout_ms).or(machine.default_timeout());
        let outcome = machine.call(addr, &mut core_args, timeout, &mut host);
        let callback_failed = host.callback_failed;
        if machine.is_finished() {
            // Keep the output for takeOutput() before the VM goes.
            self.last_output = Some((machine.take_stdout(), machine.take_stderr()));
            self.inner = None;
        }
        match outcome {
            Ok(v) => Ok(if as_bigint { Either::B(BigInt::from(v as i64)) } else { Either::A(v as i64 as f64) }),
            Err(e) => {
                let code = if callback_failed { "CALLBACK_THREW".to_string() } else { e.code().to_string() };
                self.last_error = Some(error_record(&e));
                Err(Error::new(code, e.to_string()))
            }
        }
    }

    /// Details of the last failed call.
    #[napi]
    pub fn take_last_error(&mut self) -> Option<NativeError> {
        self.last_error.take()
    }

    /// Output captured (in 'pipe' mode) since the last run/take.
    #[napi]
    pub fn take_output(&mut self) -> NativeOutput {
        let (stdout, stderr) = match (self.inner.as_mut(), self.last_output.take()) {
            (_, Some(o)) => o,
            (Some(m), None) => (m.take_stdout(), m.take_stderr()),
            (None, None) => (Vec::new(), Vec::new()),
        };
        NativeOutput { stdout: stdout.into(), stderr: stderr.into() }
    }
}

/// Checked access to a machine's guest memory from JS (until the machine is finished/closed).
#[napi]
pub struct NativeMemory {
    view: WeakMemoryView,
}

impl NativeMemory {
    fn live(&self) -> Result<MemoryView> {
        self.view.upgrade().ok_or_else(|| Error::new(Status::GenericFailure, "INVALID_STATE: the machine is closed; its memory was released"))
    }
}

fn addr_of(addr: &BigInt) -> Result<u64> {
    u64_of_bigint(addr).ok_or_else(|| Error::new(Status::InvalidArg, "INVALID_ARGUMENT: address out of range"))
}

fn efault(addr: u64, len: u64) -> Error {
    Error::new(Status::InvalidArg, format!("EFAULT: {len} bytes at {addr:#x} are not accessible to the guest"))
}

#[napi]
impl NativeMemory {
    #[napi]
    pub fn read(&self, addr: BigInt, len: f64) -> Result<Buffer> {
        let addr = addr_of(&addr)?;
        let len = len as u64;
        self.live()?.read(addr, len).map(Buffer::from).map_err(|_| efault(addr, len))
    }

    #[napi]
    pub fn write(&self, addr: BigInt, data: Buffer) -> Result<()> {
        let addr = addr_of(&addr)?;
        self.live()?.write(addr, &data).map_err(|_| efault(addr, data.len() as u64))
    }

    /// The bytes of a NUL-terminated string (at most `max`), or null if there is no NUL within.
    #[napi]
    pub fn read_c_string(&self, addr: BigInt, max: f64) -> Result<Option<Buffer>> {
        let addr = addr_of(&addr)?;
        self.live()?.read_cstring(addr, max as usize).map(|o| o.map(Buffer::from)).map_err(|_| efault(addr, 1))
    }

    #[napi(getter)]
    pub fn size(&self) -> f64 {
        self.view.upgrade().map(|v| v.size() as f64).unwrap_or(0.0)
    }
}

/// Benchmark support: the mean cost in nanoseconds of a bare host → guest call (a raw VM whose
/// only code is `ret`, resumed through the synced registers), over `iterations`.
#[napi]
pub fn measure_call_floor(iterations: u32) -> std::result::Result<f64, Error<String>> {
    let mut l = kvmbox::floor::RawCallLoop::new().map_err(throw)?;
    Ok(l.measure(iterations.max(1)).map_err(throw)?.as_nanos() as f64)
}

/// Benchmark support: the mean cost in nanoseconds of the bare syscall mechanism (a raw VM
/// doing `syscall` in a loop, resumed by the host with no dispatch), over `iterations`.
#[napi]
pub fn measure_syscall_floor(iterations: u32) -> std::result::Result<f64, Error<String>> {
    let mut l = kvmbox::floor::RawSyscallLoop::new().map_err(throw)?;
    Ok(l.measure(iterations.max(1)).map_err(throw)?.as_nanos() as f64)
}

//! Node binding for kvmbox: type conversion and nothing else. The TypeScript SDK (src/) wraps
//! these raw classes in the public API and turns error records into typed error classes.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use kvmbox::{Error as CoreError, Input, Machine, MachineOptions, Output, RunOutcome};
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
}

#[napi(object, object_from_js = false)]
pub struct NativeRunResult {
    /// "exited" | "signaled" | "error"
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
        "pipe" | "callback" => Ok(Output::capture(limit)),
        "inherit" => Ok(Output::Inherit(fd)),
        other => Err(Error::new("INVALID_ARGUMENT".into(), format!("unknown output mode {other:?}"))),
    }
}

fn core_options(o: NativeOptions) -> std::result::Result<(MachineOptions, bool, bool), Error<String>> {
    let limit = o.output_limit.map(|l| l as usize).unwrap_or(kvmbox::DEFAULT_OUTPUT_LIMIT);
    let stdin = if o.stdin_inherit.unwrap_or(false) {
        Input::Inherit
    } else {
        match o.stdin {
            Some(b) => Input::Bytes { data: b.to_vec(), pos: 0 },
            None => Input::Empty,
        }
    };
    let opts = MachineOptions {
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
    };
    Ok((opts, o.stdout == "callback", o.stderr == "callback"))
}

#[napi]
pub struct NativeMachine {
    /// None once the guest finished or `close()` was called: the VM, its file descriptors and
    /// guest memory are released right away instead of waiting for the JS garbage collector.
    inner: Option<Machine>,
    /// Kept apart from the VM so symbols stay available after the guest finished.
    symbols: std::sync::Arc<std::collections::HashMap<String, u64>>,
    stdout_callback: bool,
    stderr_callback: bool,
}

type ChunkCallback<'a> = Function<'a, Buffer, ()>;

#[napi]
impl NativeMachine {
    #[napi(factory)]
    pub fn from_file(path: String, options: NativeOptions) -> std::result::Result<NativeMachine, Error<String>> {
        let (opts, stdout_callback, stderr_callback) = core_options(options)?;
        let inner = Machine::from_file(&path, opts).map_err(throw)?;
        Ok(NativeMachine { symbols: inner.symbols(), inner: Some(inner), stdout_callback, stderr_callback })
    }

    #[napi(factory)]
    pub fn from_buffer(bytes: Buffer, options: NativeOptions) -> std::result::Result<NativeMachine, Error<String>> {
        let (opts, stdout_callback, stderr_callback) = core_options(options)?;
        let inner = Machine::from_bytes(bytes.to_vec(), opts).map_err(throw)?;
        Ok(NativeMachine { symbols: inner.symbols(), inner: Some(inner), stdout_callback, stderr_callback })
    }

    /// Address of an ELF symbol, if the program has it.
    #[napi]
    pub fn symbol(&self, name: String) -> Option<BigInt> {
        self.symbols.get(&name).copied().map(BigInt::from)
    }

    /// Release the VM and its memory now. Idempotent.
    #[napi]
    pub fn close(&mut self) {
        self.inner = None;
    }

    #[napi(getter)]
    pub fn closed(&self) -> bool {
        self.inner.is_none()
    }

    /// Run to completion. Guest-level failures come back as `{ status: 'error', error }`;
    /// an exception thrown by an output callback is re-thrown as is.
    #[napi]
    pub fn run(
        &mut self,
        timeout_ms: Option<f64>,
        on_stdout: Option<ChunkCallback>,
        on_stderr: Option<ChunkCallback>,
    ) -> Result<NativeRunResult> {
        let Some(machine) = self.inner.as_mut() else {
            return Err(Error::new(Status::GenericFailure, "INVALID_STATE: the machine is closed (it already ran, or close() was called)"));
        };
        // A JS exception from a callback is kept here and re-thrown after the guest stopped.
        let thrown: Rc<RefCell<Option<Error>>> = Rc::new(RefCell::new(None));
        let make_sink = |cb: ChunkCallback| -> Output {
            let thrown = thrown.clone();
            let f: Box<dyn FnMut(&[u8]) -> std::result::Result<(), String> + '_> = Box::new(move |data: &[u8]| {
                cb.call(Buffer::from(data.to_vec())).map_err(|e| {
                    let msg = e.reason.clone();
                    *thrown.borrow_mut() = Some(e);
                    msg
                })
            });
            // SAFETY: the sink borrows JS values that live for this call only; it is removed
            // from the machine (by `restore` below) before this function returns.
            Output::Callback(unsafe { std::mem::transmute::<Box<dyn FnMut(&[u8]) -> std::result::Result<(), String> + '_>, Box<dyn FnMut(&[u8]) -> std::result::Result<(), String>>>(f) })
        };
        let mut saved_stdout = None;
        let mut saved_stderr = None;
        if self.stdout_callback {
            if let Some(cb) = on_stdout {
                saved_stdout = Some(machine.set_stdout(make_sink(cb)));
            }
        }
        if self.stderr_callback {
            if let Some(cb) = on_stderr {
                saved_stderr = Some(machine.set_stderr(make_sink(cb)));
            }
        }
        let timeout = match timeout_ms {
            Some(t) if t > 0.0 => Some(Duration::from_secs_f64(t / 1000.0)),
            Some(_) => None,
            None => None,
        };
        let outcome = match timeout_ms {
            Some(_) => machine.run_with_timeout(timeout),
            None => machine.run(),
        };
        if let Some(o) = saved_stdout {
            machine.set_stdout(o);
        }
        if let Some(o) = saved_stderr {
            machine.set_stderr(o);
        }
        // Every run ends the guest process for now: release the VM immediately.
        let finished = true;
        if let Some(e) = thrown.borrow_mut().take() {
            self.inner = None;
            return Err(e);
        }
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
            Err(e) => {
                result.status = "error".into();
                result.error = Some(error_record(&e));
            }
        }
        if finished {
            self.inner = None;
        }
        Ok(result)
    }
}

/// Benchmark support: the mean cost in nanoseconds of the bare syscall mechanism (a raw VM
/// doing `syscall` in a loop, resumed by the host with no dispatch), over `iterations`.
#[napi]
pub fn measure_syscall_floor(iterations: u32) -> std::result::Result<f64, Error<String>> {
    let mut l = kvmbox::floor::RawSyscallLoop::new().map_err(throw)?;
    Ok(l.measure(iterations.max(1)).map_err(throw)?.as_nanos() as f64)
}

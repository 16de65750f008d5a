//! `NativeMachine`: the JS handle of one kvmbox machine.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use kvmbox::{CallArg, Machine, WeakMemoryView};
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;

use crate::async_host::{AsyncHost, DispatchTsfn, Job, NativeAsyncResult, OutputSink, OwnedArg, SharedSlot, Slot, TraceTsfn, Work, Worker};
use crate::convert::{
    call_value, core_options, error_record, guarded, no_panic, panic_message, run_result, throw, u64_of_addr, u64_of_bigint, JsCallArg,
    NativeError, NativeOptions, NativeRunResult, RequestedTimeout,
};
use crate::gate::OpGate;
use crate::memory::NativeMemory;
use crate::sync_host::{ChunkCallback, Hooks, JsHost, NativeTraceEvent, SyscallDispatch};

#[napi(object)]
pub struct NativeMemoryUsage {
    pub private_bytes: f64,
    pub shared_bytes: f64,
    pub memory_size: f64,
    pub huge_bytes: f64,
    /// "none" | "transparent" | "hugetlb"
    pub hugepages: String,
}

/// What a snapshot loader decides (the file decides none of it).
fn load_options(options: NativeOptions) -> std::result::Result<kvmbox::LoadOptions, Error<String>> {
    let o = core_options(options)?;
    Ok(kvmbox::LoadOptions {
        allow_read: o.allow_read,
        mounts: o.mounts,
        fs_limit: o.fs_limit,
        stdout: o.stdout,
        stderr: o.stderr,
        timeout: o.timeout,
        trace: o.trace,
        seccomp: o.seccomp,
    })
}

/// `(done, total) => void`: progress of a save or load, in bytes.
pub(crate) type ProgressTsfn = ThreadsafeFunction<FnArgs<(f64, f64)>, (), FnArgs<(f64, f64)>, Status, false>;

/// A progress callback for the core that hands (done, total) to JS without waiting for it.
fn reporter(progress: Option<ProgressTsfn>) -> impl FnMut(u64, u64) {
    move |done, total| {
        if let Some(p) = &progress {
            p.call(FnArgs::from((done as f64, total as f64)), ThreadsafeFunctionCallMode::NonBlocking);
        }
    }
}

fn internal_error(e: napi::Error) -> Error<String> {
    Error::new("INTERNAL".to_string(), e.reason.clone())
}

/// Snapshots shared between the JS threads of this process, by id.
static SHARED: std::sync::LazyLock<Mutex<HashMap<u64, kvmbox::Snapshot>>> = std::sync::LazyLock::new(|| Mutex::new(HashMap::new()));
static NEXT_SHARE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// An immutable image of a paused machine.
#[napi]
pub struct NativeSnapshot {
    /// `None` once closed: this handle's reference to the image is dropped (forks keep theirs).
    inner: Option<kvmbox::Snapshot>,
}

impl NativeSnapshot {
    pub(crate) fn new(inner: kvmbox::Snapshot) -> NativeSnapshot {
        NativeSnapshot { inner: Some(inner) }
    }

    pub(crate) fn get(&self) -> std::result::Result<&kvmbox::Snapshot, Error<String>> {
        self.inner.as_ref().ok_or_else(|| Error::new("INVALID_STATE".to_string(), "the snapshot was closed".to_string()))
    }
}

#[napi]
impl NativeSnapshot {
    /// Drop this handle's reference to the image: its memory is released once no fork uses it
    /// either. Idempotent.
    #[napi]
    pub fn close(&mut self) {
        self.inner = None;
    }

    /// A new machine sharing this snapshot's memory copy-on-write, paused where it was taken.
    #[napi]
    pub fn fork(&self) -> std::result::Result<NativeMachine, Error<String>> {
        let snap = self.get()?;
        no_panic(|| Ok(new_native(Machine::fork(snap).map_err(throw)?)))
    }

    #[napi]
    pub fn symbol(&self, name: String) -> Option<BigInt> {
        self.inner.as_ref()?.symbol(&name).map(BigInt::from)
    }

    #[napi(getter)]
    pub fn memory_size(&self) -> f64 {
        self.inner.as_ref().map_or(0.0, |s| s.memory_size() as f64)
    }

    /// Write the snapshot to `path` (versioned, checksummed).
    #[napi]
    pub fn save(&self, path: String) -> std::result::Result<(), Error<String>> {
        let snap = self.get()?;
        no_panic(|| snap.save(&path).map_err(throw))
    }

    /// Load a snapshot file; the options decide file access, outputs and timeout.
    #[napi(factory)]
    pub fn load(path: String, options: NativeOptions) -> std::result::Result<NativeSnapshot, Error<String>> {
        let opts = load_options(options)?;
        no_panic(|| Ok(NativeSnapshot::new(kvmbox::Snapshot::load(&path, opts).map_err(throw)?)))
    }

    /// `save` on a thread of its own (a large snapshot takes seconds): resolves to null, or
    /// the error's record; `progress(done, total)` in bytes, about every 16 MiB.
    #[napi(ts_return_type = "Promise<NativeError | null>")]
    pub fn save_async<'env>(
        &self,
        env: &'env Env,
        path: String,
        #[napi(ts_arg_type = "((done: number, total: number) => void) | undefined | null")] progress: Option<ProgressTsfn>,
    ) -> std::result::Result<Object<'env>, Error<String>> {
        let snap = self.get()?.clone();
        let (deferred, promise) = env.create_deferred::<Option<NativeError>, _>().map_err(internal_error)?;
        std::thread::Builder::new()
            .name("kvmbox-save".into())
            .spawn(move || {
                let mut report = reporter(progress);
                let saved = guarded(|| snap.save_with_progress(&path, &mut report));
                deferred.resolve(Box::new(move |_| Ok(saved.err().map(|record| *record))));
            })
            .map_err(|e| Error::new("INTERNAL".to_string(), format!("cannot start a thread: {e}")))?;
        Ok(promise)
    }

    /// `load` on a thread of its own: resolves to the snapshot, or the error's record.
    #[napi(ts_return_type = "Promise<NativeSnapshot | NativeError>")]
    pub fn load_async<'env>(
        env: &'env Env,
        path: String,
        options: NativeOptions,
        #[napi(ts_arg_type = "((done: number, total: number) => void) | undefined | null")] progress: Option<ProgressTsfn>,
    ) -> std::result::Result<Object<'env>, Error<String>> {
        let opts = load_options(options)?;
        let (deferred, promise) = env.create_deferred::<Either<NativeSnapshot, NativeError>, _>().map_err(internal_error)?;
        std::thread::Builder::new()
            .name("kvmbox-load".into())
            .spawn(move || {
                let mut report = reporter(progress);
                let loaded = guarded(|| kvmbox::Snapshot::load_with_progress(&path, opts, &mut report));
                deferred.resolve(Box::new(move |_| {
                    Ok(match loaded {
                        Ok(snap) => Either::A(NativeSnapshot::new(snap)),
                        Err(record) => Either::B(*record),
                    })
                }));
            })
            .map_err(|e| Error::new("INTERNAL".to_string(), format!("cannot start a thread: {e}")))?;
        Ok(promise)
    }

    /// Host memory the image occupies (shared by every fork).
    #[napi(getter)]
    pub fn resident_bytes(&self) -> f64 {
        self.inner.as_ref().map_or(0.0, |s| s.resident_bytes() as f64)
    }

    /// Register this snapshot for other JS threads of this process (worker_threads cannot
    /// receive native objects); returns an id for `fromShared`. The image is shared, not
    /// copied. Call `unshare(id)` when done.
    #[napi]
    pub fn share(&self) -> std::result::Result<f64, Error<String>> {
        let snap = self.get()?.clone();
        let id = NEXT_SHARE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        SHARED.lock().unwrap_or_else(|e| e.into_inner()).insert(id, snap);
        Ok(id as f64)
    }

    /// The snapshot another thread shared under `id`.
    #[napi(factory)]
    pub fn from_shared(id: f64) -> std::result::Result<NativeSnapshot, Error<String>> {
        SHARED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(id as u64))
            .cloned()
            .map(NativeSnapshot::new)
            .ok_or_else(|| Error::new("INVALID_ARGUMENT".to_string(), format!("no shared snapshot {id}")))
    }

    /// Forget a shared id (snapshots already taken from it stay valid).
    #[napi]
    pub fn unshare(id: f64) {
        SHARED.lock().unwrap_or_else(|e| e.into_inner()).remove(&(id as u64));
    }
}

/// Where a machine is in its life (the SDK's `Machine.state`, derived from this enum): never
/// run, paused in kvmbox_pause(), running an async operation, finished but resettable, or
/// closed (its VM released).
#[napi(string_enum = "lowercase")]
pub enum MachineState {
    Ready,
    Paused,
    Busy,
    Finished,
    Closed,
}

/// What a run or call cost (see `Machine.lastStats`).
#[napi(object, object_from_js = false)]
pub struct NativeRunStats {
    pub wall_ns: f64,
    pub exits: f64,
    pub syscalls: f64,
    pub pages_restored: f64,
    pub page_table_commits: f64,
    pub reset_dirty_log_ns: f64,
    pub reset_memory_ns: f64,
    pub reset_cpu_ns: f64,
    pub reset_process_ns: f64,
}

/// Output captured (in 'pipe' mode) since the last take.
#[napi(object, object_from_js = false)]
pub struct NativeOutput {
    pub stdout: Buffer,
    pub stderr: Buffer,
}

#[napi]
pub struct NativeMachine {
    /// The machine, unless an async operation has it or it is finished/closed (then the VM,
    /// its file descriptors and memory are released right away, not when JS collects this).
    slot: SharedSlot,
    /// Kept apart from the VM so symbols stay available after the guest finished.
    symbols: Arc<HashMap<String, u64>>,
    /// Weak: a closed machine's memory is released with it. Shared with the NativeMemory
    /// objects handed out, and updated when a reset to another snapshot replaces the memory.
    memory: Arc<Mutex<WeakMemoryView>>,
    /// Syscall numbers with a JS handler.
    /// Shared with running async operations; changed copy-on-write (`Arc::make_mut`).
    intercepted: Arc<HashSet<u64>>,
    hooks: Hooks,
    /// Started on the first async operation.
    worker: Option<Worker>,
    /// Details of the last failed call (fetched by the SDK only when one failed).
    last_error: Option<NativeError>,
    /// Set by `debug()`: the next run/call waits for gdb on this socket.
    pending_debug: Option<std::net::TcpListener>,
    /// The `trace` callback for async operations (the sync one is in `hooks`).
    trace: Option<Arc<TraceTsfn>>,
    /// Interrupts reach the run or call in progress, and only it.
    gate: Arc<OpGate>,
}

fn new_native(inner: Machine) -> NativeMachine {
    NativeMachine {
        gate: OpGate::register(inner.interrupt_handle()),
        symbols: inner.symbols(),
        memory: Arc::new(Mutex::new(inner.memory().downgrade())),
        slot: Arc::new(Mutex::new(Slot::Idle(Box::new(inner)))),
        intercepted: Arc::new(HashSet::new()),
        hooks: Hooks::default(),
        worker: None,
        last_error: None,
        pending_debug: None,
        trace: None,
    }
}

/// After a panic inside a run or call: the machine's state is unknown, so it is released and
/// the caller gets an INTERNAL error (never an abort of Node).
fn closed_after_panic(slot: &mut Slot, panic: &Box<dyn std::any::Any + Send>) -> Error<String> {
    *slot = Slot::Closed;
    Error::new("INTERNAL".to_string(), format!("internal error: kvmbox panicked: {}; the machine was closed", panic_message(panic)))
}

fn state_error(slot: &Slot) -> Error<String> {
    match slot {
        Slot::Busy => Error::new("INVALID_STATE".to_string(), "the machine is busy with an async run or call"),
        _ => Error::new("INVALID_STATE".to_string(), "the machine is closed"),
    }
}

fn invalid(msg: &str) -> Error<String> {
    Error::new("INVALID_ARGUMENT".to_string(), msg.to_string())
}

fn function_address(addr: &Either<f64, BigInt>) -> std::result::Result<u64, Error<String>> {
    u64_of_addr(addr).ok_or_else(|| invalid("function address out of range"))
}

fn bigint_arg(b: &BigInt) -> std::result::Result<u64, Error<String>> {
    u64_of_bigint(b).ok_or_else(|| invalid("bigint argument does not fit in 64 bits"))
}

#[napi]
impl NativeMachine {
    #[napi(factory)]
    pub fn from_file(path: String, options: NativeOptions) -> std::result::Result<NativeMachine, Error<String>> {
        let opts = core_options(options)?;
        no_panic(|| Ok(new_native(Machine::from_file(&path, opts).map_err(throw)?)))
    }

    #[napi(factory)]
    pub fn from_buffer(bytes: Buffer, options: NativeOptions) -> std::result::Result<NativeMachine, Error<String>> {
        let opts = core_options(options)?;
        no_panic(|| Ok(new_native(Machine::from_bytes(bytes.to_vec(), opts).map_err(throw)?)))
    }

    /// Stop the run or call in progress (sync on another thread, or async) with an INTERRUPTED
    /// error; false if none is in progress (then nothing happens).
    #[napi]
    pub fn interrupt(&self) -> bool {
        self.gate.interrupt()
    }

    /// This machine's id for `interruptMachine()` from another JS thread.
    #[napi(getter)]
    pub fn interrupt_id(&self) -> f64 {
        self.gate.id as f64
    }

    /// Register the SDK's synchronous callbacks (output streams, host-call dispatcher) and the
    /// shared register array. The references live as long as the machine.
    #[napi]
    pub fn set_hooks(
        &mut self,
        #[napi(ts_arg_type = "((chunk: Buffer) => void) | undefined | null")] on_stdout: Option<ChunkCallback>,
        #[napi(ts_arg_type = "((chunk: Buffer) => void) | undefined | null")] on_stderr: Option<ChunkCallback>,
        #[napi(ts_arg_type = "((nr: number) => number) | undefined | null")] dispatch: Option<SyscallDispatch>,
        regs: Option<BigUint64Array>,
    ) -> Result<()> {
        self.hooks = Hooks {
            on_stdout: on_stdout.map(|f| f.create_ref()).transpose()?,
            on_stderr: on_stderr.map(|f| f.create_ref()).transpose()?,
            dispatch: dispatch.map(|f| f.create_ref()).transpose()?,
            regs,
            on_trace: self.hooks.on_trace.take(),
        };
        Ok(())
    }

    /// Send traced syscalls (the machine was created with `trace`) to `cb` instead of stderr.
    #[napi]
    pub fn set_trace(
        &mut self,
        #[napi(ts_arg_type = "(event: NativeTraceEvent) => void")] cb: Function<NativeTraceEvent, ()>,
    ) -> Result<()> {
        self.hooks.on_trace = Some(cb.create_ref()?);
        self.trace = Some(Arc::new(cb.build_threadsafe_function::<NativeTraceEvent>().weak::<true>().build()?));
        Ok(())
    }

    /// Address of an ELF symbol: the program's own (kept even after the guest finished), else
    /// one of the shared objects a dynamic program has loaded (while the machine is idle).
    #[napi]
    pub fn symbol(&self, name: String) -> Option<BigInt> {
        if let Some(&a) = self.symbols.get(&name) {
            return Some(BigInt::from(a));
        }
        let slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        let Slot::Idle(machine) = &*slot else { return None };
        no_panic(|| Ok::<_, Error<String>>(machine.symbol(&name))).ok().flatten().map(BigInt::from)
    }

    /// A view of guest memory (usable while the guest is stopped and not finished).
    #[napi]
    pub fn memory(&self) -> NativeMemory {
        NativeMemory { view: Arc::clone(&self.memory) }
    }

    /// Route syscall `nr` to the JS dispatcher (or stop doing so).
    #[napi]
    pub fn intercept(&mut self, nr: u32, on: bool) {
        if on {
            Arc::make_mut(&mut self.intercepted).insert(nr as u64);
        } else {
            Arc::make_mut(&mut self.intercepted).remove(&(nr as u64));
        }
    }

    /// Release the VM and its memory now; an async operation in progress is interrupted first
    /// (its promise settles with INTERRUPTED) and the machine is released when it stops.
    /// Idempotent.
    #[napi]
    pub fn close(&mut self) {
        self.gate.interrupt();
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Slot::Closed;
        self.worker = None;
        self.trace = None;
        // The references to JS callbacks: a callback that captures its machine would otherwise
        // keep both alive forever (V8 cannot see a cycle through a native reference).
        self.hooks = Hooks::default();
        // The symbol table can be large (hundreds of KB) and V8 does not know it exists, so it
        // would not hurry to collect this object: drop it now, lookups are over.
        self.symbols = Arc::default();
    }

    /// Where the machine is in its life.
    #[napi(getter)]
    pub fn state(&self) -> MachineState {
        match &*self.slot.lock().unwrap_or_else(|e| e.into_inner()) {
            Slot::Closed | Slot::Done { .. } => MachineState::Closed,
            Slot::Busy => MachineState::Busy,
            Slot::Idle(m) if m.is_paused() => MachineState::Paused,
            Slot::Idle(m) if m.is_finished() => MachineState::Finished,
            Slot::Idle(_) => MachineState::Ready,
        }
    }

    /// Run (or resume after a pause) on this thread. Guest-level failures come back as
    /// `{ status: 'error' }` (when one of the SDK's callbacks threw, the SDK re-throws what it threw).
    #[napi]
    pub fn run(&mut self, env: &Env, timeout_ms: Option<f64>) -> std::result::Result<NativeRunResult, Error<String>> {
        let requested = RequestedTimeout::from_ms(timeout_ms)?;
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        let Slot::Idle(machine) = &mut *slot else { return Err(state_error(&slot)) };
        let mut host = JsHost { env, hooks: &mut self.hooks, intercepted: &self.intercepted };
        let timeout = requested.resolve(machine);
        let debug = self.pending_debug.take();
        self.gate.begin();
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let outcome = match debug {
                Some(listener) => machine.run_debug(&listener, timeout, &mut host),
                None => machine.run_with(timeout, &mut host),
            };
            run_result(machine, outcome)
        }));
        self.gate.end();
        let result = ran.map_err(|p| closed_after_panic(&mut slot, &p))?;
        slot.release_if_finished();
        Ok(result)
    }

    /// Call the guest function at `addr` while the guest is paused; returns rax (signed) as
    /// a Number, or a BigInt when asked. On failure throws an Error whose `code` is the core's
    /// error code; `takeLastError()` has the details.
    #[napi]
    pub fn call(
        &mut self,
        env: &Env,
        addr: Either<f64, BigInt>,
        #[napi(ts_arg_type = "Array<number | bigint | string | Buffer>")] mut args: Vec<JsCallArg>,
        as_bigint: bool,
        timeout_ms: Option<f64>,
    ) -> std::result::Result<Either<f64, BigInt>, Error<String>> {
        let addr = function_address(&addr)?;
        let mut core_args = Vec::with_capacity(args.len());
        for a in args.iter_mut() {
            core_args.push(match a {
                Either4::A(n) => CallArg::Int((*n as i64) as u64),
                Either4::B(b) => CallArg::Int(bigint_arg(b)?),
                Either4::C(s) => CallArg::Str(s.as_bytes()),
                Either4::D(buf) => CallArg::Bytes(buf.as_mut()),
            });
        }
        let requested = RequestedTimeout::from_ms(timeout_ms)?;
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        let Slot::Idle(machine) = &mut *slot else { return Err(state_error(&slot)) };
        let mut host = JsHost { env, hooks: &mut self.hooks, intercepted: &self.intercepted };
        let timeout = requested.resolve(machine);
        let debug = self.pending_debug.take();
        self.gate.begin();
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match debug {
            Some(listener) => machine.call_debug(&listener, addr, &mut core_args, timeout, &mut host),
            None => machine.call(addr, &mut core_args, timeout, &mut host),
        }));
        self.gate.end();
        let outcome = ran.map_err(|p| closed_after_panic(&mut slot, &p))?;
        slot.release_if_finished();
        match outcome {
            Ok(v) => Ok(call_value(v, as_bigint)),
            Err(e) => {
                self.last_error = Some(error_record(&e));
                Err(throw(e))
            }
        }
    }

    /// Make the next run() or call() wait for a gdb connection on host:port (port 0 picks a
    /// free one). Returns the port listened on.
    #[napi]
    pub fn debug(&mut self, host: String, port: u32) -> std::result::Result<u32, Error<String>> {
        if let Slot::Idle(m) = &*self.slot.lock().unwrap_or_else(|e| e.into_inner()) {
            if m.requires_seccomp() {
                return Err(Error::new(
                    "INVALID_STATE".to_string(),
                    "a seccomp machine cannot be debugged: gdb serves only synchronous run()/call(), which it refuses".to_string(),
                ));
            }
        }
        let listener = std::net::TcpListener::bind((host.as_str(), port as u16))
            .map_err(|e| Error::new("INVALID_ARGUMENT".to_string(), format!("cannot listen for gdb on {host}:{port}: {e}")))?;
        let bound = listener.local_addr().map(|a| a.port() as u32).unwrap_or(port);
        self.pending_debug = Some(listener);
        Ok(bound)
    }

    /// Take a snapshot of the paused guest (this machine then runs on a private copy).
    #[napi]
    pub fn snapshot(&mut self) -> std::result::Result<NativeSnapshot, Error<String>> {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        let Slot::Idle(machine) = &mut *slot else { return Err(state_error(&slot)) };
        no_panic(|| Ok(NativeSnapshot::new(machine.snapshot().map_err(throw)?)))
    }

    /// Return to this machine's snapshot, or to `to`; returns the number of pages restored.
    #[napi]
    pub fn reset(&mut self, to: Option<&NativeSnapshot>) -> std::result::Result<u32, Error<String>> {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        let Slot::Idle(machine) = &mut *slot else { return Err(state_error(&slot)) };
        let to = to.map(NativeSnapshot::get).transpose()?;
        let pages = no_panic(|| {
            match to {
                Some(s) => machine.reset_to(s),
                None => machine.reset(),
            }
            .map_err(throw)
        })?;
        self.last_error = None;
        if to.is_some() {
            // The memory (and its address space) may have been replaced.
            self.symbols = machine.symbols();
            *self.memory.lock().unwrap_or_else(|e| e.into_inner()) = machine.memory().downgrade();
        }
        Ok(pages as u32)
    }

    /// Host memory this machine uses: `{ privateBytes, sharedBytes, memorySize }`.
    #[napi]
    pub fn memory_usage(&self) -> std::result::Result<NativeMemoryUsage, Error<String>> {
        let slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        let Slot::Idle(machine) = &*slot else { return Err(state_error(&slot)) };
        let u = machine.memory_usage();
        let hugepages = match u.hugepages {
            kvmbox::HugePages::None => "none",
            kvmbox::HugePages::Transparent => "transparent",
            kvmbox::HugePages::Hugetlb => "hugetlb",
        };
        Ok(NativeMemoryUsage {
            private_bytes: u.private_bytes as f64,
            shared_bytes: u.shared_bytes as f64,
            memory_size: u.memory_size as f64,
            huge_bytes: u.huge_bytes as f64,
            hugepages: hugepages.into(),
        })
    }

    /// What the last run or call cost, and the reset before it (zeros before any; not while busy).
    #[napi(getter)]
    pub fn last_stats(&self) -> NativeRunStats {
        let stats = match &*self.slot.lock().unwrap_or_else(|e| e.into_inner()) {
            Slot::Idle(m) => m.last_stats(),
            _ => kvmbox::RunStats::default(),
        };
        NativeRunStats {
            wall_ns: stats.wall_ns as f64,
            exits: stats.exits as f64,
            syscalls: stats.syscalls as f64,
            pages_restored: stats.pages_restored as f64,
            page_table_commits: stats.page_table_commits as f64,
            reset_dirty_log_ns: stats.reset.dirty_log_ns as f64,
            reset_memory_ns: stats.reset.memory_ns as f64,
            reset_cpu_ns: stats.reset.cpu_ns as f64,
            reset_process_ns: stats.reset.process_ns as f64,
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
        let (stdout, stderr) = match &mut *self.slot.lock().unwrap_or_else(|e| e.into_inner()) {
            Slot::Idle(m) => (m.take_stdout(), m.take_stderr()),
            Slot::Done { stdout, stderr } => (std::mem::take(stdout), std::mem::take(stderr)),
            Slot::Busy | Slot::Closed => (Vec::new(), Vec::new()),
        };
        NativeOutput { stdout: stdout.into(), stderr: stderr.into() }
    }

    /// Run (or resume) on this machine's own thread; resolves to `{ run }`.
    #[napi(ts_return_type = "Promise<NativeAsyncResult>")]
    pub fn run_async<'env>(
        &mut self,
        env: &'env Env,
        timeout_ms: Option<f64>,
        #[napi(
            ts_arg_type = "((nr: number, a0: bigint, a1: bigint, a2: bigint, a3: bigint, a4: bigint, a5: bigint) => Promise<bigint>) | undefined | null"
        )]
        dispatch: Option<DispatchTsfn>,
        #[napi(ts_arg_type = "((chunk: Buffer) => void) | undefined | null")] on_stdout: Option<ChunkCallback>,
        #[napi(ts_arg_type = "((chunk: Buffer) => void) | undefined | null")] on_stderr: Option<ChunkCallback>,
    ) -> std::result::Result<Object<'env>, Error<String>> {
        let work = Work::Run { timeout: RequestedTimeout::from_ms(timeout_ms)? };
        self.submit(env, work, Vec::new(), dispatch, on_stdout, on_stderr)
    }

    /// Call a guest function on this machine's own thread; resolves to `{ value }` or `{ error }`.
    #[allow(clippy::too_many_arguments)]
    #[napi(ts_return_type = "Promise<NativeAsyncResult>")]
    pub fn call_async<'env>(
        &mut self,
        env: &'env Env,
        addr: Either<f64, BigInt>,
        #[napi(ts_arg_type = "Array<number | bigint | string | Buffer>")] args: Vec<JsCallArg>,
        as_bigint: bool,
        timeout_ms: Option<f64>,
        #[napi(
            ts_arg_type = "((nr: number, a0: bigint, a1: bigint, a2: bigint, a3: bigint, a4: bigint, a5: bigint) => Promise<bigint>) | undefined | null"
        )]
        dispatch: Option<DispatchTsfn>,
        #[napi(ts_arg_type = "((chunk: Buffer) => void) | undefined | null")] on_stdout: Option<ChunkCallback>,
        #[napi(ts_arg_type = "((chunk: Buffer) => void) | undefined | null")] on_stderr: Option<ChunkCallback>,
    ) -> std::result::Result<Object<'env>, Error<String>> {
        let addr = function_address(&addr)?;
        let mut owned = Vec::with_capacity(args.len());
        let mut buffers = Vec::new();
        for a in args {
            owned.push(match a {
                Either4::A(n) => OwnedArg::Int((n as i64) as u64),
                Either4::B(b) => OwnedArg::Int(bigint_arg(&b)?),
                Either4::C(s) => OwnedArg::Str(s.into_bytes()),
                Either4::D(buf) => {
                    let copy = buf.to_vec();
                    buffers.push(buf);
                    OwnedArg::Bytes(copy)
                }
            });
        }
        let work = Work::Call { addr, args: owned, as_bigint, timeout: RequestedTimeout::from_ms(timeout_ms)? };
        self.submit(env, work, buffers, dispatch, on_stdout, on_stderr)
    }
}

impl NativeMachine {
    fn submit<'env>(
        &mut self,
        env: &'env Env,
        work: Work,
        buffers: Vec<Buffer>,
        dispatch: Option<DispatchTsfn>,
        on_stdout: Option<ChunkCallback>,
        on_stderr: Option<ChunkCallback>,
    ) -> std::result::Result<Object<'env>, Error<String>> {
        if self.pending_debug.is_some() {
            return Err(Error::new(
                "INVALID_STATE".to_string(),
                "debug() waits for the next synchronous run() or call(); async ones cannot be debugged".to_string(),
            ));
        }
        let internal = |e: Error| Error::new("INTERNAL".to_string(), e.reason.clone());
        let host = AsyncHost {
            dispatch,
            trace: self.trace.clone(),
            stdout: on_stdout.map(OutputSink::new).transpose().map_err(internal)?,
            stderr: on_stderr.map(OutputSink::new).transpose().map_err(internal)?,
            intercepted: Arc::clone(&self.intercepted),
        };
        let restricted = match &*self.slot.lock().unwrap_or_else(|e| e.into_inner()) {
            Slot::Idle(m) => m.requires_seccomp(),
            _ => false,
        };
        if self.worker.as_ref().is_none_or(|w| restricted && !w.restricted) {
            self.worker = Some(Worker::spawn(restricted).map_err(internal)?);
        }
        let machine = {
            let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
            match std::mem::replace(&mut *slot, Slot::Busy) {
                Slot::Idle(m) => *m,
                other => {
                    let err = state_error(&other);
                    *slot = other;
                    return Err(err);
                }
            }
        };
        let (deferred, promise) = env.create_deferred::<NativeAsyncResult, _>().map_err(internal)?;
        self.gate.begin();
        let job =
            Job { work, machine: Some(machine), host, slot: self.slot.clone(), gate: self.gate.clone(), buffers, deferred: Some(deferred) };
        if let Some(worker) = &self.worker {
            worker.submit(job);
        }
        Ok(promise)
    }
}

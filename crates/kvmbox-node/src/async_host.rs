//! Running a machine off the JS thread: each machine that is used asynchronously gets one
//! dedicated worker thread (never the libuv pool, whose few threads would deadlock while
//! guests wait on JS handlers), so its vCPU stays on one thread. Host calls go back to the JS
//! thread through a threadsafe function and the worker blocks until the (possibly async)
//! handler's promise settles; output chunks are streamed without blocking and flushed before
//! the job's promise settles.

use std::collections::HashSet;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use kvmbox::{CallArg, Deadline, Host, HostCall, Machine, Stream, TraceEvent};
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::JsDeferred;
use napi_derive::napi;

use crate::convert::{call_value, error_record, failed_run, panic_message, run_result, NativeError, NativeRunResult, RequestedTimeout};
use crate::gate::OpGate;
use crate::sync_host::NativeTraceEvent;

/// `(nr, a0, …, a5) => Promise<bigint>`: the SDK's async dispatcher (it awaits the handler).
pub(crate) type DispatchArgs = FnArgs<(u32, u64, u64, u64, u64, u64, u64)>;
pub(crate) type DispatchTsfn = ThreadsafeFunction<DispatchArgs, Promise<BigInt>, DispatchArgs, Status, false>;
type OutputTsfn = ThreadsafeFunction<Vec<u8>, (), Buffer, Status, false>;

/// Output chunks on their way to a JS callback, counted so the job can wait until all were
/// delivered (threadsafe functions do not order against the promise's own resolution), and so
/// the guest waits while the JS thread is behind (backpressure): at most `MAX_PENDING` bytes
/// are queued for it, however much the guest writes.
pub(crate) struct OutputSink {
    tsfn: OutputTsfn,
    sent: Mutex<Counts>,
    delivered: Arc<(Mutex<Counts>, Condvar)>,
}

#[derive(Default, Clone, Copy)]
struct Counts {
    chunks: u64,
    bytes: u64,
}

/// Bytes of output that may wait for the JS thread before the guest has to wait too.
const MAX_PENDING: u64 = 4 << 20;

impl OutputSink {
    pub(crate) fn new(cb: Function<Buffer, ()>) -> Result<OutputSink> {
        let delivered = Arc::new((Mutex::new(Counts::default()), Condvar::new()));
        let counter = delivered.clone();
        let tsfn = cb.build_threadsafe_function::<Vec<u8>>().build_callback(move |ctx| {
            let (m, cv) = &*counter;
            let mut d = m.lock().unwrap_or_else(|e| e.into_inner());
            d.chunks += 1;
            d.bytes += ctx.value.len() as u64;
            cv.notify_all();
            Ok(Buffer::from(ctx.value))
        })?;
        Ok(OutputSink { tsfn, sent: Mutex::new(Counts::default()), delivered })
    }

    fn send(&self, chunk: &[u8], deadline: &Deadline) -> std::result::Result<(), String> {
        let sent = *self.sent.lock().unwrap_or_else(|e| e.into_inner());
        let (m, cv) = &*self.delivered;
        let mut done = m.lock().unwrap_or_else(|e| e.into_inner());
        while sent.bytes > done.bytes && sent.bytes - done.bytes + chunk.len() as u64 > MAX_PENDING {
            deadline.check().map_err(|e| e.to_string())?;
            if self.tsfn.aborted() {
                return Err("the output callback is gone".into());
            }
            let slice = deadline.poll_slice(Duration::from_millis(1));
            done = cv.wait_timeout(done, slice).unwrap_or_else(|e| e.into_inner()).0;
        }
        drop(done);
        if self.tsfn.call(chunk.to_vec(), ThreadsafeFunctionCallMode::NonBlocking) != Status::Ok {
            return Err("the output callback is gone".into());
        }
        let mut s = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        s.chunks += 1;
        s.bytes += chunk.len() as u64;
        Ok(())
    }

    /// Wait until the JS thread has taken every chunk sent so far.
    fn flush(&self) {
        let target = self.sent.lock().unwrap_or_else(|e| e.into_inner()).chunks;
        let (m, cv) = &*self.delivered;
        let mut done = m.lock().unwrap_or_else(|e| e.into_inner());
        while done.chunks < target {
            done = cv.wait_timeout(done, Duration::from_millis(50)).unwrap_or_else(|e| e.into_inner()).0;
            if self.tsfn.aborted() {
                return;
            }
        }
    }
}

/// The JS side of one asynchronous run or call, used from the worker thread.
/// `(event) => void`: the machine's `trace` callback, for async operations (weak: it does not
/// keep the process alive).
pub(crate) type TraceTsfn = ThreadsafeFunction<NativeTraceEvent, (), NativeTraceEvent, Status, false, true>;

pub(crate) struct AsyncHost {
    pub dispatch: Option<DispatchTsfn>,
    pub trace: Option<Arc<TraceTsfn>>,
    pub stdout: Option<OutputSink>,
    pub stderr: Option<OutputSink>,
    pub intercepted: Arc<HashSet<u64>>,
}

impl Host for AsyncHost {
    fn intercepts(&self, nr: u64) -> bool {
        self.dispatch.is_some() && self.intercepted.contains(&nr)
    }

    fn syscall(&mut self, call: &mut HostCall<'_>) -> std::result::Result<u64, String> {
        let Some(tsfn) = &self.dispatch else { return Err("no host-call dispatcher".into()) };
        let a = call.args;
        let (tx, rx) = futures::channel::oneshot::channel::<Result<Promise<BigInt>>>();
        let status = tsfn.call_with_return_value(
            FnArgs::from((call.nr as u32, a[0], a[1], a[2], a[3], a[4], a[5])),
            ThreadsafeFunctionCallMode::NonBlocking,
            move |ret, _env| {
                let _ = tx.send(ret);
                Ok(())
            },
        );
        if status != Status::Ok {
            return Err(format!("could not reach the JS thread ({status})"));
        }
        // Both waits — for the JS thread to start the handler, and for its promise — end at the
        // run's deadline or an interrupt (the run then fails with that, and the handler's
        // context signal aborts); a handler that never settles cannot hold the guest.
        let deadline = call.deadline();
        let promise = deadline
            .block_on(rx)
            .map_err(|e| e.to_string())?
            .map_err(|_| "the host-call handler was dropped".to_string())?
            .map_err(|e| e.reason.clone())?;
        let big = match deadline.block_on(promise).map_err(|e| e.to_string())? {
            Ok(big) => big,
            // The promise was collected without settling (nothing referenced it): it never
            // will, which is a handler that never settles — the guest waits for the deadline.
            Err(e) if e.status == Status::GenericFailure && e.reason.contains("canceled") => {
                let stopped = deadline.sleep_until(None).err();
                return Err(stopped.map_or_else(|| "the handler's promise was collected unsettled".into(), |s| s.to_string()));
            }
            Err(e) => return Err(e.reason.clone()),
        };
        let (signed, v, lossless) = big.get_u64();
        if signed || !lossless {
            return Err("the dispatcher returned a value outside 0..2^64".into());
        }
        Ok(v)
    }

    fn trace(&mut self, event: &TraceEvent<'_>) -> bool {
        let Some(tsfn) = &self.trace else { return false };
        tsfn.call(NativeTraceEvent::of(event), ThreadsafeFunctionCallMode::NonBlocking);
        true
    }

    fn output(&mut self, stream: Stream, data: &[u8], deadline: &Deadline) -> std::result::Result<(), String> {
        let sink = match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        };
        match sink {
            Some(sink) => sink.send(data, deadline),
            None => Ok(()),
        }
    }
}

impl AsyncHost {
    fn finish(&mut self) {
        for sink in [&self.stdout, &self.stderr].into_iter().flatten() {
            sink.flush();
        }
        // Release the threadsafe functions before the promise settles, so the process can exit.
        self.dispatch = None;
        self.trace = None;
        self.stdout = None;
        self.stderr = None;
    }
}

/// Where the machine lives: on the JS side between operations, with the worker during an
/// async one.
pub(crate) enum Slot {
    Idle(Box<Machine>),
    Busy,
    /// Finished and not resettable: the VM is released; only the output the machine had
    /// captured is kept, for takeOutput() (the SDK puts it on the error that finished it).
    Done {
        stdout: Vec<u8>,
        stderr: Vec<u8>,
    },
    Closed,
}

/// A machine stays alive while it can still be used: not finished, or resettable (it has a
/// snapshot to return to). Anything else releases its VM at once.
fn keep(m: &Machine) -> bool {
    !m.is_finished() || m.snapshot_of().is_some()
}

impl Slot {
    /// After a run or call: a machine that can no longer be used releases its VM now (not
    /// when JS collects the object), keeping only the output it captured.
    pub(crate) fn release_if_finished(&mut self) {
        if let Slot::Idle(m) = self {
            if !keep(m) {
                let done = Slot::Done { stdout: m.take_stdout(), stderr: m.take_stderr() };
                *self = done;
            }
        }
    }
}

pub(crate) type SharedSlot = Arc<Mutex<Slot>>;

/// A call argument owned by the job (copied from JS before the job starts).
pub(crate) enum OwnedArg {
    Int(u64),
    Str(Vec<u8>),
    Bytes(Vec<u8>),
}

pub(crate) enum Work {
    Run { timeout: RequestedTimeout },
    Call { addr: u64, args: Vec<OwnedArg>, as_bigint: bool, timeout: RequestedTimeout },
}

/// What an async operation resolves to.
#[napi(object, object_from_js = false)]
pub struct NativeAsyncResult {
    /// For runs.
    pub run: Option<NativeRunResult>,
    /// For calls that returned.
    pub value: Option<Either<f64, BigInt>>,
    /// For calls that failed.
    pub error: Option<NativeError>,
}

/// What a job produced: a run's result, or a call's value or error, and the buffers to copy back.
type Performed = (Option<NativeRunResult>, Option<Either<f64, BigInt>>, Option<NativeError>, Vec<Vec<u8>>);

type Resolver = Box<dyn FnOnce(Env) -> Result<NativeAsyncResult> + Send>;

pub(crate) struct Job {
    pub work: Work,
    pub machine: Option<Machine>,
    pub host: AsyncHost,
    pub slot: SharedSlot,
    /// Begun when the job was queued; ended when it is done.
    pub gate: Arc<OpGate>,
    /// The JS Buffers passed to a call, refilled from the guest when it returns.
    pub buffers: Vec<Buffer>,
    pub deferred: Option<JsDeferred<NativeAsyncResult, Resolver>>,
}

impl Job {
    fn execute(mut self) {
        let Some(mut machine) = self.machine.take() else { return };
        // A panic in the core must not cross into Node nor leave the machine 'busy' for ever:
        // it becomes an INTERNAL error and the machine is released.
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.perform(&mut machine)));
        self.gate.end();
        self.host.finish();
        let (run, value, error, bytes_back, machine) = match ran {
            Ok((run, value, error, bytes_back)) => (run, value, error, bytes_back, Some(machine)),
            Err(panic) => {
                let e = kvmbox::Error::Internal(format!("kvmbox panicked: {}; the machine was closed", panic_message(&panic)));
                match self.work {
                    Work::Run { .. } => (Some(failed_run(&e)), None, None, Vec::new(), None),
                    Work::Call { .. } => (None, None, Some(error_record(&e)), Vec::new(), None),
                }
            }
        };
        {
            let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
            match machine {
                Some(machine) if matches!(*slot, Slot::Busy) => {
                    *slot = Slot::Idle(Box::new(machine));
                    slot.release_if_finished();
                }
                Some(machine) => drop(machine), // closed meanwhile: release the VM now
                None => *slot = Slot::Closed,
            }
        }
        let mut buffers = std::mem::take(&mut self.buffers);
        if let Some(d) = self.deferred.take() {
            d.resolve(Box::new(move |_env| {
                for (buf, data) in buffers.iter_mut().zip(bytes_back) {
                    let dst = buf.as_mut();
                    let n = dst.len().min(data.len());
                    dst[..n].copy_from_slice(&data[..n]);
                }
                Ok(NativeAsyncResult { run, value, error })
            }));
        }
    }

    /// The run or call itself: (run result, call value, call error, buffers to copy back).
    fn perform(&mut self, machine: &mut Machine) -> Performed {
        match &mut self.work {
            Work::Run { timeout } => {
                let outcome = machine.run_with(timeout.resolve(machine), &mut self.host);
                (Some(run_result(machine, outcome)), None, None, Vec::new())
            }
            Work::Call { addr, args, as_bigint, timeout } => {
                let mut core: Vec<CallArg> = args
                    .iter_mut()
                    .map(|a| match a {
                        OwnedArg::Int(v) => CallArg::Int(*v),
                        OwnedArg::Str(s) => CallArg::Str(s),
                        OwnedArg::Bytes(b) => CallArg::Bytes(b),
                    })
                    .collect();
                let timeout = timeout.resolve(machine);
                let outcome = machine.call(*addr, &mut core, timeout, &mut self.host);
                drop(core);
                let back: Vec<Vec<u8>> = args
                    .drain(..)
                    .filter_map(|a| match a {
                        OwnedArg::Bytes(b) => Some(b),
                        _ => None,
                    })
                    .collect();
                match outcome {
                    Ok(v) => (None, Some(call_value(v, *as_bigint)), None, back),
                    Err(e) => (None, None, Some(error_record(&e)), Vec::new()),
                }
            }
        }
    }
}

impl Drop for Job {
    /// A job that never ran (its worker is gone) still settles its promise: an unsettled
    /// deferred would keep Node alive forever.
    fn drop(&mut self) {
        if let Some(d) = self.deferred.take() {
            self.gate.end();
            if let Some(machine) = self.machine.take() {
                let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
                if matches!(*slot, Slot::Busy) {
                    *slot = Slot::Idle(Box::new(machine));
                }
            }
            d.resolve(Box::new(|_env| Err(Error::from_reason("INTERNAL: the machine's vCPU thread is gone"))));
        }
    }
}

/// The dedicated thread of one machine; it ends when the machine's JS object goes away.
pub(crate) struct Worker {
    jobs: mpsc::Sender<Job>,
    /// The thread runs under kvmbox's seccomp filter.
    pub(crate) restricted: bool,
}

impl Worker {
    /// Start the thread; with `restricted`, it installs the seccomp filter before any job.
    pub(crate) fn spawn(restricted: bool) -> Result<Worker> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<std::result::Result<(), String>>(1);
        std::thread::Builder::new()
            .name("kvmbox-vcpu".into())
            .spawn(move || {
                if restricted {
                    let r = kvmbox::seccomp::restrict_current_thread().map(|_| ()).map_err(|e| e.to_string());
                    let ok = r.is_ok();
                    let _ = ready_tx.send(r);
                    if !ok {
                        return;
                    }
                } else {
                    let _ = ready_tx.send(Ok(()));
                }
                for job in rx {
                    job.execute();
                }
            })
            .map_err(|e| Error::from_reason(format!("cannot start the vCPU thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Worker { jobs: tx, restricted }),
            Ok(Err(e)) => Err(Error::from_reason(format!("cannot restrict the vCPU thread: {e}"))),
            Err(_) => Err(Error::from_reason("the vCPU thread ended while starting")),
        }
    }

    /// Queue `job`; if the worker is gone the job is dropped, which settles its promise.
    pub(crate) fn submit(&self, job: Job) {
        let _ = self.jobs.send(job);
    }
}

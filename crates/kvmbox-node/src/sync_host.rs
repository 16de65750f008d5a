//! The JS side of a synchronous run or call: callbacks registered once per machine as
//! persistent references and called on the JS thread, on demand.

use std::collections::HashSet;

use kvmbox::{Deadline, Host, HostCall, Stream, TraceEvent};
use napi::bindgen_prelude::*;

pub(crate) type ChunkCallback<'a> = Function<'a, Buffer, ()>;
/// `(nr) => status`: the SDK's dispatcher reads the six arguments from the shared register
/// array (slots 0–5), runs the handler and leaves rax in slot 6; status 0 = done, else the
/// handler threw (the SDK keeps the thrown value).
pub(crate) type SyscallDispatch<'a> = Function<'a, u32, i32>;

/// The SDK's callbacks, registered once per machine (persistent references) so that a run or
/// call pays for them only when the guest actually writes output or makes a host call.
#[derive(Default)]
pub(crate) struct Hooks {
    pub on_stdout: Option<FunctionRef<Buffer, ()>>,
    pub on_stderr: Option<FunctionRef<Buffer, ()>>,
    pub dispatch: Option<FunctionRef<u32, i32>>,
    /// Shared with the SDK: slots 0–5 the host call's arguments, slot 6 its result.
    pub regs: Option<BigUint64Array>,
    /// The `trace` callback, if the machine has one.
    pub on_trace: Option<FunctionRef<NativeTraceEvent, ()>>,
}

/// One traced syscall, as the SDK's `trace` callback gets it.
#[napi_derive::napi(object, object_from_js = false)]
pub struct NativeTraceEvent {
    pub nr: u32,
    pub name: String,
    pub args: Vec<BigInt>,
    pub result: String,
}

impl NativeTraceEvent {
    pub(crate) fn of(e: &TraceEvent<'_>) -> NativeTraceEvent {
        NativeTraceEvent {
            nr: e.nr as u32,
            name: e.name.to_string(),
            args: e.args.iter().map(|&a| BigInt::from(a)).collect(),
            result: e.result.to_string(),
        }
    }
}

/// The JS side of one synchronous run or call.
pub(crate) struct JsHost<'a> {
    pub env: &'a Env,
    pub hooks: &'a mut Hooks,
    pub intercepted: &'a HashSet<u64>,
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
            Err(e) => Err(e.reason.clone()),
        }
    }

    fn trace(&mut self, event: &TraceEvent<'_>) -> bool {
        let Some(cb) = &self.hooks.on_trace else { return false };
        // A throwing trace callback does not stop the guest (tracing is for watching).
        let _ = cb.borrow_back(self.env).and_then(|f| f.call(NativeTraceEvent::of(event)));
        true
    }

    fn output(&mut self, stream: Stream, data: &[u8], _deadline: &Deadline) -> std::result::Result<(), String> {
        let cb = match stream {
            Stream::Stdout => &self.hooks.on_stdout,
            Stream::Stderr => &self.hooks.on_stderr,
        };
        match cb {
            Some(cb) => match cb.borrow_back(self.env).and_then(|f| f.call(Buffer::from(data))) {
                Ok(()) => Ok(()),
                Err(e) => Err(e.reason.clone()),
            },
            None => Ok(()),
        }
    }
}

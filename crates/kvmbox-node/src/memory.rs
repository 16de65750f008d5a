//! Checked guest-memory access from JS.

use kvmbox::{MemoryView, WeakMemoryView};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::convert::u64_of_addr;

/// Checked access to a machine's guest memory from JS (until the machine is finished/closed).
#[napi]
pub struct NativeMemory {
    pub(crate) view: std::sync::Arc<std::sync::Mutex<WeakMemoryView>>,
}

/// Errors carry the core's codes, as the machine's do (the SDK maps them to its classes).
/// (`#[napi]` methods spell the type out: the macro looks for `Result` by name.)
type JsResult<T> = std::result::Result<T, Error<String>>;

impl NativeMemory {
    fn live(&self) -> JsResult<MemoryView> {
        self.view
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .upgrade()
            .ok_or_else(|| Error::new("INVALID_STATE".to_string(), "the machine is closed; its memory was released".to_string()))
    }
}

fn addr_of(addr: &Either<f64, BigInt>) -> JsResult<u64> {
    u64_of_addr(addr).ok_or_else(|| Error::new("INVALID_ARGUMENT".to_string(), "address out of range".to_string()))
}

/// A length or maximum from JS: a non-negative safe integer (anything else is refused, never
/// converted into something huge).
fn count_of(name: &str, v: f64) -> JsResult<u64> {
    if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= 9007199254740991.0 {
        Ok(v as u64)
    } else {
        Err(Error::new("INVALID_ARGUMENT".to_string(), format!("{name} must be a non-negative safe integer, got {v}")))
    }
}

fn efault(addr: u64, len: u64) -> Error<String> {
    Error::new("INVALID_ARGUMENT".to_string(), format!("EFAULT: {len} bytes at {addr:#x} are not accessible to the guest"))
}

#[napi]
impl NativeMemory {
    #[napi]
    pub fn read(&self, addr: Either<f64, BigInt>, len: f64) -> std::result::Result<Buffer, Error<String>> {
        let addr = addr_of(&addr)?;
        let len = count_of("len", len)?;
        self.live()?.read(addr, len).map(Buffer::from).map_err(|_| efault(addr, len))
    }

    #[napi]
    pub fn write(&self, addr: Either<f64, BigInt>, data: Buffer) -> std::result::Result<(), Error<String>> {
        let addr = addr_of(&addr)?;
        self.live()?.write(addr, &data).map_err(|_| efault(addr, data.len() as u64))
    }

    /// The bytes of a NUL-terminated string (at most `max`), or null if there is no NUL within.
    #[napi]
    pub fn read_c_string(&self, addr: Either<f64, BigInt>, max: f64) -> std::result::Result<Option<Buffer>, Error<String>> {
        let addr = addr_of(&addr)?;
        let max = usize::try_from(count_of("max", max)?).unwrap_or(usize::MAX);
        self.live()?.read_cstring(addr, max).map(|o| o.map(Buffer::from)).map_err(|_| efault(addr, 1))
    }

    #[napi(getter)]
    pub fn size(&self) -> f64 {
        self.live().map(|v| v.size() as f64).unwrap_or(0.0)
    }
}

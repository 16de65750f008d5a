//! Keeping the vDSO's clock parameters current (see `crate::vdso`): the host rewrites the
//! parameters page when a run or call starts and at a syscall exit once a second has passed
//! since its last rewrite, and before the first run of a machine whose page may be another
//! host's (a new machine, a reset to a snapshot loaded from a file). In between, the page's
//! line (a TSC reading and the clocks then) stays exact but for the host clock's slewing, so a
//! reset to a snapshot taken here needs no rewrite: per-request resets copy no extra page.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kvm_ioctls::VcpuFd;

use crate::error::Result;
use crate::layout::Layout;
use crate::memory::GuestMemory;
use crate::vdso::{self, Params};

/// How often the parameters are rewritten while the guest runs.
const REFRESH: Duration = Duration::from_secs(1);

/// The TSC rate for the vDSO, once per process (every vCPU here ticks alike): KVM's figure for
/// the vCPU, else a short calibration against CLOCK_MONOTONIC_RAW; None where the TSC is not
/// invariant (the vDSO then leaves every call to the syscall).
fn tsc_rate(vcpu: &VcpuFd) -> Option<(u64, u32)> {
    static RATE: OnceLock<Option<(u64, u32)>> = OnceLock::new();
    *RATE.get_or_init(|| {
        if !vdso::invariant_tsc() {
            return None;
        }
        let khz = vcpu.get_tsc_khz().ok().filter(|&k| k > 0).or_else(calibrate_khz)?;
        vdso::rate(khz)
    })
}

/// The host TSC's rate in kHz, measured over 10 ms.
fn calibrate_khz() -> Option<u32> {
    let (t0, n0) = (vdso::rdtsc(), clock_ns(libc::CLOCK_MONOTONIC_RAW));
    std::thread::sleep(Duration::from_millis(10));
    let (t1, n1) = (vdso::rdtsc(), clock_ns(libc::CLOCK_MONOTONIC_RAW));
    let khz = u128::from(t1.wrapping_sub(t0)).checked_mul(1_000_000)?.checked_div(u128::from(n1.checked_sub(n0)?))?;
    u32::try_from(khz).ok()
}

/// The host's clock `c` in nanoseconds.
fn clock_ns(c: libc::clockid_t) -> u64 {
    // SAFETY: clock_gettime into a local struct.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(c, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0).saturating_mul(1_000_000_000).saturating_add(u64::try_from(ts.tv_nsec).unwrap_or(0))
}

/// One machine's view of the vDSO clock.
pub(crate) struct GuestClock {
    rate: Option<(u64, u32)>,
    /// What was last written, for continuity: a new line never starts below where the old one
    /// had got to, so monotonic clocks never step back.
    last: Option<Params>,
    refreshed: Option<Instant>,
}

impl GuestClock {
    pub(crate) fn new(vcpu: &VcpuFd) -> GuestClock {
        GuestClock { rate: tsc_rate(vcpu), last: None, refreshed: None }
    }

    /// A second has passed since the last rewrite (or there was none).
    pub(crate) fn due(&self) -> bool {
        self.refreshed.is_none_or(|t| t.elapsed() >= REFRESH)
    }

    /// The page may not hold this host's line any more: rewrite it before the guest runs.
    pub(crate) fn invalidate(&mut self) {
        self.refreshed = None;
    }

    /// Rewrite the parameters page from the host's clocks now (through the recorded write
    /// path: a reset puts the snapshot's page back, and the next run rewrites it), the
    /// monotonic clocks `mono_offset` ns ahead of the host's (see `Linux::mono_offset`).
    pub(crate) fn refresh(&mut self, mem: &GuestMemory, layout: &Layout, mono_offset: u64) -> Result<()> {
        let seq = u32::try_from(mem.read_u64(layout.sys.vvar)? & 0xffff_ffff).unwrap_or(0).wrapping_add(2);
        let params = match self.rate {
            None => Params { seq, ..Params::default() },
            Some((mult, shift)) => {
                let t0 = vdso::rdtsc();
                let (mono, real, boot) = (clock_ns(libc::CLOCK_MONOTONIC), clock_ns(libc::CLOCK_REALTIME), clock_ns(libc::CLOCK_BOOTTIME));
                let t1 = vdso::rdtsc();
                let tsc_base = t0.saturating_add(t1.saturating_sub(t0) / 2);
                let (mut mono_ns, mut boot_ns) = (mono.saturating_add(mono_offset), boot.saturating_add(mono_offset));
                if let Some(old) = self.last.filter(|o| o.enabled != 0) {
                    mono_ns = mono_ns.max(old.extrapolate(old.mono_ns, tsc_base));
                    boot_ns = boot_ns.max(old.extrapolate(old.boot_ns, tsc_base));
                }
                Params { seq, enabled: 1, tsc_base, mult, shift, pad: 0, mono_ns, real_ns: real, boot_ns }
            }
        };
        mem.write(layout.sys.vvar, &params.to_bytes())?;
        self.last = Some(params);
        self.refreshed = Some(Instant::now());
        Ok(())
    }
}

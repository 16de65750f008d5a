//! Live debugging with gdb: a GDB remote-protocol stub (the `gdbstub` crate) driving a
//! machine's run loop.
//!
//! On PVM, KVM_SET_GUEST_DEBUG does not reach ring-3 code, so breakpoints are `int3` bytes
//! planted in guest memory and single steps set RFLAGS.TF; the resulting #BP/#DB exceptions
//! reach the host through the IDT stubs like every other exception (this works on VMX/SVM
//! too). Breakpoints live only for the session: they are removed when gdb detaches, the
//! connection drops or the guest stops, so they never reach a snapshot, a fork or a later run.
//! Ctrl-C: a watcher thread sees the byte arrive and kicks the vCPU out of KVM_RUN.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gdbstub::arch::{Arch, Registers};
use gdbstub::common::Signal;
use gdbstub::common::Tid;
use gdbstub::conn::ConnectionExt;
use gdbstub::stub::run_blocking::{self, BlockingEventLoop};
use gdbstub::stub::{DisconnectReason, GdbStub, MultiThreadStopReason};
use gdbstub::target::ext::base::multithread::{
    MultiThreadBase, MultiThreadResume, MultiThreadResumeOps, MultiThreadSchedulerLocking, MultiThreadSchedulerLockingOps,
    MultiThreadSingleStep, MultiThreadSingleStepOps,
};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::{Breakpoints, BreakpointsOps, SwBreakpoint, SwBreakpointOps};
use gdbstub::target::{Target, TargetError, TargetResult};
use gdbstub_arch::x86::reg::id::X86_64CoreRegId;
use gdbstub_arch::x86::reg::X86_64CoreRegs;

use crate::error::{Error, Result};
use crate::host::Host;
use crate::machine::{Machine, Stop, ThreadState};
use crate::syscalls::ExitStatus;
use crate::timer;

/// x86-64 with SSE plus the FS/GS base registers (the guest's TLS pointers), which gdbstub's
/// stock x86-64 description lacks. The `g` packet is the stock layout followed by fs_base and
/// gs_base, as the target description below declares.
enum X86_64Kvmbox {}

/// Registers of [`X86_64Kvmbox`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct KvmboxRegs {
    core: X86_64CoreRegs,
    fs_base: u64,
    gs_base: u64,
}

impl Registers for KvmboxRegs {
    type ProgramCounter = u64;

    fn pc(&self) -> u64 {
        self.core.rip
    }

    fn gdb_serialize(&self, mut write_byte: impl FnMut(Option<u8>)) {
        self.core.gdb_serialize(&mut write_byte);
        for b in self.fs_base.to_le_bytes().into_iter().chain(self.gs_base.to_le_bytes()) {
            write_byte(Some(b));
        }
    }

    fn gdb_deserialize(&mut self, bytes: &[u8]) -> std::result::Result<(), ()> {
        const CORE: usize = 0x218;
        self.core.gdb_deserialize(bytes.get(..CORE).ok_or(())?)?;
        if let Some(rest) = bytes.get(CORE..CORE + 16) {
            self.fs_base = u64::from_le_bytes(rest[..8].try_into().unwrap());
            self.gs_base = u64::from_le_bytes(rest[8..].try_into().unwrap());
        }
        Ok(())
    }
}

impl Arch for X86_64Kvmbox {
    type Usize = u64;
    type Registers = KvmboxRegs;
    type RegId = X86_64CoreRegId;
    type BreakpointKind = usize;

    fn target_description_xml() -> Option<&'static str> {
        Some(TARGET_XML)
    }
}

/// The register layout of `g` packets, in gdb's feature names (amd64 core + SSE + segments).
const TARGET_XML: &str = r#"<?xml version="1.0"?><!DOCTYPE target SYSTEM "gdb-target.dtd"><target version="1.0"><architecture>i386:x86-64</architecture>
<feature name="org.gnu.gdb.i386.core">
<flags id="i386_eflags" size="4"><field name="CF" start="0" end="0"/><field name="" start="1" end="1"/><field name="PF" start="2" end="2"/><field name="AF" start="4" end="4"/><field name="ZF" start="6" end="6"/><field name="SF" start="7" end="7"/><field name="TF" start="8" end="8"/><field name="IF" start="9" end="9"/><field name="DF" start="10" end="10"/><field name="OF" start="11" end="11"/><field name="NT" start="14" end="14"/><field name="RF" start="16" end="16"/><field name="VM" start="17" end="17"/><field name="AC" start="18" end="18"/><field name="VIF" start="19" end="19"/><field name="VIP" start="20" end="20"/><field name="ID" start="21" end="21"/></flags>
<reg name="rax" bitsize="64" type="int64"/><reg name="rbx" bitsize="64" type="int64"/><reg name="rcx" bitsize="64" type="int64"/><reg name="rdx" bitsize="64" type="int64"/><reg name="rsi" bitsize="64" type="int64"/><reg name="rdi" bitsize="64" type="int64"/><reg name="rbp" bitsize="64" type="data_ptr"/><reg name="rsp" bitsize="64" type="data_ptr"/>
<reg name="r8" bitsize="64" type="int64"/><reg name="r9" bitsize="64" type="int64"/><reg name="r10" bitsize="64" type="int64"/><reg name="r11" bitsize="64" type="int64"/><reg name="r12" bitsize="64" type="int64"/><reg name="r13" bitsize="64" type="int64"/><reg name="r14" bitsize="64" type="int64"/><reg name="r15" bitsize="64" type="int64"/>
<reg name="rip" bitsize="64" type="code_ptr"/><reg name="eflags" bitsize="32" type="i386_eflags"/>
<reg name="cs" bitsize="32" type="int32"/><reg name="ss" bitsize="32" type="int32"/><reg name="ds" bitsize="32" type="int32"/><reg name="es" bitsize="32" type="int32"/><reg name="fs" bitsize="32" type="int32"/><reg name="gs" bitsize="32" type="int32"/>
<reg name="st0" bitsize="80" type="i387_ext"/><reg name="st1" bitsize="80" type="i387_ext"/><reg name="st2" bitsize="80" type="i387_ext"/><reg name="st3" bitsize="80" type="i387_ext"/><reg name="st4" bitsize="80" type="i387_ext"/><reg name="st5" bitsize="80" type="i387_ext"/><reg name="st6" bitsize="80" type="i387_ext"/><reg name="st7" bitsize="80" type="i387_ext"/>
<reg name="fctrl" bitsize="32" type="int" group="float"/><reg name="fstat" bitsize="32" type="int" group="float"/><reg name="ftag" bitsize="32" type="int" group="float"/><reg name="fiseg" bitsize="32" type="int" group="float"/><reg name="fioff" bitsize="32" type="int" group="float"/><reg name="foseg" bitsize="32" type="int" group="float"/><reg name="fooff" bitsize="32" type="int" group="float"/><reg name="fop" bitsize="32" type="int" group="float"/>
</feature>
<feature name="org.gnu.gdb.i386.sse">
<vector id="v8bf16" type="bfloat16" count="8"/><vector id="v4f" type="ieee_single" count="4"/><vector id="v2d" type="ieee_double" count="2"/><vector id="v16i8" type="int8" count="16"/><vector id="v8i16" type="int16" count="8"/><vector id="v4i32" type="int32" count="4"/><vector id="v2i64" type="int64" count="2"/>
<union id="vec128"><field name="v8_bfloat16" type="v8bf16"/><field name="v4_float" type="v4f"/><field name="v2_double" type="v2d"/><field name="v16_int8" type="v16i8"/><field name="v8_int16" type="v8i16"/><field name="v4_int32" type="v4i32"/><field name="v2_int64" type="v2i64"/><field name="uint128" type="uint128"/></union>
<flags id="i386_mxcsr" size="4"><field name="IE" start="0" end="0"/><field name="DE" start="1" end="1"/><field name="ZE" start="2" end="2"/><field name="OE" start="3" end="3"/><field name="UE" start="4" end="4"/><field name="PE" start="5" end="5"/><field name="DAZ" start="6" end="6"/><field name="IM" start="7" end="7"/><field name="DM" start="8" end="8"/><field name="ZM" start="9" end="9"/><field name="OM" start="10" end="10"/><field name="UM" start="11" end="11"/><field name="PM" start="12" end="12"/><field name="FZ" start="15" end="15"/></flags>
<reg name="xmm0" bitsize="128" type="vec128"/><reg name="xmm1" bitsize="128" type="vec128"/><reg name="xmm2" bitsize="128" type="vec128"/><reg name="xmm3" bitsize="128" type="vec128"/><reg name="xmm4" bitsize="128" type="vec128"/><reg name="xmm5" bitsize="128" type="vec128"/><reg name="xmm6" bitsize="128" type="vec128"/><reg name="xmm7" bitsize="128" type="vec128"/>
<reg name="xmm8" bitsize="128" type="vec128"/><reg name="xmm9" bitsize="128" type="vec128"/><reg name="xmm10" bitsize="128" type="vec128"/><reg name="xmm11" bitsize="128" type="vec128"/><reg name="xmm12" bitsize="128" type="vec128"/><reg name="xmm13" bitsize="128" type="vec128"/><reg name="xmm14" bitsize="128" type="vec128"/><reg name="xmm15" bitsize="128" type="vec128"/>
<reg name="mxcsr" bitsize="32" type="i386_mxcsr" group="vector"/>
</feature>
<feature name="org.gnu.gdb.i386.segments"><reg name="fs_base" bitsize="64" type="int"/><reg name="gs_base" bitsize="64" type="int"/></feature>
</target>"#;

/// How a debug session ended.
pub(crate) enum SessionEnd {
    /// The guest stopped for good (exit, pause) while debugged.
    Stopped(Stop),
    /// gdb detached or the connection dropped: the guest continues undebugged.
    Detached,
    /// gdb killed the guest.
    Killed,
}

struct Session<'a> {
    machine: &'a mut Machine,
    host: &'a mut dyn Host,
    timeout: Option<Duration>,
    step: bool,
    /// Address → original byte under each planted `int3`.
    breakpoints: BTreeMap<u64, u8>,
    interrupt: Arc<AtomicBool>,
    /// Debugging a function call (its return ends the session).
    in_call: bool,
    /// A stop or failure that ends the session once gdb has been told about it.
    end: Option<Result<Stop>>,
}

impl Target for Session<'_> {
    type Arch = X86_64Kvmbox;
    type Error = String;

    #[inline(always)]
    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::MultiThread(self)
    }

    #[inline(always)]
    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }
}

/// gdb's thread id for a guest tid (gdb numbers threads from 1, as Linux tids are).
fn gdb_tid(tid: u64) -> Tid {
    Tid::new(usize::try_from(tid).unwrap_or(usize::MAX)).unwrap_or(Tid::MIN)
}

impl MultiThreadBase for Session<'_> {
    fn read_registers(&mut self, all: &mut KvmboxRegs, tid: Tid) -> TargetResult<(), Self> {
        let state = self.machine.thread_state(tid.get() as u64).map_err(|e| TargetError::Fatal(e.to_string()))?;
        let Some(ThreadState { regs: r, tls: (fs_base, gs_base), fpu }) = state else { return Err(TargetError::Errno(3)) }; // ESRCH
        (all.fs_base, all.gs_base) = (fs_base, gs_base);
        let regs = &mut all.core;
        regs.regs = [r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15];
        regs.rip = r.rip;
        regs.eflags = r.rflags as u32;
        regs.segments.cs = crate::arch::SEL_USER_CODE as u32;
        regs.segments.ss = crate::arch::SEL_USER_DATA as u32;
        regs.segments.ds = crate::arch::SEL_USER_DATA as u32;
        regs.segments.es = crate::arch::SEL_USER_DATA as u32;
        regs.segments.fs = crate::arch::SEL_USER_DATA as u32;
        regs.segments.gs = crate::arch::SEL_USER_DATA as u32;
        for (dst, src) in regs.st.iter_mut().zip(fpu.fpr.iter()) {
            dst.copy_from_slice(&src[..10]);
        }
        regs.fpu.fctrl = fpu.fcw as u32;
        regs.fpu.fstat = fpu.fsw as u32;
        regs.fpu.ftag = fpu.ftwx as u32;
        regs.fpu.fop = fpu.last_opcode as u32;
        regs.fpu.fioff = fpu.last_ip as u32;
        regs.fpu.fooff = fpu.last_dp as u32;
        for (dst, src) in regs.xmm.iter_mut().zip(fpu.xmm.iter()) {
            *dst = u128::from_le_bytes(*src);
        }
        regs.mxcsr = fpu.mxcsr;
        Ok(())
    }

    fn write_registers(&mut self, all: &KvmboxRegs, tid: Tid) -> TargetResult<(), Self> {
        let tid = tid.get() as u64;
        let state = self.machine.thread_state(tid).map_err(|e| TargetError::Fatal(e.to_string()))?;
        let Some(ThreadState { regs: mut r, mut fpu, .. }) = state else { return Err(TargetError::Errno(3)) };
        let regs = &all.core;
        let g = &regs.regs;
        (r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp) = (g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]);
        (r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15) = (g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]);
        r.rip = regs.rip;
        // User-controllable flags only (no IOPL, no VM/RF tricks).
        r.rflags = (regs.eflags as u64 & 0x3C_0DD5) | 0x2;
        for (dst, src) in fpu.xmm.iter_mut().zip(regs.xmm.iter()) {
            *dst = src.to_le_bytes();
        }
        fpu.mxcsr = regs.mxcsr & 0xFFFF;
        match self.machine.set_thread_state(tid, r, &fpu) {
            Ok(true) => Ok(()),
            Ok(false) => Err(TargetError::Errno(3)),
            Err(e) => Err(TargetError::Fatal(e.to_string())),
        }
    }

    #[inline(always)]
    fn list_active_threads(&mut self, thread_is_active: &mut dyn FnMut(Tid)) -> std::result::Result<(), Self::Error> {
        for tid in self.machine.thread_ids().0 {
            thread_is_active(gdb_tid(tid));
        }
        Ok(())
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8], _tid: Tid) -> TargetResult<usize, Self> {
        // Byte ranges may straddle inaccessible pages: return what is readable.
        let mut done = 0;
        while done < data.len() {
            let addr = start + done as u64;
            let chunk = (4096 - (addr % 4096) as usize).min(data.len() - done);
            if !self.machine.debug_read(addr, &mut data[done..done + chunk]) {
                break;
            }
            done += chunk;
        }
        // Show the program's own bytes, not our int3s.
        for (&at, &orig) in self.breakpoints.range(start..start + done as u64) {
            data[(at - start) as usize] = orig;
        }
        Ok(done)
    }

    fn write_addrs(&mut self, start: u64, data: &[u8], _tid: Tid) -> TargetResult<(), Self> {
        if self.machine.debug_write(start, data) {
            Ok(())
        } else {
            Err(TargetError::Errno(14))
        }
    }

    #[inline(always)]
    fn support_resume(&mut self) -> Option<MultiThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

// All threads run when the guest is resumed (the scheduler picks them as usual); a single
// step steps the thread on the vCPU, which is the one that stopped.
impl MultiThreadResume for Session<'_> {
    fn resume(&mut self) -> std::result::Result<(), Self::Error> {
        Ok(())
    }

    fn clear_resume_actions(&mut self) -> std::result::Result<(), Self::Error> {
        self.step = false;
        Ok(())
    }

    fn set_resume_action_continue(&mut self, _tid: Tid, _signal: Option<Signal>) -> std::result::Result<(), Self::Error> {
        Ok(())
    }

    #[inline(always)]
    fn support_single_step(&mut self) -> Option<MultiThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    #[inline(always)]
    fn support_scheduler_locking(&mut self) -> Option<MultiThreadSchedulerLockingOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadSingleStep for Session<'_> {
    fn set_resume_action_step(&mut self, tid: Tid, _signal: Option<Signal>) -> std::result::Result<(), Self::Error> {
        self.step = true;
        // gdb steps the thread it has selected: that thread goes on the vCPU (if it can run).
        self.machine.debug_select_thread(tid.get() as u64).map_err(|e| e.to_string())?;
        Ok(())
    }
}

// gdb asks for "only the stepped thread runs" when it steps: a single step is one instruction
// of the thread on the vCPU, which nothing preempts within that instruction.
impl MultiThreadSchedulerLocking for Session<'_> {
    fn set_resume_action_scheduler_lock(&mut self) -> std::result::Result<(), Self::Error> {
        Ok(())
    }
}

impl Breakpoints for Session<'_> {
    #[inline(always)]
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }
}

impl SwBreakpoint for Session<'_> {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        if self.breakpoints.contains_key(&addr) {
            return Ok(true);
        }
        let mut orig = [0u8];
        if !self.machine.debug_read(addr, &mut orig) || !self.machine.debug_write(addr, &[0xCC]) {
            return Ok(false);
        }
        self.breakpoints.insert(addr, orig[0]);
        Ok(true)
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        match self.breakpoints.remove(&addr) {
            Some(orig) => Ok(self.machine.debug_write(addr, &[orig])),
            None => Ok(false),
        }
    }
}

impl Session<'_> {
    fn remove_all_breakpoints(&mut self) {
        for (addr, orig) in std::mem::take(&mut self.breakpoints) {
            self.machine.debug_write(addr, &[orig]);
        }
    }

    /// Run until the guest traps, stops, fails or is interrupted.
    fn run(&mut self, conn_fd: i32) -> Result<Stop> {
        if self.step {
            let mut r = self.machine.regs();
            r.rflags |= 0x100; // TF: #DB after one instruction
            self.machine.set_regs(r);
        }
        let stop_watch = Arc::new(AtomicBool::new(false));
        let watcher = {
            let stop_watch = stop_watch.clone();
            let interrupt = self.interrupt.clone();
            // SAFETY: pthread_self has no preconditions.
            let vcpu_thread = unsafe { libc::pthread_self() } as usize;
            std::thread::spawn(move || {
                while !stop_watch.load(Ordering::SeqCst) {
                    let mut pfd = libc::pollfd { fd: conn_fd, events: libc::POLLIN, revents: 0 };
                    // SAFETY: poll on one valid pollfd.
                    if unsafe { libc::poll(&mut pfd, 1, 20) } > 0 {
                        interrupt.store(true, Ordering::SeqCst);
                        timer::kick(vcpu_thread);
                        return;
                    }
                }
            })
        };
        let result = self.machine.run_loop(self.timeout, self.host, self.in_call);
        stop_watch.store(true, Ordering::SeqCst);
        let _ = watcher.join();
        result
    }
}

fn signal_for_fault(e: &Error) -> Signal {
    match e {
        Error::GuestFault(f) => Signal(f.signal() as u8),
        Error::Timeout(_) => Signal::SIGALRM,
        _ => Signal::SIGKILL,
    }
}

enum EventLoop {}

impl BlockingEventLoop for EventLoop {
    type Target = Session<'static>;
    type Connection = TcpStream;
    type StopReason = MultiThreadStopReason<u64>;

    #[allow(clippy::type_complexity)]
    fn wait_for_stop_reason(
        target: &mut Session<'static>,
        conn: &mut TcpStream,
    ) -> std::result::Result<run_blocking::Event<Self::StopReason>, run_blocking::WaitForStopReasonError<String, std::io::Error>> {
        use run_blocking::{Event, WaitForStopReasonError as W};
        if target.end.is_some() {
            // gdb resumed a guest that already stopped for good: end the session.
            return Err(W::Target("the guest has stopped".into()));
        }
        let result = target.run(conn.as_raw_fd());
        // The thread that stopped is the one on the vCPU.
        let tid = gdb_tid(target.machine.thread_ids().1);
        let signal = |signal| MultiThreadStopReason::SignalWithThread { tid, signal };
        match result {
            Ok(Stop::Trap(3)) => {
                let mut r = target.machine.regs();
                if target.breakpoints.contains_key(&(r.rip - 1)) {
                    r.rip -= 1; // re-execute the real instruction once the breakpoint is lifted
                    target.machine.set_regs(r);
                    Ok(Event::TargetStopped(MultiThreadStopReason::SwBreak(tid)))
                } else {
                    Ok(Event::TargetStopped(signal(Signal::SIGTRAP)))
                }
            }
            // A finished single step, or an int3 of the program's own.
            Ok(Stop::Trap(_)) => Ok(Event::TargetStopped(signal(Signal::SIGTRAP))),
            Ok(Stop::Interrupted) => {
                let byte = conn.read().map_err(W::Connection)?;
                Ok(Event::IncomingData(byte))
            }
            Ok(Stop::Exit(ExitStatus::Code(c))) => {
                target.end = Some(Ok(Stop::Exit(ExitStatus::Code(c))));
                Ok(Event::TargetStopped(MultiThreadStopReason::Exited(c as u8)))
            }
            Ok(Stop::Exit(ExitStatus::Signal(s))) => {
                target.end = Some(Ok(Stop::Exit(ExitStatus::Signal(s))));
                Ok(Event::TargetStopped(MultiThreadStopReason::Terminated(Signal(s as u8))))
            }
            Ok(other) => {
                // kvmbox_pause(), or the called function returned: the debugged run or call
                // ends here, as an undebugged one would.
                target.end = Some(Ok(other));
                Err(W::Target("the guest paused, or the called function returned".into()))
            }
            Err(e) => {
                let sig = signal_for_fault(&e);
                target.end = Some(Err(e));
                Ok(Event::TargetStopped(signal(sig)))
            }
        }
    }

    fn on_interrupt(target: &mut Session<'static>) -> std::result::Result<Option<Self::StopReason>, String> {
        let tid = gdb_tid(target.machine.thread_ids().1);
        Ok(Some(MultiThreadStopReason::SignalWithThread { tid, signal: Signal::SIGINT }))
    }
}

/// Serve one gdb connection on `conn` for `machine` until the guest stops for good, gdb
/// detaches or kills it, or the connection drops. Breakpoints are removed in every case.
pub(crate) fn session(
    machine: &mut Machine,
    host: &mut dyn Host,
    timeout: Option<Duration>,
    conn: TcpStream,
    in_call: bool,
) -> Result<SessionEnd> {
    let _ = conn.set_nodelay(true);
    timer::prepare_thread();
    let interrupt = Arc::new(AtomicBool::new(false));
    machine.debug_interrupt = Some(interrupt.clone());
    let mut s = Session { machine, host, timeout, step: false, breakpoints: BTreeMap::new(), interrupt, in_call, end: None };
    // SAFETY: the event loop's Target type needs a 'static lifetime; the session (and the
    // borrows inside it) is only used within this function and dropped before it returns.
    let s_static: &mut Session<'static> = unsafe { std::mem::transmute::<&mut Session<'_>, &mut Session<'static>>(&mut s) };
    let outcome = GdbStub::new(conn).run_blocking::<EventLoop>(s_static);
    s.remove_all_breakpoints();
    let end = s.end.take();
    s.machine.debug_interrupt = None;
    match (outcome, end) {
        (_, Some(Err(e))) => Err(e),
        (_, Some(Ok(stop))) => Ok(SessionEnd::Stopped(stop)),
        (Ok(DisconnectReason::Kill), None) => Ok(SessionEnd::Killed),
        // Detach, or the connection failed: the guest goes on without the debugger.
        (_, None) => Ok(SessionEnd::Detached),
    }
}

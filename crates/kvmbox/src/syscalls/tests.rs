//! Syscall handlers run without KVM: guest memory is an ordinary mapping, the registers a
//! plain struct, so each handler's effect on memory and process state is checked directly.

#![allow(clippy::arithmetic_side_effects)]

use std::sync::Arc;
use std::time::Duration;

use super::files::{FilePolicy, Input, Output};
use super::mm::Mappings;
use super::*;
use crate::interrupt::InterruptHandle;
use crate::layout::{Layout, Perm, Region, PIE_BASE};
use crate::memory::UserMemory;
use threads::RunState;

/// A process over 8 MiB of guest memory with one page of code at PIE_BASE, stdin fed from
/// bytes and output captured.
struct Fixture {
    mem: GuestMemory,
    space: AddressSpace,
    layout: Layout,
    linux: Linux,
    deadline: Deadline,
    cpu: UserCpu,
}

impl Fixture {
    fn new(stdin: &[u8]) -> Fixture {
        let layout = Layout::new(8 << 20);
        let code = Region { start: PIE_BASE, end: PIE_BASE + 4096, perm: Perm::USER_RX };
        let mm = Mappings::new(&layout, &[code], code.end);
        let space = AddressSpace::new(layout.regions(&mm.regions()));
        let mem = GuestMemory::new(layout.memory).expect("guest memory");
        let policy = Arc::new(FilePolicy::new(&[], std::path::Path::new("/")).expect("policy"));
        let linux = Linux::new(ProcessConfig {
            mm,
            policy,
            stdin: Input::Bytes { data: stdin.to_vec(), pos: 0 },
            stdout: Output::capture(1 << 20),
            stderr: Output::capture(1 << 20),
            exe_path: "/guest".into(),
            cwd: "/".into(),
            fs: super::memfs::build(&[], 1 << 20, std::path::Path::new("/")).expect("in-memory files"),
            memory: layout.memory,
            stack_size: layout.stack_size(),
            trace: false,
            xsave_size: 832,
            xfeatures: 7,
        });
        let deadline = Deadline::after(Some(Duration::from_secs(5)), InterruptHandle::default());
        Fixture { mem, space, layout, linux, deadline, cpu: UserCpu::default() }
    }

    fn call(&mut self, nr: u64, args: &[u64]) -> Flow {
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        let env = SyscallEnv { mem: &self.mem, space: &self.space, deadline: &self.deadline, cpu: self.cpu };
        let flow = self.linux.handle(&env, &mut crate::host::NoHost, nr, a).expect("no host-side error");
        // As the machine does: new rights count from the next syscall on.
        for c in self.linux.take_rights_changes() {
            self.space.set(c.start, c.end, c.perm);
        }
        flow
    }

    /// The value the guest sees in rax, as a signed number (-errno on failure).
    fn ret(&mut self, nr: u64, args: &[u64]) -> i64 {
        match self.call(nr, args) {
            Flow::Return(v) => v as i64,
            Flow::Exit(s) => panic!("syscall {nr} ended the process: {s:?}"),
            Flow::Block => panic!("syscall {nr} blocked"),
            Flow::Yield => 0,
            Flow::Replace(saved) => saved.user.regs.rax as i64,
        }
    }

    /// Do what the machine does when the calling thread blocks or yields: put it aside and
    /// make the scheduler's choice current. Returns that thread's tid and the result it gets.
    fn reschedule(&mut self) -> Next {
        let next = self.linux.schedule(std::time::Instant::now());
        if let Next::Run(i) = next {
            if i != self.linux.current() {
                self.linux.park_current(SavedCpu { user: self.cpu, xsave: Some(Box::default()) });
            }
            let (saved, rax) = self.linux.switch_to(i);
            if let Some(saved) = saved {
                self.cpu = saved.user;
            }
            self.cpu.regs.rax = rax.unwrap_or(self.cpu.regs.rax);
        }
        next
    }

    /// What the machine does on the way back to user mode: act on pending signals.
    fn deliver(&mut self) -> signals::Delivery {
        let mem = UserMemory { mem: &self.mem, space: &self.space };
        let d = self.linux.deliver(&mem, &self.cpu, &mut || Some(vec![0x11; 832]));
        if let signals::Delivery::Continue(regs) = d {
            self.cpu.regs = regs;
        }
        d
    }

    /// A scratch address in the stack area.
    fn scratch(&self) -> u64 {
        self.layout.stack_bottom + 4096
    }
}

fn neg(e: i32) -> i64 {
    -i64::from(e)
}

#[test]
fn write_captures_stdout_and_rejects_bad_descriptors_and_pointers() {
    let mut f = Fixture::new(b"");
    let at = f.scratch();
    f.mem.write(at, b"hello").unwrap();
    assert_eq!(f.ret(1, &[1, at, 5]), 5);
    assert_eq!(f.linux.stdout.take_captured(), b"hello");
    assert_eq!(f.ret(1, &[7, at, 5]), neg(errno::EBADF));
    assert_eq!(f.ret(1, &[1, 0, 5]), neg(errno::EFAULT)); // page 0 is not mapped
    assert_eq!(f.ret(1, &[0, at, 5]), neg(errno::EBADF)); // stdin is read-only
}

#[test]
fn read_drains_fed_stdin_then_returns_end_of_file() {
    let mut f = Fixture::new(b"abc");
    let at = f.scratch();
    assert_eq!(f.ret(0, &[0, at, 2]), 2);
    assert_eq!(f.ret(0, &[0, at + 2, 100]), 1);
    assert_eq!(f.ret(0, &[0, at, 100]), 0);
    let mut got = [0u8; 3];
    f.mem.read(at, &mut got).unwrap();
    assert_eq!(&got, b"abc");
    // Into read-only code: EFAULT, and stdin is not consumed.
    let mut g = Fixture::new(b"x");
    assert_eq!(g.ret(0, &[0, PIE_BASE, 1]), neg(errno::EFAULT));
    assert_eq!(g.ret(0, &[0, g.scratch(), 1]), 1);
}

#[test]
fn ids_and_set_tid_address() {
    let mut f = Fixture::new(b"");
    assert_eq!(f.ret(39, &[]), 1); // getpid
    assert_eq!(f.ret(186, &[]), 1); // gettid: the main thread's is the pid
    let at = f.scratch();
    assert_eq!(f.ret(218, &[at]), 1);
    assert_eq!(f.linux.thread_mut().clear_child_tid, at);
    assert_eq!(f.ret(273, &[at, 24]), 0);
    assert_eq!(f.ret(273, &[at, 23]), neg(errno::EINVAL));
}

#[test]
fn arch_prctl_records_tls_bases_for_the_machine_and_reads_them_from_the_registers() {
    let mut f = Fixture::new(b"");
    assert_eq!(f.ret(158, &[0x1002, 0x7000]), 0); // ARCH_SET_FS
    assert_eq!(f.linux.take_cpu_update(), CpuUpdate { fs_base: Some(0x7000), gs_base: None });
    assert_eq!(f.linux.take_cpu_update(), CpuUpdate::default());
    assert_eq!(f.ret(158, &[0x1002, 1 << 47]), neg(errno::EPERM)); // not canonical
    f.cpu.gs_base = 0x1234;
    let at = f.scratch();
    assert_eq!(f.ret(158, &[0x1004, at]), 0); // ARCH_GET_GS
    assert_eq!(f.mem.read_u64(at).unwrap(), 0x1234);
    assert_eq!(f.ret(158, &[0x1003, 0]), neg(errno::EFAULT));
    assert_eq!(f.ret(158, &[0x9999, at]), neg(errno::EINVAL));
}

#[test]
fn signal_mask_is_per_thread_state_and_sigkill_cannot_be_blocked() {
    let mut f = Fixture::new(b"");
    let (set, old) = (f.scratch(), f.scratch() + 8);
    f.mem.write_u64(set, u64::MAX).unwrap();
    assert_eq!(f.ret(14, &[0, set, old, 8]), 0); // SIG_BLOCK everything
    assert_eq!(f.mem.read_u64(old).unwrap(), 0);
    let blocked = f.linux.thread_mut().sigmask;
    assert_eq!(blocked & (1 << 8), 0, "SIGKILL");
    assert_eq!(blocked & (1 << 18), 0, "SIGSTOP");
    assert_eq!(f.ret(14, &[7, set, old, 8]), neg(errno::EINVAL));
    assert_eq!(f.ret(14, &[0, set, old, 4]), neg(errno::EINVAL));
}

#[test]
fn signals_to_itself_take_their_default_action_or_are_ignored() {
    let mut f = Fixture::new(b"");
    assert_eq!(f.ret(62, &[1, 0]), 0); // signal 0: a check only
    assert_eq!(f.ret(62, &[1, libc::SIGCHLD as u64]), 0); // ignored by default: dropped
    assert!(!f.linux.signal_pending());
    assert_eq!(f.ret(62, &[77, 15]), neg(errno::ESRCH));
    assert_eq!(f.ret(62, &[1, 15]), 0);
    assert!(f.linux.signal_pending());
    assert!(matches!(f.deliver(), signals::Delivery::Terminate(15)));
}

#[test]
fn futex_wait_on_a_changed_value_is_eagain() {
    let mut f = Fixture::new(b"");
    let at = f.scratch();
    f.mem.write(at, &5u32.to_le_bytes()).unwrap();
    assert_eq!(f.ret(202, &[at, 0x80, 4]), neg(errno::EAGAIN)); // FUTEX_WAIT_PRIVATE, 4 != 5
    assert_eq!(f.ret(202, &[0, 0x80, 4]), neg(errno::EFAULT));
}

#[test]
fn anonymous_mmap_and_munmap_and_brk() {
    let mut f = Fixture::new(b"");
    let a = f.ret(9, &[0, 8192, 3, 0x22, u64::MAX, 0]); // PROT_READ|WRITE, MAP_PRIVATE|ANONYMOUS
    assert!(a > 0 && (a as u64).is_multiple_of(4096), "mmap returned {a:#x}");
    assert_eq!(f.ret(11, &[a as u64, 8192]), 0);
    assert_eq!(f.ret(9, &[0, 0, 3, 0x22, u64::MAX, 0]), neg(errno::EINVAL));
    let brk = f.ret(12, &[0]) as u64;
    assert_eq!(f.ret(12, &[brk + 4096]) as u64, brk + 4096);
}

#[test]
fn unknown_numbers_are_enosys_and_every_table_entry_runs_on_zeroes() {
    let mut f = Fixture::new(b"");
    assert_eq!(f.ret(57, &[]), neg(errno::ENOSYS)); // fork
    assert_eq!(f.ret(1 << 40, &[]), neg(errno::ENOSYS));
    for s in table::TABLE {
        if matches!(s.name, "exit" | "exit_group" | "rt_sigreturn") {
            continue;
        }
        let _ = f.call(s.nr, &[]); // must not panic on null pointers and zero sizes
    }
}

#[test]
fn uname_reports_the_sandbox_host_name() {
    let mut f = Fixture::new(b"");
    let at = f.scratch();
    assert_eq!(f.ret(63, &[at]), 0);
    let mut nodename = [0u8; 7];
    f.mem.read(at + 65, &mut nodename).unwrap();
    assert_eq!(&nodename, b"kvmbox\0");
}

/// clone with glibc's flags for pthread_create.
const PTHREAD_FLAGS: u64 = 0x3d0f00;

fn spawn(f: &mut Fixture, stack: u64, tls: u64, ctid: u64) -> u64 {
    f.cpu.regs.rip = PIE_BASE + 0x10;
    f.cpu.regs.rbx = 0x5555;
    let ctid = if ctid == 0 { f.scratch() + 2048 } else { ctid };
    let tid = f.ret(56, &[PTHREAD_FLAGS, stack, ctid, ctid, tls]);
    assert!(tid > 1, "clone returned {tid}");
    if let Some(saved) = f.linux.take_unfilled_fpu() {
        saved.xsave = Some(Box::default()); // what the machine does right after a clone
    }
    tid as u64
}

#[test]
fn clone_makes_a_thread_that_continues_from_the_syscall_with_its_own_stack_and_tls() {
    let mut f = Fixture::new(b"");
    let ctid = f.scratch();
    let tid = spawn(&mut f, 0x7000, 0x9000, ctid);
    assert_eq!(f.mem.read_u64(ctid).unwrap() as u32, tid as u32, "CLONE_PARENT_SETTID/CHILD_SETTID");
    let t = &f.linux.threads()[1];
    assert_eq!((t.tid, t.clear_child_tid), (tid, ctid));
    let saved = t.saved.as_ref().unwrap();
    assert_eq!((saved.user.regs.rax, saved.user.regs.rsp, saved.user.regs.rip, saved.user.regs.rbx), (0, 0x7000, PIE_BASE + 0x10, 0x5555));
    assert_eq!(saved.user.fs_base, 0x9000);
    // Not a thread: a new process (fork) cannot be made; bad combinations are EINVAL.
    assert_eq!(f.ret(56, &[17, 0, 0, 0, 0]), neg(errno::ENOSYS));
    assert_eq!(f.ret(56, &[0x10000, 0, 0, 0, 0]), neg(errno::EINVAL)); // CLONE_THREAD without SIGHAND
    assert_eq!(f.ret(56, &[PTHREAD_FLAGS | 0x2000_0000, 0, 0, 0, 0]), neg(errno::EINVAL)); // + CLONE_NEWUTS
    assert_eq!(f.ret(56, &[PTHREAD_FLAGS, 0, 0, 0, 1 << 47]), neg(errno::EPERM));
    assert_eq!(f.linux.threads().len(), 2);
}

#[test]
fn clone3_reads_its_struct_and_uses_the_top_of_the_stack() {
    let mut f = Fixture::new(b"");
    let args = f.scratch();
    let ctid = args + 256;
    let fields = [PTHREAD_FLAGS, 0, ctid, ctid, 0, 0x6000, 0x1000, 0x8000];
    for (i, v) in fields.iter().enumerate() {
        f.mem.write_u64(args + 8 * i as u64, *v).unwrap();
    }
    let tid = f.ret(435, &[args, 88]) as u64;
    assert_eq!(tid, 2);
    let saved = f.linux.threads()[1].saved.as_ref().unwrap();
    assert_eq!((saved.user.regs.rsp, saved.user.fs_base), (0x7000, 0x8000));
    assert_eq!(f.ret(435, &[args, 8]), neg(errno::EINVAL)); // smaller than the first version
    assert_eq!(f.ret(435, &[0, 88]), neg(errno::EFAULT));
}

#[test]
fn futex_wait_blocks_until_a_wake_and_threads_take_turns() {
    let mut f = Fixture::new(b"");
    let word = f.scratch();
    f.mem.write(word, &0u32.to_le_bytes()).unwrap();
    let child = spawn(&mut f, 0x7000, 0, 0);
    // The main thread waits: the child runs, with the 0 clone gave it.
    assert!(matches!(f.call(202, &[word, 0x80, 0]), Flow::Block));
    assert_eq!(f.reschedule(), Next::Run(1));
    assert_eq!(f.ret(186, &[]) as u64, child);
    assert_eq!(f.cpu.regs.rax, 0);
    // A wake with a bitset that misses the waiter's wakes nobody; a plain wake wakes it.
    assert_eq!(f.ret(202, &[word, 10, 1, 0, 0, 0]), neg(errno::EINVAL));
    assert_eq!(f.ret(202, &[word, 0x81, 1]), 1);
    assert_eq!(f.ret(202, &[word, 0x81, 1]), 0);
    // The child yields: the main thread runs again, its wait returning 0.
    assert!(matches!(f.call(24, &[]), Flow::Yield));
    assert_eq!(f.reschedule(), Next::Run(0));
    assert_eq!(f.ret(186, &[]), 1);
    assert_eq!(f.cpu.regs.rax, 0);
}

#[test]
fn a_thread_waiting_alone_for_ever_is_a_deadlock_and_timeouts_end_waits() {
    let mut f = Fixture::new(b"");
    let word = f.scratch();
    assert!(matches!(f.call(202, &[word, 0, 0]), Flow::Block));
    assert_eq!(f.reschedule(), Next::Deadlock);
    let mut g = Fixture::new(b"");
    let (word, ts) = (g.scratch(), g.scratch() + 64);
    g.mem.write(ts, &[0u64.to_le_bytes(), 1_000_000u64.to_le_bytes()].concat()).unwrap(); // 1 ms, relative
    assert!(matches!(g.call(202, &[word, 0, 0, ts]), Flow::Block));
    assert!(matches!(g.reschedule(), Next::Wait(Some(_))));
    std::thread::sleep(Duration::from_millis(2));
    assert_eq!(g.reschedule(), Next::Run(0));
    assert_eq!(g.cpu.regs.rax as i64, neg(errno::ETIMEDOUT));
    // An absolute FUTEX_WAIT_BITSET deadline already past: ETIMEDOUT at once.
    assert_eq!(g.ret(202, &[word, 9, 0, ts, 0, u64::from(u32::MAX)]), neg(errno::ETIMEDOUT));
    // Bad timespecs and misaligned words.
    g.mem.write(ts, &[0u64.to_le_bytes(), 1_000_000_000u64.to_le_bytes()].concat()).unwrap();
    assert_eq!(g.ret(202, &[word, 0, 0, ts]), neg(errno::EINVAL));
    assert_eq!(g.ret(202, &[word + 1, 0, 0]), neg(errno::EINVAL));
    assert_eq!(g.ret(202, &[word, 6, 0]), neg(errno::ENOSYS)); // FUTEX_LOCK_PI
}

#[test]
fn exiting_threads_clear_their_tid_and_wake_the_joiner_and_the_last_one_ends_the_process() {
    let mut f = Fixture::new(b"");
    let ctid = f.scratch();
    let child = spawn(&mut f, 0x7000, 0, ctid);
    // The main thread joins: waits while the tid word holds the child's tid.
    assert!(matches!(f.call(202, &[ctid, 0, child]), Flow::Block));
    assert_eq!(f.reschedule(), Next::Run(1));
    assert!(matches!(f.call(60, &[7]), Flow::Block)); // exit(7): only the thread ends
    assert_eq!(f.mem.read_u64(ctid).unwrap() as u32, 0);
    assert_eq!(f.reschedule(), Next::Run(0)); // the joiner, woken; the exited thread is dropped
    assert_eq!(f.linux.threads().len(), 1);
    assert_eq!(f.ret(186, &[]), 1);
    assert!(matches!(f.call(60, &[3]), Flow::Exit(ExitStatus::Code(3))));
}

#[test]
fn a_dead_threads_robust_futexes_are_marked_owner_died_and_a_waiter_is_woken() {
    let mut f = Fixture::new(b"");
    let head = f.scratch();
    let lock = head + 64; // a robust mutex: list entry at +0, futex word at offset +16
    let child = spawn(&mut f, 0x7000, 0, 0);
    assert!(matches!(f.call(24, &[]), Flow::Yield));
    assert_eq!(f.reschedule(), Next::Run(1));
    assert_eq!(f.ret(273, &[head, 24]), 0);
    f.mem.write_u64(head, lock).unwrap(); // head.next → the entry
    f.mem.write_u64(head + 8, 16).unwrap(); // futex_offset
    f.mem.write_u64(lock, head).unwrap(); // entry.next → back to the head
    f.mem.write(lock + 16, &((child as u32) | 0x8000_0000).to_le_bytes()).unwrap(); // owned, with waiters
    assert!(matches!(f.call(60, &[0]), Flow::Block));
    let mut word = [0u8; 4];
    f.mem.read(lock + 16, &mut word).unwrap();
    assert_eq!(u32::from_le_bytes(word), 0xc000_0000, "FUTEX_WAITERS | FUTEX_OWNER_DIED");
}

#[test]
fn cmp_requeue_moves_waiters_and_wake_op_wakes_on_both_words() {
    let mut f = Fixture::new(b"");
    let (a, b) = (f.scratch(), f.scratch() + 4);
    f.mem.write(a, &0u32.to_le_bytes()).unwrap();
    f.mem.write(b, &0u32.to_le_bytes()).unwrap();
    for _ in 0..3 {
        spawn(&mut f, 0x7000, 0, 0);
    }
    // Three threads wait on `a` (each is scheduled in turn and waits).
    assert!(matches!(f.call(24, &[]), Flow::Yield));
    for _ in 0..3 {
        assert!(matches!(f.reschedule(), Next::Run(_)));
        assert!(matches!(f.call(202, &[a, 0x80, 0]), Flow::Block));
    }
    assert_eq!(f.reschedule(), Next::Run(0));
    assert_eq!(f.ret(202, &[a, 4, 1, 1, b, 1]), neg(errno::EAGAIN)); // *a is 0, not 1
    assert_eq!(f.ret(202, &[a, 4, 1, 1, b, 0]), 2); // one woken, one moved to b
    assert_eq!(f.ret(202, &[a, 1, 10]), 1); // the last on a
                                            // FUTEX_WAKE_OP: set *b to 1 (old 0, "> 0" false): wakes on a only, b's waiter stays.
    let set_one_if_gt0 = (1 << 12) | (4 << 24);
    assert_eq!(f.ret(202, &[a, 5, 1, 1, b, set_one_if_gt0]), 0);
    assert_eq!(f.mem.read_u64(b).unwrap() as u32, 1);
    assert_eq!(f.ret(202, &[a, 5, 1, 1, b, set_one_if_gt0]), 1); // old 1 > 0: b's waiter
}

#[test]
fn sleeping_threads_let_others_run_and_tkill_checks_the_thread() {
    let mut f = Fixture::new(b"");
    let ts = f.scratch();
    f.mem.write(ts, &[0u64.to_le_bytes(), 50_000_000u64.to_le_bytes()].concat()).unwrap();
    let child = spawn(&mut f, 0x7000, 0, 0);
    assert!(matches!(f.call(35, &[ts, 0]), Flow::Block));
    assert_eq!(f.reschedule(), Next::Run(1));
    assert_eq!(f.ret(234, &[1, 99, 0]), neg(errno::ESRCH));
    assert_eq!(f.ret(234, &[2, child, 0]), neg(errno::ESRCH)); // wrong thread group
    assert_eq!(f.ret(234, &[1, child, 0]), 0);
    assert_eq!(f.ret(200, &[1, 0]), 0); // the sleeping main thread exists too
    assert!(matches!(f.call(202, &[ts, 0, 0]), Flow::Block)); // the child waits for ever…
    assert!(matches!(f.reschedule(), Next::Wait(Some(_)))); // …so the sleeper's wake is next
}

const SA_RESTORER: u64 = 0x0400_0000;
const HANDLER: u64 = PIE_BASE + 0x100;
const RESTORER: u64 = PIE_BASE + 0x200;

/// Install a handler for `sig` with `flags` (plus SA_RESTORER) and `mask`.
fn handle(f: &mut Fixture, sig: u64, flags: u64, mask: u64) {
    let act = f.scratch() + 3000;
    for (i, v) in [HANDLER, flags | SA_RESTORER, RESTORER, mask].iter().enumerate() {
        f.mem.write_u64(act + 8 * i as u64, *v).unwrap();
    }
    assert_eq!(f.ret(13, &[sig, act, 0, 8]), 0);
}

#[test]
fn a_handler_gets_a_frame_and_rt_sigreturn_restores_everything() {
    let mut f = Fixture::new(b"");
    handle(&mut f, libc::SIGUSR1 as u64, 4 /* SA_SIGINFO */, 1 << (libc::SIGUSR2 - 1));
    let stack = f.layout.stack_top - 8192;
    f.cpu.regs =
        kvm_bindings::kvm_regs { rsp: stack, rip: PIE_BASE + 0x40, rax: 0x1234, rbx: 7, r15: 15, rflags: 0x246, ..Default::default() };
    assert_eq!(f.ret(200, &[1, libc::SIGUSR1 as u64]), 0); // tkill(self)
    let before = f.cpu;
    let signals::Delivery::Continue(entry) = f.deliver() else { panic!("no handler entry") };
    assert_eq!((entry.rip, entry.rdi), (HANDLER, libc::SIGUSR1 as u64));
    assert!(entry.rsp < stack - 128, "below the red zone");
    assert_eq!((entry.rsp + 8) % 16, 0, "as after a call");
    assert_eq!(f.mem.read_u64(entry.rsp).unwrap(), RESTORER, "pretcode");
    // siginfo: signo, code SI_TKILL, pid
    assert_eq!(f.mem.read_u64(entry.rsi).unwrap() as u32, libc::SIGUSR1 as u32);
    assert_eq!((f.mem.read_u64(entry.rsi + 8).unwrap() as u32) as i32, -6);
    // ucontext: the interrupted rip and rax in the sigcontext, the old mask
    assert_eq!(f.mem.read_u64(entry.rdx + 40 + 16 * 8).unwrap(), PIE_BASE + 0x40);
    assert_eq!(f.mem.read_u64(entry.rdx + 40 + 13 * 8).unwrap(), 0x1234);
    // The handler runs with SIGUSR1 (no SA_NODEFER) and sa_mask blocked.
    let blocked = f.linux.thread_mut().sigmask;
    assert_eq!(blocked, (1 << (libc::SIGUSR1 - 1)) | (1 << (libc::SIGUSR2 - 1)));
    // The handler returns: `ret` pops pretcode, the restorer calls rt_sigreturn.
    f.cpu.regs = kvm_bindings::kvm_regs { rsp: entry.rsp + 8, rip: RESTORER + 7, rax: 15, rbx: 99, ..entry };
    let Flow::Replace(saved) = f.call(15, &[]) else { panic!("rt_sigreturn did not restore") };
    let r = saved.user.regs;
    assert_eq!((r.rip, r.rsp, r.rax, r.rbx, r.r15), (before.regs.rip, before.regs.rsp, 0x1234, 7, 15));
    assert_eq!(saved.xsave.as_ref().unwrap().region[0], 0x1111_1111, "the FPU state saved in the frame");
    assert_eq!(f.linux.thread_mut().sigmask, 0);
}

#[test]
fn a_signal_without_a_restorer_or_room_on_the_stack_kills_with_sigsegv() {
    let mut f = Fixture::new(b"");
    let act = f.scratch() + 3000;
    f.mem.write_u64(act, HANDLER).unwrap(); // no SA_RESTORER
    assert_eq!(f.ret(13, &[libc::SIGUSR1 as u64, act, 0, 8]), 0);
    f.cpu.regs.rsp = f.layout.stack_top - 4096;
    assert_eq!(f.ret(62, &[1, libc::SIGUSR1 as u64]), 0);
    assert!(matches!(f.deliver(), signals::Delivery::Terminate(11)));
    handle(&mut f, libc::SIGUSR2 as u64, 0, 0);
    f.cpu.regs.rsp = 0x1100; // the frame would reach into page 0, which is not mapped
    assert_eq!(f.ret(62, &[1, libc::SIGUSR2 as u64]), 0);
    assert!(matches!(f.deliver(), signals::Delivery::Terminate(11)));
}

#[test]
fn sa_onstack_uses_the_alternate_stack_and_sigaltstack_validates() {
    let mut f = Fixture::new(b"");
    let (ss, alt) = (f.scratch(), f.layout.stack_bottom + 64 * 1024);
    for (i, v) in [alt, 0, 16384].iter().enumerate() {
        f.mem.write_u64(ss + 8 * i as u64, *v).unwrap();
    }
    assert_eq!(f.ret(131, &[ss, 0]), 0);
    handle(&mut f, libc::SIGSEGV as u64, 0x0800_0000 /* SA_ONSTACK */, 0);
    f.cpu.regs.rsp = f.layout.stack_top - 1024;
    assert_eq!(f.ret(200, &[1, libc::SIGSEGV as u64]), 0);
    let signals::Delivery::Continue(entry) = f.deliver() else { panic!() };
    assert!(entry.rsp > alt && entry.rsp < alt + 16384, "frame on the alternate stack: {:#x}", entry.rsp);
    // While on it, sigaltstack reports SS_ONSTACK and refuses changes.
    f.cpu.regs.rsp = entry.rsp;
    let old = f.scratch() + 64;
    assert_eq!(f.ret(131, &[0, old]), 0);
    assert_eq!(f.mem.read_u64(old + 8).unwrap() & 1, 1);
    assert_eq!(f.ret(131, &[ss, 0]), neg(errno::EPERM));
    // Too small a stack is ENOMEM.
    f.cpu.regs.rsp = f.layout.stack_top - 1024;
    f.mem.write_u64(ss + 16, 1024).unwrap();
    assert_eq!(f.ret(131, &[ss, 0]), neg(errno::ENOMEM));
}

#[test]
fn a_signal_interrupts_a_futex_wait_which_restarts_with_sa_restart() {
    for (flags, restarted) in [(0x1000_0000u64, true), (0, false)] {
        let mut f = Fixture::new(b"");
        handle(&mut f, libc::SIGUSR1 as u64, flags, 0);
        let word = f.scratch();
        let child = spawn(&mut f, 0x7000, 0, 0);
        f.cpu.regs.rip = PIE_BASE + 0x50;
        f.cpu.regs.rsp = f.layout.stack_top - 4096;
        assert!(matches!(f.call(202, &[word, 0x80, 0]), Flow::Block)); // main waits
        assert_eq!(f.reschedule(), Next::Run(1));
        assert_eq!(f.ret(234, &[1, 1, libc::SIGUSR1 as u64]), 0); // the child signals main
        let _ = child;
        assert!(matches!(f.call(24, &[]), Flow::Yield));
        assert_eq!(f.reschedule(), Next::Run(0)); // main woke up
        let signals::Delivery::Continue(entry) = f.deliver() else { panic!() };
        let interrupted_rip = f.mem.read_u64(entry.rdx + 40 + 16 * 8).unwrap();
        let interrupted_rax = f.mem.read_u64(entry.rdx + 40 + 13 * 8).unwrap();
        if restarted {
            assert_eq!((interrupted_rip, interrupted_rax), (PIE_BASE + 0x50 - 2, 202), "the futex call runs again");
        } else {
            assert_eq!((interrupted_rip, interrupted_rax as i64), (PIE_BASE + 0x50, neg(errno::EINTR)));
        }
    }
}

#[test]
fn sigtimedwait_takes_a_blocked_signal_and_sigpending_shows_it() {
    let mut f = Fixture::new(b"");
    let (set, info) = (f.scratch(), f.scratch() + 64);
    f.mem.write_u64(set, 1 << (libc::SIGUSR1 - 1)).unwrap();
    assert_eq!(f.ret(14, &[0, set, 0, 8]), 0); // block SIGUSR1
    assert_eq!(f.ret(62, &[1, libc::SIGUSR1 as u64]), 0);
    assert!(!f.linux.signal_pending(), "blocked");
    let out = f.scratch() + 256;
    assert_eq!(f.ret(127, &[out, 8]), 0);
    assert_eq!(f.mem.read_u64(out).unwrap(), 1 << (libc::SIGUSR1 - 1));
    assert_eq!(f.ret(128, &[set, info, 0, 8]), libc::SIGUSR1 as i64);
    assert_eq!(f.mem.read_u64(info).unwrap() as u32, libc::SIGUSR1 as u32);
    // Nothing pending and a zero timeout: EAGAIN at once.
    let ts = f.scratch() + 512;
    f.mem.write(ts, &[0u8; 16]).unwrap();
    assert_eq!(f.ret(128, &[set, info, ts, 8]), neg(errno::EAGAIN));
}

#[test]
fn alarm_raises_sigalrm_when_due_and_reports_the_time_left() {
    let mut f = Fixture::new(b"");
    assert_eq!(f.ret(37, &[5]), 0);
    assert_eq!(f.ret(37, &[0]), 5, "the old alarm, rounded"); // cancelled
    assert!(f.linux.next_timer().is_none());
    // An interval timer 1 ms from now, every 1 ms.
    let v = f.scratch();
    f.mem.write(v, &[0u64, 1000, 0, 1000].iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    assert_eq!(f.ret(38, &[0, v, 0]), 0);
    let due = f.linux.next_timer().expect("armed");
    f.linux.fire_timers(due + Duration::from_millis(5));
    assert!(f.linux.signal_pending());
    assert!(matches!(f.deliver(), signals::Delivery::Terminate(14)));
    assert_eq!(f.ret(38, &[1, v, 0]), neg(errno::ENOSYS)); // ITIMER_VIRTUAL
}

#[test]
fn posix_timers_signal_a_given_thread_with_their_value() {
    let mut f = Fixture::new(b"");
    let (ev, id, spec) = (f.scratch(), f.scratch() + 64, f.scratch() + 128);
    let child = spawn(&mut f, 0x7000, 0, 0);
    // sigevent: value 0xabc, SIGUSR2, SIGEV_THREAD_ID for the child
    let words: [u32; 6] = [0xabc, 0, libc::SIGUSR2 as u32, 4, child as u32, 0];
    f.mem.write(ev, &words.iter().flat_map(|w| w.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    assert_eq!(f.ret(222, &[libc::CLOCK_MONOTONIC as u64, ev, id]), 0);
    let timer = f.mem.read_u64(id).unwrap() as u32 as u64;
    f.mem.write(spec, &[0u64, 0, 0, 1_000_000].iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    assert_eq!(f.ret(223, &[timer, 0, spec, 0]), 0);
    f.linux.fire_timers(f.linux.next_timer().unwrap());
    assert!(!f.linux.signal_pending(), "the main thread is not the target");
    assert_eq!(f.linux.threads()[1].pending.len(), 1);
    assert_eq!(f.linux.threads()[1].pending[0].b, 0xabc);
    assert_eq!(f.ret(226, &[timer]), 0);
    assert_eq!(f.ret(226, &[timer]), neg(errno::EINVAL));
    assert_eq!(f.ret(222, &[libc::CLOCK_PROCESS_CPUTIME_ID as u64, 0, id]), neg(errno::EINVAL));
}

#[test]
fn sigsuspend_waits_with_its_mask_and_the_old_mask_is_in_the_frame() {
    let mut f = Fixture::new(b"");
    handle(&mut f, libc::SIGUSR1 as u64, 0, 0);
    f.cpu.regs.rsp = f.layout.stack_top - 4096;
    let set = f.scratch();
    f.mem.write_u64(set, 1 << (libc::SIGUSR1 - 1)).unwrap();
    assert_eq!(f.ret(14, &[0, set, 0, 8]), 0); // SIGUSR1 blocked outside the suspend
    f.mem.write_u64(set, 0).unwrap();
    assert!(matches!(f.call(130, &[set, 8]), Flow::Block));
    assert_eq!(f.reschedule(), Next::Wait(None), "waiting for a signal");
    f.linux.send(signals::Target::Process, signals::SigInfo::from_process(libc::SIGUSR1 as u64, 0, 1, 0));
    assert_eq!(f.reschedule(), Next::Run(0));
    assert_eq!(f.cpu.regs.rax as i64, neg(errno::EINTR));
    let signals::Delivery::Continue(entry) = f.deliver() else { panic!() };
    assert_eq!(f.mem.read_u64(entry.rdx + 296).unwrap(), 1 << (libc::SIGUSR1 - 1), "uc_sigmask: the mask before sigsuspend");
}

#[test]
fn pipes_carry_bytes_block_readers_and_report_eof_and_epipe() {
    let mut f = Fixture::new(b"");
    let (fds, buf) = (f.scratch(), f.scratch() + 64);
    assert_eq!(f.ret(293, &[fds, 0]), 0);
    let both = f.mem.read_u64(fds).unwrap();
    let (r, w) = (both & 0xffff_ffff, both >> 32);
    f.mem.write(buf, b"ping").unwrap();
    assert_eq!(f.ret(1, &[w, buf, 4]), 4);
    assert_eq!(f.ret(0, &[r, buf + 8, 100]), 4);
    // Empty with a writer: a blocking read waits (O_NONBLOCK on the other: EAGAIN).
    assert!(matches!(f.call(0, &[r, buf, 1]), Flow::Block));
    f.linux.thread_mut().state = RunState::Runnable;
    // poll for ever waits; a later poll with timeout 0 (a new call) does not inherit that wait.
    let pfd = f.scratch() + 1024;
    f.mem.write(pfd, &[(r as u32).to_le_bytes(), 1u32.to_le_bytes()].concat()).unwrap(); // POLLIN
    assert!(matches!(f.call(7, &[pfd, 1, u64::MAX]), Flow::Block));
    f.linux.thread_mut().state = RunState::Runnable;
    assert_eq!(f.ret(39, &[]), 1); // any other syscall ends the wait
    assert_eq!(f.ret(7, &[pfd, 1, 0]), 0);
    assert_eq!(f.ret(72, &[r, libc::F_SETFL as u64, libc::O_NONBLOCK as u64]), 0);
    assert_eq!(f.ret(0, &[r, buf, 1]), neg(errno::EAGAIN));
    // The writer closed: end of file. The reader closed: EPIPE (and SIGPIPE).
    assert_eq!(f.ret(3, &[w]), 0);
    assert_eq!(f.ret(0, &[r, buf, 1]), 0);
    assert_eq!(f.ret(293, &[fds, 0]), 0);
    let both = f.mem.read_u64(fds).unwrap();
    assert_eq!(f.ret(3, &[both & 0xffff_ffff]), 0);
    assert_eq!(f.ret(1, &[both >> 32, buf, 1]), neg(errno::EPIPE));
    assert!(f.linux.signal_pending());
    assert_eq!(f.ret(293, &[fds, 0x1234]), neg(errno::EINVAL));
}

#[test]
fn epoll_reports_ready_descriptors_edge_triggered_once_per_change() {
    let mut f = Fixture::new(b"");
    let (ev, out, val) = (f.scratch(), f.scratch() + 64, f.scratch() + 512);
    let efd = f.ret(290, &[0, libc::O_NONBLOCK as u64]) as u64;
    let ep = f.ret(291, &[0]) as u64;
    let event = |events: u32, data: u64| [events.to_le_bytes().to_vec(), data.to_le_bytes().to_vec()].concat();
    f.mem.write(ev, &event(1 | (1 << 31), 77)).unwrap(); // EPOLLIN | EPOLLET
    assert_eq!(f.ret(233, &[ep, 1, efd, ev]), 0);
    assert_eq!(f.ret(233, &[ep, 1, efd, ev]), neg(errno::EEXIST));
    assert_eq!(f.ret(232, &[ep, out, 8, 0]), 0); // nothing yet, timeout 0
    f.mem.write_u64(val, 3).unwrap();
    assert_eq!(f.ret(1, &[efd, val, 8]), 8);
    assert_eq!(f.ret(232, &[ep, out, 8, 0]), 1);
    let mut got = [0u8; 12];
    f.mem.read(out, &mut got).unwrap();
    assert_eq!(u32::from_le_bytes(got[..4].try_into().unwrap()), 1);
    assert_eq!(u64::from_le_bytes(got[4..].try_into().unwrap()), 77);
    assert_eq!(f.ret(232, &[ep, out, 8, 0]), 0, "edge-triggered: reported once");
    assert_eq!(f.ret(0, &[efd, val, 8]), 8);
    assert_eq!(f.mem.read_u64(val).unwrap(), 3);
    assert_eq!(f.ret(0, &[efd, val, 8]), neg(errno::EAGAIN));
    // A blocking epoll_wait with nothing ready waits; a 0 ms one does not.
    assert!(matches!(f.call(232, &[ep, out, 8, u64::MAX]), Flow::Block));
    assert_eq!(f.ret(233, &[ep, 1, ep, ev]), neg(errno::EINVAL)); // itself
    assert_eq!(f.ret(233, &[ep, 2, efd, 0]), 0);
    assert_eq!(f.ret(233, &[ep, 2, efd, 0]), neg(errno::ENOENT));
}

#[test]
fn queued_signals_are_bounded_across_the_whole_process() {
    let mut f = Fixture::new(b"");
    let set = f.scratch();
    f.mem.write_u64(set, u64::MAX).unwrap();
    assert_eq!(f.ret(14, &[0, set, 0, 8]), 0); // block everything: signals stay queued
    for _ in 0..3 {
        spawn(&mut f, 0x7000, 0, 0);
    }
    for round in 0..2000u64 {
        let rt = 34 + round % 20;
        f.linux.send(signals::Target::Thread((round % 4) as usize), signals::SigInfo::from_process(rt, 0, 1, 0));
        f.linux.send(signals::Target::Process, signals::SigInfo::from_process(rt, 0, 1, 0));
    }
    let total: usize = f.linux.threads().iter().map(|t| t.pending.len()).sum::<usize>();
    let pending_set = f.scratch() + 64;
    assert_eq!(f.ret(127, &[pending_set, 8]), 0);
    assert!(total <= 1024, "{total} queued");
    assert_ne!(f.mem.read_u64(pending_set).unwrap(), 0);
}

#[test]
fn edge_triggered_epoll_sees_every_new_write_even_of_the_same_size() {
    let mut f = Fixture::new(b"");
    let (fds, ev, out, buf) = (f.scratch(), f.scratch() + 16, f.scratch() + 64, f.scratch() + 512);
    assert_eq!(f.ret(293, &[fds, libc::O_NONBLOCK as u64]), 0);
    let both = f.mem.read_u64(fds).unwrap();
    let (r, w) = (both & 0xffff_ffff, both >> 32);
    let ep = f.ret(291, &[0]) as u64;
    f.mem.write(ev, &[(1u32 | (1 << 31)).to_le_bytes().to_vec(), 7u64.to_le_bytes().to_vec()].concat()).unwrap();
    assert_eq!(f.ret(233, &[ep, 1, r, ev]), 0);
    for round in 0..3 {
        assert_eq!(f.ret(1, &[w, buf, 5]), 5);
        assert_eq!(f.ret(232, &[ep, out, 8, 0]), 1, "round {round}: the write is an edge");
        assert_eq!(f.ret(0, &[r, buf, 5]), 5);
        assert_eq!(f.ret(232, &[ep, out, 8, 0]), 0, "round {round}: drained");
    }
    // A partial readv that could not read more leaves its thread runnable, not waiting.
    assert_eq!(f.ret(1, &[w, buf, 10]), 10);
    let iov = f.scratch() + 1024;
    let vecs = [buf, 10, buf + 16, 10];
    f.mem.write(iov, &vecs.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    assert_eq!(f.ret(72, &[r, libc::F_SETFL as u64, 0]), 0); // blocking
    assert_eq!(f.ret(19, &[r, iov, 2]), 10);
    assert_eq!(f.linux.thread_mut().state, RunState::Runnable);
}

#[test]
fn a_sigsuspend_run_again_keeps_the_callers_mask() {
    let mut f = Fixture::new(b"");
    let set = f.scratch();
    f.mem.write_u64(set, 1 << (libc::SIGUSR1 - 1)).unwrap();
    assert_eq!(f.ret(14, &[0, set, 0, 8]), 0); // the caller blocks SIGUSR1
    f.mem.write_u64(set, 0).unwrap();
    assert!(matches!(f.call(130, &[set, 8]), Flow::Block));
    // Woken by a signal that, by delivery time, is gone (another thread took it): it runs again.
    f.linux.send(signals::Target::Process, signals::SigInfo::from_process(libc::SIGUSR1 as u64, 0, 1, 0));
    assert_eq!(f.reschedule(), Next::Run(0));
    f.linux.threads_mut()[0].pending.clear();
    let shared = f.linux.take_shared_pending_for_tests();
    assert_eq!(shared, 1);
    assert!(matches!(f.deliver(), signals::Delivery::Continue(_)));
    assert_eq!(f.linux.thread_mut().sigmask, 1 << (libc::SIGUSR1 - 1), "the mask from before sigsuspend");
}

#[test]
fn a_futex_wait_run_again_after_a_signal_keeps_its_deadline() {
    let mut f = Fixture::new(b"");
    handle(&mut f, libc::SIGUSR1 as u64, 0, 0);
    f.cpu.regs.rsp = f.layout.stack_top - 4096;
    f.cpu.regs.rip = PIE_BASE + 0x50;
    let (word, ts) = (f.scratch(), f.scratch() + 64);
    f.mem.write(ts, &[5u64.to_le_bytes(), 0u64.to_le_bytes()].concat()).unwrap(); // 5 s, relative
    let args = [word, 0x80, 0, ts];
    assert!(matches!(f.call(202, &args), Flow::Block));
    let until = |f: &Fixture| match f.linux.threads()[0].state {
        RunState::Futex { until, .. } => until,
        _ => panic!("not waiting"),
    };
    let first = until(&f);
    // Woken by a signal that is gone by delivery time (another thread took it): no handler
    // runs, the wait runs again — to the same end, not 5 s from now.
    f.linux.send(signals::Target::Process, signals::SigInfo::from_process(libc::SIGUSR1 as u64, 0, 1, 0));
    assert_eq!(f.reschedule(), Next::Run(0));
    assert_eq!(f.linux.take_shared_pending_for_tests(), 1);
    let signals::Delivery::Continue(regs) = f.deliver() else { panic!() };
    assert_eq!((regs.rip, regs.rax), (PIE_BASE + 0x50 - 2, 202), "rewound onto the syscall");
    std::thread::sleep(Duration::from_millis(5));
    assert!(matches!(f.call(202, &args), Flow::Block));
    assert_eq!(until(&f), first);
}

#[test]
fn ppoll_waits_with_its_own_mask_and_puts_the_callers_back() {
    let mut f = Fixture::new(b"");
    handle(&mut f, libc::SIGUSR1 as u64, 0, 0);
    f.cpu.regs.rsp = f.layout.stack_top - 4096;
    let (set, ts, fds) = (f.scratch(), f.scratch() + 64, f.scratch() + 128);
    let usr1 = 1u64 << (libc::SIGUSR1 - 1);
    f.mem.write_u64(set, usr1).unwrap();
    assert_eq!(f.ret(14, &[0, set, 0, 8]), 0); // SIGUSR1 blocked
    f.mem.write_u64(set, 0).unwrap(); // ppoll's mask: nothing blocked
    f.mem.write(ts, &[0u8; 16]).unwrap(); // timeout 0
    assert_eq!(f.ret(293, &[fds, 0]), 0);
    let r = f.mem.read_u64(fds).unwrap() & 0xffff_ffff;
    let pfd = f.scratch() + 256;
    f.mem.write(pfd, &[(r as u32).to_le_bytes(), 1u32.to_le_bytes()].concat()).unwrap();
    // Nothing ready, timeout 0: returns 0 with the caller's mask back.
    assert_eq!(f.ret(271, &[pfd, 1, ts, set, 8]), 0);
    assert_eq!(f.linux.thread_mut().sigmask, usr1);
    assert_eq!(f.ret(271, &[pfd, 1, ts, set, 4]), neg(errno::EINVAL));
    // SIGUSR1 pending while blocked; a ppoll that unblocks it ends at once, the handler runs,
    // and the frame restores the caller's mask.
    assert_eq!(f.ret(62, &[1, libc::SIGUSR1 as u64]), 0);
    assert!(matches!(f.call(271, &[pfd, 1, 0, set, 8]), Flow::Block));
    assert_eq!(f.reschedule(), Next::Run(0));
    assert_eq!(f.cpu.regs.rax as i64, neg(errno::EINTR));
    let signals::Delivery::Continue(entry) = f.deliver() else { panic!("the handler runs") };
    assert_eq!(f.mem.read_u64(entry.rdx + 296).unwrap(), usr1, "uc_sigmask: the caller's mask");
}

#[test]
fn socket_pairs_keep_messages_and_directions_through_a_snapshot_file() {
    let mut f = Fixture::new(b"");
    let (sv, buf) = (f.scratch(), f.scratch() + 64);
    // A datagram pair with two messages queued one way and one the other.
    assert_eq!(f.ret(53, &[libc::AF_UNIX as u64, libc::SOCK_DGRAM as u64, 0, sv]), 0);
    let both = f.mem.read_u64(sv).unwrap();
    let (a, b) = (both & 0xffff_ffff, both >> 32);
    f.mem.write(buf, b"firstsecond!").unwrap();
    assert_eq!(f.ret(44, &[a, buf, 5, 0, 0, 0]), 5);
    assert_eq!(f.ret(44, &[a, buf + 5, 7, 0, 0, 0]), 7);
    assert_eq!(f.ret(1, &[b, buf, 3]), 3);
    assert_eq!(f.ret(48, &[b, 1]), 0, "b shuts its writing side");
    // Through the snapshot file encoding and back into a fresh process.
    let mut w = crate::snapfile::Writer::default();
    f.linux.capture().encode(&mut w);
    let state = LinuxState::decode(&mut crate::snapfile::Reader::new(&w.buf), &f.layout, &f.linux.fs).expect("decodes");
    f.linux.restore(&state).expect("restores");
    let out = f.scratch() + 512;
    assert_eq!(f.ret(45, &[b, out, 64, 0, 0, 0]), 5, "one message at a time");
    let mut got = [0u8; 5];
    f.mem.read(out, &mut got).unwrap();
    assert_eq!(&got, b"first");
    assert_eq!(f.ret(45, &[b, out, 3, 0, 0, 0]), 3, "a short buffer cuts the message");
    assert_eq!(f.ret(45, &[b, out, 64, 0x40, 0, 0]), neg(errno::EAGAIN));
    assert_eq!(f.ret(45, &[a, out, 64, 0, 0, 0]), 3);
    assert_eq!(f.ret(45, &[a, out, 64, 0, 0, 0]), 0, "b's shutdown survived: end of stream");
    assert_eq!(f.ret(44, &[b, buf, 1, 0x4000, 0, 0]), neg(errno::EPIPE));
    // Not a socket, and families without pairs.
    assert_eq!(f.ret(44, &[0, buf, 1, 0, 0, 0]), neg(libc::ENOTSOCK));
    assert_eq!(f.ret(53, &[libc::AF_INET as u64, 1, 0, sv]), neg(libc::EOPNOTSUPP));
}

#[test]
fn timerfds_and_signalfds_survive_a_snapshot_file() {
    let mut f = Fixture::new(b"");
    let (spec, mask, out) = (f.scratch(), f.scratch() + 64, f.scratch() + 512);
    let tfd = f.ret(283, &[libc::CLOCK_MONOTONIC as u64, libc::O_NONBLOCK as u64]) as u64;
    // Periodic every second, first in 1 s; and a signalfd for SIGUSR1, which is pending.
    f.mem.write(spec, &[1i64, 0, 1, 0].iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    assert_eq!(f.ret(286, &[tfd, 0, spec, 0]), 0);
    f.mem.write_u64(mask, 1 << (libc::SIGUSR1 - 1)).unwrap();
    let sfd = f.ret(289, &[u64::MAX, mask, 8, libc::O_NONBLOCK as u64]) as u64;
    f.linux.thread_mut().sigmask = 1 << (libc::SIGUSR1 - 1);
    f.linux.send(signals::Target::Process, signals::SigInfo::from_process(libc::SIGUSR1 as u64, 0, 1, 0));
    let mut w = crate::snapfile::Writer::default();
    f.linux.capture().encode(&mut w);
    let state = LinuxState::decode(&mut crate::snapfile::Reader::new(&w.buf), &f.layout, &f.linux.fs).expect("decodes");
    f.linux.restore(&state).expect("restores");
    // The timer is still armed about a second ahead, with its period; nothing expired yet.
    assert_eq!(f.ret(287, &[tfd, out]), 0);
    let mut cur = [0u8; 32];
    f.mem.read(out, &mut cur).unwrap();
    let word = |i: usize| i64::from_le_bytes(cur[i * 8..i * 8 + 8].try_into().unwrap());
    assert_eq!((word(0), word(1)), (1, 0), "interval");
    assert!(word(2) <= 1 && (word(2) > 0 || word(3) > 0), "time left ≤ 1 s");
    assert_eq!(f.ret(0, &[tfd, out, 8]), neg(errno::EAGAIN));
    let due = f.linux.next_timer().expect("the timerfd is due");
    f.linux.fire_timers(due + Duration::from_millis(2500));
    assert_eq!(f.ret(0, &[tfd, out, 8]), 8);
    assert_eq!(f.mem.read_u64(out).unwrap(), 3, "expirations: the first and two periods");
    // The signalfd keeps its mask and reads the pending signal.
    assert_eq!(f.ret(0, &[sfd, out, 128]), 128);
    assert_eq!(f.mem.read_u64(out).unwrap() as u32, libc::SIGUSR1 as u32);
    assert_eq!(f.ret(0, &[sfd, out, 128]), neg(errno::EAGAIN));
}

#[test]
fn a_snapshot_cannot_make_buffers_shared_in_ways_no_syscall_could() {
    use super::files::{FdSpec, FdTable, LocalSpec, PipeSpec};
    let policy = FilePolicy::new(&[], std::path::Path::new("/")).expect("policy");
    let fs = super::memfs::build(&[], 1 << 20, std::path::Path::new("/")).expect("in-memory files");
    let end = |pipe: u64, data: &[u8], msgs: Vec<u64>| PipeSpec { pipe, data: data.to_vec(), msgs };
    let socket = |desc: u64, rx: PipeSpec, tx: PipeSpec, kind: i32| FdSpec::Local {
        desc,
        nonblock: false,
        object: LocalSpec::Socket { rx, tx, kind, shut_rd: false, shut_wr: false },
    };
    // A socket reading and writing one buffer (its two locks would be one lock, taken twice).
    let same = vec![(3, socket(0, end(7, b"", vec![]), end(7, b"", vec![]), libc::SOCK_STREAM))];
    assert!(FdTable::rebuild(&same, &policy, &fs).is_err());
    // A datagram buffer also read as a pipe (message lengths would no longer match the bytes).
    let mixed = vec![
        (3, socket(0, end(7, b"abc", vec![3]), end(8, b"", vec![]), libc::SOCK_DGRAM)),
        (4, FdSpec::Local { desc: 1, nonblock: false, object: LocalSpec::PipeRead { pipe: 7, data: vec![] } }),
    ];
    assert!(FdTable::rebuild(&mixed, &policy, &fs).is_err());
    // Two readers of one pipe.
    let two = vec![
        (3, FdSpec::Local { desc: 0, nonblock: false, object: LocalSpec::PipeRead { pipe: 1, data: vec![] } }),
        (4, FdSpec::Local { desc: 1, nonblock: false, object: LocalSpec::PipeRead { pipe: 1, data: vec![] } }),
    ];
    assert!(FdTable::rebuild(&two, &policy, &fs).is_err());
    // What a socketpair really makes is fine, and a dup'ed descriptor shares its description.
    let pair = vec![
        (3, socket(0, end(1, b"", vec![]), end(2, b"hi", vec![2]), libc::SOCK_DGRAM)),
        (4, socket(1, end(2, b"", vec![]), end(1, b"", vec![]), libc::SOCK_DGRAM)),
        (5, socket(0, end(1, b"", vec![]), end(2, b"", vec![]), libc::SOCK_DGRAM)),
    ];
    assert!(FdTable::rebuild(&pair, &policy, &fs).is_ok());
}

#[test]
fn in_memory_files_through_the_syscalls_and_a_snapshot_file() {
    let mut f = Fixture::new(b"");
    let at = f.scratch();
    let buf = at + 1024;
    let put = |f: &mut Fixture, addr: u64, s: &str| {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        f.mem.write(addr, &b).unwrap();
        addr
    };
    let cwd = AT_FDCWD as u64;
    let dir = put(&mut f, at, "/tmp/d");
    assert_eq!(f.ret(83, &[dir, 0o755]), 0, "mkdir");
    assert_eq!(f.ret(83, &[dir, 0o755]), -libc::EEXIST as i64);
    let file = put(&mut f, at + 64, "/tmp/d/f");
    let fd = f.ret(257, &[cwd, file, (libc::O_CREAT | libc::O_RDWR) as u64, 0o600]);
    assert!(fd >= 3);
    f.mem.write(buf, b"hello").unwrap();
    assert_eq!(f.ret(1, &[fd as u64, buf, 5]), 5);
    assert_eq!(f.ret(18, &[fd as u64, buf, 2, 10]), 2, "pwrite past the end");
    assert_eq!(f.ret(8, &[fd as u64, 0, libc::SEEK_END as u64]), 12);
    assert_eq!(f.ret(8, &[fd as u64, 1, libc::SEEK_SET as u64]), 1);
    // Through the snapshot file encoding: the tree and the open description with its offset.
    let mut w = crate::snapfile::Writer::default();
    f.linux.capture().encode(&mut w);
    let state = LinuxState::decode(&mut crate::snapfile::Reader::new(&w.buf), &f.layout, &f.linux.fs).expect("decodes");
    let renamed = put(&mut f, at + 128, "/tmp/g");
    assert_eq!(f.ret(82, &[file, renamed]), 0, "rename");
    assert_eq!(f.ret(87, &[renamed]), 0, "unlink");
    f.linux.restore(&state).expect("restores");
    let out = buf + 64;
    assert_eq!(f.ret(0, &[fd as u64, out, 64]), 11, "read from offset 1 to the end");
    let mut got = [0u8; 11];
    f.mem.read(out, &mut got).unwrap();
    assert_eq!(&got, b"ello\0\0\0\0\0he");
    assert_eq!(f.ret(84, &[dir]), -libc::ENOTEMPTY as i64, "the file is back");
    assert_eq!(f.ret(87, &[file]), 0);
    assert_eq!(f.ret(84, &[dir]), 0, "rmdir");
    // The host view stays read-only.
    let etc = put(&mut f, at + 192, "/kvmbox-x");
    assert_eq!(f.ret(83, &[etc, 0o755]), -libc::EROFS as i64);
    assert_eq!(f.ret(257, &[cwd, etc, (libc::O_CREAT | libc::O_WRONLY) as u64, 0o600]), -libc::EROFS as i64);
}

#[test]
fn a_snapshot_file_cannot_widen_the_in_memory_files() {
    let mut f = Fixture::new(b"");
    let mut w = crate::snapfile::Writer::default();
    f.linux.capture().encode(&mut w);
    // A loader with other mounts refuses the file.
    let other = super::memfs::build(&[("/work".into(), super::memfs::MountSpec::Memory)], 1 << 20, std::path::Path::new("/")).unwrap();
    assert!(LinuxState::decode(&mut crate::snapfile::Reader::new(&w.buf), &f.layout, &other).is_err());
    // A file bigger than the loader's limit is refused.
    let at = f.scratch();
    f.mem.write(at, b"/tmp/big\0").unwrap();
    let fd = f.ret(2, &[at, (libc::O_CREAT | libc::O_WRONLY) as u64, 0o600]);
    assert_eq!(f.ret(77, &[fd as u64, 900 << 10]), 0, "ftruncate within the limit");
    let mut w = crate::snapfile::Writer::default();
    f.linux.capture().encode(&mut w);
    let small = super::memfs::build(&[], 512 << 10, std::path::Path::new("/")).unwrap();
    assert!(LinuxState::decode(&mut crate::snapfile::Reader::new(&w.buf), &f.layout, &small).is_err());
    assert!(LinuxState::decode(&mut crate::snapfile::Reader::new(&w.buf), &f.layout, &f.linux.fs).is_ok());
}

#[test]
fn a_readdir_and_unlink_loop_empties_a_big_in_memory_directory() {
    let mut f = Fixture::new(b"");
    let at = f.scratch();
    let cwd = AT_FDCWD as u64;
    f.mem.write(at, b"/tmp/d\0").unwrap();
    assert_eq!(f.ret(83, &[at, 0o755]), 0);
    for i in 0..300 {
        f.mem.write(at + 256, format!("/tmp/d/file-{i:04}\0").as_bytes()).unwrap();
        let fd = f.ret(257, &[cwd, at + 256, (libc::O_CREAT | libc::O_WRONLY) as u64, 0o600]);
        assert!(fd >= 0);
        assert_eq!(f.ret(3, &[fd as u64]), 0);
    }
    let dir = f.ret(257, &[cwd, at, libc::O_RDONLY as u64 | libc::O_DIRECTORY as u64, 0]) as u64;
    let buf = at + 4096;
    let mut removed = 0;
    // Small batches, each entry unlinked right after it was read (as `rm -r` loops do).
    loop {
        let n = f.ret(217, &[dir, buf, 512]);
        assert!(n >= 0, "getdents64: {n}");
        if n == 0 {
            break;
        }
        let mut got = vec![0u8; n as usize];
        f.mem.read(buf, &mut got).unwrap();
        let mut off = 0;
        while off < got.len() {
            let reclen = u16::from_le_bytes([got[off + 16], got[off + 17]]) as usize;
            let name: Vec<u8> = got[off + 19..off + reclen].iter().copied().take_while(|&b| b != 0).collect();
            if name != b"." && name != b".." {
                let mut path = b"/tmp/d/".to_vec();
                path.extend_from_slice(&name);
                path.push(0);
                f.mem.write(at + 512, &path).unwrap();
                assert_eq!(f.ret(263, &[cwd, at + 512, 0]), 0, "unlinkat {}", String::from_utf8_lossy(&name));
                removed += 1;
            }
            off += reclen;
        }
    }
    assert_eq!(removed, 300, "every entry was listed once");
    assert_eq!(f.ret(84, &[at]), 0, "rmdir of the emptied directory");
}

#[test]
fn the_monotonic_clock_goes_on_from_a_snapshot_taken_where_it_was_further() {
    let mut f = Fixture::new(b"");
    let mut state = f.linux.capture();
    // As if captured on a host that had been up an hour longer than this one.
    state.mono_at_capture = state.mono_at_capture.saturating_add(3600 * 1_000_000_000);
    f.linux.restore(&state).expect("restores");
    let ts = f.scratch();
    assert_eq!(f.ret(228, &[libc::CLOCK_MONOTONIC as u64, ts]), 0);
    let mut b = [0u8; 16];
    f.mem.read(ts, &mut b).unwrap();
    let sec = i64::from_le_bytes(b[..8].try_into().unwrap()) as u64;
    assert!(sec * 1_000_000_000 >= state.mono_at_capture - 1_000_000_000, "the guest's clock did not step back");
    // A state captured here and restored here keeps going without a jump.
    let again = f.linux.capture();
    f.linux.restore(&again).unwrap();
    assert_eq!(f.linux.mono_offset, state.mono_offset.max(f.linux.mono_offset));
}

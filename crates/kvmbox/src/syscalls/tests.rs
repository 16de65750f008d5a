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
        let space = AddressSpace::new(layout.regions(&[code]));
        let mem = GuestMemory::new(layout.memory).expect("guest memory");
        let policy = Arc::new(FilePolicy::new(&[], std::path::Path::new("/")).expect("policy"));
        let linux = Linux::new(ProcessConfig {
            mm: Mappings::new(code.end, layout.heap_limit()),
            policy,
            stdin: Input::Bytes { data: stdin.to_vec(), pos: 0 },
            stdout: Output::capture(1 << 20),
            stderr: Output::capture(1 << 20),
            exe_path: "/guest".into(),
            cwd: "/".into(),
            memory: layout.memory,
            stack_size: layout.stack_size(),
            trace: false,
        });
        let deadline = Deadline::after(Some(Duration::from_secs(5)), InterruptHandle::default());
        Fixture { mem, space, layout, linux, deadline, cpu: UserCpu::default() }
    }

    fn call(&mut self, nr: u64, args: &[u64]) -> Flow {
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        let env = SyscallEnv { mem: &self.mem, space: &self.space, deadline: &self.deadline, cpu: self.cpu };
        self.linux.handle(&env, &mut crate::host::NoHost, nr, a).expect("no host-side error")
    }

    /// The value the guest sees in rax, as a signed number (-errno on failure).
    fn ret(&mut self, nr: u64, args: &[u64]) -> i64 {
        match self.call(nr, args) {
            Flow::Return(v) => v as i64,
            Flow::Exit(s) => panic!("syscall {nr} ended the process: {s:?}"),
        }
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
    assert!(matches!(f.call(62, &[1, 0]), Flow::Return(0))); // signal 0: a check only
    assert!(matches!(f.call(62, &[1, libc::SIGCHLD as u64]), Flow::Return(0))); // ignored by default
    assert_eq!(f.ret(62, &[77, 15]), neg(errno::ESRCH));
    assert!(matches!(f.call(62, &[1, 15]), Flow::Exit(ExitStatus::Signal(15))));
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
    assert_eq!(f.ret(15, &[]), neg(errno::ENOSYS));
    assert_eq!(f.ret(1 << 40, &[]), neg(errno::ENOSYS));
    for s in table::TABLE {
        if matches!(s.name, "exit" | "exit_group") {
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

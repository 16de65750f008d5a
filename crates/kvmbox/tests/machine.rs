//! End-to-end tests of the core crate against real guest programs compiled at test time.
//! They need /dev/kvm and gcc; without KVM they fail with the probe's reason.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kvmbox::{Error, Input, Machine, MachineOptions, RunOutcome};

fn guests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../__test__/guests")
}

/// Compile `name`.c statically (once per test binary) and return the executable. With
/// `KVMBOX_TEST_GUEST_BIN` set, the guests were compiled beforehand into that directory (the
/// SVM rig has no compiler: scripts/svm/test.sh).
fn guest(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("KVMBOX_TEST_GUEST_BIN") {
        return PathBuf::from(dir).join(name);
    }
    static OUT: OnceLock<PathBuf> = OnceLock::new();
    let out = OUT.get_or_init(|| {
        let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("guests");
        std::fs::create_dir_all(&d).unwrap();
        d
    });
    static COMPILE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serial = COMPILE.lock().unwrap_or_else(|e| e.into_inner());
    let exe = out.join(name);
    let src = guests_dir().join(format!("{name}.c"));
    let mtime = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if mtime(&exe).is_none() || mtime(&exe) < mtime(&src) {
        let status = Command::new("gcc").args(["-O2", "-static", "-o"]).arg(&exe).arg(&src).arg("-lm").status().expect("gcc is required");
        assert!(status.success(), "compiling {}", src.display());
    }
    exe
}

fn require_kvm() {
    let p = kvmbox::probe();
    assert!(p.available, "KVM is required for these tests: {}", p.error.unwrap_or_default());
}

fn opts(args: &[&str]) -> MachineOptions {
    MachineOptions { args: args.iter().map(|s| s.to_string()).collect(), ..MachineOptions::default() }
}

/// The `calls` guest run up to its kvmbox_pause().
fn paused() -> Machine {
    require_kvm();
    let mut vm = Machine::from_file(guest("calls"), opts(&["calls"])).unwrap();
    assert_eq!(vm.run().unwrap(), RunOutcome::Paused);
    vm
}

/// Call the guest function `name` with no host.
fn call(vm: &mut Machine, name: &str, args: &mut [kvmbox::CallArg]) -> kvmbox::Result<u64> {
    let addr = vm.symbol(name).unwrap_or_else(|| panic!("symbol {name}"));
    vm.call(addr, args, None, &mut kvmbox::NoHost)
}

/// The `calls` guest's counter, incremented.
fn counter(vm: &mut Machine) -> u64 {
    call(vm, "counter_next", &mut []).unwrap()
}

#[test]
fn hello_prints_and_exits() {
    require_kvm();
    let mut vm = Machine::from_file(guest("hello"), MachineOptions::default()).unwrap();
    assert_eq!(vm.run().unwrap(), RunOutcome::Exited(0));
    assert_eq!(String::from_utf8(vm.take_stdout()).unwrap(), "hello from kvmbox guest\n");
    assert!(matches!(vm.run(), Err(Error::InvalidState(_))), "a finished machine cannot run again");
}

#[test]
fn exit_code_and_stderr() {
    require_kvm();
    let mut vm = Machine::from_file(guest("exit"), opts(&["exit", "42"])).unwrap();
    assert_eq!(vm.run().unwrap(), RunOutcome::Exited(42));
    assert!(!vm.take_stderr().is_empty());
}

#[test]
fn null_dereference_is_a_page_fault_at_address_zero() {
    require_kvm();
    let mut vm = Machine::from_file(guest("faults"), opts(&["faults", "null"])).unwrap();
    match vm.run() {
        Err(Error::GuestFault(f)) => {
            assert_eq!(f.vector, 14);
            assert_eq!(f.address, 0);
            assert!((0x40_0000..0x80_0000).contains(&f.rip), "rip {:#x} in program text", f.rip);
        }
        other => panic!("expected a page fault, got {other:?}"),
    }
}

#[test]
fn ud2_and_divide_error() {
    require_kvm();
    for (mode, vector) in [("ud2", 6), ("div0", 0)] {
        let mut vm = Machine::from_file(guest("faults"), opts(&["faults", mode])).unwrap();
        match vm.run() {
            Err(Error::GuestFault(f)) => assert_eq!(f.vector, vector, "{mode}"),
            other => panic!("{mode}: expected a fault, got {other:?}"),
        }
    }
}

#[test]
fn infinite_loop_times_out_near_the_deadline() {
    require_kvm();
    let mut o = opts(&["faults", "loop"]);
    o.timeout = Some(Duration::from_millis(200));
    let mut vm = Machine::from_file(guest("faults"), o).unwrap();
    let start = Instant::now();
    assert!(matches!(vm.run(), Err(Error::Timeout(200))));
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(200) && took < Duration::from_secs(2), "took {took:?}");
}

#[test]
fn wild_syscall_pointers_get_efault() {
    require_kvm();
    let mut o = opts(&["faults", "efault"]);
    o.stdin = Input::Bytes { data: b"some input\n".to_vec(), pos: 0 };
    let mut vm = Machine::from_file(guest("faults"), o).unwrap();
    assert_eq!(vm.run().unwrap(), RunOutcome::Exited(0));
    let out = String::from_utf8(vm.take_stdout()).unwrap();
    assert!(out.lines().filter(|l| l.ends_with("= -1 EFAULT")).count() >= 5, "{out}");
    assert!(out.contains("text intact: yes"), "{out}");
}

#[test]
fn memory_bomb_gets_null_from_malloc() {
    require_kvm();
    let mut o = opts(&["faults", "bomb"]);
    o.memory = 32 << 20;
    let mut vm = Machine::from_file(guest("faults"), o).unwrap();
    assert_eq!(vm.run().unwrap(), RunOutcome::Exited(0));
    assert!(String::from_utf8(vm.take_stdout()).unwrap().contains("bomb: got NULL"));
}

#[test]
fn malformed_elf_is_rejected() {
    require_kvm();
    let good = std::fs::read(guest("hello")).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("truncated", good[..200].to_vec()),
        ("elf32", {
            let mut b = good.clone();
            b[4] = 1;
            b
        }),
        ("aarch64", {
            let mut b = good.clone();
            b[18] = 183;
            b[19] = 0;
            b
        }),
    ];
    for (name, bytes) in cases {
        match Machine::from_bytes(bytes, MachineOptions::default()) {
            Err(Error::Elf(msg)) => assert!(!msg.is_empty()),
            Err(other) => panic!("{name}: expected an ELF error, got {other}"),
            Ok(_) => panic!("{name}: accepted"),
        }
    }
}

#[test]
fn syscall_floor_is_measurable() {
    require_kvm();
    let mut l = kvmbox::floor::RawSyscallLoop::new().unwrap();
    let per = l.measure(200).unwrap();
    assert!(per > Duration::from_nanos(100) && per < Duration::from_millis(5), "{per:?}");
}

/// The guest can neither read, write nor execute anything in the system area (exception
/// stubs, GDT, IDT, TSS, ring-0 stack, page tables); the syscall entry page is executable
/// code it may read but not write.
#[test]
fn system_pages_are_out_of_reach() {
    require_kvm();
    let memory = kvmbox::DEFAULT_MEMORY;
    let l = kvmbox::layout::Layout::new(memory);
    let s = l.sys;
    let targets = [
        ("exception stubs", s.exception_stubs),
        ("gdt", s.gdt),
        ("idt", s.idt),
        ("tss", s.tss),
        ("ring-0 stack", s.ring0_stack),
        ("pml4", s.page_tables),
        ("last page table", s.page_tables + (s.page_table_pages - 1) * 4096),
    ];
    let run = |mode: &str, addr: u64| {
        let mut vm = Machine::from_file(guest("faults"), opts(&["faults", mode, &format!("{addr:x}")])).unwrap();
        let r = vm.run();
        (r, String::from_utf8_lossy(&vm.take_stdout()).into_owned())
    };
    for (name, addr) in targets {
        for mode in ["peek", "poke", "jump_high"] {
            match run(mode, addr) {
                (Err(Error::GuestFault(f)), _) => {
                    assert_eq!(f.vector, 14, "{mode} {name}");
                    assert_eq!(f.address, addr, "{mode} {name}: faulting address");
                }
                (other, out) => panic!("{mode} {name} at {addr:#x}: expected #PF, got {other:?} / {out}"),
            }
        }
    }
    let (r, out) = run("peek", s.syscall_entry);
    assert_eq!(r.unwrap(), RunOutcome::Exited(1), "reading the syscall entry stub is allowed: {out}");
    match run("poke", s.syscall_entry) {
        (Err(Error::GuestFault(f)), _) => assert_eq!((f.vector, f.address), (14, s.syscall_entry)),
        (other, out) => panic!("writing the syscall entry page: {other:?} / {out}"),
    }
}

mod calls {
    use super::*;
    use kvmbox::{CallArg, HostCalls, NoHost};

    /// The shared paused(), checking what the guest printed while initializing.
    fn paused() -> Machine {
        let mut vm = super::paused();
        assert_eq!(String::from_utf8(vm.take_stdout()).unwrap(), "initialized\n");
        vm
    }

    #[test]
    fn call_functions_keep_state_and_resume() {
        let mut vm = paused();
        assert_eq!(call(&mut vm, "add", &mut [CallArg::Int(2), CallArg::Int(3)]).unwrap(), 5);
        assert_eq!(call(&mut vm, "negate", &mut [CallArg::Int(7)]).unwrap() as i64, -7);
        let six = [1, 2, 3, 4, 5, 6].map(CallArg::Int);
        assert_eq!(call(&mut vm, "sum6", &mut { six }).unwrap(), 1 + 4 + 9 + 16 + 25 + 36);
        assert_eq!(call(&mut vm, "was_initialized", &mut []).unwrap(), 1);
        for i in 1..=100 {
            assert_eq!(call(&mut vm, "counter_next", &mut []).unwrap(), i);
        }
        assert_eq!(call(&mut vm, "str_len", &mut [CallArg::Str(b"hello kvmbox")]).unwrap(), 12);
        let mut buf = *b"make me loud";
        assert_eq!(call(&mut vm, "upcase", &mut [CallArg::Bytes(&mut buf), CallArg::Int(12)]).unwrap(), 12);
        assert_eq!(&buf, b"MAKE ME LOUD", "buffers are copied back");
        assert_eq!(call(&mut vm, "getpid_twice", &mut []).unwrap(), 2, "syscalls inside calls");
        // Resuming after calls continues after kvmbox_pause().
        assert_eq!(vm.run().unwrap(), RunOutcome::Exited(7));
        assert_eq!(String::from_utf8(vm.take_stdout()).unwrap(), "resumed: 0, counter 100\n");
    }

    #[test]
    fn host_calls_read_and_write_guest_memory() {
        let mut vm = paused();
        let mut host = HostCalls::new();
        host.on(0x10000, |c| Ok(c.args[0] * 10));
        host.on(0x10001, |c| {
            let key = c.read_cstring(c.args[0], 256).map_err(|e| e.to_string())?.unwrap();
            let value = format!("value-of-{}", String::from_utf8_lossy(&key));
            c.write(c.args[1], value.as_bytes()).map_err(|e| e.to_string())?;
            Ok(value.len() as u64)
        });
        let echo = vm.symbol("echo_plus_one").unwrap();
        assert_eq!(vm.call(echo, &mut [CallArg::Int(4)], None, &mut host).unwrap(), 41);
        let lookup = vm.symbol("lookup").unwrap();
        let mut out = [0u8; 32];
        let n = vm.call(lookup, &mut [CallArg::Str(b"k1"), CallArg::Bytes(&mut out), CallArg::Int(32)], None, &mut host).unwrap();
        assert_eq!(&out[..n as usize], b"value-of-k1");
        let unhandled = vm.symbol("unhandled_hostcall").unwrap();
        assert_eq!(vm.call(unhandled, &mut [], None, &mut host).unwrap() as i64, -38, "ENOSYS");
    }

    #[test]
    fn failures_inside_calls_finish_the_machine() {
        let mut vm = paused();
        match call(&mut vm, "crash", &mut []) {
            Err(Error::GuestFault(f)) => assert_eq!((f.vector, f.address), (14, 16)),
            other => panic!("{other:?}"),
        }
        assert!(vm.is_finished());
        assert!(matches!(call(&mut vm, "add", &mut [CallArg::Int(1), CallArg::Int(1)]), Err(Error::InvalidState(_))));

        let mut vm = paused();
        let spin = vm.symbol("spin").unwrap();
        let start = Instant::now();
        assert!(matches!(
            vm.call(spin, &mut [CallArg::Int(u64::MAX)], Some(Duration::from_millis(100)), &mut NoHost),
            Err(Error::Timeout(100))
        ));
        assert!(start.elapsed() < Duration::from_secs(2));

        let mut vm = paused();
        assert!(matches!(call(&mut vm, "quit", &mut [CallArg::Int(3)]), Err(Error::GuestExited(RunOutcome::Exited(3)))));

        let mut vm = paused();
        let mut host = HostCalls::new();
        host.on(0x10000, |_| Err("handler failed".into()));
        let echo = vm.symbol("echo_plus_one").unwrap();
        assert!(matches!(vm.call(echo, &mut [CallArg::Int(1)], None, &mut host), Err(Error::HostCallback(m)) if m == "handler failed"));
    }

    #[test]
    fn bad_calls_are_rejected_without_harm() {
        let mut vm = paused();
        let add = vm.symbol("add").unwrap();
        let seven = [0u64; 7].map(CallArg::Int);
        assert!(matches!(vm.call(add, &mut { seven }, None, &mut NoHost), Err(Error::InvalidArgument(_))));
        let data = vm.symbol("counter").unwrap_or(0x1000);
        assert!(matches!(vm.call(data, &mut [], None, &mut NoHost), Err(Error::InvalidArgument(_))), "not code");
        let mut huge = vec![0u8; 64 << 20];
        assert!(matches!(vm.call(add, &mut [CallArg::Bytes(&mut huge)], None, &mut NoHost), Err(Error::InvalidArgument(_))));
        assert_eq!(call(&mut vm, "pause_inside", &mut []).unwrap() as i64, -16, "EBUSY");
        assert_eq!(call(&mut vm, "add", &mut [CallArg::Int(20), CallArg::Int(22)]).unwrap(), 42, "still usable");
    }

    #[test]
    fn call_before_pause_is_an_error() {
        require_kvm();
        let mut vm = Machine::from_file(guest("calls"), opts(&["calls"])).unwrap();
        let add = vm.symbol("add").unwrap();
        assert!(matches!(vm.call(add, &mut [], None, &mut NoHost), Err(Error::InvalidState(_))));
    }
}

mod snapshots {
    use super::*;
    use kvmbox::{CallArg, NoHost, Snapshot};

    #[test]
    fn forks_are_isolated_and_reset_restores() {
        let mut master = paused();
        for _ in 0..3 {
            counter(&mut master);
        }
        let snap = master.snapshot().unwrap();
        let mut a = Machine::fork(&snap).unwrap();
        let mut b = Machine::fork(&snap).unwrap();
        assert_eq!(counter(&mut a), 4);
        assert_eq!(counter(&mut a), 5);
        assert_eq!(counter(&mut b), 4, "b does not see a's writes");
        assert_eq!(counter(&mut master), 4, "the master continues on its own copy");
        assert!(a.reset().unwrap() > 0);
        assert_eq!(counter(&mut a), 4, "reset returns to the snapshot");
        master.reset().unwrap();
        assert_eq!(counter(&mut master), 4);
        let c = Machine::fork(&snap).map(|mut c| counter(&mut c)).unwrap();
        assert_eq!(c, 4, "the snapshot itself is unchanged");
        // Resume a fork: the program continues after kvmbox_pause() and exits.
        assert_eq!(b.run().unwrap(), RunOutcome::Exited(7));
        assert_eq!(String::from_utf8(b.take_stdout()).unwrap(), "resumed: 0, counter 4\n");
        b.reset().unwrap();
        assert_eq!(counter(&mut b), 4, "a fork that exited can be reset");
    }

    #[test]
    fn faulted_fork_is_reset_and_reused() {
        let mut master = paused();
        let snap = master.snapshot().unwrap();
        let mut f = Machine::fork(&snap).unwrap();
        assert!(matches!(call(&mut f, "crash", &mut []), Err(Error::GuestFault(_))));
        f.reset().unwrap();
        assert_eq!(call(&mut f, "add", &mut [CallArg::Int(2), CallArg::Int(3)]).unwrap(), 5);
        let spin = f.symbol("spin").unwrap();
        assert!(matches!(
            f.call(spin, &mut [CallArg::Int(u64::MAX)], Some(Duration::from_millis(50)), &mut NoHost),
            Err(Error::Timeout(_))
        ));
        f.reset().unwrap();
        assert_eq!(call(&mut f, "add", &mut [CallArg::Int(2), CallArg::Int(3)]).unwrap(), 5);
    }

    #[test]
    fn reset_after_a_triple_fault_restores_a_working_machine() {
        // SVM re-initializes the vCPU after a triple fault (STAR/LSTAR/SFMASK, XCR0, control
        // registers); the reset must set them again or the next syscall goes nowhere.
        let mut master = paused();
        let snap = master.snapshot().unwrap();
        let mut f = Machine::fork(&snap).unwrap();
        let pid = call(&mut f, "getpid_twice", &mut []).unwrap();
        f.reset().unwrap();
        f.break_interrupt_table();
        match call(&mut f, "crash", &mut []) {
            Err(Error::GuestFault(fault)) => assert_eq!(fault.vector, 8, "a shutdown is reported as a double fault"),
            other => panic!("expected a triple fault, got {other:?}"),
        }
        f.reset().unwrap();
        assert_eq!(call(&mut f, "getpid_twice", &mut []).unwrap(), pid, "syscalls work after the reset");
        assert!(
            matches!(call(&mut f, "crash", &mut []), Err(Error::GuestFault(e)) if e.vector == 14),
            "and exceptions are delivered again"
        );
    }

    #[test]
    fn snapshot_of_a_fork_and_reset_to_another_snapshot() {
        let mut master = paused();
        let s1 = master.snapshot().unwrap();
        let mut f = Machine::fork(&s1).unwrap();
        for _ in 0..10 {
            counter(&mut f);
        }
        let s2 = f.snapshot().unwrap();
        let mut g = Machine::fork(&s2).unwrap();
        assert_eq!(counter(&mut g), 11, "a fork of a fork's snapshot sees its state");
        g.reset_to(&s1).unwrap();
        assert_eq!(counter(&mut g), 1, "reset to another snapshot");
        g.reset_to(&s2).unwrap();
        assert_eq!(counter(&mut g), 11);
        assert!(!Snapshot::same(&s1, &s2));
        // A snapshot of a different program and memory size: the page tables differ.
        let mut other = Machine::from_file(guest("calls"), MachineOptions { memory: 64 << 20, ..opts(&["calls"]) }).unwrap();
        assert_eq!(other.run().unwrap(), RunOutcome::Paused);
        let s3 = other.snapshot().unwrap();
        g.reset_to(&s3).unwrap();
        assert_eq!(g.memory_size(), 64 << 20);
        assert_eq!(counter(&mut g), 1);
        g.reset_to(&s2).unwrap();
        assert_eq!(counter(&mut g), 11);
    }
}

mod snapshot_files {
    use super::*;
    use kvmbox::{LoadOptions, Snapshot};

    #[test]
    fn save_load_round_trip_and_rejects_bad_files() {
        let mut master = paused();
        for _ in 0..5 {
            counter(&mut master);
        }
        let snap = master.snapshot().unwrap();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let path = dir.join("calls.kvmsnap");
        snap.save(&path).unwrap();
        let loaded = Snapshot::load(&path, LoadOptions::default()).unwrap();
        let mut f = Machine::fork(&loaded).unwrap();
        assert_eq!(counter(&mut f), 6, "state survives the file round trip");
        assert_eq!(f.run().unwrap(), RunOutcome::Exited(7));
        assert_eq!(String::from_utf8(f.take_stdout()).unwrap(), "resumed: 0, counter 6\n");

        let good = std::fs::read(&path).unwrap();
        let try_load = |bytes: &[u8], name: &str| {
            let p = dir.join(name);
            std::fs::write(&p, bytes).unwrap();
            match Snapshot::load(&p, LoadOptions::default()) {
                Err(Error::InvalidArgument(msg)) => msg,
                Err(other) => panic!("{name}: unexpected error {other}"),
                Ok(_) => panic!("{name}: accepted"),
            }
        };
        assert!(try_load(&good[..good.len() / 2], "truncated.kvmsnap").contains("truncated"));
        assert!(try_load(&good[..good.len() - 1], "short.kvmsnap").contains("truncated"));
        let mut flipped = good.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x40;
        assert!(try_load(&flipped, "corrupt.kvmsnap").contains("checksum"));
        let mut version = good.clone();
        version[8] = 99;
        assert!(try_load(&version, "version.kvmsnap").contains("version 99"));
        assert!(try_load(b"not a snapshot at all", "garbage.kvmsnap").contains("not a kvmbox snapshot"));
        assert!(try_load(&[], "empty.kvmsnap").contains("not a kvmbox snapshot"));
    }
}

/// The seccomp filter: a restricted thread still runs guests (files, timeouts, faults, forks)
/// but cannot do what a guest never needs; a `seccomp` machine refuses unrestricted threads.
#[test]
fn seccomp_restricted_thread_runs_guests_and_nothing_else() {
    require_kvm();
    let calls = guest("calls");
    let files = guest("files");
    let errno = || std::io::Error::last_os_error().raw_os_error();
    // On this (unrestricted) thread a seccomp machine does not run.
    let mut vm = Machine::from_file(&calls, MachineOptions { seccomp: true, ..opts(&["calls"]) }).unwrap();
    assert!(matches!(vm.run(), Err(Error::InvalidState(m)) if m.contains("seccomp")));
    // Machines are created on an unrestricted thread (VM creation opens /dev/kvm read-write,
    // the file policy resolves paths), then run on the restricted one.
    let dir = guests_dir().to_string_lossy().into_owned();
    let src = format!("{dir}/calls.c");
    let opts_files = MachineOptions { allow_read: vec![dir], seccomp: true, ..opts(&["files", &src]) };
    let mut reader = Machine::from_file(&files, opts_files).unwrap();
    // SAFETY: landlock_create_ruleset(NULL, 0, VERSION) only reports the ABI version.
    let landlock = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, 0usize, 0usize, 1u32) } > 0;
    // SAFETY: a fresh memfd, owned by this test.
    let memfd = unsafe { libc::memfd_create(c"kvmbox-seccomp-test".as_ptr(), 0) };
    assert!(memfd >= 0 && unsafe { libc::ftruncate(memfd, 1 << 20) } == 0);
    let handle = std::thread::spawn(move || {
        let restriction = kvmbox::seccomp::restrict_current_thread().unwrap();
        assert!(kvmbox::seccomp::current_thread_restricted());
        assert_eq!(restriction.file_writes_denied, landlock, "Landlock is used where the kernel has it");
        // Guests run: to the pause, then calls, a timeout, a fault, a fork and its reset.
        assert!(matches!(vm.run().unwrap(), RunOutcome::Paused));
        let mut args = [kvmbox::CallArg::Int(40), kvmbox::CallArg::Int(2)];
        assert_eq!(call(&mut vm, "add", &mut args).unwrap(), 42);
        let snap = vm.snapshot().unwrap();
        let mut fork = Machine::fork(&snap).unwrap();
        assert!(fork.requires_seccomp(), "forks keep the setting");
        let spin = fork.symbol("spin").unwrap();
        let mut forever = [kvmbox::CallArg::Int(u64::MAX)];
        assert!(matches!(fork.call(spin, &mut forever, Some(Duration::from_millis(30)), &mut kvmbox::NoHost), Err(Error::Timeout(_))));
        fork.reset().unwrap();
        assert!(matches!(call(&mut fork, "crash", &mut []), Err(Error::GuestFault(_))));
        fork.reset().unwrap();
        assert_eq!(call(&mut fork, "add", &mut args).unwrap(), 42);
        // Reading an allowed file works (O_PATH open, type check, reopen).
        assert!(matches!(reader.run().unwrap(), RunOutcome::Exited(0)));
        assert!(String::from_utf8_lossy(&reader.take_stdout()).contains("A guest that initializes"));
        // What a guest never needs is refused.
        // SAFETY: plain syscalls with valid arguments; each is expected to fail.
        unsafe {
            assert_eq!(libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0), -1);
            assert_eq!(errno(), Some(libc::EPERM), "socket");
            let path = std::ffi::CString::new("/tmp/kvmbox-seccomp-probe").unwrap();
            assert_eq!(libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CREAT, 0o600), -1);
            assert_eq!(errno(), Some(libc::EPERM), "open for writing");
            let exec =
                libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ | libc::PROT_EXEC, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0);
            assert_eq!(exec, libc::MAP_FAILED, "executable mapping");
            let sh = std::ffi::CString::new("/bin/true").unwrap();
            let argv = [sh.as_ptr(), std::ptr::null()];
            assert_eq!(libc::execv(sh.as_ptr(), argv.as_ptr()), -1, "execve");
            assert_eq!(libc::syscall(libc::SYS_clone3, 0usize, 0usize), -1, "clone3");
            assert_eq!(libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0), -1, "ptrace");
            assert_eq!(libc::ioctl(0, libc::FIONREAD, &mut 0i32), -1, "a non-KVM ioctl");
            assert_eq!(errno(), Some(libc::EPERM));
            assert_eq!(libc::kill(1, 0), -1, "signals to other processes");
            assert_eq!(libc::syscall(libc::SYS_tgkill, 1, 1, 0), -1, "tgkill to another process");
            assert_eq!(errno(), Some(libc::EPERM));
            // Punching holes (how guest memory is given back) works; other fallocate modes do not.
            let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
            assert_eq!(libc::fallocate(memfd, punch, 0, 4096), 0, "punch a hole");
            assert_eq!(libc::fallocate(memfd, 0, 0, 4096), -1, "allocate");
            if landlock {
                // openat2's flags are invisible to seccomp; Landlock refuses the write open.
                #[repr(C)]
                struct OpenHow {
                    flags: u64,
                    mode: u64,
                    resolve: u64,
                }
                let how = OpenHow { flags: (libc::O_WRONLY | libc::O_CREAT) as u64, mode: 0o600, resolve: 0 };
                let r =
                    libc::syscall(libc::SYS_openat2, libc::AT_FDCWD, path.as_ptr(), &how as *const OpenHow, std::mem::size_of::<OpenHow>());
                assert_eq!(r, -1, "openat2 for writing");
                assert_eq!(errno(), Some(libc::EACCES));
                assert!(!std::path::Path::new("/tmp/kvmbox-seccomp-probe").exists());
            }
        }
        assert!(std::thread::Builder::new().spawn(|| ()).is_err(), "no new threads");
    });
    handle.join().unwrap();
    assert!(!kvmbox::seccomp::current_thread_restricted(), "other threads are not affected");
    // SAFETY: a plain socket() on this unrestricted thread, closed right away.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    assert!(s >= 0);
    unsafe { libc::close(s) };
}

/// Interrupts from another thread: a spinning call and a call sleeping for ever both stop
/// with `Interrupted`; one requested while nothing runs stops the next operation at once
/// unless cleared; the fork resets and serves again.
#[test]
fn interrupt_handle_stops_the_guest_from_another_thread() {
    let mut master = paused();
    let snap = master.snapshot().unwrap();
    let mut f = Machine::fork(&snap).unwrap();
    let handle = f.interrupt_handle();
    let spin = f.symbol("spin").unwrap();
    let stopper = {
        let handle = handle.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            handle.interrupt();
        })
    };
    let r = f.call(spin, &mut [kvmbox::CallArg::Int(u64::MAX)], None, &mut kvmbox::NoHost);
    stopper.join().unwrap();
    assert!(matches!(r, Err(Error::Interrupted)), "{r:?}");
    handle.clear();
    f.reset().unwrap();
    assert_eq!(call(&mut f, "add", &mut [kvmbox::CallArg::Int(2), kvmbox::CallArg::Int(3)]).unwrap(), 5);
    // Requested while idle: the next call stops before the guest runs; clear() drops it.
    handle.interrupt();
    assert!(matches!(call(&mut f, "add", &mut [kvmbox::CallArg::Int(1), kvmbox::CallArg::Int(1)]), Err(Error::Interrupted)));
    handle.clear();
    f.reset().unwrap();
    handle.interrupt();
    handle.clear();
    assert_eq!(call(&mut f, "add", &mut [kvmbox::CallArg::Int(1), kvmbox::CallArg::Int(1)]).unwrap(), 2);
}

/// Syscalls a hostile guest makes to have the host work or allocate in proportion to a size
/// it chooses (docs/syscall-review.md, findings F1, F3, F4, F6), issued directly on a paused
/// guest through the emulation (deadline: 2 ms): each ends bounded.
mod hostile_syscalls {
    use super::*;

    const READV: u64 = 19;
    const MMAP: u64 = 9;
    const MREMAP: u64 = 25;
    const OPENAT: u64 = 257;
    const PROT_RW: u64 = 3;
    const MAP_PRIVATE_ANON: u64 = 0x22;
    const MAP_FIXED: u64 = 0x10;
    const MAX_RW_COUNT: u64 = 0x7fff_f000;

    fn paused_with(memory: u64, allow_read: Vec<String>) -> Machine {
        require_kvm();
        let o = MachineOptions { memory, allow_read, ..opts(&["calls"]) };
        let mut vm = Machine::from_file(guest("calls"), o).unwrap();
        assert_eq!(vm.run().unwrap(), RunOutcome::Paused);
        vm
    }

    /// A sparse file of `size` bytes in a fresh directory; returns (dir, path).
    fn sparse(size: u64) -> (String, String) {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("sparse-{size}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("big");
        std::fs::File::create(&file).unwrap().set_len(size).unwrap();
        (dir.to_string_lossy().into_owned(), file.to_string_lossy().into_owned())
    }

    /// Open `path` in the guest (the path is written below its stack pointer).
    fn open(vm: &mut Machine, path: &str) -> u64 {
        let at = vm.stack_pointer() - 8192;
        vm.memory().write(at, format!("{path}\0").as_bytes()).unwrap();
        let fd = vm.emulate_syscall(OPENAT, [(-100i64) as u64, at, 0, 0, 0, 0]).unwrap().unwrap();
        assert!((fd as i64) >= 0, "open {path}: {}", fd as i64);
        fd
    }

    fn anon(vm: &mut Machine, len: u64) -> u64 {
        let a = vm.emulate_syscall(MMAP, [0, len, PROT_RW, MAP_PRIVATE_ANON, u64::MAX, 0]).unwrap().unwrap();
        assert!((a as i64) > 0, "mmap {len}: {}", a as i64);
        a
    }

    #[test]
    fn readv_of_a_huge_file_into_one_buffer_is_capped_and_stops_at_the_deadline() {
        let (dir, file) = sparse(64 << 30);
        let mut vm = paused_with(128 << 20, vec![dir]);
        let fd = open(&mut vm, &file);
        let buf = anon(&mut vm, 16 << 20);
        let iov = vm.stack_pointer() - (64 << 10);
        let entries: Vec<u8> = (0..1024).flat_map(|_| [buf.to_le_bytes(), (16u64 << 20).to_le_bytes()].concat()).collect();
        vm.memory().write(iov, &entries).unwrap();
        match vm.emulate_syscall(READV, [fd, iov, 1024, 0, 0, 0]) {
            Err(Error::Timeout(_)) => {}
            Ok(Some(n)) => assert!(n <= MAX_RW_COUNT, "readv moved {n} bytes in one call"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_large_file_mapping_copies_nothing_and_a_large_move_stops_at_the_deadline() {
        let (dir, file) = sparse(96 << 20);
        let mut vm = paused_with(256 << 20, vec![dir]);
        let fd = open(&mut vm, &file);
        // The file is mapped, not read: 96 MiB fit well inside the 2 ms deadline.
        let r = vm.emulate_syscall(MMAP, [0, 96 << 20, 1, 2, fd, 0]);
        assert!(matches!(r, Ok(Some(a)) if a & 0xfff == 0), "a 96 MiB file mapping: {r:?}");
        let mut vm = paused_with(512 << 20, vec![]);
        let a = anon(&mut vm, 160 << 20);
        anon(&mut vm, 4096); // just below it: no room to grow in place
        let r = vm.emulate_syscall(MREMAP, [a, 160 << 20, 170 << 20, 1, 0, 0]);
        assert!(matches!(r, Err(Error::Timeout(_))), "a 160 MiB move in 64 MiB steps past a 2 ms deadline: {r:?}");
    }

    #[test]
    fn mappings_are_capped_like_max_map_count() {
        let mut vm = paused_with(512 << 20, vec![]);
        let base = anon(&mut vm, 300 << 20) & !0xfff;
        let mut made = 1u64;
        let mut refused = None;
        for i in 0..70_000u64 {
            // Every other page of the big mapping becomes a mapping of its own (read-only, so
            // it does not merge with its read-write neighbours).
            let at = base + 2 * i * 4096;
            let r = vm.emulate_syscall(MMAP, [at, 4096, 1, MAP_PRIVATE_ANON | MAP_FIXED, u64::MAX, 0]).unwrap().unwrap();
            if r as i64 == -(libc::ENOMEM as i64) {
                refused = Some(made);
                break;
            }
            assert_eq!(r, at);
            made += 2; // the page, and the rest of the big mapping split off above it
        }
        let made = refused.expect("ENOMEM before 70000 mappings");
        // (made counts this test's mappings; the guest had a few of its own before.)
        assert!((65_000..=65_532).contains(&made), "refused at {made} mappings");
    }

    #[test]
    fn a_huge_file_offset_is_refused_before_anything_is_replaced() {
        let (dir, file) = sparse(4096);
        let mut vm = paused_with(128 << 20, vec![dir]);
        let fd = open(&mut vm, &file);
        let a = anon(&mut vm, 4096);
        vm.memory().write(a, b"kept").unwrap();
        let r = vm.emulate_syscall(MMAP, [a, 4096, 1, 2 | MAP_FIXED, fd, 1 << 63]).unwrap().unwrap();
        assert_eq!(r as i64, -(libc::EOVERFLOW as i64));
        assert_eq!(vm.memory().read(a, 4).unwrap(), b"kept", "the mapping it would have replaced is intact");
    }
}

mod debugging {
    //! The gdb stub driven by a minimal client of the remote serial protocol (no gdb needed, so
    //! this also runs inside the SVM rig).
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    struct Client(TcpStream);

    impl Client {
        fn connect(port: u16) -> Client {
            let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            Client(s)
        }

        fn send(&mut self, body: &str) {
            let sum = body.bytes().fold(0u8, |a, b| a.wrapping_add(b));
            write!(self.0, "${body}#{sum:02x}").unwrap();
        }

        /// The next packet's body (acks skipped, each packet acked).
        fn reply(&mut self) -> String {
            let mut byte = [0u8; 1];
            loop {
                self.0.read_exact(&mut byte).unwrap();
                if byte[0] == b'$' {
                    break;
                }
            }
            let mut body = Vec::new();
            loop {
                self.0.read_exact(&mut byte).unwrap();
                if byte[0] == b'#' {
                    break;
                }
                body.push(byte[0]);
            }
            let mut sum = [0u8; 2];
            self.0.read_exact(&mut sum).unwrap();
            self.0.write_all(b"+").unwrap();
            // Run-length encoding: `c*N` repeats c another N - 29 times.
            let mut out = Vec::new();
            let mut i = 0;
            while i < body.len() {
                if body[i] == b'*' && i + 1 < body.len() {
                    let last = *out.last().unwrap();
                    out.extend(std::iter::repeat_n(last, body[i + 1] as usize - 29));
                    i += 2;
                } else {
                    out.push(body[i]);
                    i += 1;
                }
            }
            String::from_utf8(out).unwrap()
        }

        fn ask(&mut self, body: &str) -> String {
            self.send(body);
            self.reply()
        }

        /// rip and eflags from a `g` reply (16 general registers, then rip and eflags).
        fn rip_rflags(&mut self) -> (u64, u64) {
            let g = self.ask("g");
            let le =
                |hex: &str| (0..hex.len() / 2).rev().fold(0u64, |a, i| (a << 8) | u64::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap());
            (le(&g[256..272]), le(&g[272..280]))
        }
    }

    /// A stop reply for a trap (SIGTRAP) or the interrupt (SIGINT), not an exit or a fault.
    fn assert_stopped(reply: &str, signal: &str) {
        assert!(reply.starts_with(&format!("T{signal}")) || reply.starts_with(&format!("S{signal}")), "stop reply {reply:?}");
    }

    #[test]
    fn single_steps_then_detach_runs_on_unchanged() {
        require_kvm();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let guest = std::thread::spawn(move || {
            let mut vm = Machine::from_file(guest("hello"), MachineOptions::default()).unwrap();
            let outcome = vm.run_debug(&listener, None, &mut kvmbox::NoHost);
            (outcome, vm.take_stdout())
        });
        let mut gdb = Client::connect(port);
        assert_stopped(&gdb.ask("?"), "05");
        let mut rip = gdb.rip_rflags().0;
        for _ in 0..20 {
            assert_stopped(&gdb.ask("s"), "05");
            let (next, rflags) = gdb.rip_rflags();
            assert_ne!(next, rip, "each step moves");
            assert_eq!(rflags & 0x100, 0, "the trap flag is the debugger's, not shown");
            rip = next;
        }
        gdb.send("D");
        assert_eq!(gdb.reply(), "OK");
        let (outcome, stdout) = guest.join().unwrap();
        assert_eq!(outcome.unwrap(), RunOutcome::Exited(0));
        assert_eq!(String::from_utf8(stdout).unwrap(), "hello from kvmbox guest\n");
    }

    #[test]
    fn interrupt_during_syscalls_then_step_stays_in_user_mode() {
        // VMX/SVM: Ctrl-C usually stops the vCPU in the ring-0 syscall stub; the debugger must
        // see (and step from) the user state it returns to, never the stub in ring 3.
        let mut vm = paused();
        let spin = vm.symbol("syscall_spin").unwrap();
        let sys_base = kvmbox::layout::Layout::new(vm.memory_size()).sys_base;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // Syscalls without end; after the debugger detaches, the call's timeout ends it.
        let forever = kvmbox::CallArg::Int(i64::MAX as u64);
        let timeout = Some(Duration::from_millis(300));
        let guest = std::thread::spawn(move || vm.call_debug(&listener, spin, &mut [forever], timeout, &mut kvmbox::NoHost));
        let mut gdb = Client::connect(port);
        assert_stopped(&gdb.ask("?"), "05");
        for round in 0..3 {
            gdb.send("c");
            std::thread::sleep(Duration::from_millis(20));
            gdb.0.write_all(&[0x03]).unwrap();
            assert_stopped(&gdb.reply(), "02");
            let (rip, _) = gdb.rip_rflags();
            assert!(rip < sys_base, "round {round}: stopped at {rip:#x}, inside kvmbox's system area");
            assert_stopped(&gdb.ask("s"), "05");
            let (after, _) = gdb.rip_rflags();
            assert!(after < sys_base, "round {round}: stepped to {after:#x}");
        }
        gdb.send("D");
        assert_eq!(gdb.reply(), "OK");
        let end = guest.join().unwrap();
        assert!(matches!(end, Err(Error::Timeout(_))), "the guest ran on in its syscall loop until the timeout: {end:?}");
    }
}

/// Threads and signals against the native program (the same binary, same output), so every
/// backend the core's tests run on (PVM here, SVM in the rig) exercises thread switches,
/// preemption, futexes, signal frames and faults turned into signals.
mod threads_and_signals {
    use super::*;

    /// Run `name` natively and in kvmbox with `args`; both must exit 0 with the same stdout.
    fn same_as_native(name: &str, args: &[&str]) {
        require_kvm();
        let exe = guest(name);
        let native = Command::new(&exe).args(args).output().expect("run natively");
        assert!(native.status.success(), "{name} {args:?} natively: {native:?}");
        let mut argv = vec![name];
        argv.extend_from_slice(args);
        let o = MachineOptions { memory: 2 << 30, timeout: Some(Duration::from_secs(120)), ..opts(&argv) };
        let mut vm = Machine::from_file(&exe, o).unwrap();
        let outcome = vm.run();
        let stdout = String::from_utf8_lossy(&vm.take_stdout()).into_owned();
        let stderr = String::from_utf8_lossy(&vm.take_stderr()).into_owned();
        assert_eq!(outcome.ok(), Some(RunOutcome::Exited(0)), "{name} {args:?}: stderr {stderr}");
        assert_eq!(stdout, String::from_utf8_lossy(&native.stdout), "{name} {args:?}");
    }

    #[test]
    fn pthreads_mutexes_condvars_barriers_tls_and_preemption() {
        for mode in ["mutex", "condvar", "barrier", "tls", "join", "spin", "sleep-spin", "timed", "many"] {
            same_as_native("threads", &[mode]);
        }
    }

    #[test]
    fn signal_handlers_faults_timers_and_the_alternate_stack() {
        for mode in ["segv", "fpe", "ill", "trap", "raise", "mask", "alarm", "timer", "sigsuspend", "altstack", "restart"] {
            same_as_native("signals", &[mode]);
        }
    }

    #[test]
    fn threads_blocked_for_good_are_a_deadlock_not_a_hang() {
        require_kvm();
        let o = MachineOptions { timeout: Some(Duration::from_secs(60)), ..opts(&["threads", "join-self-deadlock"]) };
        let mut vm = Machine::from_file(guest("threads"), o).unwrap();
        let r = vm.run();
        assert!(matches!(r, Err(Error::Deadlock(_))), "{r:?}");
    }

    #[test]
    fn a_thread_pool_serves_calls_and_survives_snapshot_fork_and_reset() {
        require_kvm();
        let o = MachineOptions { memory: 256 << 20, timeout: Some(Duration::from_secs(60)), ..opts(&["threadpool"]) };
        let mut vm = Machine::from_file(guest("threadpool"), o).unwrap();
        assert_eq!(vm.run().unwrap(), RunOutcome::Paused);
        let squares = |n: u64| n * (n + 1) * (2 * n + 1) / 6;
        assert_eq!(call(&mut vm, "run_jobs", &mut [kvmbox::CallArg::Int(10)]).unwrap(), squares(10));
        let snap = vm.snapshot().unwrap();
        let mut fork = Machine::fork(&snap).unwrap();
        for _ in 0..3 {
            assert_eq!(call(&mut fork, "calls_served", &mut []).unwrap(), 1);
            assert_eq!(call(&mut fork, "run_jobs", &mut [kvmbox::CallArg::Int(20)]).unwrap(), squares(20));
            assert_eq!(call(&mut fork, "distinct_tids", &mut []).unwrap(), 1);
            fork.reset().unwrap();
        }
    }
}

mod page_rights {
    use super::*;

    /// Every check of the `pagerights` guest (guard pages, W^X flips with native call loops,
    /// RWX, NX, munmap, brk shrink, RELRO) prints the same as natively.
    #[test]
    fn mprotect_munmap_and_jit_flips_behave_as_natively() {
        require_kvm();
        let exe = guest("pagerights");
        let native = Command::new(&exe).output().expect("run natively");
        assert!(native.status.success(), "natively: {native:?}");
        let native = String::from_utf8_lossy(&native.stdout).into_owned();
        assert!(native.contains("20 W^X rounds of 1000 calls: 2190000"), "{native}");
        let mut vm = Machine::from_file(&exe, opts(&["pagerights"])).unwrap();
        assert_eq!(vm.run().unwrap(), RunOutcome::Exited(0));
        assert_eq!(String::from_utf8_lossy(&vm.take_stdout()), native);
    }

    #[test]
    fn an_unhandled_access_against_the_rights_is_a_page_fault() {
        require_kvm();
        for (mode, write, fetch) in [("guard", true, false), ("nx", false, true), ("ro", true, false), ("unmapped", false, false)] {
            let mut vm = Machine::from_file(guest("pagerights"), opts(&["pagerights", mode])).unwrap();
            match vm.run() {
                Err(Error::GuestFault(f)) => {
                    assert_eq!(f.vector, 14, "{mode}");
                    let code = f.error_code.unwrap_or(0);
                    assert_eq!((code & 2 != 0, code & 16 != 0), (write, fetch), "{mode}: error code {code:#x}");
                }
                other => panic!("{mode}: {other:?}"),
            }
        }
    }

    #[test]
    fn forks_and_resets_restore_page_rights() {
        require_kvm();
        let mut vm = Machine::from_file(guest("pagerights"), opts(&["pagerights", "serve"])).unwrap();
        assert_eq!(vm.run().unwrap(), RunOutcome::Paused);
        let snap = vm.snapshot().unwrap();
        let mut fork = Machine::fork(&snap).unwrap();
        fn c(vm: &mut Machine, name: &str, args: &[u64]) -> i64 {
            let mut a: Vec<kvmbox::CallArg> = args.iter().map(|&v| kvmbox::CallArg::Int(v)).collect();
            call(vm, name, &mut a).unwrap() as i64
        }
        for round in 0..5u64 {
            let (p0, p1) = (c(&mut fork, "page_addr", &[0]) as u64, c(&mut fork, "page_addr", &[1]) as u64);
            assert_eq!(c(&mut fork, "read_at", &[p0]), 'a' as i64, "round {round}");
            assert_eq!(c(&mut fork, "read_at", &[p1]), -1, "page 1 is PROT_NONE in the snapshot");
            assert_eq!(c(&mut fork, "jit_call", &[]), 1);
            assert_eq!(c(&mut fork, "protect", &[1, 3]), 0);
            assert_eq!(c(&mut fork, "protect", &[0, 0]), 0);
            assert_eq!(c(&mut fork, "jit_set", &[7 + round]), 0);
            assert_eq!(c(&mut fork, "read_at", &[p1]), 'b' as i64);
            assert_eq!(c(&mut fork, "read_at", &[p0]), -1);
            assert_eq!(c(&mut fork, "jit_call", &[]), 7 + round as i64);
            let fresh = c(&mut fork, "map_new", &[]) as u64;
            assert_eq!(c(&mut fork, "write_at", &[fresh, 5]), 0);
            fork.reset().unwrap();
            assert_eq!(c(&mut fork, "read_at", &[fresh]), -1, "the new mapping is gone after the reset");
        }
    }
}

mod files {
    use super::*;

    #[test]
    fn a_program_writes_tmp_as_natively_and_nothing_reaches_the_host() {
        require_kvm();
        let exe = guest("fswrite");
        let native = Command::new(&exe).output().expect("runs natively");
        let mut vm = Machine::from_file(&exe, opts(&["fswrite"])).unwrap();
        assert_eq!(vm.run().unwrap(), RunOutcome::Exited(0));
        assert_eq!(String::from_utf8(vm.take_stdout()).unwrap(), String::from_utf8(native.stdout).unwrap());
    }

    #[test]
    fn in_memory_files_belong_to_snapshots_forks_and_resets() {
        require_kvm();
        let name = format!("/tmp/kvmbox-core-{}", std::process::id());
        let args = ["fswrite", "put", &name, "one", "pause", "cat", &name, "put", &name, "two", "cat", &name];
        let mut vm = Machine::from_file(guest("fswrite"), opts(&args)).unwrap();
        assert_eq!(vm.run().unwrap(), RunOutcome::Paused);
        let snap = vm.snapshot().unwrap();
        let mut fork = Machine::fork(&snap).unwrap();
        let expected = format!("cat {name}: one\nput {name}: 3\ncat {name}: two\n");
        assert_eq!(fork.run().unwrap(), RunOutcome::Exited(0));
        assert_eq!(String::from_utf8(fork.take_stdout()).unwrap(), expected);
        fork.reset().unwrap();
        assert_eq!(fork.run().unwrap(), RunOutcome::Exited(0));
        assert_eq!(String::from_utf8(fork.take_stdout()).unwrap(), expected, "reset brought the file back to the snapshot's");
        assert!(!std::path::Path::new(&name).exists(), "nothing reached the host");
    }
}

mod clocks {
    use super::*;

    #[test]
    fn clocks_read_as_natively_through_the_vdso() {
        require_kvm();
        let exe = guest("clocks");
        let native = Command::new(&exe).output().expect("runs natively");
        let mut vm = Machine::from_file(&exe, opts(&["clocks"])).unwrap();
        assert_eq!(vm.run().unwrap(), RunOutcome::Exited(0));
        let out = String::from_utf8(vm.take_stdout()).unwrap();
        assert_eq!(out, String::from_utf8(native.stdout).unwrap());
        assert!(out.contains("CLOCK_MONOTONIC          steps back: 0, between raw syscall reads: yes"), "{out}");
        // 500 000 clock reads: with an invariant TSC none of them is a VM exit.
        let invariant = std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| c.contains(" nonstop_tsc") && c.contains(" constant_tsc"));
        if invariant {
            assert!(vm.last_stats().syscalls < 1000, "{} syscalls", vm.last_stats().syscalls);
        }
    }
}

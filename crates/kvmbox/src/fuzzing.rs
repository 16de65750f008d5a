//! Entry points for the cargo-fuzz targets in `crates/kvmbox/fuzz` (not a stable API): the
//! parsers without KVM, and the syscall emulation driven directly on a paused machine.

use crate::{Machine, MachineOptions, RunOutcome};

/// Parse and place an ELF file the way `Machine::from_bytes` does, minus the VM.
pub fn parse_elf(bytes: &[u8]) {
    if let Ok(program) = crate::elf::Program::parse(bytes.to_vec()) {
        let _ = program.regions(&crate::layout::Layout::new(64 << 20));
    }
}

/// Read and verify a snapshot file the way `Snapshot::load` does, up to the point where a
/// VM would be needed.
pub fn parse_snapshot_file(path: &std::path::Path) {
    if let Ok((meta, _memfd)) = crate::snapfile::read_file(path, 256 << 20, &mut |_, _| {}) {
        let mut r = crate::snapfile::Reader::new(&meta);
        let _ = r.u64();
    }
}

/// A paused machine to fire syscalls at, and addresses that are valid in it.
pub struct SyscallTarget {
    machine: Machine,
    /// Addresses of the guest's own memory: its stack pointer, the program break, its symbols.
    bases: Vec<u64>,
    /// Free stack below the paused frame where each input first lays out its structs: iovec
    /// arrays (aliasing one range, huge lengths) and timespecs (huge seconds).
    scratch: u64,
}

/// Values where arithmetic overflows: the signed and unsigned extremes and their neighbours.
const EXTREMES: [u64; 12] = [
    i64::MAX as u64,
    i64::MIN as u64,
    u64::MAX,
    u64::MAX - 4095,
    (1 << 63) - 4096,
    1 << 62,
    u32::MAX as u64,
    i32::MAX as u64,
    i32::MIN as i64 as u64,
    1 << 32,
    0x7fff_f000, // Linux's MAX_RW_COUNT
    0x7fff_f001,
];

/// Counts at and around the limits the emulation enforces (iovecs, fds, poll sets, sizes).
const COUNTS: [u64; 10] = [1024, 1025, 1023, 4096, 65536, 1 << 20, 1 << 31, (1 << 31) + 1, 1 << 40, 0];

const IOVECS: u64 = 1024;
const TIMESPECS: u64 = 8;

impl SyscallTarget {
    /// Load `guest` (a program that pauses with `kvmbox_pause()` once initialized), run it to its
    /// pause and snapshot it, so every input starts from the same state.
    pub fn new(guest: &std::path::Path, allow_read: Vec<String>) -> crate::Result<SyscallTarget> {
        // Small captured output: a fuzzed write may ask for gigabytes.
        let capture = || crate::Output::capture(64 << 10);
        let opts = MachineOptions { memory: 16 << 20, allow_read, stdout: capture(), stderr: capture(), ..MachineOptions::default() };
        let mut machine = Machine::from_file(guest, opts)?;
        if !matches!(machine.run()?, RunOutcome::Paused) {
            return Err(crate::Error::InvalidArgument("the fuzzing guest must pause".into()));
        }
        machine.snapshot()?;
        let mut bases = vec![machine.stack_pointer()];
        bases.extend(machine.emulate_syscall(12, [0; 6])?); // the program break
        let mut symbols: Vec<u64> = machine.symbols().values().copied().filter(|&a| a != 0).collect();
        symbols.sort_unstable();
        symbols.dedup();
        bases.extend(symbols.iter().step_by((symbols.len() / 64).max(1)));
        let scratch = (bases[0] - (64 << 10)) & !0xfff;
        Ok(SyscallTarget { machine, bases, scratch })
    }

    /// Where iovec array `i` (of IOVECS entries) and timespec `i` live.
    fn iovecs(&self, i: u64) -> u64 {
        self.scratch + (i % 2) * IOVECS * 16
    }
    fn timespec(&self, i: u64) -> u64 {
        self.scratch + 2 * IOVECS * 16 + (i % TIMESPECS) * 16
    }

    /// Lay out two iovec arrays (every entry over one range, or over a few, with lengths that
    /// are small, huge or near 2^63/2^64) and the timespecs, from the input's first bytes.
    fn prepare(&mut self, input: &mut Bytes) {
        let mem = self.machine.memory();
        for array in 0..2 {
            let base = self.argument(input);
            let len = match input.u8().unwrap_or(0) % 4 {
                0 => 100 << 20,
                1 => EXTREMES[input.u8().unwrap_or(0) as usize % EXTREMES.len()],
                2 => u64::from(input.u16().unwrap_or(0)),
                _ => 8 << 20,
            };
            let spread = input.u8().unwrap_or(0) % 4; // 0: all alias one range
            let mut bytes = Vec::with_capacity((IOVECS * 16) as usize);
            for i in 0..IOVECS {
                bytes.extend_from_slice(&base.wrapping_add(i % (u64::from(spread) + 1) * 4096).to_le_bytes());
                bytes.extend_from_slice(&len.to_le_bytes());
            }
            let _ = mem.write(self.iovecs(array), &bytes);
        }
        for i in 0..TIMESPECS {
            let secs = match input.u8().unwrap_or(0) % 3 {
                0 => EXTREMES[input.u8().unwrap_or(0) as usize % EXTREMES.len()],
                1 => u64::from(input.u8().unwrap_or(0)),
                _ => input.u64().unwrap_or(0),
            };
            let nanos = match input.u8().unwrap_or(0) % 3 {
                0 => 999_999_999,
                1 => 1_000_000_000,
                _ => u64::from(input.u32().unwrap_or(0)),
            };
            let _ = mem.write(self.timespec(i), &[secs.to_le_bytes(), nanos.to_le_bytes()].concat());
        }
    }

    /// Decode `data` into prepared structs (iovec arrays aliasing one range with huge lengths,
    /// timespecs with huge seconds) and up to 32 syscalls (numbers from the Linux range and
    /// around it; arguments that are small integers, pointers into the guest's memory or to the
    /// prepared structs, page-crossing and overflowing ranges, kernel-half addresses, the
    /// signed/unsigned extremes, counts at their limits, raw 64-bit values) and emulate them
    /// one after the other; then reset the machine. Must never panic, hang, allocate or work
    /// in proportion to a guest-chosen size, or touch host memory.
    pub fn run(&mut self, data: &[u8]) {
        let mut input = Bytes(data);
        self.prepare(&mut input);
        for _ in 0..32 {
            let Some(nr) = input.u16() else { break };
            // Mostly the emulated syscalls (from the one table), with arguments that suit each
            // one's kinds half of the time; else any number in Linux's range or beyond.
            let table = crate::syscalls::table::TABLE;
            let (nr, kinds) = match nr >> 14 {
                0 | 1 => {
                    let s = &table[usize::from(nr) % table.len()];
                    (s.nr, s.args)
                }
                2 => (u64::from(nr % 460), &[][..]),
                _ => (u64::from(nr), &[][..]), // mostly unknown numbers
            };
            let mut args = [0u64; 6];
            for (i, a) in args.iter_mut().enumerate() {
                *a = match kinds.get(i) {
                    Some(kind) if input.u8().unwrap_or(0) % 2 == 0 => self.argument_of(*kind, &mut input),
                    _ => self.argument(&mut input),
                };
            }
            match self.machine.emulate_syscall(nr, args) {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break, // exited, or a host-side error: a fresh start next time
            }
        }
        self.machine.reset().expect("reset after a fuzzed syscall sequence");
    }

    /// A value that makes sense for an argument of `kind`: open descriptors and nearby numbers,
    /// paths the guest's memory holds, pointers into its memory, counts at the limits.
    fn argument_of(&self, kind: crate::syscalls::table::Arg, input: &mut Bytes) -> u64 {
        use crate::syscalls::table::Arg;
        let small = input.u8().unwrap_or(0);
        match kind {
            Arg::Fd => (small % 12) as i64 as u64 ^ if small >= 0xf0 { u64::MAX } else { 0 }, // 0..11, or ~n (negative)
            Arg::Path | Arg::Ptr => self.bases[small as usize % self.bases.len()].wrapping_add(u64::from(input.u8().unwrap_or(0))),
            Arg::Len => COUNTS[small as usize % COUNTS.len()],
            Arg::Int => small as i8 as i64 as u64,
        }
    }

    fn argument(&self, input: &mut Bytes) -> u64 {
        let tag = input.u8().unwrap_or(0);
        let small = input.u8().unwrap_or(0);
        match tag % 14 {
            0..=2 => small as i8 as i64 as u64,
            3 | 4 => self.bases[small as usize % self.bases.len()].wrapping_add(u64::from(input.u16().unwrap_or(0))),
            5 => self.bases[small as usize % self.bases.len()].wrapping_sub(u64::from(input.u16().unwrap_or(0))),
            6 => 0xffff_8000_0000_0000 | u64::from(input.u32().unwrap_or(0)), // kernel half
            7 => u64::MAX - u64::from(small),                                 // lengths that overflow when added to a pointer
            8 => (16 << 20) - 4096 + u64::from(input.u16().unwrap_or(0)),     // the end of guest memory
            9 => EXTREMES[small as usize % EXTREMES.len()],
            10 => COUNTS[small as usize % COUNTS.len()],
            11 => self.iovecs(u64::from(small)),
            12 => self.timespec(u64::from(small)),
            _ => input.u64().unwrap_or(0),
        }
    }
}

/// A cursor over the fuzzer's input.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
}

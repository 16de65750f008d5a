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
    if let Ok((meta, _memfd)) = crate::snapfile::read_file(path, 256 << 20) {
        let mut r = crate::snapfile::Reader::new(&meta);
        let _ = r.u64();
    }
}

/// A paused machine to fire syscalls at, and addresses that are valid in it.
pub struct SyscallTarget {
    machine: Machine,
    /// Addresses of the guest's own memory: its stack pointer, the program break, its symbols.
    bases: Vec<u64>,
}

impl SyscallTarget {
    /// Load `guest` (a program that pauses with `kvmbox_pause()` once initialized), run it to its
    /// pause and snapshot it, so every input starts from the same state.
    pub fn new(guest: &std::path::Path, allow_read: Vec<String>) -> crate::Result<SyscallTarget> {
        let opts = MachineOptions { memory: 16 << 20, allow_read, ..MachineOptions::default() };
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
        Ok(SyscallTarget { machine, bases })
    }

    /// Decode `data` into up to 32 syscalls (numbers from the Linux range and around it,
    /// arguments that are small integers, pointers into the guest's memory, page-crossing and
    /// overflowing ranges, kernel-half or raw 64-bit values) and emulate them one after the
    /// other; then reset the machine. Must never panic, hang or touch host memory.
    pub fn run(&mut self, data: &[u8]) {
        let mut input = Bytes(data);
        for _ in 0..32 {
            let Some(nr) = input.u16() else { break };
            let nr = match nr >> 14 {
                0..=2 => u64::from(nr % 460),
                _ => u64::from(nr), // mostly unknown numbers
            };
            let mut args = [0u64; 6];
            for a in &mut args {
                *a = self.argument(&mut input);
            }
            match self.machine.emulate_syscall(nr, args) {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break, // exited, or a host-side error: a fresh start next time
            }
        }
        self.machine.reset().expect("reset after a fuzzed syscall sequence");
    }

    fn argument(&self, input: &mut Bytes) -> u64 {
        let tag = input.u8().unwrap_or(0);
        let small = input.u8().unwrap_or(0);
        match tag % 10 {
            0..=2 => small as i8 as i64 as u64,
            3 | 4 => self.bases[small as usize % self.bases.len()].wrapping_add(u64::from(input.u16().unwrap_or(0))),
            5 => self.bases[small as usize % self.bases.len()].wrapping_sub(u64::from(input.u16().unwrap_or(0))),
            6 => 0xffff_8000_0000_0000 | u64::from(input.u32().unwrap_or(0)), // kernel half
            7 => u64::MAX - u64::from(small), // lengths that overflow when added to a pointer
            8 => (16 << 20) - 4096 + u64::from(input.u16().unwrap_or(0)), // the end of guest memory
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

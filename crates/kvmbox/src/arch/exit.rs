//! What a port exit means: the one decoder for the exit shapes of every KVM backend.
//!
//! All of kvmbox's guest-to-host transitions are `out` instructions in stub pages it owns: the
//! syscall entry (LSTAR; the call-return trampoline enters it with a `syscall` of its own) and
//! one stub per exception vector. The backends report the same `out` differently:
//!
//! | backend | `syscall` runs the LSTAR stub in | RIP at the `out` exit |
//! |---------|----------------------------------|-----------------------|
//! | PVM     | ring 3 (CS.dpl 3)                | after the `out`       |
//! | VMX/SVM | ring 0 (CS.dpl 0)                | on the `out` (Linux ≥ 4.19/5.1: KVM skips it at the next KVM_RUN), after it on older kernels |
//!
//! [`decode`] turns the port, RIP, CS.dpl, rcx and r11 of an exit into a [`GuestExit`]; it is
//! pure, so both shapes and the forged cases are unit-tested without KVM. Every register is
//! guest-chosen: no unchecked arithmetic here.

#![deny(clippy::arithmetic_side_effects)]

use kvm_bindings::kvm_regs;

use super::{sysret_rflags, CALL_RETURN_SYSCALL_END, EXCEPTION_PORT_BASE, EXCEPTION_VECTORS, SYSCALL_PORT};
use crate::host::SYS_CALL_RETURN;
use crate::layout::SystemPages;

/// Length of the `out %al, $imm8` that every stub exits with.
const OUT_LEN: u64 = 2;
/// Length of the `syscall` instruction (rcx points just after it).
const SYSCALL_LEN: u64 = 2;
/// Bytes of the exception-stub page per vector.
pub const EXCEPTION_STUB_SLOT: u64 = 16;
/// One past the last exception stub's port.
const EXCEPTION_PORT_END: u16 = EXCEPTION_PORT_BASE + EXCEPTION_VECTORS as u16;

/// Where this host's KVM runs the guest's syscall entry stub (decided once per process from an
/// observed syscall exit; see [`crate::kvm::syscall_entry`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyscallEntry {
    /// PVM: `syscall` stays in ring 3 (only rip, rcx and r11 change), so the stub's `out` exits
    /// in ring 3 and the host itself returns to rcx.
    Ring3,
    /// VMX/SVM: `syscall` enters ring 0 at LSTAR; the stub's `out` exits in ring 0 and its
    /// `sysretq` returns to ring 3. A ring-3 exit at the stub is a jump into it, not a syscall.
    Ring0,
}

/// The registers an exit is decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitRegs {
    /// RIP at the exit.
    pub rip: u64,
    /// CS.dpl at the exit (the privilege level the `out` ran at).
    pub cpl: u8,
    /// rcx: the user return address after a `syscall`.
    pub rcx: u64,
    /// r11: the user rflags after a `syscall`.
    pub r11: u64,
    /// rax: the syscall number.
    pub rax: u64,
    /// rdi: the first syscall argument (the returned value, for a call return).
    pub rdi: u64,
}

impl ExitRegs {
    /// The decoder's view of the synced registers.
    pub fn of(regs: &kvm_regs, cpl: u8) -> ExitRegs {
        ExitRegs { rip: regs.rip, cpl, rcx: regs.rcx, r11: regs.r11, rax: regs.rax, rdi: regs.rdi }
    }
}

/// What the guest did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestExit {
    /// A `syscall`: number and arguments are in the registers. It returns to user mode at
    /// `user_rip` with `user_rflags`.
    Syscall {
        user_rip: u64,
        user_rflags: u64,
        /// VMX/SVM: the vCPU is in ring 0 at the stub; leave RIP alone and its `sysretq` (with
        /// KVM skipping the `out` first, where RIP is still on it) does the return. Otherwise
        /// the host sets rip and rflags itself.
        sysret_in_guest: bool,
    },
    /// A guest function called by the host returned `value` (through the call-return
    /// trampoline's syscall).
    CallReturn { value: u64 },
    /// The CPU delivered exception `vector` through the IDT; its frame is on the ring-0 stack.
    Exception(u8),
    /// A general-protection fault at `rip`: a port access that did not come from a stub (a
    /// #GP on real hardware), a jump into a stub, or a syscall whose return address is not
    /// canonical (Linux refuses to `sysret` there and the task gets SIGSEGV).
    GeneralProtection { rip: u64 },
}

/// True if `addr` is a canonical 48-bit address (the guest runs with 4-level paging).
pub fn is_canonical(addr: u64) -> bool {
    (((addr as i64) << 16) >> 16) as u64 == addr
}

/// An exit at the `out` that starts the stub at `stub`: RIP on it or just after it.
fn at_stub_out(rip: u64, stub: u64) -> bool {
    rip == stub || rip == stub.wrapping_add(OUT_LEN)
}

/// Decode an `out` to `port` with the registers `r` at the exit.
pub fn decode(port: u16, r: ExitRegs, sys: &SystemPages, entry: SyscallEntry) -> GuestExit {
    let forged = GuestExit::GeneralProtection { rip: r.rip };
    match port {
        SYSCALL_PORT => {
            if !at_stub_out(r.rip, sys.syscall_entry) {
                return forged;
            }
            let genuine_ring0 = r.cpl == 0; // ring 0 is entered only through `syscall` (LSTAR)
            let genuine_ring3 = r.cpl == 3 && entry == SyscallEntry::Ring3;
            if !genuine_ring0 && !genuine_ring3 {
                return forged;
            }
            if !is_canonical(r.rcx) {
                return GuestExit::GeneralProtection { rip: r.rcx };
            }
            if r.rax == SYS_CALL_RETURN && Some(r.rcx) == sys.call_return.checked_add(CALL_RETURN_SYSCALL_END) {
                return GuestExit::CallReturn { value: r.rdi };
            }
            GuestExit::Syscall { user_rip: r.rcx, user_rflags: sysret_rflags(r.r11), sysret_in_guest: genuine_ring0 }
        }
        p if (EXCEPTION_PORT_BASE..EXCEPTION_PORT_END).contains(&p) => {
            let vector = p.saturating_sub(EXCEPTION_PORT_BASE) as u8;
            // The stub page is supervisor-only, so an exit from it is the CPU's own delivery.
            match at_stub_out(r.rip, sys.exception_stubs.saturating_add(u64::from(vector).saturating_mul(EXCEPTION_STUB_SLOT))) {
                true => GuestExit::Exception(vector),
                false => forged,
            }
        }
        _ => forged,
    }
}

/// The user-mode state of a vCPU stopped (by a signal, a timeout or the debugger) inside the
/// syscall entry stub. Before its `out` (any backend: `syscall` has moved RIP to LSTAR, in
/// ring 0 on VMX/SVM, in ring 3 on PVM) the guest is shown about to make the syscall, at the
/// `syscall` instruction, which runs again; after it (VMX/SVM only, ring 0) the syscall is done
/// and `sysretq` would return to rcx. `None` anywhere else, or where that return address would
/// not be canonical (a jump into the stub, not a syscall).
pub fn user_state_in_syscall_stub(regs: &kvm_regs, cpl: u8, sys: &SystemPages) -> Option<kvm_regs> {
    let user_rip = if regs.rip == sys.syscall_entry {
        regs.rcx.wrapping_sub(SYSCALL_LEN)
    } else if Some(regs.rip) == sys.syscall_entry.checked_add(OUT_LEN) && cpl == 0 {
        regs.rcx
    } else {
        return None;
    };
    is_canonical(user_rip).then(|| kvm_regs { rip: user_rip, rflags: sysret_rflags(regs.r11), ..*regs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Layout;

    fn sys() -> SystemPages {
        Layout::new(128 << 20).sys
    }

    const USER_RIP: u64 = 0x40_1234;
    const USER_FLAGS: u64 = 0x246;

    fn regs(rip: u64, cpl: u8) -> ExitRegs {
        ExitRegs { rip, cpl, rcx: USER_RIP, r11: USER_FLAGS, rax: 39, rdi: 0 }
    }

    fn syscall(sysret_in_guest: bool) -> GuestExit {
        GuestExit::Syscall { user_rip: USER_RIP, user_rflags: USER_FLAGS, sysret_in_guest }
    }

    #[test]
    fn pvm_syscall_exits_in_ring3_after_the_out() {
        let s = sys();
        let e = decode(SYSCALL_PORT, regs(s.syscall_entry + 2, 3), &s, SyscallEntry::Ring3);
        assert_eq!(e, syscall(false));
    }

    #[test]
    fn vmx_svm_syscall_exits_in_ring0_on_or_after_the_out() {
        let s = sys();
        for rip in [s.syscall_entry, s.syscall_entry + 2] {
            assert_eq!(decode(SYSCALL_PORT, regs(rip, 0), &s, SyscallEntry::Ring0), syscall(true), "rip {rip:#x}");
        }
    }

    #[test]
    fn ring3_jump_into_the_syscall_stub_is_forged_on_vmx_svm() {
        let s = sys();
        for rip in [s.syscall_entry, s.syscall_entry + 2] {
            assert_eq!(decode(SYSCALL_PORT, regs(rip, 3), &s, SyscallEntry::Ring0), GuestExit::GeneralProtection { rip });
        }
    }

    #[test]
    fn syscall_port_from_anywhere_else_is_forged() {
        let s = sys();
        for (rip, cpl) in [(0x40_1000, 3), (s.syscall_entry + 4, 3), (s.syscall_entry - 2, 0), (s.call_return, 3), (s.call_return + 10, 0)]
        {
            for entry in [SyscallEntry::Ring3, SyscallEntry::Ring0] {
                assert_eq!(decode(SYSCALL_PORT, regs(rip, cpl), &s, entry), GuestExit::GeneralProtection { rip });
            }
        }
    }

    #[test]
    fn non_canonical_return_address_is_a_gp_at_it() {
        let s = sys();
        for bad in [0x8000_0000_0000_0000, 0x0000_8000_0000_0000, 0xffff_7fff_ffff_ffff, 0xfff0_0000_0000_0000] {
            let r = ExitRegs { rcx: bad, ..regs(s.syscall_entry + 2, 3) };
            assert_eq!(decode(SYSCALL_PORT, r, &s, SyscallEntry::Ring3), GuestExit::GeneralProtection { rip: bad }, "{bad:#x}");
            let r = ExitRegs { rcx: bad, ..regs(s.syscall_entry, 0) };
            assert_eq!(decode(SYSCALL_PORT, r, &s, SyscallEntry::Ring0), GuestExit::GeneralProtection { rip: bad }, "{bad:#x}");
        }
        assert!(is_canonical(0x7fff_ffff_ffff) && is_canonical(0xffff_8000_0000_0000) && is_canonical(0));
    }

    #[test]
    fn forged_rflags_lose_iopl_and_keep_interrupts_on() {
        let s = sys();
        let r = ExitRegs { r11: 0x3000 | 0x100 | 0x4_0000 | 0x2_0000, ..regs(s.syscall_entry + 2, 3) };
        let GuestExit::Syscall { user_rflags, .. } = decode(SYSCALL_PORT, r, &s, SyscallEntry::Ring3) else { panic!() };
        assert_eq!(user_rflags & 0x3000, 0, "IOPL");
        assert_eq!(user_rflags & 0x2_0000, 0, "VM");
        assert_ne!(user_rflags & 0x200, 0, "IF");
        assert_ne!(user_rflags & 0x4_0000, 0, "AC stays");
    }

    #[test]
    fn call_return_is_the_trampolines_syscall_only() {
        let s = sys();
        let from_trampoline = |rip, cpl, rcx| ExitRegs { rip, cpl, rcx, r11: USER_FLAGS, rax: SYS_CALL_RETURN, rdi: 42 };
        let end = s.call_return + CALL_RETURN_SYSCALL_END;
        assert_eq!(
            decode(SYSCALL_PORT, from_trampoline(s.syscall_entry + 2, 3, end), &s, SyscallEntry::Ring3),
            GuestExit::CallReturn { value: 42 }
        );
        for rip in [s.syscall_entry, s.syscall_entry + 2] {
            assert_eq!(decode(SYSCALL_PORT, from_trampoline(rip, 0, end), &s, SyscallEntry::Ring0), GuestExit::CallReturn { value: 42 });
        }
        // The same number from anywhere else is an ordinary (unknown) syscall.
        let elsewhere = decode(SYSCALL_PORT, from_trampoline(s.syscall_entry + 2, 3, USER_RIP), &s, SyscallEntry::Ring3);
        assert!(matches!(elsewhere, GuestExit::Syscall { user_rip: USER_RIP, .. }), "{elsewhere:?}");
        // And on VMX/SVM a ring-3 jump into the entry stub stays forged, whatever rcx says.
        let jump = decode(SYSCALL_PORT, from_trampoline(s.syscall_entry, 3, end), &s, SyscallEntry::Ring0);
        assert_eq!(jump, GuestExit::GeneralProtection { rip: s.syscall_entry });
    }

    #[test]
    fn exceptions_come_from_their_own_stub_only() {
        let s = sys();
        for v in [0u8, 3, 13, 14, 31] {
            let stub = s.exception_stubs + v as u64 * EXCEPTION_STUB_SLOT;
            for rip in [stub, stub + 2] {
                assert_eq!(decode(EXCEPTION_PORT_BASE + v as u16, regs(rip, 0), &s, SyscallEntry::Ring0), GuestExit::Exception(v));
            }
            let other = s.exception_stubs + ((v as u64 + 1) % 32) * EXCEPTION_STUB_SLOT;
            assert_eq!(
                decode(EXCEPTION_PORT_BASE + v as u16, regs(other, 0), &s, SyscallEntry::Ring3),
                GuestExit::GeneralProtection { rip: other }
            );
            assert_eq!(
                decode(EXCEPTION_PORT_BASE + v as u16, regs(0x40_1000, 3), &s, SyscallEntry::Ring3),
                GuestExit::GeneralProtection { rip: 0x40_1000 }
            );
        }
    }

    #[test]
    fn other_ports_are_forged() {
        let s = sys();
        for port in [0u16, 0x80, 0xBF, 0xE1, 0xE2, 0x3F8, 0xFFFF] {
            assert_eq!(
                decode(port, regs(s.syscall_entry, 0), &s, SyscallEntry::Ring0),
                GuestExit::GeneralProtection { rip: s.syscall_entry }
            );
        }
    }

    #[test]
    fn ring0_stops_in_the_syscall_stub_show_the_user_state() {
        let s = sys();
        let r = kvm_regs { rip: s.syscall_entry, rcx: USER_RIP, r11: USER_FLAGS, rax: 39, ..Default::default() };
        let before = user_state_in_syscall_stub(&r, 0, &s).unwrap();
        assert_eq!((before.rip, before.rflags, before.rax), (USER_RIP - 2, USER_FLAGS, 39), "the syscall runs again");
        let after = user_state_in_syscall_stub(&kvm_regs { rip: s.syscall_entry + 2, rax: 7, ..r }, 0, &s).unwrap();
        assert_eq!((after.rip, after.rflags, after.rax), (USER_RIP, USER_FLAGS, 7), "the syscall returned");
        let pvm_before = user_state_in_syscall_stub(&r, 3, &s).unwrap();
        assert_eq!((pvm_before.rip, pvm_before.rflags), (USER_RIP - 2, USER_FLAGS), "PVM: syscall taken, out not yet");
        assert_eq!(user_state_in_syscall_stub(&kvm_regs { rip: s.syscall_entry + 2, ..r }, 3, &s), None, "ring 3 after the out is a jump");
        assert_eq!(user_state_in_syscall_stub(&kvm_regs { rip: 0x40_1000, ..r }, 0, &s), None);
        assert_eq!(user_state_in_syscall_stub(&kvm_regs { rcx: 0x8000_0000_0000_0001, ..r }, 3, &s), None, "non-canonical");
    }
}

//! x86-64 machine state for a guest with no kernel: descriptor tables, the guest stubs, and
//! the vCPU's initial control registers, MSRs and CPUID.
//!
//! Everything the program runs is ring 3. The only ring-0 code is one `out` (plus `iretq`)
//! per exception vector, because on PVM ring-0 instructions are interpreted (~2 µs each).
//!
//! The syscall entry page (LSTAR) holds `out %al, $SYSCALL_PORT; sysretq` and is user
//! readable/executable, so one stub serves both backends (and it is the only way out of ring 3:
//! the call-return trampoline makes a `syscall` too):
//! * VMX/SVM: `syscall` enters ring 0 at LSTAR; `out` exits with CS.dpl = 0; the host sets rax
//!   and lets `sysretq` return to ring 3 at rcx with rflags = r11.
//! * PVM: `syscall` stays in ring 3 (only rip/rcx/r11 change); `out` exits with CS.dpl = 3 and
//!   the host itself resumes at rcx with rflags = r11.

pub mod exit;

use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_segment, kvm_sregs, kvm_xcrs, CpuId, Msrs};
use kvm_ioctls::VcpuFd;

use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::memory::GuestMemory;

/// Port the syscall entry stub writes to.
pub const SYSCALL_PORT: u16 = 0xE0;
/// Port the page-table commit stub writes to when it is done (ring 0 only: the TSS I/O bitmap
/// keeps ring 3 away from it).
pub const PT_COMMIT_PORT: u16 = 0xE1;
/// Offsets in the exception-stub page (supervisor RX) of the page-table commit stub's two
/// entries: `rep movsq` of rcx entries from rsi to rdi, then `out` — and the same with a CR3
/// reload before the `out`, which flushes the TLB (VMX/SVM walk the tables in hardware and
/// may hold translations the edit took away; PVM's shadow MMU already dropped them when the
/// stub's writes hit the write-protected table).
pub const PT_COPY_OFFSET: u64 = 0x800;
pub const PT_COPY_FLUSH_OFFSET: u64 = 0x820;
/// Length of the commit stub entries up to their `out` (where the exit reports RIP, or just after).
pub const PT_COPY_OUT_AT: u64 = 3;
pub const PT_COPY_FLUSH_OUT_AT: u64 = 9;
/// Exception stub for vector `v` writes to `EXCEPTION_PORT_BASE + v` (ring 0: no bitmap check).
pub const EXCEPTION_PORT_BASE: u16 = 0xC0;
pub const EXCEPTION_VECTORS: u8 = 32;

/// The code of the syscall entry page (see [`exit`] for how each backend reports its `out`).
pub const SYSCALL_STUB: &[u8] = &[0xE6, SYSCALL_PORT as u8, 0x48, 0x0F, 0x07]; // out %al,$p; sysretq

/// The call-return trampoline a function called by the host returns to: it hands rax back
/// through a `syscall` (`mov %rax,%rdi; mov $SYS_CALL_RETURN,%eax; syscall; ud2`), so calls
/// leave the guest the way syscalls do. (A ring-3 `out` would need the TSS I/O bitmap, which
/// VMX/SVM otherwise never use, and which QEMU's emulated SVM refuses with a busy TSS.)
pub fn call_return_stub() -> [u8; 12] {
    let nr = (crate::host::SYS_CALL_RETURN as u32).to_le_bytes();
    [0x48, 0x89, 0xC7, 0xB8, nr[0], nr[1], nr[2], nr[3], 0x0F, 0x05, 0x0F, 0x0B]
}
/// Where the trampoline's `syscall` returns to (rcx at its exit).
pub const CALL_RETURN_SYSCALL_END: u64 = 10;

/// The rflags a return to user mode gets from r11: what ring 3 may set itself (CF PF AF ZF SF
/// TF DF OF NT AC VIF VIP ID), never IOPL (which would open every port and cli/sti) or VM/RF,
/// with IF and the reserved bit 1 set — as Linux returns to user mode.
pub fn sysret_rflags(r11: u64) -> u64 {
    (r11 & 0x3C_4DD5) | 0x202
}

pub const SEL_KERNEL_CODE: u16 = 0x10;
pub const SEL_USER_DATA: u16 = 0x28 | 3;
pub const SEL_USER_CODE: u16 = 0x30 | 3;
pub const SEL_TSS: u16 = 0x38;

/// Vectors for which the CPU pushes an error code.
pub fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10 | 11 | 12 | 13 | 14 | 17 | 21 | 29 | 30)
}

const TSS_SIZE: u64 = 104;
/// Offset of IST1 in the 64-bit TSS, and the IST index every IDT gate uses.
const TSS_IST1: usize = 0x24;
const IST_INDEX: u64 = 1;
const IO_BITMAP_BYTES: u64 = 8192;
const TSS_LIMIT: u64 = TSS_SIZE + IO_BITMAP_BYTES; // includes the trailing 0xff byte

const MSR_IA32_TSC: u32 = 0x10;
const MSR_STAR: u32 = 0xC000_0081;
const MSR_LSTAR: u32 = 0xC000_0082;
const MSR_CSTAR: u32 = 0xC000_0083;
const MSR_SFMASK: u32 = 0xC000_0084;
pub const MSR_FS_BASE: u32 = 0xC000_0100;
pub const MSR_GS_BASE: u32 = 0xC000_0101;
const MSR_KERNEL_GS_BASE: u32 = 0xC000_0102;

const CR0_PE: u64 = 1;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_AM: u64 = 1 << 18;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const CR4_FSGSBASE: u64 = 1 << 16;
const CR4_OSXSAVE: u64 = 1 << 18;
const EFER_SCE: u64 = 1;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;

/// Write GDT, IDT, TSS (with an I/O bitmap that lets ring 3 reach only the syscall and
/// call-return ports), the exception stubs and the user-visible stubs into guest memory.
pub fn write_system_pages(mem: &GuestMemory, layout: &Layout) -> Result<()> {
    let s = &layout.sys;
    // GDT. Accessed bits are preset so the CPU never writes descriptors.
    let tss = s.tss;
    let tss_low = (TSS_LIMIT & 0xffff)
        | ((tss & 0xff_ffff) << 16)
        | (0x8B << 40) // present, 64-bit TSS (busy)
        | (((TSS_LIMIT >> 16) & 0xf) << 48)
        | (((tss >> 24) & 0xff) << 56);
    let gdt: [u64; 9] = [
        0,
        0,
        0x0020_9B00_0000_0000, // 0x10 kernel code, 64-bit
        0x00CF_9300_0000_FFFF, // 0x18 kernel data
        0,                     // 0x20 user code, 32-bit: STAR's sysret base, but no compat mode
        0x00CF_F300_0000_FFFF, // 0x28 user data
        0x0020_FB00_0000_0000, // 0x30 user code, 64-bit
        tss_low,               // 0x38 TSS (two slots)
        tss >> 32,
    ];
    mem.write(s.gdt, &gdt.iter().flat_map(|d| d.to_le_bytes()).collect::<Vec<_>>())?;

    // Exception stubs: `out %al, $(base+v)`, [`add $8,%rsp` to drop the error code], `iretq`.
    let mut stubs = vec![0xCCu8; 4096];
    for v in 0..EXCEPTION_VECTORS {
        let at = v as usize * exit::EXCEPTION_STUB_SLOT as usize;
        let mut code = vec![0xE6, (EXCEPTION_PORT_BASE + v as u16) as u8];
        if has_error_code(v) {
            code.extend_from_slice(&[0x48, 0x83, 0xC4, 0x08]);
        }
        code.extend_from_slice(&[0x48, 0xCF]);
        stubs[at..at + code.len()].copy_from_slice(&code);
    }
    let port = PT_COMMIT_PORT as u8;
    let copy: &[u8] = &[0xF3, 0x48, 0xA5, 0xE6, port, 0x0F, 0x0B]; // rep movsq; out; ud2
    let copy_flush: &[u8] = &[
        0xF3, 0x48, 0xA5, // rep movsq
        0x0F, 0x20, 0xD8, // mov %cr3,%rax
        0x0F, 0x22, 0xD8, // mov %rax,%cr3
        0xE6, port, 0x0F, 0x0B, // out; ud2
    ];
    stubs[PT_COPY_OFFSET as usize..][..copy.len()].copy_from_slice(copy);
    stubs[PT_COPY_FLUSH_OFFSET as usize..][..copy_flush.len()].copy_from_slice(copy_flush);
    mem.write(s.exception_stubs, &stubs)?;

    // IDT: interrupt gates to the stubs; #BP and #OF are reachable from ring 3 (int3, into)
    // like on Linux, everything else is DPL 0 and vectors ≥ 32 are not present. Every gate
    // switches to IST1: on VMX/SVM the syscall stub runs in ring 0 on the guest's own rsp (the
    // CPU switches stacks only on a privilege change), so an exception there must not push its
    // frame where the guest chose.
    let mut idt = vec![0u8; 4096];
    for v in 0..EXCEPTION_VECTORS {
        let handler = s.exception_stubs + v as u64 * exit::EXCEPTION_STUB_SLOT;
        let dpl: u64 = if v == 3 || v == 4 { 3 } else { 0 };
        let low = (handler & 0xffff)
            | ((SEL_KERNEL_CODE as u64) << 16)
            | (IST_INDEX << 32)
            | ((0x8E | (dpl << 5)) << 40)
            | (((handler >> 16) & 0xffff) << 48);
        let high = handler >> 32;
        idt[v as usize * 16..v as usize * 16 + 8].copy_from_slice(&low.to_le_bytes());
        idt[v as usize * 16 + 8..v as usize * 16 + 16].copy_from_slice(&high.to_le_bytes());
    }
    mem.write(s.idt, &idt)?;

    // TSS: rsp0 and IST1 = top of the ring-0 stack; I/O bitmap right after the 104-byte TSS.
    let mut tss_bytes = vec![0u8; (TSS_SIZE + IO_BITMAP_BYTES + 1) as usize];
    let ring0_top = (s.ring0_stack + 4096).to_le_bytes();
    tss_bytes[4..12].copy_from_slice(&ring0_top);
    tss_bytes[TSS_IST1..TSS_IST1 + 8].copy_from_slice(&ring0_top);
    tss_bytes[102..104].copy_from_slice(&(TSS_SIZE as u16).to_le_bytes());
    for b in &mut tss_bytes[TSS_SIZE as usize..] {
        *b = 0xff;
    }
    // Only PVM needs the bitmap (its `syscall` stays in ring 3, so the entry stub's `out` runs
    // there); VMX/SVM run that `out` in ring 0, where the bitmap does not apply.
    let byte = TSS_SIZE as usize + SYSCALL_PORT as usize / 8;
    tss_bytes[byte] &= !(1 << (SYSCALL_PORT % 8));
    mem.write(s.tss, &tss_bytes)?;

    let mut entry = vec![0xCCu8; 4096];
    entry[..SYSCALL_STUB.len()].copy_from_slice(SYSCALL_STUB);
    mem.write(s.syscall_entry, &entry)?;
    let mut ret = vec![0xCCu8; 4096];
    ret[..12].copy_from_slice(&call_return_stub());
    mem.write(s.call_return, &ret)?;
    mem.write(s.vdso, crate::vdso::IMAGE)?;
    Ok(())
}

fn segment(selector: u16, type_: u8, dpl: u8, s: u8, l: u8, db: u8) -> kvm_segment {
    kvm_segment { base: 0, limit: 0xffff_ffff, selector, type_, present: 1, dpl, db, s, l, g: 1, avl: 0, unusable: 0, padding: 0 }
}

/// The kernel code and stack segments (what the page-table commit stub runs with).
pub fn kernel_segments() -> (kvm_segment, kvm_segment) {
    (segment(SEL_KERNEL_CODE, 0xB, 0, 1, 1, 0), segment(SEL_KERNEL_CODE + 8, 0x3, 0, 1, 0, 1))
}

/// The user code and stack segments (what `sysretq` loads).
pub fn user_segments() -> (kvm_segment, kvm_segment) {
    (segment(SEL_USER_CODE, 0xB, 3, 1, 1, 0), segment(SEL_USER_DATA, 0x3, 3, 1, 0, 1))
}

/// Control registers and segments for ring-3 long mode with our tables. CR4.FSGSBASE (so the
/// guest may use `wrfsbase` as on Linux) only where the CPU has it: KVM refuses it otherwise.
pub fn initial_sregs(mut sregs: kvm_sregs, layout: &Layout, cr3: u64, cpuid: &CpuId) -> kvm_sregs {
    let (code, data) = user_segments();
    sregs.cs = code;
    sregs.ss = data;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.tr = kvm_segment {
        base: layout.sys.tss,
        limit: TSS_LIMIT as u32,
        selector: SEL_TSS,
        type_: 0xB,
        present: 1,
        dpl: 0,
        db: 0,
        s: 0,
        l: 0,
        g: 0,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    sregs.ldt = kvm_segment { selector: 0, type_: 2, present: 0, unusable: 1, ..Default::default() };
    sregs.gdt.base = layout.sys.gdt;
    sregs.gdt.limit = 9 * 8 - 1;
    sregs.idt.base = layout.sys.idt;
    sregs.idt.limit = 256 * 16 - 1;
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_AM | CR0_PG;
    sregs.cr3 = cr3;
    sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT | CR4_OSXSAVE;
    if has_fsgsbase(cpuid) {
        sregs.cr4 |= CR4_FSGSBASE;
    }
    sregs.efer = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE;
    sregs
}

pub fn initial_msrs(layout: &Layout) -> Result<Msrs> {
    // STAR: syscall → CS 0x10/SS 0x18; sysret → CS 0x30|3 / SS 0x28|3 (base 0x20).
    let star = ((SEL_KERNEL_CODE as u64) << 32) | (0x20u64 << 48);
    let entries = [
        (MSR_STAR, star),
        (MSR_LSTAR, layout.sys.syscall_entry),
        (MSR_CSTAR, layout.sys.syscall_entry),
        // Like Linux: clear TF, DF, IF, IOPL, AC, NT on syscall entry.
        (MSR_SFMASK, 0x47700),
        (MSR_FS_BASE, 0),
        (MSR_GS_BASE, 0),
        (MSR_KERNEL_GS_BASE, 0),
        // The guest's TSC is the host's (KVM would start it near 0 on VMX/SVM): the vDSO
        // extrapolates the host's clocks from host TSC readings.
        (MSR_IA32_TSC, crate::vdso::rdtsc()),
    ];
    let list: Vec<kvm_msr_entry> = entries.iter().map(|&(index, data)| kvm_msr_entry { index, data, ..Default::default() }).collect();
    Msrs::from_entries(&list).map_err(|e| Error::kvm("building MSR list", format!("{e:?}")))
}

/// KVM_SET_MSRS, which reports how many entries it set rather than failing: anything short of
/// all of them is an error here.
pub fn set_msrs(vcpu: &VcpuFd, msrs: &Msrs) -> Result<()> {
    let n = vcpu.set_msrs(msrs).map_err(|e| Error::kvm("KVM_SET_MSRS", e))?;
    if n != msrs.as_slice().len() {
        let refused = msrs.as_slice().get(n).map(|e| e.index).unwrap_or(0);
        return Err(Error::kvm("KVM_SET_MSRS", format!("set {n} of {} MSRs (refused {refused:#x})", msrs.as_slice().len())));
    }
    Ok(())
}

pub fn initial_fpu() -> kvm_fpu {
    kvm_fpu { fcw: 0x37f, mxcsr: 0x1f80, ..Default::default() }
}

/// XCR0 as advertised by CPUID leaf 0xD (so glibc picks the same AVX code paths as natively).
pub fn xcr0_from_cpuid(cpuid: &CpuId) -> u64 {
    cpuid.as_slice().iter().find(|e| e.function == 0xD && e.index == 0).map(|e| (e.eax as u64) | ((e.edx as u64) << 32)).unwrap_or(0) | 0b11
}

/// The size of the XSAVE area for the features XCR0 enables (all that CPUID offers): what a
/// signal frame holds.
pub fn xsave_size_from_cpuid(cpuid: &CpuId) -> usize {
    cpuid.as_slice().iter().find(|e| e.function == 0xD && e.index == 0).map_or(512 + 64, |e| e.ecx as usize)
}

pub fn set_xcr0(vcpu: &VcpuFd, xcr0: u64) -> Result<()> {
    let mut xcrs = kvm_xcrs { nr_xcrs: 1, ..Default::default() };
    xcrs.xcrs[0].xcr = 0;
    xcrs.xcrs[0].value = xcr0;
    vcpu.set_xcrs(&xcrs).map_err(|e| Error::kvm("KVM_SET_XCRS", e))
}

/// CPUID leaf 7 EBX bit 0: rd/wr{fs,gs}base (Linux then reports HWCAP2_FSGSBASE).
pub fn has_fsgsbase(cpuid: &CpuId) -> bool {
    cpuid.as_slice().iter().any(|e| e.function == 7 && e.index == 0 && e.ebx & 1 != 0)
}

/// CPUID leaf 1 EDX, which Linux reports as AT_HWCAP.
pub fn hwcap_from_cpuid(cpuid: &CpuId) -> u64 {
    cpuid.as_slice().iter().find(|e| e.function == 1).map(|e| e.edx as u64).unwrap_or(0)
}

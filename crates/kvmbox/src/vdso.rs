//! The guest's vDSO: clock reads without a VM exit.
//!
//! `vdso/vdso.so` (built from `vdso/vdso.c` and `vdso/vdso.lds` by `scripts/build-vdso.sh`, and
//! checked in so that building kvmbox needs no C compiler) is a one-page ELF shared object with
//! `__vdso_clock_gettime`, `__vdso_gettimeofday`, `__vdso_time`, `__vdso_getcpu` and
//! `__vdso_clock_getres` (version `LINUX_2.6`, as glibc, musl and Go look them up). It sits in
//! the system area, user read+execute, and the guest learns where from `AT_SYSINFO_EHDR`. The
//! page below it (user read-only) holds [`Params`]: a TSC reading and the clocks' values at that
//! moment, and the TSC's rate, which the host rewrites at every run or call and at least once a
//! second while the guest runs (`machine::clock`). The vDSO reads the TSC (`rdtsc` is not a VM
//! exit) and extrapolates; clocks it does not cover (CPU-time clocks, `CLOCK_MONOTONIC_RAW`, …)
//! and any read while the host has it off go to the emulated syscall.

/// The vDSO image (one page).
pub const IMAGE: &[u8] = include_bytes!("../vdso/vdso.so");

const _: () = assert!(IMAGE.len() <= crate::layout::PAGE_SIZE as usize, "the vDSO must fit its page");

/// The parameters page's contents, as `struct vvar` in vdso.c lays them out.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Params {
    /// Changes with every rewrite: a guest thread preempted in the middle of a read reads again.
    pub seq: u32,
    /// 0: every call goes to the syscall.
    pub enabled: u32,
    pub tsc_base: u64,
    /// Nanoseconds = ((tsc - tsc_base) * mult) >> shift.
    pub mult: u64,
    pub shift: u32,
    pub pad: u32,
    pub mono_ns: u64,
    pub real_ns: u64,
    pub boot_ns: u64,
}

impl Params {
    /// The page's bytes.
    pub fn to_bytes(self) -> [u8; 64] {
        let mut out = [0u8; 64];
        let words: [u64; 8] = [
            u64::from(self.seq) | u64::from(self.enabled) << 32,
            self.tsc_base,
            self.mult,
            u64::from(self.shift) | u64::from(self.pad) << 32,
            self.mono_ns,
            self.real_ns,
            self.boot_ns,
            0,
        ];
        for (chunk, w) in out.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        out
    }

    /// What the vDSO computes for a clock's nanoseconds at TSC `tsc` from `base` (mono, real or
    /// boot).
    pub fn extrapolate(&self, base: u64, tsc: u64) -> u64 {
        let ticks = tsc.saturating_sub(self.tsc_base);
        let delta = (u128::from(ticks) * u128::from(self.mult)) >> self.shift;
        base.saturating_add(u64::try_from(delta).unwrap_or(u64::MAX))
    }
}

/// The fixed-point rate for a TSC of `khz` kHz: (mult, shift) with ns = ticks * mult >> shift.
pub fn rate(khz: u32) -> Option<(u64, u32)> {
    if khz == 0 {
        return None;
    }
    const SHIFT: u32 = 32;
    Some(((1_000_000u64 << SHIFT) / u64::from(khz), SHIFT))
}

/// The host's TSC now (serialised against earlier loads, as the vDSO reads it).
pub fn rdtsc() -> u64 {
    // SAFETY: lfence and rdtsc have no memory effects; rdtsc is always available on x86-64.
    unsafe {
        core::arch::x86_64::_mm_lfence();
        core::arch::x86_64::_rdtsc()
    }
}

/// True if the host's TSC ticks at a constant rate in every power state (CPUID 0x8000_0007
/// EDX bit 8, "invariant TSC"): only then can the vDSO extrapolate from it.
pub fn invariant_tsc() -> bool {
    // cpuid is always available on x86-64; leaf 0x8000_0000 says which leaves exist.
    let max = core::arch::x86_64::__cpuid(0x8000_0000).eax;
    max >= 0x8000_0007 && core::arch::x86_64::__cpuid(0x8000_0007).edx & (1 << 8) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_is_what_loaders_look_for() {
        let elf = goblin::elf::Elf::parse(IMAGE).expect("an ELF");
        assert_eq!(elf.header.e_type, goblin::elf::header::ET_DYN);
        let loads: Vec<_> = elf.program_headers.iter().filter(|p| p.p_type == goblin::elf::program_header::PT_LOAD).collect();
        assert_eq!(loads.len(), 1, "one segment");
        assert_eq!(loads[0].p_vaddr, 0);
        assert_eq!(loads[0].p_flags & 2, 0, "not writable");
        assert!(elf.dynamic.is_some(), "PT_DYNAMIC");
        assert!(elf.dynrelas.is_empty() && elf.dynrels.is_empty() && elf.pltrelocs.is_empty(), "no relocations");
        let names: Vec<&str> = elf.dynsyms.iter().filter_map(|s| elf.dynstrtab.get_at(s.st_name)).collect();
        for want in ["__vdso_clock_gettime", "__vdso_gettimeofday", "__vdso_time", "__vdso_getcpu", "clock_gettime"] {
            assert!(names.contains(&want), "{want} in {names:?}");
        }
        // musl finds symbols through DT_HASH, glibc and Go through either.
        let dynamic = elf.dynamic.as_ref().unwrap();
        assert!(dynamic.dyns.iter().any(|d| d.d_tag == goblin::elf::dynamic::DT_HASH));
        assert!(dynamic.dyns.iter().any(|d| d.d_tag == goblin::elf::dynamic::DT_VERDEF));
    }

    #[test]
    fn extrapolation_matches_the_rate() {
        let (mult, shift) = rate(2_500_000).unwrap(); // 2.5 GHz
        let p = Params { tsc_base: 1000, mult, shift, mono_ns: 5, ..Params::default() };
        assert_eq!(p.extrapolate(p.mono_ns, 1000 + 2_500_000_000), 5 + 1_000_000_000 - 1); // fixed-point rounding down
        assert_eq!(p.extrapolate(7, 0), 7, "a TSC before the base adds nothing");
        assert!(rate(0).is_none());
    }
}

//! The guest address space: where everything lives, and what each page may be used for.
//!
//! Guest virtual addresses equal guest physical addresses (identity mapping) and the whole
//! space `[0, memory_size)` is described by a sorted list of `Region`s: the process's mappings
//! (the ELF image, the stack, brk and mmap areas, each with its own rights) below `sys_base`,
//! the fixed system area above it. The same list drives both the guest page tables (edited
//! through `paging` when mmap, munmap, mprotect or brk change it) and the host's permission
//! checks on syscall pointers, so the two cannot disagree.
//!
//! ```text
//! 0 ........ 0x1000          not present (null-pointer guard)
//! 0x1000 ... sys_base        the user area: not present except where the process maps
//!                            something — ELF segments, brk heap, mmap (placed top-down
//!                            below the stack guard), the stack — with the rights it asked for
//! guard                      not mapped (stack overflow guard)
//! stack_bottom .. stack_top  user RW, NX
//! sys_base ...... M          system area: syscall entry and call return pages (user RX), the
//!                            vDSO's parameters page (user R) and the vDSO (user RX), then supervisor-only
//!                            exception stubs, GDT, IDT, TSS, ring-0 stack, the page-table
//!                            commit scratch page, page tables
//! ```

pub const PAGE_SIZE: u64 = 4096;
pub const HUGE_PAGE_SIZE: u64 = 2 << 20;

/// Lowest address a guest mapping may use (page 0 stays unmapped to catch NULL).
pub const USER_MIN: u64 = PAGE_SIZE;
/// Where a position-independent executable is loaded when its own addresses start at 0.
pub const PIE_BASE: u64 = 0x40_0000;

/// Smallest and largest guest memory kvmbox accepts.
pub const MIN_MEMORY: u64 = 8 << 20;
pub const MAX_MEMORY: u64 = 256 << 30;

pub const fn page_down(x: u64) -> u64 {
    x & !(PAGE_SIZE - 1)
}
pub fn page_up(x: u64) -> Option<u64> {
    x.checked_add(PAGE_SIZE - 1).map(page_down)
}

/// Access rights of a page, as the guest page tables express them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perm {
    pub present: bool,
    pub user: bool,
    pub write: bool,
    pub exec: bool,
}

impl Perm {
    pub const NONE: Perm = Perm { present: false, user: false, write: false, exec: false };
    pub const USER_RW: Perm = Perm { present: true, user: true, write: true, exec: false };
    pub const USER_RX: Perm = Perm { present: true, user: true, write: false, exec: true };
    pub const SUPER_RW: Perm = Perm { present: true, user: false, write: true, exec: false };
    pub const SUPER_RO: Perm = Perm { present: true, user: false, write: false, exec: false };
    pub const SUPER_RX: Perm = Perm { present: true, user: false, write: false, exec: true };

    pub fn user(write: bool, exec: bool) -> Perm {
        Perm { present: true, user: true, write, exec }
    }

    /// The rights of a mapping with mmap protection `prot` (PROT_READ 1, PROT_WRITE 2,
    /// PROT_EXEC 4): PROT_NONE is not present; anything else is readable, as on x86-64 Linux.
    pub fn from_prot(prot: u8) -> Perm {
        if prot & 7 == 0 {
            Perm::NONE
        } else {
            Perm::user(prot & 2 != 0, prot & 4 != 0)
        }
    }

    /// The union of two permission sets (used when two ELF segments share a page).
    pub fn union(self, other: Perm) -> Perm {
        Perm {
            present: self.present || other.present,
            user: self.user || other.user,
            write: self.write || other.write,
            exec: self.exec || other.exec,
        }
    }
}

/// A page-aligned half-open range `[start, end)` with one permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    pub perm: Perm,
}

/// Fixed system pages at the top of guest memory, in this order from `sys_base`.
#[derive(Debug, Clone, Copy)]
pub struct SystemPages {
    /// User-readable, executable page that LSTAR points to (`out` + `sysretq`).
    pub syscall_entry: u64,
    /// User-readable, executable page the host makes guest calls return to (`out`).
    pub call_return: u64,
    /// User-readable page of clock parameters the vDSO reads (see `vdso`).
    pub vvar: u64,
    /// The vDSO image (user RX), just above its parameters page.
    pub vdso: u64,
    /// Supervisor-only page of one-instruction exception stubs, one 16-byte slot per vector.
    pub exception_stubs: u64,
    pub gdt: u64,
    pub idt: u64,
    /// The TSS plus its I/O permission bitmap (three pages).
    pub tss: u64,
    /// Ring-0 stack that exceptions push their frame onto (TSS.rsp0 = its top).
    pub ring0_stack: u64,
    /// Supervisor read-write page the host puts new page-table entries in for the ring-0
    /// commit stub to copy into place (see `machine::pagetables`).
    pub pt_scratch: u64,
    /// First page-table page (the PML4); all page tables follow contiguously.
    pub page_tables: u64,
    pub page_table_pages: u64,
}

pub const TSS_PAGES: u64 = 3;
const FIXED_SYSTEM_PAGES: u64 = 2 + 2 + 1 + 1 + 1 + TSS_PAGES + 1 + 1;

/// Number of page-table pages needed to map `[0, memory)` with 4 KiB pages.
pub fn page_table_pages(memory: u64) -> u64 {
    let div_up = |x: u64, d: u64| x.div_ceil(d);
    1 + div_up(memory, 512 << 30) + div_up(memory, 1 << 30) + div_up(memory, 2 << 20)
}

/// The fixed parts of the address space, computed from the memory size alone.
#[derive(Debug, Clone)]
pub struct Layout {
    pub memory: u64,
    pub sys_base: u64,
    pub sys: SystemPages,
    pub stack_top: u64,
    pub stack_bottom: u64,
    pub guard_bottom: u64,
}

impl Layout {
    /// `memory` must already be validated and rounded (see [`round_memory`]).
    pub fn new(memory: u64) -> Layout {
        let pt_pages = page_table_pages(memory);
        let sys_base = memory - (FIXED_SYSTEM_PAGES + pt_pages) * PAGE_SIZE;
        let mut next = sys_base;
        let mut take = |pages: u64| {
            let at = next;
            next += pages * PAGE_SIZE;
            at
        };
        let sys = SystemPages {
            syscall_entry: take(1),
            call_return: take(1),
            vvar: take(1),
            vdso: take(1),
            exception_stubs: take(1),
            gdt: take(1),
            idt: take(1),
            tss: take(TSS_PAGES),
            ring0_stack: take(1),
            pt_scratch: take(1),
            page_tables: take(pt_pages),
            page_table_pages: pt_pages,
        };
        debug_assert_eq!(next, memory);
        // Linux gives the main thread an 8 MiB stack limit; small machines get less so that
        // the stack does not eat the heap.
        let stack_size = (memory / 16).clamp(256 << 10, 8 << 20);
        let guard_size = (memory / 64).clamp(64 << 10, 1 << 20);
        let stack_top = sys_base;
        let stack_bottom = stack_top - stack_size;
        Layout { memory, sys_base, sys, stack_top, stack_bottom, guard_bottom: stack_bottom - guard_size }
    }

    /// True if `addr` is in the vDSO's code page.
    pub fn in_vdso(&self, addr: u64) -> bool {
        (self.sys.vdso..self.sys.vdso + PAGE_SIZE).contains(&addr)
    }

    pub fn stack_size(&self) -> u64 {
        self.stack_top - self.stack_bottom
    }

    /// Upper end of the area where the ELF image, brk heap and mmap may live.
    pub fn heap_limit(&self) -> u64 {
        self.guard_bottom
    }

    /// The main thread's stack, as the process starts with it.
    pub fn stack_region(&self) -> Region {
        Region { start: self.stack_bottom, end: self.stack_top, perm: Perm::USER_RW }
    }

    /// The region list for this layout: the process's mappings `user` (page-aligned, sorted,
    /// disjoint, inside `[USER_MIN, sys_base)`), not present everywhere else below `sys_base`,
    /// then the system area.
    pub fn regions(&self, user: &[Region]) -> Vec<Region> {
        let mut out = Vec::with_capacity(user.len() * 2 + 12);
        let mut push = |start: u64, end: u64, perm: Perm| {
            if start < end {
                out.push(Region { start, end, perm });
            }
        };
        push(0, USER_MIN, Perm::NONE);
        let mut cursor = USER_MIN;
        for r in user {
            debug_assert!(r.start >= cursor && r.end <= self.sys_base);
            push(cursor, r.start, Perm::NONE);
            push(r.start, r.end, r.perm);
            cursor = r.end;
        }
        push(cursor, self.sys_base, Perm::NONE);
        let s = &self.sys;
        push(s.syscall_entry, s.vvar, Perm::USER_RX);
        push(s.vvar, s.vdso, Perm::user(false, false));
        push(s.vdso, s.exception_stubs, Perm::USER_RX);
        push(s.exception_stubs, s.gdt, Perm::SUPER_RX);
        // The CPU may set accessed/busy bits in descriptors, so the GDT stays writable
        // (by ring 0 only, and no guest code ever runs in ring 0 beyond the stubs).
        push(s.gdt, s.idt, Perm::SUPER_RW);
        push(s.idt, s.ring0_stack, Perm::SUPER_RO);
        push(s.ring0_stack, s.page_tables, Perm::SUPER_RW);
        // The ring-0 commit stub writes page-table entries through this mapping, so that the
        // shadow MMU (PVM) sees every change that takes rights away.
        push(s.page_tables, self.memory, Perm::SUPER_RW);
        let mut merged: Vec<Region> = Vec::with_capacity(out.len());
        for r in out {
            match merged.last_mut() {
                Some(last) if last.perm == r.perm && last.end == r.start => last.end = r.end,
                _ => merged.push(r),
            }
        }
        merged
    }
}

/// Validate a requested memory size and round it up to a multiple of 2 MiB.
pub fn round_memory(requested: u64) -> Result<u64, String> {
    if requested < MIN_MEMORY {
        return Err(format!("memory must be at least {} MiB (got {} bytes)", MIN_MEMORY >> 20, requested));
    }
    if requested > MAX_MEMORY {
        return Err(format!("memory must be at most {} GiB (got {} bytes)", MAX_MEMORY >> 30, requested));
    }
    Ok(requested.div_ceil(HUGE_PAGE_SIZE) * HUGE_PAGE_SIZE)
}

/// Sorted, non-overlapping regions covering `[0, memory)`, with lookups.
#[derive(Debug, Clone)]
pub struct AddressSpace {
    regions: Vec<Region>,
}

impl AddressSpace {
    pub fn new(regions: Vec<Region>) -> Self {
        debug_assert!(regions.windows(2).all(|w| w[0].end == w[1].start));
        AddressSpace { regions }
    }

    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// Index of the region holding `addr`, if any.
    fn find(&self, addr: u64) -> Option<usize> {
        self.regions
            .binary_search_by(|r| {
                if r.end <= addr {
                    std::cmp::Ordering::Less
                } else if r.start > addr {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .ok()
    }

    /// The rights of the page holding `addr` (not present beyond the end).
    pub fn perm_at(&self, addr: u64) -> Perm {
        self.find(addr).map_or(Perm::NONE, |i| self.regions[i].perm)
    }

    /// Give `[start, end)` (page-aligned, inside the space) the rights `perm`, splitting the
    /// regions it cuts and merging equal neighbours, so the list stays as short as the rights
    /// allow. Linear in the number of regions.
    pub fn set(&mut self, start: u64, end: u64, perm: Perm) {
        let Some(last) = self.regions.last() else { return };
        let end = end.min(last.end);
        if start >= end {
            return;
        }
        let (Some(first), Some(final_)) = (self.find(start), self.find(end - 1)) else { return };
        let (head, tail) = (self.regions[first], self.regions[final_]);
        let mut new = Vec::with_capacity(3);
        if head.start < start {
            new.push(Region { start: head.start, end: start, perm: head.perm });
        }
        new.push(Region { start, end, perm });
        if tail.end > end {
            new.push(Region { start: end, end: tail.end, perm: tail.perm });
        }
        self.regions.splice(first..=final_, new);
        // Merge around the change (at most two neighbours on each side can now be equal).
        let lo = first.saturating_sub(1);
        let hi = (first + 4).min(self.regions.len());
        let mut i = lo;
        let mut stop = hi;
        while i + 1 < stop {
            if self.regions[i].perm == self.regions[i + 1].perm {
                self.regions[i].end = self.regions[i + 1].end;
                self.regions.remove(i + 1);
                stop -= 1;
            } else {
                i += 1;
            }
        }
    }

    /// True if ring-3 code may execute the instruction byte at `addr`.
    pub fn user_executable(&self, addr: u64) -> bool {
        let p = self.perm_at(addr);
        p.present && p.user && p.exec
    }

    /// True if ring-3 code may read (and, with `write`, write) every byte of `[addr, addr+len)`.
    /// A zero-length range is always accessible (Linux does not check it either).
    pub fn user_accessible(&self, addr: u64, len: u64, write: bool) -> bool {
        if len == 0 {
            return true;
        }
        let Some(end) = addr.checked_add(len) else { return false };
        let Some(mut i) = self.find(addr) else { return false };
        loop {
            let r = &self.regions[i];
            if !(r.perm.present && r.perm.user) || (write && !r.perm.write) {
                return false;
            }
            if r.end >= end {
                return true;
            }
            i += 1;
            if i == self.regions.len() {
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_fits_and_regions_cover_memory() {
        for mem in [8u64 << 20, 64 << 20, 1 << 30, 5 << 30] {
            let l = Layout::new(mem);
            assert!(l.guard_bottom < l.stack_bottom && l.stack_top == l.sys_base);
            let seg = Region { start: 0x40_0000, end: 0x40_2000, perm: Perm::USER_RX };
            let regions = l.regions(&[seg, l.stack_region()]);
            assert_eq!(regions.first().unwrap().start, 0);
            assert_eq!(regions.last().unwrap().end, mem);
            assert!(regions.windows(2).all(|w| w[0].end == w[1].start));
        }
    }

    #[test]
    fn permission_checks() {
        let l = Layout::new(64 << 20);
        let text = Region { start: 0x40_0000, end: 0x40_2000, perm: Perm::USER_RX };
        let heap = Region { start: 0x1000, end: 0x40_0000, perm: Perm::USER_RW };
        let space = AddressSpace::new(l.regions(&[heap, text, l.stack_region()]));
        assert!(!space.user_accessible(0, 1, false), "null page");
        assert!(space.user_accessible(0x1000, 0x3f_f000, true));
        assert!(!space.user_accessible(0x40_2000, 1, false), "nothing mapped after the text");
        assert!(space.user_accessible(0x40_0000, 0x2000, false));
        assert!(!space.user_accessible(0x40_0000, 1, true), "text is read-only");
        assert!(!space.user_accessible(0x3f_ffff, 2, true), "range crossing into text");
        assert!(!space.user_accessible(l.guard_bottom, 1, false), "guard");
        assert!(space.user_accessible(l.stack_bottom, l.stack_size(), true));
        assert!(!space.user_accessible(l.stack_top - 1, 2, true), "stack top into syscall page");
        assert!(space.user_accessible(l.sys.syscall_entry, 1, false));
        assert!(!space.user_accessible(l.sys.gdt, 1, false), "supervisor page");
        assert!(!space.user_accessible(l.sys.page_tables, 8, false));
        assert!(!space.user_accessible(u64::MAX - 1, 4, false), "overflow");
        assert!(!space.user_accessible(1 << 40, 1, false), "beyond memory");
    }

    #[test]
    fn set_splits_and_merges_regions() {
        let l = Layout::new(64 << 20);
        let mut space = AddressSpace::new(l.regions(&[l.stack_region()]));
        let n = space.regions().len();
        space.set(0x10_0000, 0x10_3000, Perm::USER_RW);
        assert_eq!(space.regions().len(), n + 2);
        assert!(space.user_accessible(0x10_0000, 0x3000, true));
        assert!(!space.user_accessible(0x10_3000, 1, false));
        // Taking the write right from the middle page splits the mapping in three.
        space.set(0x10_1000, 0x10_2000, Perm::from_prot(1));
        assert_eq!(space.regions().len(), n + 4);
        assert!(!space.user_accessible(0x10_1000, 1, true) && space.user_accessible(0x10_1000, 1, false));
        assert_eq!(space.perm_at(0x10_1000), Perm::user(false, false));
        // Giving it back merges the three again, and unmapping merges with the gaps around.
        space.set(0x10_1000, 0x10_2000, Perm::USER_RW);
        assert_eq!(space.regions().len(), n + 2);
        space.set(0x10_0000, 0x10_3000, Perm::NONE);
        assert_eq!(space.regions().len(), n);
        assert!(space.regions().windows(2).all(|w| w[0].end == w[1].start && w[0].perm != w[1].perm));
        assert_eq!(Perm::from_prot(0), Perm::NONE);
        assert_eq!(Perm::from_prot(4), Perm::USER_RX);
        assert_eq!(Perm::from_prot(7), Perm::user(true, true));
    }
}

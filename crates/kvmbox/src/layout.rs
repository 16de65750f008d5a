//! The guest address space: where everything lives, and what each page may be used for.
//!
//! Guest virtual addresses equal guest physical addresses (identity mapping) and the whole
//! space `[0, memory_size)` is described once, at creation, by a sorted list of `Region`s.
//! The same list drives both the guest page tables (built once, never edited — see the PVM
//! notes) and the host's permission checks on syscall pointers, so the two cannot disagree.
//!
//! ```text
//! 0 ........ 0x1000          not present (null-pointer guard)
//! 0x1000 ... image           user RW, NX (free for mmap)
//! image ........             ELF segments with their own permissions (W^X)
//! brk → ... ← mmap           user RW, NX (heap and anonymous mappings)
//! guard                      not present (stack overflow guard)
//! stack_bottom .. stack_top  user RW, NX
//! sys_base ...... M          system area: syscall entry page (user RX), then supervisor-only
//!                            exception stubs, GDT, IDT, TSS, ring-0 stack, page tables
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
    /// Supervisor-only page of one-instruction exception stubs, one 16-byte slot per vector.
    pub exception_stubs: u64,
    pub gdt: u64,
    pub idt: u64,
    /// The TSS plus its I/O permission bitmap (three pages).
    pub tss: u64,
    /// Ring-0 stack that exceptions push their frame onto (TSS.rsp0 = its top).
    pub ring0_stack: u64,
    /// First page-table page (the PML4); all page tables follow contiguously.
    pub page_tables: u64,
    pub page_table_pages: u64,
}

pub const TSS_PAGES: u64 = 3;
const FIXED_SYSTEM_PAGES: u64 = 2 + 1 + 1 + 1 + TSS_PAGES + 1;

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
            exception_stubs: take(1),
            gdt: take(1),
            idt: take(1),
            tss: take(TSS_PAGES),
            ring0_stack: take(1),
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

    pub fn stack_size(&self) -> u64 {
        self.stack_top - self.stack_bottom
    }

    /// Upper end of the area where the ELF image, brk heap and mmap may live.
    pub fn heap_limit(&self) -> u64 {
        self.guard_bottom
    }

    /// The region list for this layout with the given ELF segment pages laid over the
    /// default user read-write area. `segments` must be page-aligned, sorted and disjoint.
    pub fn regions(&self, segments: &[Region]) -> Vec<Region> {
        let mut out = Vec::with_capacity(segments.len() * 2 + 12);
        let mut push = |start: u64, end: u64, perm: Perm| {
            if start < end {
                out.push(Region { start, end, perm });
            }
        };
        push(0, USER_MIN, Perm::NONE);
        let mut cursor = USER_MIN;
        for seg in segments {
            push(cursor, seg.start, Perm::USER_RW);
            push(seg.start, seg.end, seg.perm);
            cursor = seg.end;
        }
        push(cursor, self.guard_bottom, Perm::USER_RW);
        push(self.guard_bottom, self.stack_bottom, Perm::NONE);
        push(self.stack_bottom, self.stack_top, Perm::USER_RW);
        let s = &self.sys;
        push(s.syscall_entry, s.exception_stubs, Perm::USER_RX);
        push(s.exception_stubs, s.gdt, Perm::SUPER_RX);
        // The CPU may set accessed/busy bits in descriptors, so the GDT stays writable
        // (by ring 0 only, and no guest code ever runs in ring 0 beyond the stubs).
        push(s.gdt, s.idt, Perm::SUPER_RW);
        push(s.idt, s.ring0_stack, Perm::SUPER_RO);
        push(s.ring0_stack, s.page_tables, Perm::SUPER_RW);
        // Page tables are reached by physical address only; they are not mapped at all.
        push(s.page_tables, self.memory, Perm::NONE);
        out
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

    /// True if ring-3 code may execute the instruction byte at `addr`.
    pub fn user_executable(&self, addr: u64) -> bool {
        self.regions.iter().any(|r| r.start <= addr && addr < r.end && r.perm.present && r.perm.user && r.perm.exec)
    }

    /// True if ring-3 code may read (and, with `write`, write) every byte of `[addr, addr+len)`.
    /// A zero-length range is always accessible (Linux does not check it either).
    pub fn user_accessible(&self, addr: u64, len: u64, write: bool) -> bool {
        if len == 0 {
            return true;
        }
        let Some(end) = addr.checked_add(len) else { return false };
        let mut i = match self.regions.binary_search_by(|r| {
            if r.end <= addr {
                std::cmp::Ordering::Less
            } else if r.start > addr {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        }) {
            Ok(i) => i,
            Err(_) => return false,
        };
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
            let regions = l.regions(&[seg]);
            assert_eq!(regions.first().unwrap().start, 0);
            assert_eq!(regions.last().unwrap().end, mem);
            assert!(regions.windows(2).all(|w| w[0].end == w[1].start));
        }
    }

    #[test]
    fn permission_checks() {
        let l = Layout::new(64 << 20);
        let text = Region { start: 0x40_0000, end: 0x40_2000, perm: Perm::USER_RX };
        let space = AddressSpace::new(l.regions(&[text]));
        assert!(!space.user_accessible(0, 1, false), "null page");
        assert!(space.user_accessible(0x1000, 0x3f_f000, true));
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
}

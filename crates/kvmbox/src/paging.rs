//! Guest page tables: 4-level, identity-mapped, built from the region list at creation and
//! edited whenever the region list changes (mmap, munmap, mprotect, brk, a reset).
//!
//! [`Tables::edits`] compares what the region list asks for with what the tables hold and lists
//! the entries to change; `machine::pagetables` commits them. That split matters on PVM, whose
//! shadow MMU notices a host write only when it gives rights ([`Edit::widens`]); every other
//! change must be written by the guest itself (see docs/internals.md, "Page rights").
//!
//! Every 2 MiB chunk of the address space has its own page-table frame, at a fixed place after
//! the page directories. A chunk whose pages all have the same rights is one 2 MiB leaf (or
//! absent) in its page directory, and its frame is unused; once its rights differ page by page
//! it points to its frame, and it stays that way. So a frame only ever holds the page table of
//! its own chunk, never another's — a frame the shadow MMU cached as one table is never reused
//! for a different one.

use crate::error::Result;
use crate::layout::{page_table_pages, AddressSpace, Layout, Perm, Region, HUGE_PAGE_SIZE, PAGE_SIZE};
use crate::memory::GuestMemory;

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
// Accessed and dirty are preset so the CPU (or the shadow MMU) never has to write a PTE.
const ACCESSED: u64 = 1 << 5;
const DIRTY: u64 = 1 << 6;
const NO_EXECUTE: u64 = 1 << 63;
/// In a page-directory entry: this entry maps a 2 MiB page.
const PAGE_SIZE_BIT: u64 = 1 << 7;
const FRAME: u64 = 0x000f_ffff_ffff_f000;
/// Intermediate levels grant everything; the leaves decide.
const UPPER: u64 = PRESENT | WRITABLE | USER | ACCESSED;
const ENTRIES: u64 = 512;

fn leaf_entry(addr: u64, perm: Perm) -> u64 {
    if !perm.present {
        return 0;
    }
    let mut e = addr | PRESENT | ACCESSED | DIRTY;
    if perm.write {
        e |= WRITABLE;
    }
    if perm.user {
        e |= USER;
    }
    if !perm.exec {
        e |= NO_EXECUTE;
    }
    e
}

/// One page-table entry to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edit {
    /// Guest physical address of the entry.
    pub gpa: u64,
    /// What the entry holds now.
    pub old: u64,
    /// What it must hold.
    pub new: u64,
}

impl Edit {
    /// True if the change only gives: the entry was absent, or it maps the same frame the same
    /// way with the same or more rights (W added, U added, NX cleared). A host write of such a
    /// change is seen at once by every backend (a stale, narrower translation faults and the
    /// fault finds the new entry); anything else must go through the guest.
    pub fn widens(&self) -> bool {
        let (old, new) = (self.old, self.new);
        if old & PRESENT == 0 {
            return true;
        }
        if new & PRESENT == 0 || old & FRAME != new & FRAME || (old ^ new) & PAGE_SIZE_BIT != 0 {
            return false;
        }
        let kept = |bit: u64| old & bit == 0 || new & bit != 0;
        kept(WRITABLE) && kept(USER) && (old & NO_EXECUTE != 0 || new & NO_EXECUTE == 0)
    }
}

/// Where the page tables of a layout live.
#[derive(Debug, Clone, Copy)]
pub struct Tables {
    pml4: u64,
    pdpt: u64,
    pd: u64,
    pt: u64,
    end: u64,
    chunks: u64,
}

impl Tables {
    pub fn new(layout: &Layout) -> Tables {
        let memory = layout.memory;
        let pml4 = layout.sys.page_tables;
        debug_assert_eq!(page_table_pages(memory), layout.sys.page_table_pages);
        let pdpt = pml4 + PAGE_SIZE;
        let pd = pdpt + memory.div_ceil(512 << 30) * PAGE_SIZE;
        let pt = pd + memory.div_ceil(1 << 30) * PAGE_SIZE;
        let chunks = memory.div_ceil(HUGE_PAGE_SIZE);
        Tables { pml4, pdpt, pd, pt, end: pt + chunks * PAGE_SIZE, chunks }
    }

    /// The pages whose entries ever change (page directories and page tables; the PML4 and
    /// PDPTs are written once).
    pub fn edited_pages(&self) -> std::ops::Range<u64> {
        self.pd..self.end
    }

    /// True if the entry at `gpa` is in a page directory (else in a page table).
    pub fn is_directory_entry(&self, gpa: u64) -> bool {
        gpa < self.pt
    }

    /// The page-directory entry of 2 MiB chunk `chunk` (directories are contiguous).
    fn pde(&self, chunk: u64) -> u64 {
        self.pd + chunk * 8
    }

    /// The page-table frame of chunk `chunk`.
    fn frame(&self, chunk: u64) -> u64 {
        self.pt + chunk * PAGE_SIZE
    }

    /// Write the tables for `regions` (which cover the layout's memory). Returns CR3. The whole
    /// table area is cleared first: a snapshot file's image brings its own bytes there, and
    /// no entry may come from the file (a directory entry beyond the memory could otherwise map
    /// the system area for the guest).
    pub fn build(&self, mem: &GuestMemory, regions: &[Region]) -> Result<u64> {
        mem.discard(self.pml4, self.end);
        let n_pdpt = (self.pd - self.pdpt) / PAGE_SIZE;
        let n_pd = (self.pt - self.pd) / PAGE_SIZE;
        let mut upper = vec![0u64; ((self.pd - self.pml4) / 8) as usize];
        for i in 0..n_pdpt {
            upper[i as usize] = (self.pdpt + i * PAGE_SIZE) | UPPER;
        }
        for i in 0..n_pd {
            upper[(ENTRIES + i) as usize] = (self.pd + i * PAGE_SIZE) | UPPER;
        }
        mem.write(self.pml4, &upper.iter().flat_map(|e| e.to_le_bytes()).collect::<Vec<u8>>())?;
        let space = AddressSpace::new(regions.to_vec());
        for edit in self.edits(mem, &space, 0, self.chunks * HUGE_PAGE_SIZE)? {
            debug_assert!(edit.widens(), "fresh tables only gain entries");
            mem.write_u64(edit.gpa, edit.new)?;
        }
        Ok(self.pml4)
    }

    /// The entries to change so that the tables map `[start, end)` as `space` says (whole
    /// 2 MiB chunks around the range are recomputed). Page-table entries come before the
    /// directory entry that links their table, so committing them in order never links a
    /// table before it is complete. Bounded by the memory size: one directory entry and at
    /// most one 4 KiB table read per 2 MiB chunk.
    pub fn edits(&self, mem: &GuestMemory, space: &AddressSpace, start: u64, end: u64) -> Result<Vec<Edit>> {
        let mut out = Vec::new();
        let first = start / HUGE_PAGE_SIZE;
        let last = end.div_ceil(HUGE_PAGE_SIZE).min(self.chunks);
        let regions = space.regions();
        let mut r = regions.partition_point(|x| x.end <= first * HUGE_PAGE_SIZE);
        for chunk in first..last {
            let lo = chunk * HUGE_PAGE_SIZE;
            let hi = lo + HUGE_PAGE_SIZE;
            while r < regions.len() && regions[r].end <= lo {
                r += 1;
            }
            let Some(region) = regions.get(r) else { break };
            let pde_gpa = self.pde(chunk);
            let pde = mem.read_u64(pde_gpa)?;
            let split = pde & PRESENT != 0 && pde & PAGE_SIZE_BIT == 0;
            let want_pde = if !split && region.end >= hi {
                let leaf = leaf_entry(lo, region.perm);
                if leaf == 0 {
                    0
                } else {
                    leaf | PAGE_SIZE_BIT
                }
            } else {
                let frame = self.frame(chunk);
                let mut table = [0u8; PAGE_SIZE as usize];
                mem.read(frame, &mut table)?;
                let mut k = r;
                for (i, old) in table.chunks_exact(8).enumerate() {
                    let addr = lo + i as u64 * PAGE_SIZE;
                    while regions[k].end <= addr {
                        k += 1;
                    }
                    let old = u64::from_le_bytes(old.try_into().unwrap_or_default());
                    let new = leaf_entry(addr, regions[k].perm);
                    if old != new {
                        out.push(Edit { gpa: frame + i as u64 * 8, old, new });
                    }
                }
                frame | UPPER
            };
            if pde != want_pde {
                out.push(Edit { gpa: pde_gpa, old: pde, new: want_pde });
            }
        }
        Ok(out)
    }

    /// The entries of table page `page` that differ between `now` (its current contents) and
    /// `then` (what a snapshot holds): what a reset must change.
    pub fn page_edits(page: u64, now: &[u8], then: &[u8]) -> Vec<Edit> {
        now.chunks_exact(8)
            .zip(then.chunks_exact(8))
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, (a, b))| Edit {
                gpa: page + i as u64 * 8,
                old: u64::from_le_bytes(a.try_into().unwrap_or_default()),
                new: u64::from_le_bytes(b.try_into().unwrap_or_default()),
            })
            .collect()
    }
}

/// Build the page tables for `regions` (which cover `[0, layout.memory)`) at
/// `layout.sys.page_tables`. Returns the guest physical address for CR3.
pub fn build(mem: &GuestMemory, layout: &Layout, regions: &[Region]) -> Result<u64> {
    Tables::new(layout).build(mem, regions)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walk the tables like the MMU does and return the leaf entry for `va`.
    fn walk(mem: &GuestMemory, cr3: u64, va: u64) -> u64 {
        let mut table = cr3;
        for level in (1..=3).rev() {
            let idx = (va >> (12 + 9 * level)) & 511;
            let e = mem.read_u64(table + idx * 8).unwrap();
            if level == 1 && (e & PAGE_SIZE_BIT != 0 || e & PRESENT == 0) {
                // A 2 MiB leaf (or an absent chunk): report it as the 4 KiB entry it implies.
                return if e == 0 { 0 } else { (e & !PAGE_SIZE_BIT & !0x1f_f000) + (va & 0x1f_f000) };
            }
            assert!(e & PRESENT != 0, "level {level} entry for {va:#x} not present");
            table = e & FRAME;
        }
        mem.read_u64(table + ((va >> 12) & 511) * 8).unwrap()
    }

    fn apply(mem: &GuestMemory, edits: &[Edit]) {
        for e in edits {
            mem.write_u64(e.gpa, e.new).unwrap();
        }
    }

    #[test]
    fn leaves_follow_regions() {
        let memory = 64 << 20;
        let layout = Layout::new(memory);
        let text = Region { start: 0x40_0000, end: 0x40_3000, perm: Perm::USER_RX };
        let heap = Region { start: 0x80_0000, end: 0xa0_0000, perm: Perm::USER_RW };
        let regions = layout.regions(&[text, heap, layout.stack_region()]);
        let mem = GuestMemory::new(memory).unwrap();
        let cr3 = build(&mem, &layout, &regions).unwrap();
        assert_eq!(walk(&mem, cr3, 0), 0, "null page unmapped");
        let t = walk(&mem, cr3, 0x40_1000);
        assert_eq!(t & 0xfff_ffff_f000, 0x40_1000);
        assert!(t & USER != 0 && t & WRITABLE == 0 && t & NO_EXECUTE == 0);
        assert_eq!(walk(&mem, cr3, 0x40_3000), 0, "nothing mapped after the text");
        let h = walk(&mem, cr3, 0x80_0000);
        assert_eq!(h & 0xfff_ffff_f000, 0x80_0000);
        assert!(h & USER != 0 && h & WRITABLE != 0 && h & NO_EXECUTE != 0);
        assert!(mem.read_u64(Tables::new(&layout).pde(4)).unwrap() & PAGE_SIZE_BIT != 0, "a uniform chunk is one 2 MiB leaf");
        let gdt = walk(&mem, cr3, layout.sys.gdt);
        assert!(gdt & USER == 0 && gdt & PRESENT != 0);
        let pt = walk(&mem, cr3, layout.sys.page_tables);
        assert!(pt & USER == 0 && pt & WRITABLE != 0, "page tables: supervisor read-write, for the commit stub");
        assert_eq!(walk(&mem, cr3, layout.guard_bottom), 0, "stack guard unmapped");
    }

    #[test]
    fn build_ignores_whatever_the_table_area_held() {
        // A snapshot file brings its own bytes: 64 MiB leave 480 directory entries of the last
        // directory page beyond the memory, which must not come from the file.
        let memory = 64 << 20;
        let layout = Layout::new(memory);
        let tables = Tables::new(&layout);
        let mem = GuestMemory::new(memory).unwrap();
        mem.write(tables.pml4, &vec![0xff; (tables.end - tables.pml4) as usize]).unwrap();
        let cr3 = tables.build(&mem, &layout.regions(&[layout.stack_region()])).unwrap();
        for chunk in memory / HUGE_PAGE_SIZE..ENTRIES {
            assert_eq!(mem.read_u64(tables.pde(chunk)).unwrap(), 0, "directory entry {chunk}");
        }
        assert_eq!(walk(&mem, cr3, 0x40_0000), 0, "nothing mapped where the file said so");
        assert_eq!(walk(&mem, cr3, memory + 0x1000), 0);
    }

    #[test]
    fn edits_follow_rights_changes_and_say_which_only_widen() {
        let memory = 64 << 20;
        let layout = Layout::new(memory);
        let tables = Tables::new(&layout);
        let heap = Region { start: 0x80_0000, end: 0xa0_0000, perm: Perm::USER_RW };
        let mut space = AddressSpace::new(layout.regions(&[heap, layout.stack_region()]));
        let mem = GuestMemory::new(memory).unwrap();
        let cr3 = tables.build(&mem, space.regions()).unwrap();

        // A guard page in the middle of the 2 MiB leaf: the chunk gets its table (512 new
        // entries that only widen), then the directory entry is relinked, which narrows.
        space.set(0x81_0000, 0x81_1000, Perm::NONE);
        let edits = tables.edits(&mem, &space, 0x81_0000, 0x81_1000).unwrap();
        assert_eq!(edits.len(), 511 + 1);
        assert!(edits[..511].iter().all(Edit::widens));
        let link = edits[511];
        assert_eq!(link.gpa, tables.pde(4));
        assert!(!link.widens(), "a 2 MiB leaf relinked to a table must go through the guest");
        apply(&mem, &edits);
        assert_eq!(walk(&mem, cr3, 0x81_0000), 0);
        assert!(walk(&mem, cr3, 0x81_1000) & WRITABLE != 0);

        // Rights back: one entry, widening; the chunk stays split.
        space.set(0x81_0000, 0x81_1000, Perm::USER_RW);
        let edits = tables.edits(&mem, &space, 0x81_0000, 0x81_1000).unwrap();
        assert_eq!(edits.len(), 1);
        assert!(edits[0].widens());
        apply(&mem, &edits);
        assert!(tables.edits(&mem, &space, 0, memory).unwrap().is_empty(), "nothing left to change");

        // W^X flip: RW → RX narrows (W removed), RX → RWX widens, NX set narrows.
        space.set(0x81_0000, 0x81_1000, Perm::USER_RX);
        let e = tables.edits(&mem, &space, 0x81_0000, 0x81_1000).unwrap();
        assert!(e.len() == 1 && !e[0].widens());
        apply(&mem, &e);
        space.set(0x81_0000, 0x81_1000, Perm::user(true, true));
        let e = tables.edits(&mem, &space, 0x81_0000, 0x81_1000).unwrap();
        assert!(e.len() == 1 && e[0].widens());
        apply(&mem, &e);
        space.set(0x81_0000, 0x81_1000, Perm::USER_RW);
        let e = tables.edits(&mem, &space, 0x81_0000, 0x81_1000).unwrap();
        assert!(e.len() == 1 && !e[0].widens());

        // A whole unsplit chunk mapped and unmapped: one directory entry each way.
        space.set(0xa0_0000, 0xc0_0000, Perm::USER_RW);
        let e = tables.edits(&mem, &space, 0xa0_0000, 0xc0_0000).unwrap();
        assert!(e.len() == 1 && e[0].widens() && e[0].new & PAGE_SIZE_BIT != 0);
        apply(&mem, &e);
        space.set(0xa0_0000, 0xc0_0000, Perm::NONE);
        let e = tables.edits(&mem, &space, 0xa0_0000, 0xc0_0000).unwrap();
        assert!(e.len() == 1 && !e[0].widens() && e[0].new == 0);

        // A reset's view: entry by entry between two versions of a page.
        let now = [1u8; 16];
        let mut then = [1u8; 16];
        then[8] = 0;
        let diff = Tables::page_edits(0x5000, &now, &then);
        assert_eq!(diff.len(), 1);
        assert_eq!(diff[0].gpa, 0x5008);
    }
}

//! Guest page tables: 4-level, identity-mapped, 4 KiB leaves, built once from the region list
//! before the first run and never edited afterwards (on PVM's shadow MMU, host edits to
//! present PTEs are not seen by the guest — see docs/kvm-on-pvm.md).

use crate::error::Result;
use crate::layout::{page_table_pages, Layout, Perm, Region, HUGE_PAGE_SIZE, PAGE_SIZE};
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

/// Build the page tables for `regions` (which cover `[0, layout.memory)`) and store them at
/// `layout.sys.page_tables`. Returns the guest physical address for CR3.
///
/// A 2 MiB-aligned chunk that lies entirely inside one region gets a single 2 MiB leaf in the
/// page directory; only chunks where rights change (around the ELF image, the stack guard and
/// the system area) get a page table of 4 KiB entries. For a typical guest that is a handful
/// of table pages instead of one per 2 MiB, which keeps machine creation cheap.
pub fn build(mem: &GuestMemory, layout: &Layout, regions: &[Region]) -> Result<u64> {
    let memory = layout.memory;
    let base = layout.sys.page_tables;
    debug_assert_eq!(page_table_pages(memory), layout.sys.page_table_pages);
    let n_pdpt = memory.div_ceil(512 << 30);
    let n_pd = memory.div_ceil(1 << 30);
    let pdpt_base = base + PAGE_SIZE;
    let pd_base = pdpt_base + n_pdpt * PAGE_SIZE;
    let pt_base = pd_base + n_pd * PAGE_SIZE;
    let n_chunks = memory.div_ceil(HUGE_PAGE_SIZE);

    // PML4, PDPTs and PDs are contiguous and always written; PT pages only where needed.
    let mut upper_tables = vec![0u64; ((pt_base - base) / 8) as usize];
    let entry = |tables: &mut Vec<u64>, page_gpa: u64, index: u64, value: u64| {
        tables[((page_gpa - base) / 8 + index) as usize] = value;
    };
    // Intermediate levels grant everything; the leaves decide.
    let upper = PRESENT | WRITABLE | USER | ACCESSED;
    for i in 0..n_pdpt {
        entry(&mut upper_tables, base, i, (pdpt_base + i * PAGE_SIZE) | upper);
    }
    for i in 0..n_pd {
        entry(&mut upper_tables, pdpt_base + (i / 512) * PAGE_SIZE, i % 512, (pd_base + i * PAGE_SIZE) | upper);
    }
    let mut region = 0usize;
    for chunk in 0..n_chunks {
        let start = chunk * HUGE_PAGE_SIZE;
        let end = start + HUGE_PAGE_SIZE;
        while regions[region].end <= start {
            region += 1;
        }
        let pd_page = pd_base + (chunk / 512) * PAGE_SIZE;
        if regions[region].end >= end {
            let leaf = leaf_entry(start, regions[region].perm);
            entry(&mut upper_tables, pd_page, chunk % 512, if leaf == 0 { 0 } else { leaf | PAGE_SIZE_BIT });
            continue;
        }
        let pt_page = pt_base + chunk * PAGE_SIZE;
        entry(&mut upper_tables, pd_page, chunk % 512, pt_page | upper);
        let mut pt = [0u64; 512];
        let mut r = region;
        for (i, e) in pt.iter_mut().enumerate() {
            let addr = start + i as u64 * PAGE_SIZE;
            while regions[r].end <= addr {
                r += 1;
            }
            *e = leaf_entry(addr, regions[r].perm);
        }
        mem.write(pt_page, &pt.iter().flat_map(|e| e.to_le_bytes()).collect::<Vec<u8>>())?;
    }
    let bytes: Vec<u8> = upper_tables.iter().flat_map(|e| e.to_le_bytes()).collect();
    mem.write(base, &bytes)?;
    Ok(base)
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
            table = e & 0x000f_ffff_ffff_f000;
        }
        mem.read_u64(table + ((va >> 12) & 511) * 8).unwrap()
    }

    #[test]
    fn leaves_follow_regions() {
        let memory = 64 << 20;
        let layout = Layout::new(memory);
        let text = Region { start: 0x40_0000, end: 0x40_3000, perm: Perm::USER_RX };
        let regions = layout.regions(&[text]);
        let mem = GuestMemory::new(memory).unwrap();
        let cr3 = build(&mem, &layout, &regions).unwrap();
        assert_eq!(walk(&mem, cr3, 0), 0, "null page unmapped");
        let t = walk(&mem, cr3, 0x40_1000);
        assert_eq!(t & 0xfff_ffff_f000, 0x40_1000);
        assert!(t & USER != 0 && t & WRITABLE == 0 && t & NO_EXECUTE == 0);
        let heap = walk(&mem, cr3, 0x80_0000);
        assert_eq!(heap & 0xfff_ffff_f000, 0x80_0000);
        let big = mem.read_u64(cr3).unwrap();
        assert!(big & PRESENT != 0);
        assert!(heap & USER != 0 && heap & WRITABLE != 0 && heap & NO_EXECUTE != 0);
        let gdt = walk(&mem, cr3, layout.sys.gdt);
        assert!(gdt & USER == 0 && gdt & PRESENT != 0);
        assert_eq!(walk(&mem, cr3, layout.sys.page_tables), 0, "page tables are not mapped");
        assert_eq!(walk(&mem, cr3, layout.guard_bottom), 0, "stack guard unmapped");
    }
}

//! Guest page tables: 4-level, identity-mapped, 4 KiB leaves, built once from the region list
//! before the first run and never edited afterwards (on PVM's shadow MMU, host edits to
//! present PTEs are not seen by the guest — see docs/kvm-on-pvm.md).

use crate::layout::{page_table_pages, Layout, Perm, Region, PAGE_SIZE};
use crate::memory::GuestMemory;
use crate::error::Result;

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
// Accessed and dirty are preset so the CPU (or the shadow MMU) never has to write a PTE.
const ACCESSED: u64 = 1 << 5;
const DIRTY: u64 = 1 << 6;
const NO_EXECUTE: u64 = 1 << 63;

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
pub fn build(mem: &GuestMemory, layout: &Layout, regions: &[Region]) -> Result<u64> {
    let memory = layout.memory;
    let base = layout.sys.page_tables;
    let pages = page_table_pages(memory);
    debug_assert_eq!(pages, layout.sys.page_table_pages);
    let n_pdpt = memory.div_ceil(512 << 30);
    let n_pd = memory.div_ceil(1 << 30);
    let pdpt_base = base + PAGE_SIZE;
    let pd_base = pdpt_base + n_pdpt * PAGE_SIZE;
    let pt_base = pd_base + n_pd * PAGE_SIZE;
    let n_pt = memory.div_ceil(2 << 20);

    let mut tables = vec![0u64; (pages * PAGE_SIZE / 8) as usize];
    let table = |tables: &mut Vec<u64>, page_gpa: u64, index: u64, value: u64| {
        tables[((page_gpa - base) / 8 + index) as usize] = value;
    };
    // Intermediate levels grant everything; the leaves decide.
    let upper = PRESENT | WRITABLE | USER | ACCESSED;
    for i in 0..n_pdpt {
        table(&mut tables, base, i, (pdpt_base + i * PAGE_SIZE) | upper);
    }
    for i in 0..n_pd {
        table(&mut tables, pdpt_base + (i / 512) * PAGE_SIZE, i % 512, (pd_base + i * PAGE_SIZE) | upper);
    }
    for i in 0..n_pt {
        table(&mut tables, pd_base + (i / 512) * PAGE_SIZE, i % 512, (pt_base + i * PAGE_SIZE) | upper);
    }
    let pt_index0 = ((pt_base - base) / 8) as usize;
    for r in regions {
        let mut addr = r.start;
        while addr < r.end {
            tables[pt_index0 + (addr / PAGE_SIZE) as usize] = leaf_entry(addr, r.perm);
            addr += PAGE_SIZE;
        }
    }
    let bytes: Vec<u8> = tables.iter().flat_map(|e| e.to_le_bytes()).collect();
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
        assert!(heap & USER != 0 && heap & WRITABLE != 0 && heap & NO_EXECUTE != 0);
        let gdt = walk(&mem, cr3, layout.sys.gdt);
        assert!(gdt & USER == 0 && gdt & PRESENT != 0);
        assert_eq!(walk(&mem, cr3, layout.sys.page_tables), 0, "page tables are not mapped");
        assert_eq!(walk(&mem, cr3, layout.guard_bottom), 0, "stack guard unmapped");
    }
}

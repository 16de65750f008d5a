//! Memory-management syscalls: the process's mappings (Linux's VMAs) and their rights.
//!
//! [`Mappings`] knows every mapping of the user area — the ELF image, the brk heap, mmap
//! areas, the stack — with its mmap protection. Each change of rights (a mapping added,
//! removed or mprotected) is recorded as a [`Region`] with its new rights; the machine takes
//! them after the syscall, applies them to the address space and commits the page-table edits
//! (see `machine::pagetables`), so the guest sees them before it runs again. Freed memory is
//! given back to the host and reads as zero afterwards.

use std::collections::BTreeMap;

use crate::interrupt::Deadline;

use crate::layout::{page_up, Layout, Perm, Region, PAGE_SIZE, USER_MIN};
use crate::memory::GuestMemory;

use super::errno;

const PROT_READ: u64 = 1;
const PROT_WRITE: u64 = 2;
const PROT_EXEC: u64 = 4;
const PROT_GROWSDOWN: u64 = 0x0100_0000;
const PROT_GROWSUP: u64 = 0x0200_0000;
const MAP_SHARED: u64 = 0x01;
const MAP_PRIVATE: u64 = 0x02;
const MAP_SHARED_VALIDATE: u64 = 0x03;
const MAP_FIXED: u64 = 0x10;
#[cfg(test)]
const MAP_ANONYMOUS: u64 = 0x20;
const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;
const MREMAP_MAYMOVE: u64 = 1;
const MREMAP_FIXED: u64 = 2;
const MREMAP_DONTUNMAP: u64 = 4;
const MADV_DONTNEED: u64 = 4;
const MADV_FREE: u64 = 8;
const MADV_REMOVE: u64 = 9;
/// Protection of the brk heap and the stack.
const PROT_RW: u8 = (PROT_READ | PROT_WRITE) as u8;

/// One mapping: where it ends and its protection (PROT_READ | PROT_WRITE | PROT_EXEC bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Vma {
    end: u64,
    prot: u8,
}

/// The process's mappings.
#[derive(Debug, Clone)]
pub struct Mappings {
    /// Lowest address a mapping may use.
    floor: u64,
    /// mmap places mappings below this (the stack guard).
    mmap_top: u64,
    /// End of the user area (the top of the stack).
    ceiling: u64,
    brk_start: u64,
    brk: u64,
    /// start → mapping, page-aligned and disjoint; neighbours with the same protection are
    /// merged, as Linux merges anonymous VMAs.
    maps: BTreeMap<u64, Vma>,
    /// Rights changes the page tables have not seen yet, oldest first.
    changed: Vec<Region>,
}

/// Most mappings a process may have, as Linux's default `vm.max_map_count`: operations that
/// would go beyond it fail with ENOMEM, so the table — and every walk over it — stays bounded
/// whatever the guest does.
pub const MAX_MAPPINGS: usize = 65530;

fn is_aligned(x: u64) -> bool {
    x.is_multiple_of(PAGE_SIZE)
}

impl Mappings {
    /// The mappings of a new process: the program's `segments` (sorted, disjoint, below the
    /// stack guard) and the stack; the brk heap starts empty at `image_end`.
    pub fn new(layout: &Layout, segments: &[Region], image_end: u64) -> Mappings {
        let mut m = Mappings {
            floor: USER_MIN,
            mmap_top: layout.heap_limit(),
            ceiling: layout.stack_top,
            brk_start: image_end,
            brk: image_end,
            maps: BTreeMap::new(),
            changed: Vec::new(),
        };
        for s in segments.iter().chain([&layout.stack_region()]) {
            let prot = PROT_READ as u8 | if s.perm.write { PROT_WRITE as u8 } else { 0 } | if s.perm.exec { PROT_EXEC as u8 } else { 0 };
            m.maps.insert(s.start, Vma { end: s.end, prot });
        }
        m
    }

    /// The mappings as regions with their rights (for the address space).
    pub fn regions(&self) -> Vec<Region> {
        self.maps.iter().map(|(&start, v)| Region { start, end: v.end, perm: Perm::from_prot(v.prot) }).collect()
    }

    /// The rights changes since the last call, oldest first.
    pub fn take_changes(&mut self) -> Vec<Region> {
        std::mem::take(&mut self.changed)
    }

    /// True if a mapping (of any protection, PROT_NONE too) holds `addr`: a fault there is
    /// SEGV_ACCERR, elsewhere SEGV_MAPERR.
    pub fn is_mapped(&self, addr: u64) -> bool {
        self.maps.range(..=addr).next_back().is_some_and(|(_, v)| v.end > addr)
    }

    pub(crate) fn encode(&self, w: &mut crate::snapfile::Writer) {
        for v in [self.brk_start, self.brk] {
            w.u64(v);
        }
        w.u64(self.maps.len() as u64);
        for (&s, v) in &self.maps {
            w.u64(s);
            w.u64(v.end);
            w.u8(v.prot);
        }
    }

    /// Decode and check against the layout it must fit: every mapping inside the user area,
    /// with a protection mmap could have given.
    pub(crate) fn decode(r: &mut crate::snapfile::Reader, layout: &Layout) -> crate::error::Result<Mappings> {
        let bad = || crate::error::Error::InvalidArgument("invalid snapshot file: inconsistent memory map".into());
        let (brk_start, brk) = (r.u64()?, r.u64()?);
        let (floor, mmap_top, ceiling) = (USER_MIN, layout.heap_limit(), layout.stack_top);
        if !is_aligned(brk_start) || brk_start < floor || brk_start > mmap_top || brk < brk_start || brk > mmap_top {
            return Err(bad());
        }
        let n = r.count(17)?;
        if n > MAX_MAPPINGS {
            return Err(bad());
        }
        let mut maps = BTreeMap::new();
        let mut last = floor;
        for _ in 0..n {
            let (s, e, prot) = (r.u64()?, r.u64()?, r.u8()?);
            if !is_aligned(s) || !is_aligned(e) || s < last || e <= s || e > ceiling || prot & !7 != 0 {
                return Err(bad());
            }
            maps.insert(s, Vma { end: e, prot });
            last = e;
        }
        Ok(Mappings { floor, mmap_top, ceiling, brk_start, brk, maps, changed: Vec::new() })
    }

    /// Bytes of the heap area (between the brk start and the stack guard) not mapped, for
    /// sysinfo's freeram.
    pub fn free_bytes(&self) -> u64 {
        let mapped = self
            .maps
            .range(self.brk_start..self.mmap_top)
            .fold(0u64, |sum, (s, v)| sum.saturating_add(v.end.min(self.mmap_top).saturating_sub(*s)));
        self.mmap_top.saturating_sub(self.brk_start).saturating_sub(mapped)
    }

    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.maps.range(..end).next_back().is_some_and(|(_, v)| v.end > start)
    }

    /// Record that `[start, end)` now has protection `prot` (None: unmapped).
    fn record(&mut self, start: u64, end: u64, prot: Option<u8>) {
        if start < end {
            self.changed.push(Region { start, end, perm: prot.map_or(Perm::NONE, Perm::from_prot) });
        }
    }

    /// Map `[start, end)` (which must be free) with `prot`, merging with equal neighbours.
    fn insert(&mut self, start: u64, end: u64, prot: u8) {
        self.record(start, end, Some(prot));
        let (mut start, mut end) = (start, end);
        if let Some((&s, v)) = self.maps.range(..start).next_back() {
            if v.end == start && v.prot == prot {
                self.maps.remove(&s);
                start = s;
            }
        }
        if let Some(v) = self.maps.get(&end).copied() {
            if v.prot == prot {
                self.maps.remove(&end);
                end = v.end;
            }
        }
        self.maps.insert(start, Vma { end, prot });
    }

    /// ENOMEM unless `more` mappings fit under [`MAX_MAPPINGS`].
    fn room_for(&self, more: usize) -> Result<(), i32> {
        if self.maps.len().saturating_add(more) > MAX_MAPPINGS {
            return Err(errno::ENOMEM);
        }
        Ok(())
    }

    /// The mappings that overlap `[start, end)`: the one that starts before `start` and reaches
    /// into it, then those starting inside (a lookup and a walk over the hits only).
    fn overlapping(&self, start: u64, end: u64) -> Vec<(u64, Vma)> {
        let before = self.maps.range(..start).next_back().filter(|(_, v)| v.end > start);
        before.into_iter().chain(self.maps.range(start..end)).map(|(&s, &v)| (s, v)).collect()
    }

    /// Remove `[start, end)` from the mapping set, splitting mappings as needed.
    /// Returns the sub-ranges that were actually mapped (to be discarded).
    fn remove(&mut self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut removed = Vec::new();
        for (s, v) in self.overlapping(start, end) {
            self.maps.remove(&s);
            if s < start {
                self.maps.insert(s, Vma { end: start, prot: v.prot });
            }
            if v.end > end {
                self.maps.insert(end, v);
            }
            removed.push((s.max(start), v.end.min(end)));
        }
        // One change for the whole range (its gaps were unmapped already): the page tables
        // take one rights change per syscall, not one per mapping it covered.
        if let (Some(&(a, _)), Some(&(_, b))) = (removed.first(), removed.last()) {
            self.record(a, b, None);
        }
        removed
    }

    /// Highest free gap of `len` bytes between the brk and the stack guard.
    fn find_free(&self, len: u64) -> Option<u64> {
        let low = page_up(self.brk).unwrap_or(u64::MAX);
        let mut top = self.mmap_top;
        for (&s, v) in self.maps.range(..self.mmap_top).rev() {
            // A gap [end, top) that holds len bytes, above the brk.
            if let Some(start) = top.checked_sub(len).filter(|&start| start >= v.end && start >= low) {
                return Some(start);
            }
            top = top.min(s);
        }
        top.checked_sub(len).filter(|&start| start >= low)
    }

    fn in_area(&self, start: u64, end: u64) -> bool {
        start >= self.floor && end <= self.ceiling && start < end
    }

    pub fn brk(&mut self, mem: &GuestMemory, requested: u64) -> u64 {
        if requested < self.brk_start {
            return self.brk;
        }
        let Some(new_end) = page_up(requested) else { return self.brk };
        let Some(old_end) = page_up(self.brk) else { return self.brk };
        if new_end > self.mmap_top {
            return self.brk;
        }
        if new_end > old_end {
            if self.overlaps(old_end, new_end) || self.room_for(1).is_err() {
                return self.brk; // would run into a mapping
            }
            self.insert(old_end, new_end, PROT_RW);
        }
        if new_end < old_end {
            if self.room_for(1).is_err() {
                return self.brk;
            }
            for (s, e) in self.remove(new_end, old_end) {
                mem.discard(s, e);
            }
        }
        self.brk = requested;
        requested
    }

    pub fn mmap(&mut self, mem: &GuestMemory, addr: u64, len: u64, prot: u64, flags: u64) -> Result<u64, i32> {
        if len == 0 {
            return Err(errno::EINVAL);
        }
        let kind = flags & 0x3;
        if kind != MAP_SHARED && kind != MAP_PRIVATE && kind != MAP_SHARED_VALIDATE {
            return Err(errno::EINVAL);
        }
        if prot & !(PROT_READ | PROT_WRITE | PROT_EXEC | PROT_GROWSDOWN | PROT_GROWSUP) != 0 {
            return Err(errno::EINVAL);
        }
        let rights = (prot & 7) as u8;
        let len = page_up(len).ok_or(errno::ENOMEM)?;
        let fixed = flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0;
        if fixed {
            if !is_aligned(addr) {
                return Err(errno::EINVAL);
            }
            let end = addr.checked_add(len).ok_or(errno::ENOMEM)?;
            if !self.in_area(addr, end) {
                return Err(errno::ENOMEM);
            }
            if flags & MAP_FIXED_NOREPLACE != 0 && flags & MAP_FIXED == 0 && self.overlaps(addr, end) {
                return Err(errno::EEXIST);
            }
            // Unmapping inside one mapping splits it, then the new mapping: at most two more.
            self.room_for(2)?;
            for (s, e) in self.remove(addr, end) {
                mem.discard(s, e);
            }
            self.insert(addr, end, rights);
            return Ok(addr);
        }
        self.room_for(1)?;
        if addr != 0 && is_aligned(addr) {
            if let Some(end) = addr.checked_add(len) {
                if self.in_area(addr, end) && !self.overlaps(addr, end) {
                    self.insert(addr, end, rights);
                    return Ok(addr);
                }
            }
        }
        let start = self.find_free(len).ok_or(errno::ENOMEM)?;
        self.insert(start, start.checked_add(len).ok_or(errno::ENOMEM)?, rights);
        Ok(start)
    }

    pub fn munmap(&mut self, mem: &GuestMemory, addr: u64, len: u64) -> Result<u64, i32> {
        if !is_aligned(addr) || len == 0 {
            return Err(errno::EINVAL);
        }
        let end = page_up(len).and_then(|l| addr.checked_add(l)).ok_or(errno::EINVAL)?;
        self.room_for(1)?; // unmapping the middle of a mapping splits it
        for (s, e) in self.remove(addr, end) {
            mem.discard(s, e);
        }
        Ok(0)
    }

    /// mremap. A move copies in bounded chunks and stops at the run's deadline; it then fails
    /// with EINTR, which the dispatcher turns into that timeout or interrupt (the guest never
    /// sees it).
    #[allow(clippy::too_many_arguments)]
    pub fn mremap(
        &mut self,
        mem: &GuestMemory,
        deadline: &Deadline,
        old: u64,
        old_len: u64,
        new_len: u64,
        flags: u64,
        new_addr: u64,
    ) -> Result<u64, i32> {
        self.room_for(2)?;
        if !is_aligned(old) || flags & !(MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP) != 0 || flags & MREMAP_DONTUNMAP != 0 {
            return Err(errno::EINVAL);
        }
        let old_len = page_up(old_len).ok_or(errno::EINVAL)?;
        let new_len = page_up(new_len).ok_or(errno::EINVAL)?;
        if new_len == 0 {
            return Err(errno::EINVAL);
        }
        let old_end = old.checked_add(old_len).ok_or(errno::EFAULT)?;
        // The old range must be exactly inside one mapping; the result keeps its protection.
        let prot = match self.maps.range(..=old).next_back() {
            Some((_, v)) if v.end >= old_end => v.prot,
            _ => return Err(errno::EFAULT),
        };
        if flags & MREMAP_FIXED != 0 {
            if flags & MREMAP_MAYMOVE == 0 || !is_aligned(new_addr) {
                return Err(errno::EINVAL);
            }
            let new_end = new_addr.checked_add(new_len).ok_or(errno::EINVAL)?;
            if !self.in_area(new_addr, new_end) || (new_addr < old_end && new_end > old) {
                return Err(errno::EINVAL);
            }
            for (s, e) in self.remove(new_addr, new_end) {
                mem.discard(s, e);
            }
            return self.move_mapping(mem, deadline, old, old_len, new_addr, new_len, prot);
        }
        if new_len <= old_len {
            // new_len <= old_len, and old + old_len did not overflow.
            for (s, e) in self.remove(old.saturating_add(new_len), old_end) {
                mem.discard(s, e);
            }
            return Ok(old);
        }
        let grow_end = old.checked_add(new_len).ok_or(errno::ENOMEM)?;
        if grow_end <= self.mmap_top && self.in_area(old_end, grow_end) && !self.overlaps(old_end, grow_end) {
            self.insert(old_end, grow_end, prot);
            return Ok(old);
        }
        if flags & MREMAP_MAYMOVE == 0 {
            return Err(errno::ENOMEM);
        }
        let target = self.find_free(new_len).ok_or(errno::ENOMEM)?;
        self.move_mapping(mem, deadline, old, old_len, target, new_len, prot)
    }

    #[allow(clippy::too_many_arguments)]
    fn move_mapping(
        &mut self,
        mem: &GuestMemory,
        deadline: &Deadline,
        old: u64,
        old_len: u64,
        to: u64,
        new_len: u64,
        prot: u8,
    ) -> Result<u64, i32> {
        // Bounded steps, so a move of gigabytes cannot outrun the timeout or an interrupt.
        const STEP: u64 = 64 << 20;
        let total = old_len.min(new_len);
        let mut done = 0u64;
        while done < total {
            if done > 0 && deadline.check().is_err() {
                return Err(errno::EINTR);
            }
            let n = total.saturating_sub(done).min(STEP);
            let (from, into) = old.checked_add(done).zip(to.checked_add(done)).ok_or(errno::EFAULT)?;
            mem.copy_within(from, into, n).map_err(|_| errno::EFAULT)?;
            done = done.saturating_add(n);
        }
        let (old_end, to_end) = old.checked_add(old_len).zip(to.checked_add(new_len)).ok_or(errno::EFAULT)?;
        for (s, e) in self.remove(old, old_end) {
            mem.discard(s, e);
        }
        self.insert(to, to_end, prot);
        Ok(to)
    }

    /// mprotect. As on Linux, a range with a hole fails with ENOMEM after the mappings before
    /// the hole got the new protection.
    pub fn mprotect(&mut self, addr: u64, len: u64, prot: u64) -> Result<u64, i32> {
        if !is_aligned(addr) || prot & !(PROT_READ | PROT_WRITE | PROT_EXEC | PROT_GROWSDOWN | PROT_GROWSUP) != 0 {
            return Err(errno::EINVAL);
        }
        let end = page_up(len).and_then(|l| addr.checked_add(l)).ok_or(errno::ENOMEM)?;
        if addr == end {
            return Ok(0);
        }
        let pieces = self.overlapping(addr, end);
        let mut covered = addr;
        let mut same = true;
        let rights = (prot & 7) as u8;
        for (s, v) in &pieces {
            if *s > covered {
                break;
            }
            covered = v.end.min(end);
            same &= v.prot == rights;
        }
        if covered == addr {
            return Err(errno::ENOMEM);
        }
        self.room_for(2)?;
        if !same {
            // One change: the pages are never unmapped in between.
            let mark = self.changed.len();
            self.remove(addr, covered);
            self.changed.truncate(mark);
            self.insert(addr, covered, rights);
        }
        if covered < end {
            return Err(errno::ENOMEM);
        }
        Ok(0)
    }

    pub fn madvise(&self, mem: &GuestMemory, addr: u64, len: u64, advice: u64) -> Result<u64, i32> {
        if !is_aligned(addr) {
            return Err(errno::EINVAL);
        }
        let end = page_up(len).and_then(|l| addr.checked_add(l)).ok_or(errno::EINVAL)?;
        if matches!(advice, MADV_DONTNEED | MADV_FREE | MADV_REMOVE) {
            // Anonymous private memory reads as zero after MADV_DONTNEED, a file mapping the file
            // again; only what is mapped in the heap area (never the ELF image or the stack).
            let (lo, hi) = (addr.max(self.brk_start), end.min(self.mmap_top));
            for (s, v) in if lo < hi { self.overlapping(lo, hi) } else { Vec::new() } {
                mem.dont_need(s.max(lo), v.end.min(hi));
            }
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deadline() -> Deadline {
        Deadline::after(None, crate::interrupt::InterruptHandle::default())
    }

    fn heap(layout: &Layout) -> Mappings {
        let text = Region { start: 0x40_0000, end: 0x40_1000, perm: Perm::USER_RX };
        Mappings::new(layout, &[text], 0x40_1000)
    }

    #[test]
    fn mmap_munmap_and_brk_share_the_area() {
        let layout = Layout::new(16 << 20);
        let mem = GuestMemory::new(16 << 20).unwrap();
        let mut m = heap(&layout);
        let top = layout.heap_limit();
        let a = m.mmap(&mem, 0, 0x1000, 3, MAP_PRIVATE | MAP_ANONYMOUS).unwrap();
        assert_eq!(a, top - 0x1000, "top-down");
        let b = m.mmap(&mem, 0, 0x2000, 3, MAP_PRIVATE | MAP_ANONYMOUS).unwrap();
        assert_eq!(b, top - 0x3000);
        mem.write(a, &[7; 16]).unwrap();
        m.munmap(&mem, a, 0x1000).unwrap();
        let again = m.mmap(&mem, 0, 0x1000, 3, MAP_PRIVATE | MAP_ANONYMOUS).unwrap();
        assert_eq!(again, a);
        let mut buf = [1u8; 16];
        mem.read(again, &mut buf).unwrap();
        assert_eq!(buf, [0; 16], "reused memory reads as zero");
        assert_eq!(m.brk(&mem, 0x40_5000), 0x40_5000);
        assert_eq!(m.brk(&mem, top - 0x2000), 0x40_5000, "brk cannot grow into a mapping");
        assert_eq!(m.mmap(&mem, 0, 0x100_0000, 3, MAP_PRIVATE | MAP_ANONYMOUS), Err(errno::ENOMEM));
        assert_eq!(m.mmap(&mem, 0x100, 0x1000, 3, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED), Err(errno::EINVAL));
    }

    #[test]
    fn mremap_grows_in_place_or_moves() {
        let layout = Layout::new(16 << 20);
        let mem = GuestMemory::new(16 << 20).unwrap();
        let mut m = heap(&layout);
        let a = m.mmap(&mem, 0, 0x1000, 3, MAP_PRIVATE | MAP_ANONYMOUS).unwrap();
        let _b = m.mmap(&mem, 0, 0x1000, 1, MAP_PRIVATE | MAP_ANONYMOUS).unwrap();
        mem.write(a, b"data").unwrap();
        assert_eq!(m.mremap(&mem, &deadline(), a, 0x1000, 0x3000, 0, 0), Err(errno::ENOMEM));
        let moved = m.mremap(&mem, &deadline(), a, 0x1000, 0x3000, MREMAP_MAYMOVE, 0).unwrap();
        assert_ne!(moved, a);
        let mut buf = [0u8; 4];
        mem.read(moved, &mut buf).unwrap();
        assert_eq!(&buf, b"data");
        assert!(m.is_mapped(moved + 0x2000) && !m.is_mapped(a));
    }

    #[test]
    fn rights_changes_are_recorded_in_order() {
        let layout = Layout::new(16 << 20);
        let mem = GuestMemory::new(16 << 20).unwrap();
        let mut m = heap(&layout);
        let a = m.mmap(&mem, 0, 0x3000, 3, MAP_PRIVATE | MAP_ANONYMOUS).unwrap();
        m.take_changes();
        // A guard page: mprotect(PROT_NONE) of the first page splits the mapping.
        assert_eq!(m.mprotect(a, 0x1000, 0), Ok(0));
        let changes = m.take_changes();
        assert_eq!(changes.last(), Some(&Region { start: a, end: a + 0x1000, perm: Perm::NONE }));
        assert!(m.is_mapped(a), "a PROT_NONE page is still mapped (SEGV_ACCERR)");
        assert_eq!(m.regions().iter().filter(|r| r.start >= a && r.end <= a + 0x3000).count(), 2);
        // Back to RW: the two pieces merge again.
        assert_eq!(m.mprotect(a, 0x1000, 3), Ok(0));
        assert_eq!(m.regions().iter().filter(|r| r.start >= a && r.end <= a + 0x3000).count(), 1);
        assert_eq!(m.take_changes().last().map(|r| r.perm), Some(Perm::USER_RW));
        // Unchanged protection records nothing; a gap in the range is ENOMEM.
        assert_eq!(m.mprotect(a, 0x3000, 3), Ok(0));
        assert!(m.take_changes().is_empty());
        // A hole: the pages before it change (as on Linux), then ENOMEM.
        assert_eq!(m.mprotect(a, 0x4000, 1), Err(errno::ENOMEM));
        assert_eq!(m.take_changes(), vec![Region { start: a, end: a + 0x3000, perm: Perm::user(false, false) }]);
        assert_eq!(m.mprotect(a + 0x3000, 0x1000, 1), Err(errno::ENOMEM));
        assert!(m.take_changes().is_empty());
        m.mprotect(a, 0x3000, 3).unwrap();
        m.take_changes();
        // The program text can be made writable (as a JIT or a relocating loader does).
        assert_eq!(m.mprotect(0x40_0000, 0x1000, 7), Ok(0));
        assert_eq!(m.take_changes(), vec![Region { start: 0x40_0000, end: 0x40_1000, perm: Perm::user(true, true) }]);
        // munmap records the pages as gone; brk growth and shrinking too.
        m.munmap(&mem, a, 0x3000).unwrap();
        assert_eq!(m.take_changes(), vec![Region { start: a, end: a + 0x3000, perm: Perm::NONE }]);
        assert!(!m.is_mapped(a));
        m.brk(&mem, 0x40_3000);
        assert_eq!(m.take_changes(), vec![Region { start: 0x40_1000, end: 0x40_3000, perm: Perm::USER_RW }]);
        m.brk(&mem, 0x40_2000);
        assert_eq!(m.take_changes(), vec![Region { start: 0x40_2000, end: 0x40_3000, perm: Perm::NONE }]);
    }
}

/// The mmap syscall: anonymous mappings, and private file mappings filled from the file.
mod calls {
    use std::os::fd::AsRawFd;

    use super::super::files::FdKind;
    use super::super::{err, errno, ret, Linux, SyscallEnv};
    use crate::error::Result;

    impl Linux {
        /// mmap. A file mapping is private: guest memory there is backed by a private host
        /// mapping of the file (its unchanged pages are the host page cache's, shared with every
        /// other machine mapping it; see `GuestMemory::map_file`), or where the host cannot map
        /// it, a copy of the file's bytes, made in bounded steps that stop at the run's deadline.
        pub(in crate::syscalls) fn mmap(&mut self, env: &SyscallEnv, a: [u64; 6]) -> Result<u64> {
            let (addr, len, prot, flags, fd, off) = (a[0], a[1], a[2], a[3], a[4] as i32, a[5]);
            const MAP_ANONYMOUS: u64 = 0x20;
            if flags & MAP_ANONYMOUS != 0 {
                return Ok(ret(self.mm.mmap(env.mem, addr, len, prot, flags)));
            }
            let mut memory_file = None;
            let host = match self.fds.get(fd as u64) {
                Some(FdKind::File { host, is_dir: false, .. }) => host.as_raw_fd(),
                Some(FdKind::Mem(d)) => {
                    let o = super::super::ipc::lock(d);
                    if self.fs.inode(o.ino).is_none_or(super::super::memfs::Inode::is_dir) {
                        return Ok(err(libc::ENODEV));
                    }
                    if o.path_only {
                        return Ok(err(errno::EBADF));
                    }
                    if !o.read {
                        return Ok(err(errno::EACCES));
                    }
                    // A shared writable mapping would need the file's bytes and guest memory to be
                    // one: not supported (a private or read-only one is a copy).
                    if flags & 0x3 == 0x1 && prot & 2 != 0 {
                        return Ok(err(libc::ENODEV));
                    }
                    let still_lower = self.fs.inode(o.ino).is_some_and(|n| matches!(n.data, super::super::memfs::Data::Lower { .. }));
                    match &o.lower {
                        Some(lower) if still_lower => lower.as_raw_fd(),
                        _ => {
                            memory_file = Some(o.ino);
                            -1
                        }
                    }
                }
                Some(_) => return Ok(err(errno::EACCES)),
                None => return Ok(err(errno::EBADF)),
            };
            // The offset is checked before anything is mapped (a MAP_FIXED mapping replaces what was
            // there): page-aligned, and off + len representable as a file offset.
            if off % 4096 != 0 {
                return Ok(err(errno::EINVAL));
            }
            let Some(file_off) = i64::try_from(off).ok().filter(|o| o.checked_add(i64::try_from(len).unwrap_or(i64::MAX)).is_some()) else {
                return Ok(err(errno::EOVERFLOW));
            };
            if flags & 0x3 != 0x2 && prot & 2 != 0 && memory_file.is_none() {
                return Ok(err(errno::EACCES)); // shared writable mapping of a read-only file
            }
            let start = match self.mm.mmap(env.mem, addr, len, prot, flags) {
                Ok(start) => start,
                Err(e) => return Ok(err(e)),
            };
            if let Some(ino) = memory_file {
                // An in-memory file's bytes are copied in through the recorded path (a reset
                // restores what was there), in bounded steps; past its end the mapping is zero.
                const STEP: usize = 16 << 20;
                let mut chunk = vec![0u8; STEP.min(len as usize)];
                let mut done = 0u64;
                while done < len {
                    if done > 0 {
                        env.deadline.check()?;
                    }
                    let want = len.saturating_sub(done).min(STEP as u64) as usize;
                    let got = self.fs.read_at(ino, off.saturating_add(done), &mut chunk[..want]).unwrap_or(0);
                    if got == 0 || env.mem.write(start.saturating_add(done), &chunk[..got]).is_err() {
                        break;
                    }
                    done = done.saturating_add(got as u64);
                }
                return Ok(start);
            }
            // SAFETY: fstat of the guest's open host file into a local struct.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            let size = if unsafe { libc::fstat(host, &mut st) } == 0 { st.st_size.max(0) as u64 } else { 0 };
            let whole = crate::layout::page_up(len).unwrap_or(len);
            let mut done = env.mem.map_file(start, whole, host, off, size);
            // Else the file's bytes go in through the recorded path (so a reset restores what was
            // there), 16 MiB at a time with the deadline checked in between; the rest of the
            // mapping past the end of the file reads as zero.
            const STEP: u64 = 16 << 20;
            while done < len {
                if done > 0 {
                    env.deadline.check()?;
                }
                let step = len.saturating_sub(done).min(STEP) as usize;
                let at = start.saturating_add(done);
                let pos = file_off.saturating_add(done as i64);
                let got = env
                    .mem
                    .write_with(at, step, |ptr, step| {
                        // SAFETY: pread into `[ptr, ptr+step)`, which write_with checked is guest memory.
                        let n = unsafe { libc::pread(host, ptr.cast(), step, pos) };
                        n.max(0).unsigned_abs()
                    })
                    .unwrap_or(0);
                done = done.saturating_add(got as u64);
                if got < step {
                    break; // end of file (or a read error: the rest stays zero)
                }
            }
            Ok(start)
        }
    }
}

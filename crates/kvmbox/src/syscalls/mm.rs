//! Memory-management syscalls over a pre-mapped address space.
//!
//! The guest page tables already map everything between the ELF image and the stack guard as
//! user read-write, so brk and mmap never touch page tables: they only hand out address
//! ranges, and freed ranges are given back to the host (reading as zero afterwards).
//! Limitation (documented): mprotect cannot change page rights, and PROT_EXEC mappings are
//! not executable (the heap is NX).

use std::collections::BTreeMap;

use crate::interrupt::Deadline;

use crate::layout::{page_up, PAGE_SIZE};
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

/// The heap side of the address space: brk area and anonymous mappings.
#[derive(Debug, Clone)]
pub struct Mappings {
    /// Lowest address usable by brk/mmap (page-aligned end of the ELF image).
    floor: u64,
    /// First address above the area (the stack guard).
    ceiling: u64,
    brk_start: u64,
    brk: u64,
    /// start → end of every live mapping (page-aligned, disjoint).
    maps: BTreeMap<u64, u64>,
}

/// Most mappings a process may have, as Linux's default `vm.max_map_count`: operations that
/// would go beyond it fail with ENOMEM, so the table — and every walk over it — stays bounded
/// whatever the guest does.
pub const MAX_MAPPINGS: usize = 65530;

fn is_aligned(x: u64) -> bool {
    x.is_multiple_of(PAGE_SIZE)
}

impl Mappings {
    pub fn new(image_end: u64, ceiling: u64) -> Mappings {
        Mappings { floor: image_end, ceiling, brk_start: image_end, brk: image_end, maps: BTreeMap::new() }
    }

    pub(crate) fn encode(&self, w: &mut crate::snapfile::Writer) {
        for v in [self.floor, self.ceiling, self.brk_start, self.brk] {
            w.u64(v);
        }
        w.u64(self.maps.len() as u64);
        for (&s, &e) in &self.maps {
            w.u64(s);
            w.u64(e);
        }
    }

    /// Decode and check against the layout it must fit (`ceiling` is the stack guard).
    pub(crate) fn decode(r: &mut crate::snapfile::Reader, ceiling: u64) -> crate::error::Result<Mappings> {
        let bad = || crate::error::Error::InvalidArgument("invalid snapshot file: inconsistent memory map".into());
        let (floor, ceil, brk_start, brk) = (r.u64()?, r.u64()?, r.u64()?, r.u64()?);
        if ceil != ceiling
            || !is_aligned(floor)
            || floor < crate::layout::USER_MIN
            || floor > ceil
            || brk_start != floor
            || brk < brk_start
            || brk > ceil
        {
            return Err(bad());
        }
        let n = r.count(16)?;
        let mut maps = BTreeMap::new();
        let mut last = floor;
        for _ in 0..n {
            let (s, e) = (r.u64()?, r.u64()?);
            if !is_aligned(s) || !is_aligned(e) || s < last || e <= s || e > ceil {
                return Err(bad());
            }
            maps.insert(s, e);
            last = e;
        }
        Ok(Mappings { floor, ceiling: ceil, brk_start, brk, maps })
    }

    /// Bytes of address space still unallocated (for sysinfo's freeram).
    pub fn free_bytes(&self) -> u64 {
        let mapped = self.maps.iter().fold(0u64, |sum, (s, e)| sum.saturating_add(e.saturating_sub(*s)));
        let heap = page_up(self.brk).unwrap_or(self.brk).saturating_sub(self.brk_start);
        self.ceiling.saturating_sub(self.floor).saturating_sub(mapped.saturating_add(heap))
    }

    fn overlaps(&self, start: u64, end: u64) -> bool {
        if start < page_up(self.brk).unwrap_or(u64::MAX) && end > self.brk_start {
            return true;
        }
        self.maps.range(..end).next_back().is_some_and(|(_, &e)| e > start)
    }

    fn insert(&mut self, start: u64, end: u64) {
        self.maps.insert(start, end);
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
    fn overlapping(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let before = self.maps.range(..start).next_back().filter(|(_, &e)| e > start);
        before.into_iter().chain(self.maps.range(start..end)).map(|(&s, &e)| (s, e)).collect()
    }

    /// Remove `[start, end)` from the mapping set, splitting mappings as needed.
    /// Returns the sub-ranges that were actually mapped (to be discarded).
    fn remove(&mut self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut removed = Vec::new();
        for (s, e) in self.overlapping(start, end) {
            self.maps.remove(&s);
            if s < start {
                self.maps.insert(s, start);
            }
            if e > end {
                self.maps.insert(end, e);
            }
            removed.push((s.max(start), e.min(end)));
        }
        removed
    }

    /// Highest free gap of `len` bytes between the brk and the ceiling.
    fn find_free(&self, len: u64) -> Option<u64> {
        let low = page_up(self.brk).unwrap_or(u64::MAX);
        let mut top = self.ceiling;
        for (&s, &e) in self.maps.iter().rev() {
            // A gap [e, top) that holds len bytes, above the brk.
            if let Some(start) = top.checked_sub(len).filter(|&start| start >= e && start >= low) {
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
        let old_end = page_up(self.brk).unwrap();
        if new_end > self.ceiling {
            return self.brk;
        }
        if new_end > old_end && self.maps.range(..new_end).next_back().is_some_and(|(_, &e)| e > old_end) {
            return self.brk; // would run into a mapping
        }
        if new_end < old_end {
            mem.discard(new_end, old_end);
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
            // Memory inside the brk area that is mapped over must read as zero too.
            let brk_end = page_up(self.brk).unwrap_or(self.ceiling);
            if addr < brk_end && end > self.brk_start {
                mem.discard(addr.max(self.brk_start), end.min(brk_end));
            }
            self.insert(addr, end);
            return Ok(addr);
        }
        self.room_for(1)?;
        if addr != 0 && is_aligned(addr) {
            if let Some(end) = addr.checked_add(len) {
                if self.in_area(addr, end) && !self.overlaps(addr, end) {
                    self.insert(addr, end);
                    return Ok(addr);
                }
            }
        }
        let start = self.find_free(len).ok_or(errno::ENOMEM)?;
        self.insert(start, start.checked_add(len).ok_or(errno::ENOMEM)?);
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
        // The old range must be exactly inside one mapping.
        match self.maps.range(..=old).next_back() {
            Some((_, &e)) if e >= old_end => {}
            _ => return Err(errno::EFAULT),
        }
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
            return self.move_mapping(mem, deadline, old, old_len, new_addr, new_len);
        }
        if new_len <= old_len {
            // new_len <= old_len, and old + old_len did not overflow.
            for (s, e) in self.remove(old.saturating_add(new_len), old_end) {
                mem.discard(s, e);
            }
            return Ok(old);
        }
        let grow_end = old.checked_add(new_len).ok_or(errno::ENOMEM)?;
        if self.in_area(old_end, grow_end) && !self.overlaps(old_end, grow_end) {
            self.insert(old_end, grow_end);
            self.merge_around(old_end);
            return Ok(old);
        }
        if flags & MREMAP_MAYMOVE == 0 {
            return Err(errno::ENOMEM);
        }
        let target = self.find_free(new_len).ok_or(errno::ENOMEM)?;
        self.move_mapping(mem, deadline, old, old_len, target, new_len)
    }

    fn move_mapping(&mut self, mem: &GuestMemory, deadline: &Deadline, old: u64, old_len: u64, to: u64, new_len: u64) -> Result<u64, i32> {
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
        self.insert(to, to_end);
        Ok(to)
    }

    /// Join the mapping that starts at `at` with the one that ends there, if any (a mapping
    /// grown in place stays one entry; only the neighbours are touched, not the whole table).
    fn merge_around(&mut self, at: u64) {
        let Some(end) = self.maps.get(&at).copied() else { return };
        if let Some((&s, &e)) = self.maps.range(..at).next_back() {
            if e == at {
                self.maps.remove(&at);
                self.maps.insert(s, end);
            }
        }
    }

    pub fn mprotect(&self, addr: u64, len: u64, prot: u64) -> Result<u64, i32> {
        if !is_aligned(addr) || prot & !(PROT_READ | PROT_WRITE | PROT_EXEC | PROT_GROWSDOWN | PROT_GROWSUP) != 0 {
            return Err(errno::EINVAL);
        }
        addr.checked_add(len).ok_or(errno::ENOMEM)?;
        // Page rights are fixed at creation (see the module comment).
        Ok(0)
    }

    pub fn madvise(&self, mem: &GuestMemory, addr: u64, len: u64, advice: u64) -> Result<u64, i32> {
        if !is_aligned(addr) {
            return Err(errno::EINVAL);
        }
        let end = page_up(len).and_then(|l| addr.checked_add(l)).ok_or(errno::EINVAL)?;
        if matches!(advice, MADV_DONTNEED | MADV_FREE | MADV_REMOVE) {
            // Anonymous private memory reads as zero after MADV_DONTNEED; discard only what is
            // mapped (never the ELF image or the stack).
            for (s, e) in self.overlapping(addr, end) {
                mem.discard(s.max(addr), e.min(end));
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

    #[test]
    fn mmap_munmap_and_brk_share_the_area() {
        let mem = GuestMemory::new(16 << 20).unwrap();
        let mut m = Mappings::new(0x40_0000, 0x80_0000);
        let a = m.mmap(&mem, 0, 0x1000, 3, MAP_PRIVATE | MAP_ANONYMOUS).unwrap();
        assert_eq!(a, 0x7f_f000, "top-down");
        let b = m.mmap(&mem, 0, 0x2000, 3, MAP_PRIVATE | MAP_ANONYMOUS).unwrap();
        assert_eq!(b, 0x7f_d000);
        mem.write(a, &[7; 16]).unwrap();
        m.munmap(&mem, a, 0x1000).unwrap();
        let again = m.mmap(&mem, 0, 0x1000, 3, MAP_PRIVATE | MAP_ANONYMOUS).unwrap();
        assert_eq!(again, a);
        let mut buf = [1u8; 16];
        mem.read(again, &mut buf).unwrap();
        assert_eq!(buf, [0; 16], "reused memory reads as zero");
        assert_eq!(m.brk(&mem, 0x40_5000), 0x40_5000);
        assert_eq!(m.brk(&mem, 0x7f_e000), 0x40_5000, "brk cannot grow into a mapping");
        assert_eq!(m.mmap(&mem, 0, 0x100_0000, 3, MAP_PRIVATE | MAP_ANONYMOUS), Err(errno::ENOMEM));
        assert_eq!(m.mmap(&mem, 0x100, 0x1000, 3, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED), Err(errno::EINVAL));
    }

    #[test]
    fn mremap_grows_in_place_or_moves() {
        let mem = GuestMemory::new(16 << 20).unwrap();
        let mut m = Mappings::new(0x40_0000, 0x80_0000);
        let a = m.mmap(&mem, 0, 0x1000, 3, MAP_PRIVATE | MAP_ANONYMOUS).unwrap();
        let _b = m.mmap(&mem, 0, 0x1000, 3, MAP_PRIVATE | MAP_ANONYMOUS).unwrap();
        mem.write(a, b"data").unwrap();
        assert_eq!(m.mremap(&mem, &deadline(), a, 0x1000, 0x3000, 0, 0), Err(errno::ENOMEM));
        let moved = m.mremap(&mem, &deadline(), a, 0x1000, 0x3000, MREMAP_MAYMOVE, 0).unwrap();
        assert_ne!(moved, a);
        let mut buf = [0u8; 4];
        mem.read(moved, &mut buf).unwrap();
        assert_eq!(&buf, b"data");
    }
}

/// The mmap syscall: anonymous mappings, and private file mappings filled from the file.
mod calls {
    use std::os::fd::AsRawFd;

    use super::super::files::FdKind;
    use super::super::{err, errno, ret, Linux, SyscallEnv};
    use crate::error::Result;

    impl Linux {
        /// mmap. A private file mapping is emulated by copying the file's bytes in, in bounded
        /// steps that stop at the run's deadline.
        pub(in crate::syscalls) fn mmap(&mut self, env: &SyscallEnv, a: [u64; 6]) -> Result<u64> {
            let (addr, len, prot, flags, fd, off) = (a[0], a[1], a[2], a[3], a[4] as i32, a[5]);
            const MAP_ANONYMOUS: u64 = 0x20;
            if flags & MAP_ANONYMOUS != 0 {
                return Ok(ret(self.mm.mmap(env.mem, addr, len, prot, flags)));
            }
            let host = match self.fds.get(fd as u64) {
                Some(FdKind::File { host, is_dir: false, .. }) => host.as_raw_fd(),
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
            if flags & 0x3 != 0x2 && prot & 2 != 0 {
                return Ok(err(errno::EACCES)); // shared writable mapping of a read-only file
            }
            let start = match self.mm.mmap(env.mem, addr, len, prot, flags) {
                Ok(start) => start,
                Err(e) => return Ok(err(e)),
            };
            // The file's bytes go in through the recorded path (so a reset restores what was there),
            // 16 MiB at a time with the deadline checked in between; the rest of the mapping past
            // the end of the file reads as zero.
            const STEP: u64 = 16 << 20;
            let mut done = 0u64;
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

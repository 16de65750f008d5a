//! Guest RAM: one memfd-backed, MAP_NORESERVE mapping (so untouched memory costs nothing and a
//! snapshot can map the same file copy-on-write), wrapped in vm-memory's bounds-checked
//! region, plus [`UserMemory`], the only way syscall emulation touches guest memory.
//!
//! A machine's memory is either *shared* (MAP_SHARED: the memfd is its memory; freed pages are
//! punched out of it) or *private* (MAP_PRIVATE over a snapshot's memfd: writes land in private
//! copy-on-write pages and the memfd is never modified). Private memory records every page the
//! host writes (syscall emulation, embedder writes), because the KVM dirty log only sees the
//! guest's own writes and a reset must restore both.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use vm_memory::bitmap::BitmapSlice;
use vm_memory::mmap::MmapRegion;
use vm_memory::{Bytes, VolatileMemory, VolatileSlice};

use crate::error::{Error, Result};
use crate::layout::{page_down, page_up, AddressSpace, PAGE_SIZE};

/// Most file-backed ranges one machine's memory has (see [`GuestMemory::map_file`]).
const MAX_FILE_MAPPINGS: usize = 1024;

/// A snapshot image a private mapping is made of: its memfd and the ranges of it holding data.
type ImageBacking = (File, Vec<(u64, u64)>);

/// A machine's address space, shared with the memory views it hands out: mmap, munmap,
/// mprotect and brk change it (on the vCPU thread, between guest instructions), and every
/// checked access reads it.
pub type SharedSpace = Arc<std::sync::RwLock<AddressSpace>>;

/// The address space as it is now (a poisoned lock still holds a consistent list: every
/// change is one `AddressSpace::set`).
pub fn read_space(space: &SharedSpace) -> std::sync::RwLockReadGuard<'_, AddressSpace> {
    space.read().unwrap_or_else(|e| e.into_inner())
}

/// The address space, to change it.
pub fn write_space(space: &SharedSpace) -> std::sync::RwLockWriteGuard<'_, AddressSpace> {
    space.write().unwrap_or_else(|e| e.into_inner())
}

/// Guest physical memory starting at guest address 0.
pub struct GuestMemory {
    /// The mapping. Shared memory: the memfd is its file offset. Private memory: anonymous
    /// (so never-written pages are plain zero pages, and touching them does not allocate pages
    /// in the snapshot's file) with the snapshot's data extents mapped privately over it.
    region: MmapRegion<()>,
    /// The snapshot image a private mapping is made of, and the ranges of it that hold data
    /// (mapped over the anonymous base; everything else is anonymous underneath).
    image: std::sync::Mutex<Option<ImageBacking>>,
    size: u64,
    /// MAP_PRIVATE over a snapshot's memfd (never write the memfd itself then).
    private: AtomicBool,
    /// One bit per page the host wrote since the last reset (private memory only).
    host_dirty: DirtyPages,
    /// Ranges (start → end, page-aligned) backed by a private mapping of a host file instead
    /// (see [`GuestMemory::map_file`]).
    overlays: std::sync::Mutex<BTreeMap<u64, u64>>,
}

/// Which huge pages back a machine's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HugePages {
    /// 4 KiB pages.
    None,
    /// Transparent huge pages (MADV_HUGEPAGE), used where the kernel can assemble them.
    Transparent,
    /// Reserved hugetlbfs pages (MAP_HUGETLB).
    Hugetlb,
}

/// A guest memory access outside what the guest itself may touch (a syscall gets EFAULT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Efault;

impl std::fmt::Display for Efault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bad guest address (not accessible to the guest)")
    }
}

/// A shareable, checked view of a machine's guest memory for embedders: reads and writes
/// are allowed exactly where the guest program itself may read and write. Only use it while
/// the guest is stopped (paused, or inside a host call), like any debugger would.
#[derive(Clone)]
pub struct MemoryView {
    mem: Arc<GuestMemory>,
    space: SharedSpace,
}

impl MemoryView {
    pub(crate) fn new(mem: Arc<GuestMemory>, space: SharedSpace) -> Self {
        MemoryView { mem, space }
    }

    /// Read `len` bytes the guest may read.
    pub fn read(&self, addr: u64, len: u64) -> std::result::Result<Vec<u8>, Efault> {
        UserMemory { mem: &self.mem, space: &read_space(&self.space) }.read_vec(addr, len)
    }

    /// Write where the guest may write.
    pub fn write(&self, addr: u64, data: &[u8]) -> std::result::Result<(), Efault> {
        UserMemory { mem: &self.mem, space: &read_space(&self.space) }.write(addr, data)
    }

    /// A NUL-terminated string of at most `max` bytes; `None` if no NUL within `max`.
    pub fn read_cstring(&self, addr: u64, max: usize) -> std::result::Result<Option<Vec<u8>>, Efault> {
        UserMemory { mem: &self.mem, space: &read_space(&self.space) }.read_cstring(addr, max)
    }

    /// Guest memory size in bytes.
    pub fn size(&self) -> u64 {
        self.mem.size()
    }

    /// A handle that does not keep the memory alive (see [`WeakMemoryView`]).
    pub fn downgrade(&self) -> WeakMemoryView {
        WeakMemoryView { mem: Arc::downgrade(&self.mem), space: Arc::downgrade(&self.space) }
    }
}

/// A [`MemoryView`] that lets the machine release its memory when it finishes; `upgrade`
/// returns `None` afterwards.
#[derive(Clone)]
pub struct WeakMemoryView {
    mem: std::sync::Weak<GuestMemory>,
    space: std::sync::Weak<std::sync::RwLock<AddressSpace>>,
}

impl WeakMemoryView {
    /// The view, if the memory still exists.
    pub fn upgrade(&self) -> Option<MemoryView> {
        Some(MemoryView { mem: self.mem.upgrade()?, space: self.space.upgrade()? })
    }
}

impl GuestMemory {
    pub fn new(size: u64) -> Result<GuestMemory> {
        Self::shared(new_memfd(size)?, size)
    }

    /// Shared memory over `file`: the memfd is the memory.
    fn shared(file: File, size: u64) -> Result<GuestMemory> {
        let region = MmapRegion::build(
            Some(vm_memory::FileOffset::new(file, 0)),
            size as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_NORESERVE,
        )
        .map_err(|e| Error::OutOfMemory(format!("mapping {size} bytes of guest memory: {e}")))?;
        dont_fork(region.as_ptr(), size);
        Ok(GuestMemory {
            region,
            image: std::sync::Mutex::new(None),
            size,
            private: AtomicBool::new(false),
            host_dirty: dirty_bitmap(size),
            overlays: std::sync::Mutex::new(BTreeMap::new()),
        })
    }

    /// Anonymous memory backed by huge pages: hugetlbfs pages when the host has reserved some
    /// (MAP_HUGETLB), else transparent huge pages (MADV_HUGEPAGE). Huge pages need anonymous
    /// memory here (THP for shared memory is usually disabled), so a snapshot of it copies the
    /// contents into a memfd image first. Returns the memory and which kind of huge pages it got.
    pub fn new_huge(size: u64) -> Result<(GuestMemory, HugePages)> {
        let anon = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        // No MAP_NORESERVE for hugetlbfs: the whole size is reserved up front, so a host
        // without enough reserved huge pages fails here (and falls back) instead of raising
        // SIGBUS on a later touch.
        let (region, kind) = match MmapRegion::build(None, size as usize, libc::PROT_READ | libc::PROT_WRITE, anon | libc::MAP_HUGETLB) {
            Ok(r) => (r, HugePages::Hugetlb),
            Err(_) => {
                let r = MmapRegion::build(None, size as usize, libc::PROT_READ | libc::PROT_WRITE, anon | libc::MAP_NORESERVE)
                    .map_err(|e| Error::OutOfMemory(format!("mapping {size} bytes of guest memory: {e}")))?;
                // SAFETY: advice on our own mapping.
                let ok = unsafe { libc::madvise(r.as_ptr().cast(), size as usize, libc::MADV_HUGEPAGE) } == 0;
                (r, if ok { HugePages::Transparent } else { HugePages::None })
            }
        };
        dont_fork(region.as_ptr(), size);
        Ok((
            GuestMemory {
                region,
                image: std::sync::Mutex::new(None),
                size,
                private: AtomicBool::new(true),
                host_dirty: dirty_bitmap(size),
                overlays: std::sync::Mutex::new(BTreeMap::new()),
            },
            kind,
        ))
    }

    /// Bytes of this memory currently backed by huge pages (from /proc/self/smaps).
    pub fn huge_bytes(&self) -> u64 {
        let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else { return 0 };
        let (lo, hi) = (self.host_base() as u64, self.host_base() as u64 + self.size);
        let mut inside = false;
        let mut total = 0;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((a, b)) = range.split_once('-') {
                    if let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                        inside = a >= lo && b <= hi;
                        continue;
                    }
                }
            }
            if !inside {
                continue;
            }
            let mut parts = line.split_whitespace();
            let key = parts.next().unwrap_or("");
            let kb: u64 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            if matches!(key, "AnonHugePages:" | "ShmemPmdMapped:" | "FilePmdMapped:" | "Private_Hugetlb:" | "Shared_Hugetlb:") {
                total += kb * 1024;
            }
        }
        total
    }

    /// A shared mapping of an existing memfd (used to fix up a loaded snapshot image).
    pub fn shared_over(memfd: &File, size: u64) -> Result<GuestMemory> {
        Self::shared(memfd.try_clone().map_err(|e| Error::OutOfMemory(format!("dup of snapshot memory: {e}")))?, size)
    }

    /// Copy-on-write memory over a snapshot's memfd, whose data lies in `extents` (see
    /// [`data_extents`]): reads see the snapshot, writes stay here.
    pub fn private_over(memfd: &File, size: u64, extents: &[(u64, u64)]) -> Result<GuestMemory> {
        let region = MmapRegion::build(
            None,
            size as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        )
        .map_err(|e| Error::OutOfMemory(format!("mapping {size} bytes of guest memory: {e}")))?;
        let mem = GuestMemory {
            region,
            image: std::sync::Mutex::new(None),
            size,
            private: AtomicBool::new(true),
            host_dirty: dirty_bitmap(size),
            overlays: std::sync::Mutex::new(BTreeMap::new()),
        };
        mem.map_image(memfd, extents)?;
        Ok(mem)
    }

    /// Replace `[start, end)` of this memory's host mapping, in place, with a new mapping:
    /// `share` (MAP_SHARED or MAP_PRIVATE) of `fd` from `offset`, or anonymous memory when
    /// `fd` is -1. The one place guest memory is remapped; KVM's MMU notifier drops the
    /// guest's translations of the old pages. False if the host refused.
    fn map_over(&self, start: u64, end: u64, share: i32, fd: RawFd, offset: u64) -> bool {
        let end = end.min(self.size);
        if start >= end || i64::try_from(offset).is_err() {
            return false;
        }
        let anonymous = if fd < 0 { libc::MAP_ANONYMOUS } else { 0 };
        // SAFETY: whole pages inside our own mapping (start < end ≤ size) are replaced in
        // place; nothing else refers to them but the guest, which is stopped.
        let addr = unsafe {
            libc::mmap(
                self.host_base().add(start as usize).cast(),
                (end - start) as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                share | anonymous | libc::MAP_FIXED | libc::MAP_NORESERVE,
                fd,
                offset as i64,
            )
        };
        addr != libc::MAP_FAILED
    }

    /// Map the data extents of `memfd` privately over this (anonymous) mapping.
    fn map_image(&self, memfd: &File, extents: &[(u64, u64)]) -> Result<()> {
        for &(start, end) in extents {
            if !self.map_over(start, end, libc::MAP_PRIVATE, memfd.as_raw_fd(), start) {
                return Err(Error::OutOfMemory(format!("mapping the snapshot image: {}", std::io::Error::last_os_error())));
            }
        }
        dont_fork(self.host_base(), self.size);
        let file = memfd.try_clone().map_err(|e| Error::OutOfMemory(format!("dup of snapshot memory: {e}")))?;
        *self.image.lock().unwrap_or_else(|e| e.into_inner()) = Some((file, extents.to_vec()));
        Ok(())
    }

    /// Turn this memory into a snapshot image: return a memfd holding its current contents
    /// (from now on immutable) and keep running on a private copy-on-write mapping of it at
    /// the same address. Shared memory hands over its own memfd; private memory (a fork)
    /// first writes its contents — the snapshot it maps plus its private pages — to a new one.
    /// Returns the memfd and its data extents (see [`data_extents`]).
    pub fn freeze(&self) -> Result<(File, Vec<(u64, u64)>)> {
        let file = if self.is_private() {
            self.materialize()?
        } else {
            // File-backed ranges are not in the memfd: their current contents go there first.
            let file = self.backing_file()?;
            for (start, end) in self.overlay_list() {
                write_to(&file, self.host_base(), start, end)?;
            }
            file
        };
        let extents = data_extents(&file, self.size);
        self.remap_private(&file, &extents)?;
        Ok((file, extents))
    }

    /// A new memfd with this memory's current contents, written sparsely: only the extents
    /// with data in the backing memfd and the pages private to this mapping.
    fn materialize(&self) -> Result<File> {
        let file = new_memfd(self.size)?;
        let base = self.host_base();
        let write_range = |start: u64, end: u64| write_to(&file, base, start, end);
        // Anonymous memory (hugepages) has no image; a fork's image holds the snapshot's data.
        if let Ok(image) = self.backing_file() {
            for (start, end) in data_extents(&image, self.size) {
                write_range(start, end)?;
            }
        }
        for page in self.private_page_list() {
            write_range(page * PAGE_SIZE, (page + 1) * PAGE_SIZE)?;
        }
        // File-backed ranges: their pages the guest never wrote are the file's, not private.
        for (start, end) in self.overlay_list() {
            write_range(start, end)?;
        }
        Ok(file)
    }

    /// Map `memfd` (a snapshot image of the same size, data in `extents`) privately in place
    /// of this memory.
    pub fn remap_private(&self, memfd: &File, extents: &[(u64, u64)]) -> Result<()> {
        // Fresh anonymous zero pages first, then the image's data over them.
        if !self.map_over(0, self.size, libc::MAP_PRIVATE, -1, 0) {
            return Err(Error::OutOfMemory(format!("remapping guest memory: {}", std::io::Error::last_os_error())));
        }
        self.map_image(memfd, extents)?;
        self.private.store(true, Ordering::SeqCst);
        self.clear_host_dirty();
        self.overlays.lock().unwrap_or_else(|e| e.into_inner()).clear();
        Ok(())
    }

    /// Back `[gpa, gpa+len)` (page-aligned) with a private mapping of host file `fd` from
    /// `offset` (page-aligned), as far as the file reaches (`file_size`): the guest reads the
    /// file's pages from the host's page cache — shared with every other machine and process
    /// that maps the file — and its writes go to private copies. Returns the bytes so mapped
    /// (0 if the host refused; the caller then copies). The range counts as written by the host
    /// (a reset puts the snapshot's contents back).
    pub fn map_file(&self, gpa: u64, len: u64, fd: RawFd, offset: u64, file_size: u64) -> u64 {
        // Each one is a host mapping of its own (and splits the guest memory's): beyond this
        // many the file is copied, so a guest cannot use up the host process's map count.
        if self.overlays.lock().unwrap_or_else(|e| e.into_inner()).len() >= MAX_FILE_MAPPINGS {
            return 0;
        }
        let len = len.min(page_up(file_size.saturating_sub(offset)).unwrap_or(0));
        let Some(end) = gpa.checked_add(len).filter(|&e| e <= self.size) else { return 0 };
        if len == 0 || !gpa.is_multiple_of(PAGE_SIZE) || !offset.is_multiple_of(PAGE_SIZE) || i64::try_from(offset).is_err() {
            return 0;
        }
        self.unmap_overlays(gpa, end);
        if !self.map_over(gpa, end, libc::MAP_PRIVATE, fd, offset) {
            // MAP_FIXED failed: the old mapping may be gone; put the normal backing back.
            self.restore_backing(gpa, end);
            return 0;
        }
        // SAFETY: an address inside our own mapping.
        dont_fork(unsafe { self.host_base().add(gpa as usize) }, len);
        self.mark_dirty(gpa, len);
        self.overlays.lock().unwrap_or_else(|e| e.into_inner()).insert(gpa, end);
        len
    }

    /// The file-backed ranges, sorted.
    fn overlay_list(&self) -> Vec<(u64, u64)> {
        self.overlays.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(&s, &e)| (s, e)).collect()
    }

    /// Put the memory's own backing back under the whole pages of `[start, end)` that a file
    /// backs (cutting file-backed ranges where the range ends inside them).
    fn unmap_overlays(&self, start: u64, end: u64) {
        let (start, end) = (page_up(start).unwrap_or(end), page_down(end));
        if start >= end {
            return;
        }
        let hits: Vec<(u64, u64)> = {
            let mut overlays = self.overlays.lock().unwrap_or_else(|e| e.into_inner());
            // The one that starts before `start` and reaches into it, then those inside.
            let before = overlays.range(..start).next_back().filter(|(_, &e)| e > start).map(|(&s, &e)| (s, e));
            let hits: Vec<(u64, u64)> = before.into_iter().chain(overlays.range(start..end).map(|(&s, &e)| (s, e))).collect();
            for &(s, e) in &hits {
                overlays.remove(&s);
                if s < start {
                    overlays.insert(s, start);
                }
                if e > end {
                    overlays.insert(end, e);
                }
            }
            hits
        };
        for (s, e) in hits {
            self.restore_backing(s.max(start), e.min(end));
        }
    }

    /// Drop every file-backed range (a reset: the snapshot's contents are copied back into
    /// the memory's own backing).
    pub fn unmap_all_overlays(&self) {
        self.unmap_overlays(0, self.size);
    }

    /// Map the memory's own backing over `[start, end)` again: the memfd (shared memory), or
    /// anonymous memory with the snapshot image's data over it (private memory).
    fn restore_backing(&self, start: u64, end: u64) {
        if !self.is_private() {
            self.map_over(start, end, libc::MAP_SHARED, self.memfd(), start);
        } else {
            self.map_over(start, end, libc::MAP_PRIVATE, -1, 0);
            let image = self.image.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((file, extents)) = &*image {
                for &(s, e) in extents {
                    let (s, e) = (s.max(start), e.min(end));
                    if s < e {
                        self.map_over(s, e, libc::MAP_PRIVATE, file.as_raw_fd(), s);
                    }
                }
            }
        }
        // SAFETY: an address inside our own mapping.
        dont_fork(unsafe { self.host_base().add(start as usize) }, end - start);
    }

    /// A new descriptor of the memfd behind this memory (its own, or the image it maps).
    pub fn backing_file(&self) -> Result<File> {
        if let Some((f, _)) = &*self.image.lock().unwrap_or_else(|e| e.into_inner()) {
            return f.try_clone().map_err(|e| Error::kvm("dup memfd", e));
        }
        let f = self.region.file_offset().ok_or_else(|| Error::Internal("guest memory has no backing file".into()))?;
        f.file().try_clone().map_err(|e| Error::kvm("dup memfd", e))
    }

    /// Pages of this mapping that are private to it (copy-on-write copies, or for shared
    /// memory, resident pages), counted from /proc/self/pagemap.
    pub fn private_pages(&self) -> u64 {
        self.private_page_list().len() as u64
    }

    fn private_page_list(&self) -> Vec<u64> {
        use std::io::{Read, Seek, SeekFrom};
        let mut list = Vec::new();
        let Ok(mut f) = File::open("/proc/self/pagemap") else { return list };
        let first = self.host_base() as u64 / PAGE_SIZE;
        let pages = self.size / PAGE_SIZE;
        let private = self.is_private();
        // A file-backed range's pages the guest never wrote are the host page cache's (shared).
        // Pages are visited in order, so one cursor walks the sorted ranges along.
        let overlays = self.overlay_list();
        let mut cursor = 0usize;
        let mut in_overlay = |page: u64| {
            let at = page * PAGE_SIZE;
            while cursor < overlays.len() && overlays[cursor].1 <= at {
                cursor += 1;
            }
            overlays.get(cursor).is_some_and(|&(s, _)| s <= at)
        };
        let mut buf = vec![0u8; 8 * 4096];
        let mut done = 0;
        while done < pages {
            let n = (pages - done).min(4096);
            if f.seek(SeekFrom::Start((first + done) * 8)).is_err() || f.read_exact(&mut buf[..(n * 8) as usize]).is_err() {
                return list;
            }
            for (i, e) in buf[..(n * 8) as usize].chunks_exact(8).enumerate() {
                let e = u64::from_le_bytes(e.try_into().unwrap());
                let present = e & (1 << 63) != 0;
                let file_or_shared = e & (1 << 61) != 0;
                let page = done + i as u64;
                // Private memory: copies (anonymous); shared: every page of the memfd, but not a
                // file-backed range's pages the guest never wrote.
                let counted = if private { !file_or_shared } else { !file_or_shared || !in_overlay(page) };
                if present && counted {
                    list.push(page);
                }
            }
            done += n;
        }
        list
    }

    pub fn is_private(&self) -> bool {
        self.private.load(Ordering::Relaxed)
    }

    /// Record that the host wrote `[start, start+len)`.
    pub fn mark_dirty(&self, start: u64, len: u64) {
        if len == 0 || !self.is_private() {
            return;
        }
        let first = start / PAGE_SIZE;
        let last = (start + len - 1).min(self.size - 1) / PAGE_SIZE;
        for page in first..=last {
            self.host_dirty.mark(page);
        }
    }

    /// Record every page set in `bitmap` as written by the host (a reset that could not finish
    /// keeps what it still has to restore).
    pub fn record_dirty(&self, bitmap: &[u64]) {
        for (i, &w) in bitmap.iter().enumerate().filter(|(_, w)| **w != 0) {
            self.host_dirty.mark_word(i, w);
        }
    }

    /// Forget which pages the host wrote.
    pub fn clear_host_dirty(&self) {
        let mut scratch = vec![0u64; self.host_dirty.words.len()];
        self.host_dirty.take_into(&mut scratch);
    }

    /// OR the pages the host wrote since the last call into `bitmap` (one bit per page),
    /// clearing the record.
    pub fn take_host_dirty_into(&self, bitmap: &mut [u64]) {
        self.host_dirty.take_into(bitmap);
    }

    /// Restore the pages set in `bitmap` to the snapshot: copied from `source` (its image)
    /// where `data` says the image holds data, zero-filled elsewhere (reading holes of the
    /// image would allocate pages in it). Returns how many pages were restored.
    pub fn restore_pages(&self, bitmap: &[u64], source: &[u8], data: &[u64]) -> usize {
        let mut restored = 0;
        let base = self.host_base();
        for (w, &word) in bitmap.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let page = w as u64 * 64 + bits.trailing_zeros() as u64;
                bits &= bits - 1;
                let off = (page * PAGE_SIZE) as usize;
                if off + PAGE_SIZE as usize > source.len() {
                    continue;
                }
                let has_data = data.get(w).is_some_and(|d| d & (1 << (page % 64)) != 0);
                // SAFETY: `off` is a page inside both mappings (same size); the vCPU is stopped.
                unsafe {
                    if has_data {
                        std::ptr::copy_nonoverlapping(source.as_ptr().add(off), base.add(off), PAGE_SIZE as usize)
                    } else {
                        std::ptr::write_bytes(base.add(off), 0, PAGE_SIZE as usize)
                    }
                };
                restored += 1;
            }
        }
        restored
    }

    /// Give the private copies of the pages in `bitmap` back (MADV_DONTNEED): they read as the
    /// snapshot again, faulting in on next use. Returns how many pages were dropped.
    pub fn drop_pages(&self, bitmap: &[u64]) -> usize {
        let mut dropped = 0;
        let base = self.host_base();
        let mut run: Option<(u64, u64)> = None;
        let flush = |run: Option<(u64, u64)>| {
            if let Some((first, n)) = run {
                // SAFETY: a page-aligned range inside our private mapping.
                unsafe { libc::madvise(base.add((first * PAGE_SIZE) as usize).cast(), (n * PAGE_SIZE) as usize, libc::MADV_DONTNEED) };
            }
        };
        for (w, &word) in bitmap.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let page = w as u64 * 64 + bits.trailing_zeros() as u64;
                bits &= bits - 1;
                dropped += 1;
                run = match run {
                    Some((first, n)) if first + n == page => Some((first, n + 1)),
                    other => {
                        flush(other);
                        Some((page, 1))
                    }
                };
            }
        }
        flush(run);
        dropped
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The shared memfd (shared memory only).
    fn memfd(&self) -> i32 {
        self.region.file_offset().map(|f| f.file().as_raw_fd()).unwrap_or(-1)
    }

    /// Host address of guest physical address 0 (for the KVM memslot).
    pub fn host_base(&self) -> *mut u8 {
        self.region.as_ptr()
    }

    /// Write at a guest physical address, bounds-checked but not permission-checked
    /// (the loader and the stub builder use it; syscalls go through [`UserMemory`]).
    pub fn write(&self, gpa: u64, data: &[u8]) -> Result<()> {
        self.mark_dirty(gpa, data.len() as u64);
        self.region
            .as_volatile_slice()
            .write_slice(data, gpa as usize)
            .map_err(|e| Error::Internal(format!("write of {} bytes at {gpa:#x}: {e}", data.len())))
    }

    pub fn read(&self, gpa: u64, out: &mut [u8]) -> Result<()> {
        self.region
            .as_volatile_slice()
            .read_slice(out, gpa as usize)
            .map_err(|e| Error::Internal(format!("read of {} bytes at {gpa:#x}: {e}", out.len())))
    }

    pub fn write_u64(&self, gpa: u64, value: u64) -> Result<()> {
        self.write(gpa, &value.to_le_bytes())
    }

    pub fn read_u64(&self, gpa: u64) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read(gpa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Bounds-checked volatile view of guest memory.
    fn slice(&self, gpa: u64, len: usize) -> Option<VolatileSlice<'_, <() as vm_memory::bitmap::WithBitmapSlice<'_>>::S>> {
        self.region.get_slice(gpa as usize, len).ok()
    }

    /// Let `fill` write up to `len` bytes at `gpa` straight into guest memory (e.g. a host
    /// pread), given the host pointer; it returns how many bytes it wrote. The whole range is
    /// recorded as host-written (for reset) before `fill` runs, like every other host write.
    /// `None` if the range is outside guest memory.
    pub fn write_with(&self, gpa: u64, len: usize, fill: impl FnOnce(*mut u8, usize) -> usize) -> Option<usize> {
        let slice = self.slice(gpa, len)?;
        self.mark_dirty(gpa, len as u64);
        Some(fill(slice.ptr_guard_mut().as_ptr(), len).min(len))
    }

    /// MADV_DONTNEED: a file-backed range reads the file again (its private copies are
    /// dropped, as on Linux); anything else reads as zero (see [`GuestMemory::discard`]).
    pub fn dont_need(&self, start: u64, end: u64) {
        let end = end.min(self.size);
        if start >= end {
            return;
        }
        let mut at = start;
        let inside: Vec<(u64, u64)> = {
            let overlays = self.overlays.lock().unwrap_or_else(|e| e.into_inner());
            let before = overlays.range(..start).next_back().filter(|(_, &e)| e > start).map(|(&s, &e)| (s, e));
            before.into_iter().chain(overlays.range(start..end).map(|(&s, &e)| (s, e))).collect()
        };
        for (s, e) in inside {
            let (s, e) = (s.max(start), e.min(end));
            if s >= e {
                continue;
            }
            self.discard(at, s);
            self.mark_dirty(s, e - s);
            // SAFETY: whole pages of our own private file mapping; they read the file again.
            unsafe { libc::madvise(self.host_base().add(s as usize).cast(), (e - s) as usize, libc::MADV_DONTNEED) };
            at = at.max(e);
        }
        self.discard(at, end);
    }

    /// Make `[start, end)` read as zero and, where possible, give its memory back to the host
    /// (munmap, MADV_DONTNEED, brk shrink). Partial pages at either end are zero-filled.
    pub fn discard(&self, start: u64, end: u64) {
        let end = end.min(self.size);
        if start >= end {
            return;
        }
        self.unmap_overlays(start, end);
        let full_start = page_up(start).unwrap_or(end).min(end);
        let full_end = page_down(end).max(full_start);
        self.zero_fill(start, full_start);
        self.zero_fill(full_end, end);
        if self.is_private() {
            self.discard_private_pages(full_start, full_end);
        } else if full_start < full_end {
            // SAFETY: punching a hole in our own memfd within its size; the kernel keeps every
            // mapping (ours and KVM's shadow pages via the MMU notifier) consistent and later
            // reads see zeros.
            let rc = unsafe {
                libc::fallocate(
                    self.memfd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    full_start as i64,
                    (full_end - full_start) as i64,
                )
            };
            if rc != 0 {
                self.zero_fill(full_start, full_end);
            }
        }
    }

    /// Whole pages of private memory, which must not touch the snapshot's memfd. Pages outside
    /// the image's data are anonymous underneath: MADV_DONTNEED makes them zero again and frees
    /// their copies (the snapshot has zeros there too, so a reset has nothing to restore).
    /// Pages over image data would read as the image after MADV_DONTNEED, so they are
    /// zero-filled, which also allocates them, and recorded as written for the next reset.
    fn discard_private_pages(&self, start: u64, end: u64) {
        let image = self.image.lock().unwrap_or_else(|e| e.into_inner());
        let data: &[(u64, u64)] = image.as_ref().map_or(&[], |(_, extents)| extents);
        let mut at = start;
        for &(s, e) in data.iter().skip_while(|&&(_, e)| e <= start) {
            if s >= end {
                break;
            }
            let (s, e) = (page_down(s).max(at), page_up(e).unwrap_or(end).min(end));
            self.drop_or_zero(at, s);
            self.zero_fill(s, e);
            at = at.max(e);
        }
        self.drop_or_zero(at, end);
    }

    /// MADV_DONTNEED on whole pages of anonymous private memory; zero-fill where the kernel
    /// refuses (e.g. hugetlbfs ranges that are not huge-page aligned).
    fn drop_or_zero(&self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        // SAFETY: a page-aligned range inside our own private anonymous mapping.
        let rc = unsafe { libc::madvise(self.host_base().add(start as usize).cast(), (end - start) as usize, libc::MADV_DONTNEED) };
        if rc != 0 {
            self.zero_fill(start, end);
        }
    }

    /// Write zeros over `[start, end)` (recorded as host-written on private memory).
    fn zero_fill(&self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        self.mark_dirty(start, end - start);
        if let Some(slice) = self.slice(start, (end - start) as usize) {
            // SAFETY: the range is inside our mapping; the vCPU is stopped.
            unsafe { std::ptr::write_bytes(slice.ptr_guard_mut().as_ptr(), 0, (end - start) as usize) };
        }
    }

    /// Allocate the backing pages of `[start, end)` in one go (MADV_POPULATE_WRITE) instead of
    /// one page fault at a time; a hint only, so failures (old kernels) are ignored.
    pub fn populate(&self, start: u64, end: u64) {
        let (start, end) = (page_down(start), page_up(end.min(self.size)).unwrap_or(self.size));
        if start >= end {
            return;
        }
        const MADV_POPULATE_WRITE: i32 = 23;
        // SAFETY: the range lies inside our own mapping; populating has no other effect.
        unsafe { libc::madvise(self.host_base().add(start as usize).cast(), (end - start) as usize, MADV_POPULATE_WRITE) };
    }

    /// Copy `len` bytes inside guest memory (mremap moving a mapping).
    pub fn copy_within(&self, from: u64, to: u64, len: u64) -> Result<()> {
        let src = self.slice(from, len as usize).ok_or_else(|| Error::Internal("copy source out of range".into()))?;
        let dst = self.slice(to, len as usize).ok_or_else(|| Error::Internal("copy target out of range".into()))?;
        self.mark_dirty(to, len);
        src.copy_to_volatile_slice(dst);
        Ok(())
    }
}

/// Guest memory as the guest program's syscalls see it: every access is checked against
/// the address space (present, user-accessible, writable where written) before it happens.
pub struct UserMemory<'a> {
    pub mem: &'a GuestMemory,
    pub space: &'a AddressSpace,
}

impl<'a> UserMemory<'a> {
    pub fn check(&self, addr: u64, len: u64, write: bool) -> std::result::Result<(), Efault> {
        if self.space.user_accessible(addr, len, write) {
            Ok(())
        } else {
            Err(Efault)
        }
    }

    pub fn read(&self, addr: u64, out: &mut [u8]) -> std::result::Result<(), Efault> {
        self.check(addr, out.len() as u64, false)?;
        self.mem.read(addr, out).map_err(|_| Efault)
    }

    pub fn read_vec(&self, addr: u64, len: u64) -> std::result::Result<Vec<u8>, Efault> {
        self.check(addr, len, false)?;
        let mut v = vec![0; len as usize];
        self.mem.read(addr, &mut v).map_err(|_| Efault)?;
        Ok(v)
    }

    pub fn write(&self, addr: u64, data: &[u8]) -> std::result::Result<(), Efault> {
        self.check(addr, data.len() as u64, true)?;
        self.mem.write(addr, data).map_err(|_| Efault)
    }

    pub fn read_u64(&self, addr: u64) -> std::result::Result<u64, Efault> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    pub fn write_u64(&self, addr: u64, v: u64) -> std::result::Result<(), Efault> {
        self.write(addr, &v.to_le_bytes())
    }

    /// Read a plain-old-data struct (timespec, iovec, …) from the guest.
    pub fn read_pod<T: Pod>(&self, addr: u64) -> std::result::Result<T, Efault> {
        let mut value = T::zeroed();
        // SAFETY: T is Pod (any byte pattern is valid), and the slice covers exactly its bytes.
        let bytes = unsafe { std::slice::from_raw_parts_mut(&mut value as *mut T as *mut u8, std::mem::size_of::<T>()) };
        self.read(addr, bytes)?;
        Ok(value)
    }

    pub fn write_pod<T: Pod>(&self, addr: u64, value: &T) -> std::result::Result<(), Efault> {
        // SAFETY: T is Pod, so its bytes may be viewed as initialized u8.
        let bytes = unsafe { std::slice::from_raw_parts(value as *const T as *const u8, std::mem::size_of::<T>()) };
        self.write(addr, bytes)
    }

    /// Read a NUL-terminated string of at most `max` bytes (without the NUL).
    /// Returns `Ok(None)` if no NUL was found within `max` bytes (ENAMETOOLONG for paths).
    pub fn read_cstring(&self, addr: u64, max: usize) -> std::result::Result<Option<Vec<u8>>, Efault> {
        // Up to `max` bytes and the NUL; any `max` (even usize::MAX) ends at the first
        // inaccessible page, so neither time nor memory exceed the guest's memory size.
        let limit = max.saturating_add(1);
        let mut out = Vec::new();
        let mut at = addr;
        while out.len() < limit {
            // Read up to the end of the current page so we never touch an unchecked page.
            let page_end = page_down(at).checked_add(PAGE_SIZE).ok_or(Efault)?;
            let chunk = (page_end - at).min((limit - out.len()) as u64);
            let bytes = self.read_vec(at, chunk)?;
            if let Some(nul) = bytes.iter().position(|&b| b == 0) {
                out.extend_from_slice(&bytes[..nul]);
                return Ok(Some(out));
            }
            out.extend_from_slice(&bytes);
            at = at.checked_add(chunk).ok_or(Efault)?;
        }
        Ok(None)
    }

    /// A host pointer to `[addr, addr+len)` after the permission check, for passing guest
    /// buffers straight to host syscalls (read/write/getrandom) without a copy.
    pub fn host_range(&self, addr: u64, len: u64, write: bool) -> std::result::Result<*mut u8, Efault> {
        self.check(addr, len, write)?;
        if len == 0 {
            // Linux accepts any pointer with a zero length.
            return Ok(std::ptr::NonNull::dangling().as_ptr());
        }
        let slice = self.mem.slice(addr, len as usize).ok_or(Efault)?;
        if write {
            self.mem.mark_dirty(addr, len);
        }
        Ok(slice.ptr_guard_mut().as_ptr())
    }
}

/// Marker for plain-old-data types that may be copied to and from guest memory bytewise.
///
/// # Safety
/// Implementors must be `repr(C)` without padding-dependent invariants, and valid for every
/// bit pattern.
pub unsafe trait Pod: Copy {
    fn zeroed() -> Self {
        // SAFETY: Pod types are valid for the all-zero bit pattern.
        unsafe { std::mem::zeroed() }
    }
}

// SAFETY: plain C structs of integers.
unsafe impl Pod for libc::timespec {}
unsafe impl Pod for libc::timeval {}
unsafe impl Pod for libc::iovec {}
unsafe impl Pod for libc::stat {}
unsafe impl Pod for libc::statx {}
unsafe impl Pod for libc::statfs {}
unsafe impl Pod for libc::utsname {}
unsafe impl Pod for libc::sysinfo {}
unsafe impl Pod for libc::pollfd {}
unsafe impl Pod for [u64; 4] {}
unsafe impl Pod for [u64; 3] {}
unsafe impl Pod for [u64; 2] {}
unsafe impl Pod for [u64; 7] {}
unsafe impl Pod for [i64; 4] {}
unsafe impl Pod for [u32; 6] {}

/// Write `[start, end)` of the mapping at `base` to the same offsets of `file`.
fn write_to(file: &File, base: *mut u8, start: u64, end: u64) -> Result<()> {
    // SAFETY: [start, end) lies inside the mapping at `base`; pwrite only reads from it.
    let n = unsafe { libc::pwrite(file.as_raw_fd(), base.add(start as usize).cast(), (end - start) as usize, start as i64) };
    if n != (end - start) as isize {
        return Err(Error::OutOfMemory(format!("writing the snapshot image: {}", std::io::Error::last_os_error())));
    }
    Ok(())
}

/// Keep guest memory out of child processes: a `fork()` of the embedding process (Node's
/// `spawnSync` forks) would otherwise write-protect every private guest page for
/// copy-on-write and make KVM drop its mappings, slowing the next requests several-fold.
fn dont_fork(base: *mut u8, size: u64) {
    // SAFETY: advice on a range we mapped; it changes nothing for this process.
    unsafe { libc::madvise(base.cast(), size as usize, libc::MADV_DONTFORK) };
}

/// A memfd of `size` bytes that can later be sealed (snapshots are sealed against writes).
pub(crate) fn new_memfd(size: u64) -> Result<File> {
    // SAFETY: memfd_create with a valid NUL-terminated name; we own the returned fd.
    let fd = unsafe { libc::memfd_create(c"kvmbox-guest".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(Error::OutOfMemory(format!("memfd_create: {}", std::io::Error::last_os_error())));
    }
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size).map_err(|e| Error::OutOfMemory(format!("sizing guest memory: {e}")))?;
    Ok(file)
}

/// The ranges of `memfd` that hold data (SEEK_DATA/SEEK_HOLE), page-aligned. Forks map only
/// these from the image; the holes stay anonymous zero memory, so touching them never adds
/// pages to the (shared, immutable) image.
pub(crate) fn data_extents(memfd: &File, size: u64) -> Vec<(u64, u64)> {
    let fd = memfd.as_raw_fd();
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut at: i64 = 0;
    loop {
        // SAFETY: lseek on our own descriptor.
        let data = unsafe { libc::lseek(fd, at, libc::SEEK_DATA) };
        if data < 0 || data as u64 >= size {
            break;
        }
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) }.max(data) as u64;
        let (start, end) = (page_down(data as u64), page_up(hole.min(size)).unwrap_or(size).min(size));
        match out.last_mut() {
            Some(last) if start <= last.1 => last.1 = end,
            _ => out.push((start, end)),
        }
        at = end as i64;
    }
    out
}

/// One bit per page in `extents`.
pub(crate) fn extent_bitmap(extents: &[(u64, u64)], size: u64) -> Vec<u64> {
    let mut bits = vec![0u64; size.div_ceil(PAGE_SIZE).div_ceil(64) as usize];
    for &(start, end) in extents {
        for page in start / PAGE_SIZE..end / PAGE_SIZE {
            bits[(page / 64) as usize] |= 1 << (page % 64);
        }
    }
    bits
}

fn dirty_bitmap(size: u64) -> DirtyPages {
    let words = size.div_ceil(PAGE_SIZE).div_ceil(64);
    DirtyPages {
        words: (0..words).map(|_| AtomicU64::new(0)).collect(),
        summary: (0..words.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
    }
}

/// The pages the host wrote: one bit per page, and one summary bit per 64-page word, so taking
/// the set at a reset looks only at words that have bits (a 128 MiB guest has 512 words; a
/// reset after a call touches a handful).
struct DirtyPages {
    words: Vec<AtomicU64>,
    summary: Vec<AtomicU64>,
}

impl DirtyPages {
    fn mark(&self, page: u64) {
        self.mark_word((page / 64) as usize, 1 << (page % 64));
    }

    fn mark_word(&self, i: usize, bits: u64) {
        if let Some(w) = self.words.get(i) {
            w.fetch_or(bits, Ordering::Relaxed);
            // The summary bit after the word: a taker that sees it finds the bits.
            self.summary[i / 64].fetch_or(1 << (i % 64), Ordering::Release);
        }
    }

    /// OR the recorded pages into `bitmap`, clearing the record.
    fn take_into(&self, bitmap: &mut [u64]) {
        for (s, summary) in self.summary.iter().enumerate() {
            let mut flagged = summary.swap(0, Ordering::Acquire);
            while flagged != 0 {
                let i = s * 64 + flagged.trailing_zeros() as usize;
                flagged &= flagged - 1;
                if let (Some(w), Some(out)) = (self.words.get(i), bitmap.get_mut(i)) {
                    *out |= w.swap(0, Ordering::Relaxed);
                }
            }
        }
    }
}

// Silence the unused-import lint for the trait that only provides `copy_to_volatile_slice`.
#[allow(unused_imports)]
use BitmapSlice as _;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{AddressSpace, Layout, Perm, Region};

    #[test]
    fn read_cstring_with_any_max_ends() {
        let layout = Layout::new(8 << 20);
        let text = Region { start: 0x40_0000, end: 0x40_2000, perm: Perm::USER_RX };
        let data = Region { start: 0x40_2000, end: 0x40_3000, perm: Perm::USER_RW };
        let space = AddressSpace::new(layout.regions(&[text, data]));
        let mem = GuestMemory::new(8 << 20).unwrap();
        mem.write(0x40_0000, b"hello\0").unwrap();
        mem.write(0x40_1000, &[b'x'; 4096]).unwrap();
        let user = UserMemory { mem: &mem, space: &space };
        for max in [5, 6, 1 << 20, usize::MAX - 1, usize::MAX] {
            assert_eq!(user.read_cstring(0x40_0000, max).unwrap().unwrap(), b"hello", "max {max}");
        }
        assert_eq!(user.read_cstring(0x40_0000, 4).unwrap(), None, "no NUL within max");
        assert_eq!(user.read_cstring(0x40_1000, usize::MAX).unwrap().unwrap().len(), 4096, "across pages");
        // Where the guest may not read: EFAULT, whatever max says (no wrap-around at the top).
        assert!(user.read_cstring(u64::MAX - 3, usize::MAX).is_err());
        assert!(user.read_cstring(0, usize::MAX).is_err());
    }
}

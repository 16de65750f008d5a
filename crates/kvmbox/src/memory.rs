//! Guest RAM: one memfd-backed, MAP_NORESERVE mapping (so untouched memory costs nothing and a
//! later snapshot can map the same file copy-on-write), wrapped in vm-memory's bounds-checked
//! region, plus [`UserMemory`], the only way syscall emulation touches guest memory.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;

use vm_memory::bitmap::BitmapSlice;
use vm_memory::mmap::MmapRegion;
use vm_memory::{Bytes, VolatileMemory, VolatileSlice};

use crate::error::{Error, Result};
use crate::layout::{page_down, page_up, AddressSpace, PAGE_SIZE};

/// Guest physical memory starting at guest address 0.
pub struct GuestMemory {
    /// The mapping; it also owns the memfd (its file offset), used for hole punching.
    region: MmapRegion<()>,
    size: u64,
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
    space: Arc<AddressSpace>,
}

impl MemoryView {
    pub(crate) fn new(mem: Arc<GuestMemory>, space: Arc<AddressSpace>) -> Self {
        MemoryView { mem, space }
    }

    fn user(&self) -> UserMemory<'_> {
        UserMemory { mem: &self.mem, space: &self.space }
    }

    pub fn read(&self, addr: u64, len: u64) -> std::result::Result<Vec<u8>, Efault> {
        self.user().read_vec(addr, len)
    }

    pub fn write(&self, addr: u64, data: &[u8]) -> std::result::Result<(), Efault> {
        self.user().write(addr, data)
    }

    /// A NUL-terminated string of at most `max` bytes; `None` if no NUL within `max`.
    pub fn read_cstring(&self, addr: u64, max: usize) -> std::result::Result<Option<Vec<u8>>, Efault> {
        self.user().read_cstring(addr, max)
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
    space: std::sync::Weak<AddressSpace>,
}

impl WeakMemoryView {
    pub fn upgrade(&self) -> Option<MemoryView> {
        Some(MemoryView { mem: self.mem.upgrade()?, space: self.space.upgrade()? })
    }
}

impl GuestMemory {
    pub fn new(size: u64) -> Result<GuestMemory> {
        // SAFETY: memfd_create with a valid NUL-terminated name; we own the returned fd.
        let fd = unsafe { libc::memfd_create(c"kvmbox-guest".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(Error::OutOfMemory(format!("memfd_create: {}", std::io::Error::last_os_error())));
        }
        // SAFETY: fd is a fresh descriptor owned by nobody else.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(size).map_err(|e| Error::OutOfMemory(format!("sizing guest memory: {e}")))?;
        let region = MmapRegion::build(
            Some(vm_memory::FileOffset::new(file, 0)),
            size as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_NORESERVE,
        )
        .map_err(|e| Error::OutOfMemory(format!("mapping {size} bytes of guest memory: {e}")))?;
        Ok(GuestMemory { region, size })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

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
    pub fn slice(&self, gpa: u64, len: usize) -> Option<VolatileSlice<'_, <() as vm_memory::bitmap::WithBitmapSlice<'_>>::S>> {
        self.region.get_slice(gpa as usize, len).ok()
    }

    /// Give the pages covering `[start, end)` back to the host and make them read as zero
    /// (munmap, MADV_DONTNEED, brk shrink). Partial pages at the edges are zeroed in place.
    pub fn discard(&self, start: u64, end: u64) {
        let end = end.min(self.size);
        if start >= end {
            return;
        }
        let full_start = page_up(start).unwrap_or(end).min(end);
        let full_end = page_down(end).max(full_start);
        if start < full_start {
            let _ = self.write(start, &vec![0; (full_start - start) as usize]);
        }
        if full_end < end {
            let _ = self.write(full_end, &vec![0; (end - full_end) as usize]);
        }
        if full_start < full_end {
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
                let _ = self.write(full_start, &vec![0; (full_end - full_start) as usize]);
            }
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
        let mut out = Vec::new();
        let mut at = addr;
        while out.len() <= max {
            // Read up to the end of the current page so we never touch an unchecked page.
            let page_end = page_down(at) + PAGE_SIZE;
            let chunk = (page_end - at).min((max + 1 - out.len()) as u64);
            let bytes = self.read_vec(at, chunk)?;
            if let Some(nul) = bytes.iter().position(|&b| b == 0) {
                out.extend_from_slice(&bytes[..nul]);
                return Ok(Some(out));
            }
            out.extend_from_slice(&bytes);
            at += chunk;
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
unsafe impl Pod for libc::utsname {}
unsafe impl Pod for libc::rlimit {}
unsafe impl Pod for libc::sysinfo {}
unsafe impl Pod for libc::pollfd {}
unsafe impl Pod for [u64; 4] {}
unsafe impl Pod for [u64; 3] {}
unsafe impl Pod for u64 {}

// Silence the unused-import lint for the trait that only provides `copy_to_volatile_slice`.
#[allow(unused_imports)]
use BitmapSlice as _;

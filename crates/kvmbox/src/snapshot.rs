//! Snapshots: an immutable image of a paused machine — guest memory (a sealed memfd), CPU
//! state and the emulated process state — that any number of copy-on-write forks map and
//! that a fork can be reset to in microseconds.
//!
//! Reset copies back exactly the pages written since the snapshot (or the last reset): the
//! guest's writes come from KVM's dirty log, the host's own writes (syscall emulation, the
//! embedder's memory writes) from the memory's host-dirty record. Page-table pages are never
//! written after creation, so they never need restoring — which matters on PVM, whose shadow
//! MMU would not notice restored page-table pages (see `Machine::reset_to`).

use std::collections::HashMap;
use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

use vm_memory::mmap::MmapRegion;

use crate::error::{Error, Result};
use crate::layout::{AddressSpace, Layout};
use crate::syscalls::{Linux, LinuxState};
use crate::vcpu::CpuState;

/// An immutable image of a paused machine. Cheap to clone (shared).
#[derive(Clone)]
pub struct Snapshot {
    pub(crate) data: Arc<SnapshotData>,
}

pub(crate) struct SnapshotData {
    /// The guest memory image; never written after the snapshot was taken.
    pub memfd: File,
    /// A read-only view of `memfd`, the source for restoring pages.
    pub source: MmapRegion<()>,
    pub layout: Layout,
    pub space: Arc<AddressSpace>,
    pub cr3: u64,
    pub symbols: Arc<HashMap<String, u64>>,
    pub cpu: CpuState,
    pub linux: LinuxState,
    /// A process to derive forks' emulation state from (file policy, paths, output kinds).
    pub proto: Linux,
    pub timeout: Option<Duration>,
}

impl SnapshotData {
    pub fn source_bytes(&self) -> &[u8] {
        // SAFETY: a read-only mapping of `layout.memory` bytes that lives as long as `self`;
        // the memfd behind it is never modified after the snapshot was taken.
        unsafe { std::slice::from_raw_parts(self.source.as_ptr(), self.layout.memory as usize) }
    }
}

pub(crate) fn read_only_view(memfd: &File, size: u64) -> Result<MmapRegion<()>> {
    let file = memfd.try_clone().map_err(|e| Error::OutOfMemory(format!("dup of snapshot memory: {e}")))?;
    MmapRegion::build(Some(vm_memory::FileOffset::new(file, 0)), size as usize, libc::PROT_READ, libc::MAP_SHARED | libc::MAP_NORESERVE)
        .map_err(|e| Error::OutOfMemory(format!("mapping the snapshot: {e}")))
}

impl Snapshot {
    /// Guest memory size of machines made from this snapshot.
    pub fn memory_size(&self) -> u64 {
        self.data.layout.memory
    }

    /// Bytes of host memory the snapshot's image occupies (shared by all its forks).
    pub fn resident_bytes(&self) -> u64 {
        use std::os::fd::AsRawFd;
        // SAFETY: fstat into a local struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(self.data.memfd.as_raw_fd(), &mut st) } != 0 {
            return 0;
        }
        st.st_blocks as u64 * 512
    }

    /// Address of a symbol in the program's ELF symbol table.
    pub fn symbol(&self, name: &str) -> Option<u64> {
        self.data.symbols.get(name).copied()
    }

    /// True if `a` and `b` are the same snapshot.
    pub fn same(a: &Snapshot, b: &Snapshot) -> bool {
        Arc::ptr_eq(&a.data, &b.data)
    }
}

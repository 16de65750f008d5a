//! Snapshots: an immutable image of a paused machine — guest memory (a sealed memfd), CPU
//! state and the emulated process state — that any number of copy-on-write forks map and
//! that a fork can be reset to in microseconds.
//!
//! Reset copies back exactly the pages written since the snapshot (or the last reset): the
//! guest's writes come from KVM's dirty log, the host's own writes (syscall emulation, the
//! embedder's memory writes) from the memory's host-dirty record — except page-table pages,
//! whose changed entries go back through the page-table commit path (PVM's shadow MMU would
//! not notice pages copied back; see `machine::pagetables`).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::Duration;

use vm_memory::mmap::MmapRegion;

use crate::arch;
use crate::error::{Error, Result};
use crate::layout::{self, AddressSpace, Layout};
use crate::memory::GuestMemory;
use crate::paging;
use crate::snapfile::{self, Reader, Writer};
use crate::syscalls::files::{FilePolicy, Input, Output};
use crate::syscalls::memfs::MountSpec;
use crate::syscalls::{Linux, LinuxState, ProcessConfig};
use crate::vcpu::CpuState;

/// Options for [`Snapshot::load`]: what the loading process decides, not the file.
pub struct LoadOptions {
    /// Host files and directories the guest may open read-only.
    pub allow_read: Vec<String>,
    /// The in-memory mounts, as the snapshot was made with (see `MachineOptions::mounts`): the
    /// same guest paths and kinds, with this loader's host directories.
    pub mounts: Vec<(String, MountSpec)>,
    /// Most bytes the in-memory files may take; a snapshot with more fails to load.
    pub fs_limit: u64,
    /// Where forks' stdout goes.
    pub stdout: Output,
    /// Where forks' stderr goes.
    pub stderr: Output,
    /// Default timeout of forks' runs and calls.
    pub timeout: Option<Duration>,
    /// Print every syscall of forks to stderr.
    pub trace: bool,
    /// Forks run only on seccomp-restricted threads (see `MachineOptions::seccomp`).
    pub seccomp: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            allow_read: Vec::new(),
            mounts: Vec::new(),
            fs_limit: crate::syscalls::memfs::DEFAULT_LIMIT,
            stdout: Output::capture(crate::DEFAULT_OUTPUT_LIMIT),
            stderr: Output::capture(crate::DEFAULT_OUTPUT_LIMIT),
            timeout: None,
            trace: false,
            seccomp: false,
        }
    }
}

/// An immutable image of a paused machine. Cheap to clone (shared).
#[derive(Clone)]
pub struct Snapshot {
    pub(crate) data: Arc<SnapshotData>,
}

pub(crate) struct SnapshotData {
    pub image: Image,
    pub layout: Layout,
    pub space: Arc<AddressSpace>,
    pub cr3: u64,
    pub symbols: Arc<HashMap<String, u64>>,
    /// A dynamic program's `_r_debug` (where its loaded shared objects are listed).
    pub r_debug: Option<u64>,
    pub cpu: CpuState,
    pub linux: LinuxState,
    /// A process to derive forks' emulation state from (file policy, paths, output kinds).
    pub proto: Linux,
    pub timeout: Option<Duration>,
    /// Forks run only on seccomp-restricted threads.
    pub seccomp: bool,
    /// Loaded from a file: its vDSO clock parameters may come from another host (another TSC),
    /// so a machine reset to it rewrites them before it runs.
    pub from_file: bool,
}

/// A snapshot's guest memory image and what resets and saves need to know about it.
pub(crate) struct Image {
    /// The guest memory; sealed, never written after the snapshot was taken.
    pub memfd: File,
    /// A read-only view of `memfd`, the source for restoring pages.
    source: MmapRegion<()>,
    /// The ranges of the image that hold data (the rest reads as zero)…
    pub extents: Vec<(u64, u64)>,
    /// … and the same as one bit per page.
    pub data_pages: Vec<u64>,
}

impl Image {
    /// The image in `memfd` (`size` bytes, data in `extents`, see [`crate::memory::data_extents`]).
    pub fn new(memfd: File, extents: Vec<(u64, u64)>, size: u64) -> Result<Image> {
        Ok(Image { source: read_only_view(&memfd, size)?, data_pages: crate::memory::extent_bitmap(&extents, size), extents, memfd })
    }

    /// The whole image, read-only. Only `extents` may be read: reading a hole of the memfd
    /// would allocate a page in it.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: a read-only mapping of the whole image that lives as long as `self`; the
        // memfd behind it is never modified after the snapshot was taken.
        unsafe { std::slice::from_raw_parts(self.source.as_ptr(), vm_memory::VolatileMemory::len(&self.source)) }
    }
}

fn read_only_view(memfd: &File, size: u64) -> Result<MmapRegion<()>> {
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
        if unsafe { libc::fstat(self.data.image.memfd.as_raw_fd(), &mut st) } != 0 {
            return 0;
        }
        st.st_blocks as u64 * 512
    }

    /// Address of a symbol in the program's ELF symbol table.
    pub fn symbol(&self, name: &str) -> Option<u64> {
        self.data.symbols.get(name).copied()
    }

    /// Write the snapshot to `path` (only there): format version, metadata, the memory pages
    /// that hold data, and a checksum. Open host files are recorded by path and position and
    /// reopened (through the loader's allowlist) when the file is loaded.
    pub fn save(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        self.save_with_progress(path, &mut |_, _| {})
    }

    /// [`Snapshot::save`], calling `progress(bytes written, bytes in all)` along the way (for a
    /// large snapshot, which takes seconds).
    pub fn save_with_progress(&self, path: impl AsRef<std::path::Path>, progress: &mut dyn FnMut(u64, u64)) -> Result<()> {
        let d = &self.data;
        let mut w = Writer::default();
        // The address space is not written: the process's mappings (in its state) give it.
        w.u64(d.layout.memory);
        w.u64(d.symbols.len() as u64);
        let mut names: Vec<_> = d.symbols.iter().collect();
        names.sort();
        for (name, addr) in names {
            w.str(name);
            w.u64(*addr);
        }
        w.u64(d.r_debug.unwrap_or(0));
        w.pod(&d.cpu.regs);
        w.pod(&d.cpu.sregs.fs.base);
        w.pod(&d.cpu.sregs.gs.base);
        w.pod(&d.cpu.xsave.region);
        d.linux.encode(&mut w);
        w.bytes(d.proto.exe_path.as_os_str().as_encoded_bytes());
        w.bytes(d.proto.cwd.as_os_str().as_encoded_bytes());
        snapfile::write_file(path.as_ref(), &w.buf, d.image.bytes(), &d.image.extents, progress)
    }

    /// Load a snapshot written by [`Snapshot::save`] from `path`, which is checked completely
    /// first (clear errors for files that are not snapshots, of another format version,
    /// truncated or corrupt). The loader decides the file policy, outputs and timeout.
    pub fn load(path: impl AsRef<std::path::Path>, opts: LoadOptions) -> Result<Snapshot> {
        Self::load_with_progress(path, opts, &mut |_, _| {})
    }

    /// [`Snapshot::load`], calling `progress(bytes read, file size)` along the way.
    pub fn load_with_progress(
        path: impl AsRef<std::path::Path>,
        opts: LoadOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Snapshot> {
        crate::kvm::kvm()?;
        let (meta, memfd) = snapfile::read_file(path.as_ref(), layout::MAX_MEMORY, progress)?;
        let bad = |what: &str| Error::InvalidArgument(format!("invalid snapshot file: {what}"));
        let mut r = Reader::new(&meta);
        let memory = r.u64()?;
        if layout::round_memory(memory).ok() != Some(memory) {
            return Err(bad("memory size"));
        }
        let layout = Layout::new(memory);
        let n = r.count(9)?;
        let mut symbols = HashMap::with_capacity(n);
        for _ in 0..n {
            let name = r.str()?;
            symbols.insert(name, r.u64()?);
        }
        // Only ever read through checked guest-memory accesses: any value is harmless.
        let r_debug = Some(r.u64()?).filter(|&a| a != 0);
        let mut regs: kvm_bindings::kvm_regs = r.pod()?;
        regs.rflags = crate::arch::sysret_rflags(regs.rflags & !0x100);
        let (fs_base, gs_base): (u64, u64) = (r.pod()?, r.pod()?);
        let xsave = kvm_bindings::kvm_xsave { region: r.pod()?, ..Default::default() };
        // The loader's mounts (host directories resolved as it wrote them) are what the file's
        // in-memory files must fit.
        let loader_cwd =
            std::env::current_dir().map_err(|e| Error::InvalidArgument(format!("no working directory to resolve mounts against: {e}")))?;
        let fs = crate::syscalls::memfs::build(&opts.mounts, opts.fs_limit, &loader_cwd)?;
        if opts.seccomp && !fs.writable_mounts().is_empty() {
            return Err(Error::InvalidArgument("a writable host mount needs seccomp off (the filter refuses host writes)".into()));
        }
        let linux_state = LinuxState::decode(&mut r, &layout, &fs)?;
        let exe_path = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(r.bytes()?));
        let cwd = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(r.bytes()?));
        if !exe_path.is_absolute() || !cwd.is_absolute() || !r.remaining().is_empty() {
            return Err(bad("paths"));
        }

        // The kernel side (tables, stubs, page tables) comes from the layout, never the file; the
        // user area's rights from the mappings, which decoding checked lie inside it.
        let space = AddressSpace::new(layout.regions(&linux_state.heap().regions()));
        let image = GuestMemory::shared_over(&memfd, memory)?;
        arch::write_system_pages(&image, &layout)?;
        let cr3 = paging::build(&image, &layout, space.regions())?;
        drop(image);
        crate::machine::seal(&memfd);
        // User-mode segments and our control registers; only the FS/GS bases come from the file.
        let mut sregs = arch::initial_sregs(kvm_bindings::kvm_sregs::default(), &layout, cr3, crate::kvm::supported_cpuid()?);
        sregs.fs.base = fs_base;
        sregs.gs.base = gs_base;
        let cpu = CpuState { regs, sregs, xsave: Box::new(xsave) };

        // The loader's options decide what the guest may read, resolved as the loader wrote them:
        // relative paths against this process's working directory, never the guest's working
        // directory recorded in the file (a file must not widen what the options allow).
        let host_cwd = std::env::current_dir()
            .map_err(|e| Error::InvalidArgument(format!("no working directory to resolve allowRead against: {e}")))?;
        let policy = Arc::new(FilePolicy::new(&opts.allow_read, &host_cwd)?);
        let mm = linux_state.heap().clone();
        let mut proto = Linux::new(ProcessConfig {
            mm,
            policy,
            stdin: Input::Empty,
            stdout: opts.stdout,
            stderr: opts.stderr,
            exe_path,
            cwd,
            fs,
            memory,
            stack_size: layout.stack_size(),
            trace: opts.trace,
            xsave_size: crate::arch::xsave_size_from_cpuid(crate::kvm::supported_cpuid()?),
            xfeatures: crate::arch::xcr0_from_cpuid(crate::kvm::supported_cpuid()?),
        });
        // Reopens the recorded files now, so a file the allowlist refuses fails the load.
        proto.restore(&linux_state)?;
        let extents = crate::memory::data_extents(&memfd, memory);
        Ok(Snapshot {
            data: Arc::new(SnapshotData {
                image: Image::new(memfd, extents, memory)?,
                layout,
                space: Arc::new(space),
                cr3,
                symbols: Arc::new(symbols),
                r_debug,
                cpu,
                linux: linux_state,
                proto,
                timeout: opts.timeout,
                seccomp: opts.seccomp,
                from_file: true,
            }),
        })
    }

    /// True if `a` and `b` are the same snapshot.
    pub fn same(a: &Snapshot, b: &Snapshot) -> bool {
        Arc::ptr_eq(&a.data, &b.data)
    }
}

//! Snapshots, forks and resets of a machine.

use super::*;

impl Machine {
    /// Take a snapshot of the paused guest: memory, CPU state (registers, FPU/SSE/AVX, FS/GS
    /// base) and the emulated process (heap and mmap allocator, descriptors, signal
    /// dispositions). The machine keeps running on a private copy-on-write copy of its memory,
    /// as if it were a fork of the new snapshot (so `reset` returns it there).
    pub fn snapshot(&mut self) -> Result<Snapshot> {
        let State::Paused { resume } = self.state else {
            return Err(Error::InvalidState("snapshot() needs a paused guest: run() until the program calls kvmbox_pause()".into()));
        };
        let cpu = self.vm.capture(&resume)?;
        let (memfd, extents) = self.mem.freeze()?;
        seal(&memfd);
        // The shadow pages KVM built over the shared mapping are dropped by the MMU notifier;
        // from now on track the guest's writes so resets know what to copy back.
        self.vm.attach(&self.mem, true)?;
        self.vm.reset_dirty_log(self.layout.memory)?;
        self.mem.clear_host_dirty();
        let linux = self.linux.capture();
        let proto = self.linux.fork_from(&linux)?;
        let snap = Snapshot {
            data: Arc::new(SnapshotData {
                image: Image::new(memfd, extents, self.layout.memory)?,
                layout: self.layout.clone(),
                space: Arc::new(read_space(&self.space).clone()),
                cr3: self.cr3,
                symbols: Arc::clone(&self.symbols),
                r_debug: self.r_debug,
                cpu,
                linux,
                proto,
                timeout: self.timeout,
                seccomp: self.seccomp,
                from_file: false,
            }),
        };
        self.snapshot = Some(snap.clone());
        Ok(snap)
    }

    /// A new machine that shares `snap`'s memory copy-on-write, paused where the snapshot was
    /// taken. Its VM comes from the background pool when one is ready.
    pub fn fork(snap: &Snapshot) -> Result<Machine> {
        let d = &snap.data;
        let syscall_entry = backend::syscall_entry()?;
        let mut vm = VmPool::global().take()?;
        let mem = GuestMemory::private_over(&d.image.memfd, d.layout.memory, &d.image.extents)?;
        vm.attach(&mem, true)?;
        vm.set_system_state(&d.layout, d.cr3)?;
        vm.restore(&d.cpu)?;
        let linux = d.proto.fork_from(&d.linux)?;
        let clock = clock::GuestClock::new(&vm.vcpu);
        let mut machine = Machine {
            vm: ManuallyDrop::new(vm),
            mem: ManuallyDrop::new(Arc::new(mem)),
            layout: d.layout.clone(),
            space: Arc::new(std::sync::RwLock::new((*d.space).clone())),
            cr3: d.cr3,
            symbols: Arc::clone(&d.symbols),
            linux,
            timeout: d.timeout,
            seccomp: d.seccomp,
            state: State::Paused { resume: d.cpu.regs },
            snapshot: Some(snap.clone()),
            resets_since_clear: 0,
            huge: HugePages::None,
            debug_interrupt: None,
            ran: true,
            syscall_entry,
            system_state_lost: false,
            interrupt: InterruptHandle::default(),
            stats: RunStats::default(),
            reseed_pending: false,
            call_thread: 0,
            clock,
            last_spurious: (0, 0),
            r_debug: d.r_debug,
            library_symbols: Default::default(),
        };
        machine.reseed_pending = true;
        Ok(machine)
    }

    /// Per-request entropy: if the guest exports `kvmbox_reseed(bytes, len)` (kvmbox.h), call it
    /// with fresh host random bytes before the first run or call after a fork or reset (which
    /// otherwise all start from the same PRNG state) — on the thread that runs the guest, so a
    /// seccomp machine's hook runs where its guest does. A hook that faults or runs past a
    /// second fails that run or call and finishes the machine, like any failed call.
    pub(super) fn reseed_if_pending(&mut self) -> Result<()> {
        const BYTES: usize = 32; // KVMBOX_RESEED_BYTES
        if !std::mem::take(&mut self.reseed_pending) {
            return Ok(());
        }
        let Some(hook) = self.symbol("kvmbox_reseed") else { return Ok(()) };
        let mut bytes = [0u8; BYTES];
        crate::syscalls::fill_random(&mut bytes, "kvmbox_reseed")?;
        let mut args = [CallArg::Bytes(&mut bytes), CallArg::Int(BYTES as u64)];
        self.call(hook, &mut args, Some(Duration::from_secs(1)), &mut NoHost)?;
        Ok(())
    }

    /// The snapshot `reset` returns to, if any.
    pub fn snapshot_of(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// Return to exactly the state of the snapshot this machine was forked from (or took):
    /// every page written since (by the guest or by the host) is copied back, the CPU state
    /// and the emulated process are restored, and captured output is cleared. Works after a
    /// fault, timeout or exit too. Returns the number of pages restored.
    pub fn reset(&mut self) -> Result<usize> {
        self.reset_with(ResetStrategy::CopyDirty)
    }

    /// `reset` with a chosen way of restoring memory (see [`ResetStrategy`]; the others exist
    /// to be measured against the default).
    pub fn reset_with(&mut self, strategy: ResetStrategy) -> Result<usize> {
        let snap = self
            .snapshot
            .clone()
            .ok_or_else(|| Error::InvalidState("reset() needs a machine forked from a snapshot (or one that took a snapshot)".into()))?;
        let d = &snap.data;
        let started = std::time::Instant::now();
        let ns = |t: std::time::Instant| u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
        // Pages the guest wrote (KVM's log) or kvmbox wrote for it (the host log).
        let mut dirty = self.vm.dirty_log(self.layout.memory)?;
        let dirty_log_ns = ns(started);
        let phase = std::time::Instant::now();
        self.mem.take_host_dirty_into(&mut dirty);
        if self.system_state_lost {
            self.vm.set_system_state(&self.layout, self.cr3)?;
            self.system_state_lost = false;
        }
        // Page rights first, through the commit path (the stub needs the vCPU's tables intact).
        // Should that fail, the pages stay recorded for the next attempt.
        if let Err(e) = self.restore_page_tables(&mut dirty, d.image.bytes(), &d.image.data_pages) {
            self.mem.record_dirty(&dirty);
            return Err(e);
        }
        // Files mapped since the snapshot: the memory's own backing goes back under them (their
        // pages are in the host-dirty set, so the snapshot's contents are restored below).
        self.mem.unmap_all_overlays();
        *crate::memory::write_space(&self.space) = (*d.space).clone();
        let restored = match strategy {
            ResetStrategy::CopyDirty => self.mem.restore_pages(&dirty, d.image.bytes(), &d.image.data_pages),
            ResetStrategy::DropDirty => self.mem.drop_pages(&dirty),
            ResetStrategy::RemapAll => {
                self.mem.remap_private(&d.image.memfd, &d.image.extents)?;
                dirty.iter().map(|w| w.count_ones() as usize).sum()
            }
        };
        let memory_ns = ns(phase);
        let phase = std::time::Instant::now();
        // Pages the guest writes stay writable and in the log (copied back at every reset, no
        // write faults on the request path); now and then the log is cleared, so pages the
        // guest stopped writing drop out of the set.
        self.resets_since_clear += 1;
        let period = if restored <= SMALL_DIRTY_SET { RELEARN_EVERY_SMALL } else { RELEARN_EVERY };
        if self.resets_since_clear >= period || strategy != ResetStrategy::CopyDirty {
            // KVM only re-protects pages its log has dirty; the host-written bits are ignored.
            self.vm.clear_dirty_log(&mut dirty, self.layout.memory)?;
            self.resets_since_clear = 0;
        }
        self.vm.restore(&d.cpu)?;
        let cpu_ns = ns(phase);
        let phase = std::time::Instant::now();
        self.linux.restore(&d.linux)?;
        let process_ns = ns(phase);
        if d.from_file {
            self.clock.invalidate(); // the image's clock parameters may be another host's
        }
        self.state = State::Paused { resume: d.cpu.regs };
        let reset = ResetCost { dirty_log_ns, memory_ns, cpu_ns, process_ns };
        self.stats = RunStats { pages_restored: restored as u64, reset, ..RunStats::default() };
        self.reseed_pending = true;
        Ok(restored)
    }

    /// Reset to `snap`, which need not be the snapshot this machine came from. The memory slot
    /// is re-registered: the other snapshot's page tables replace this machine's wholesale, and
    /// on PVM the shadow MMU would not see that otherwise.
    pub fn reset_to(&mut self, snap: &Snapshot) -> Result<usize> {
        if self.snapshot.as_ref().is_some_and(|s| Snapshot::same(s, snap)) {
            return self.reset();
        }
        let d = &snap.data;
        if self.layout.memory == d.layout.memory {
            self.mem.remap_private(&d.image.memfd, &d.image.extents)?;
            // Drops every cached translation and starts the guest-write log afresh.
            self.vm.reattach(&self.mem, true)?;
        } else {
            let mem = Arc::new(GuestMemory::private_over(&d.image.memfd, d.layout.memory, &d.image.extents)?);
            self.vm.reattach(&mem, true)?;
            let old = std::mem::replace(&mut *self.mem, mem);
            drop(old);
        }
        self.vm.set_system_state(&d.layout, d.cr3)?;
        self.system_state_lost = false;
        self.vm.restore(&d.cpu)?;
        self.linux = d.proto.fork_from(&d.linux)?;
        self.clock.invalidate();
        self.layout = d.layout.clone();
        *crate::memory::write_space(&self.space) = (*d.space).clone();
        self.cr3 = d.cr3;
        self.symbols = Arc::clone(&d.symbols);
        self.r_debug = d.r_debug;
        self.library_symbols = Default::default();
        self.timeout = d.timeout;
        self.seccomp = d.seccomp;
        self.state = State::Paused { resume: d.cpu.regs };
        self.snapshot = Some(snap.clone());
        self.reseed_pending = true;
        Ok(0)
    }

    /// How much host memory this machine uses: pages private to it, and the snapshot image it
    /// shares with other forks.
    pub fn memory_usage(&self) -> MemoryUsage {
        MemoryUsage {
            private_bytes: self.mem.private_pages() * layout::PAGE_SIZE,
            shared_bytes: self.snapshot.as_ref().map(|s| s.resident_bytes()).unwrap_or(0),
            memory_size: self.layout.memory,
            huge_bytes: self.mem.huge_bytes(),
            hugepages: self.huge,
        }
    }
}

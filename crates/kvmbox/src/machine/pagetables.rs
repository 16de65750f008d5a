//! Committing page-table edits so that the guest sees them at its next instruction, on every
//! backend — the one path every change of page rights takes (mmap, munmap, mprotect, brk,
//! mremap, and a reset that undoes them).
//!
//! An edit that only gives rights ([`Edit::widens`]) is a plain host write: a translation
//! cached from the older, narrower entry can only fault, and the fault finds the new entry
//! (PVM's shadow MMU re-walks the tables; on VMX/SVM a spurious #PF reaches us and
//! [`Machine::spurious_page_fault`] resumes the guest). Every other edit must be written by the
//! guest itself: on PVM the host's write to a page-table frame the shadow MMU has cached would
//! go unseen, while a guest write to it is trapped and drops the cached translations
//! (measured in docs/internals.md, "Page rights"). So the host puts the new entries in a
//! supervisor scratch page and runs a two-instruction ring-0 stub (`rep movsq; out`) over them,
//! entered through the synced registers; on VMX/SVM, whose hardware walks the tables and caches
//! translations in the TLB, the last run also reloads CR3. Then the user's registers come back.

use super::*;
use crate::memory::{read_space, write_space};
use crate::paging::{Edit, Tables};

/// Entries one stub run copies at most (one scratch page).
const RUN_ENTRIES: usize = (layout::PAGE_SIZE / 8) as usize;
/// A stub run that keeps coming back without finishing is a host problem, not a guest one.
const MAX_STUB_ENTRIES: u32 = 1000;
/// Consecutive spurious faults at one address after which the fault is taken as real.
const MAX_SPURIOUS: u32 = 8;

/// What committing page-table edits did to the vCPU.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Committed {
    /// The ring-0 stub ran: the registers are back, but a syscall must return explicitly
    /// (the entry stub's pending `sysretq` is gone).
    pub stub_ran: bool,
    /// The run timer or an interrupt kicked the vCPU while the stub ran.
    pub kicked: bool,
}

impl Machine {
    /// Apply the rights changes the last syscall made: to the address space (which host-side
    /// checks use from now on), then to the page tables. A kick the commit stub swallowed must
    /// be passed on by the caller.
    pub(super) fn commit_rights_changes(&mut self) -> Result<Committed> {
        let changes = self.linux.take_rights_changes();
        if changes.is_empty() {
            return Ok(Committed::default());
        }
        let tables = Tables::new(&self.layout);
        // Whole 2 MiB chunks are recomputed; merged so no chunk is listed twice.
        let mut chunks: Vec<(u64, u64)> =
            changes.iter().map(|c| (c.start / layout::HUGE_PAGE_SIZE, c.end.div_ceil(layout::HUGE_PAGE_SIZE))).collect();
        chunks.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(chunks.len());
        for (a, b) in chunks {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        let edits = {
            let space = Arc::clone(&self.space);
            let mut space = write_space(&space);
            for c in &changes {
                space.set(c.start, c.end, c.perm);
            }
            let mut edits = Vec::new();
            for (a, b) in merged {
                edits.extend(tables.edits(&self.mem, &space, a * layout::HUGE_PAGE_SIZE, b * layout::HUGE_PAGE_SIZE)?);
            }
            edits
        };
        self.commit_edits(&tables, edits)
    }

    /// Change the page tables back to the snapshot's where a reset finds them changed: the
    /// dirty table pages are compared entry by entry with the snapshot and the differences
    /// committed like any edit (copying the pages back would go unseen on PVM). Their bits are
    /// cleared from `dirty`: they need no copy afterwards.
    pub(super) fn restore_page_tables(&mut self, dirty: &mut [u64], image: &[u8], data_pages: &[u64]) -> Result<()> {
        let tables = Tables::new(&self.layout);
        let pages = tables.edited_pages();
        let (first, last) = (pages.start / layout::PAGE_SIZE, pages.end / layout::PAGE_SIZE);
        let written: Vec<u64> =
            (first..last).filter(|&p| dirty.get((p / 64) as usize).is_some_and(|w| w & (1u64 << (p % 64)) != 0)).collect();
        // Most resets follow work that changed no rights: nothing to compare.
        if written.is_empty() {
            return Ok(());
        }
        let mut edits = Vec::new();
        let mut now = vec![0u8; layout::PAGE_SIZE as usize];
        let zero = vec![0u8; layout::PAGE_SIZE as usize];
        for &page in &written {
            let (word, bit) = ((page / 64) as usize, 1u64 << (page % 64));
            let gpa = page * layout::PAGE_SIZE;
            self.mem.read(gpa, &mut now)?;
            let has_data = data_pages.get(word).is_some_and(|w| w & bit != 0);
            let then = if has_data { image.get(gpa as usize..(gpa + layout::PAGE_SIZE) as usize).unwrap_or(&zero) } else { &zero };
            edits.extend(Tables::page_edits(gpa, &now, then));
        }
        self.commit_edits(&tables, edits)?;
        // Committed: those pages are the snapshot's again (until then they stay in `dirty`,
        // so a failed commit leaves them to the next reset).
        for page in written {
            if let Some(w) = dirty.get_mut((page / 64) as usize) {
                *w &= !(1u64 << (page % 64));
            }
        }
        Ok(())
    }

    /// Write `edits` into the page tables: widening ones from the host, the rest through the
    /// ring-0 stub.
    fn commit_edits(&mut self, tables: &Tables, edits: Vec<Edit>) -> Result<Committed> {
        let mut narrowing = Vec::new();
        for e in edits {
            if e.widens() {
                self.mem.write_u64(e.gpa, e.new)?;
            } else {
                narrowing.push(e);
            }
        }
        if narrowing.is_empty() {
            return Ok(Committed::default());
        }
        // Page-table entries before directory entries, so a table is complete before the
        // directory links it; then runs of adjacent entries, one stub run each.
        narrowing.sort_by_key(|e| (tables.is_directory_entry(e.gpa), e.gpa));
        let mut runs: Vec<&[Edit]> = Vec::new();
        let mut start = 0;
        for i in 1..=narrowing.len() {
            let ends = i == narrowing.len()
                || narrowing[i].gpa != narrowing[i - 1].gpa + 8
                || tables.is_directory_entry(narrowing[i].gpa) != tables.is_directory_entry(narrowing[i - 1].gpa)
                || i - start == RUN_ENTRIES;
            if ends {
                runs.push(&narrowing[start..i]);
                start = i;
            }
        }
        let flush = matches!(self.syscall_entry, SyscallEntry::Ring0);
        if !self.ran {
            // The synced copies are filled by the first KVM_RUN; before it, ask KVM.
            let regs = self.vm.vcpu.get_regs().map_err(|e| Error::kvm("KVM_GET_REGS", e))?;
            let sregs = self.vm.vcpu.get_sregs().map_err(|e| Error::kvm("KVM_GET_SREGS", e))?;
            let sync = self.vm.vcpu.sync_regs_mut();
            (sync.regs, sync.sregs) = (regs, sregs);
            self.ran = true;
        }
        let sync = self.vm.vcpu.sync_regs_mut();
        let (saved_regs, saved_sregs) = (sync.regs, sync.sregs);
        let mut kicked = false;
        let mut result = Ok(());
        for (i, run) in runs.iter().enumerate() {
            let values: Vec<u8> = run.iter().flat_map(|e| e.new.to_le_bytes()).collect();
            if let Err(e) = self.mem.write(self.layout.sys.pt_scratch, &values) {
                result = Err(e);
                break;
            }
            let last = i + 1 == runs.len();
            match self.run_commit_stub(run[0].gpa, run.len() as u64, flush && last) {
                Ok(k) => kicked |= k,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let sync = self.vm.vcpu.sync_regs_mut();
        sync.regs = saved_regs;
        sync.sregs = saved_sregs;
        self.vm.vcpu.set_sync_dirty_reg(SyncReg::Register);
        self.vm.vcpu.set_sync_dirty_reg(SyncReg::SystemRegister);
        self.stats.page_table_commits = self.stats.page_table_commits.saturating_add(runs.len() as u64);
        result.map(|()| Committed { stub_ran: true, kicked })
    }

    /// Run the commit stub once: copy `count` entries from the scratch page to `to`, with a TLB
    /// flush after if `flush`. True if the run timer or an interrupt kicked the vCPU meanwhile
    /// (the stub is then simply run on: `rep movsq` resumes where it stopped).
    fn run_commit_stub(&mut self, to: u64, count: u64, flush: bool) -> Result<bool> {
        let stubs = self.layout.sys.exception_stubs;
        let (entry, out_at) =
            if flush { (arch::PT_COPY_FLUSH_OFFSET, arch::PT_COPY_FLUSH_OUT_AT) } else { (arch::PT_COPY_OFFSET, arch::PT_COPY_OUT_AT) };
        let sync = self.vm.vcpu.sync_regs_mut();
        sync.regs = kvm_regs {
            rip: stubs + entry,
            rdi: to,
            rsi: self.layout.sys.pt_scratch,
            rcx: count,
            rsp: self.layout.sys.ring0_stack + layout::PAGE_SIZE,
            rflags: 0x2,
            ..Default::default()
        };
        (sync.sregs.cs, sync.sregs.ss) = arch::kernel_segments();
        self.vm.vcpu.set_sync_dirty_reg(SyncReg::Register);
        self.vm.vcpu.set_sync_dirty_reg(SyncReg::SystemRegister);
        let mut kicked = false;
        for _ in 0..MAX_STUB_ENTRIES {
            match self.vm.vcpu.run() {
                Ok(VcpuExit::IoOut(arch::PT_COMMIT_PORT, _)) => {
                    let sync = self.vm.vcpu.sync_regs_mut();
                    let out = stubs + entry + out_at;
                    if sync.sregs.cs.dpl != 0 || (sync.regs.rip != out && sync.regs.rip != out + 2) {
                        return Err(Error::Internal(format!("page-table commit stub exited at {:#x}", sync.regs.rip)));
                    }
                    return Ok(kicked);
                }
                // Single-stepping under a debugger: step on through the stub.
                Ok(VcpuExit::Debug(_)) => {}
                Ok(other) => return Err(Error::Internal(format!("page-table commit stub: unexpected exit {other:?}"))),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.vm.vcpu.set_kvm_immediate_exit(0);
                    kicked = true;
                }
                Err(e) => return Err(Error::kvm("KVM_RUN (page-table commit)", e)),
            }
        }
        Err(Error::Internal("page-table commit stub did not finish".into()))
    }

    /// A #PF the rights allow: a stale translation (VMX/SVM's TLB after a widening host
    /// write). The CPU dropped it when it faulted, so the guest resumes at the faulting
    /// instruction. True if the fault was spurious and the guest was resumed.
    pub(super) fn spurious_page_fault(&mut self) -> Result<bool> {
        let sync = self.vm.vcpu.sync_regs_mut();
        let (frame, addr) = (sync.regs.rsp, sync.sregs.cr2);
        let err = self.mem.read_u64(frame)?;
        const WRITE: u64 = 1 << 1;
        const USER: u64 = 1 << 2;
        const FETCH: u64 = 1 << 4;
        let perm = read_space(&self.space).perm_at(addr);
        let allowed = err & USER != 0 && perm.present && perm.user && (err & WRITE == 0 || perm.write) && (err & FETCH == 0 || perm.exec);
        let repeats = if self.last_spurious.0 == addr { self.last_spurious.1 + 1 } else { 1 };
        if !allowed || repeats > MAX_SPURIOUS {
            self.last_spurious = (0, 0);
            return Ok(false);
        }
        self.last_spurious = (addr, repeats);
        // The CPU's frame after the error code: rip, cs, rflags, rsp, ss.
        let word = |i: u64| self.mem.read_u64(frame.wrapping_add(8 + i * 8));
        let (rip, rflags, rsp) = (word(0)?, word(2)?, word(3)?);
        let regs = kvm_regs { rip, rflags: arch::sysret_rflags(rflags), rsp, ..self.vm.vcpu.sync_regs_mut().regs };
        self.vm.enter_user(regs);
        Ok(true)
    }
}

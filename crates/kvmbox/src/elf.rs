//! ELF loading with goblin: validation, segment placement (ET_EXEC at its addresses, an ET_DYN
//! program at [`PIE_BASE`], its interpreter — `ld.so`, named by PT_INTERP — below a given
//! address, as Linux puts it at the top of the mmap area) and the facts the initial stack needs.

use std::collections::HashMap;
use std::sync::Arc;

use goblin::elf::{header, program_header, Elf};

use crate::error::{Error, Result};
use crate::layout::{page_down, page_up, Layout, Perm, Region, HUGE_PAGE_SIZE, PAGE_SIZE, PIE_BASE, USER_MIN};
use crate::memory::GuestMemory;

/// One PT_LOAD segment, relocated to its final guest address.
#[derive(Debug, Clone)]
struct Segment {
    vaddr: u64,
    memsz: u64,
    file_range: std::ops::Range<usize>,
    perm: Perm,
}

/// A parsed, validated executable ready to be copied into guest memory.
#[derive(Debug, Clone)]
pub struct Program {
    bytes: Vec<u8>,
    segments: Vec<Segment>,
    /// Load bias added to every address in the file (0 for ET_EXEC); AT_BASE for an interpreter.
    pub base: u64,
    pub entry: u64,
    pub phdr_addr: u64,
    pub phnum: u64,
    pub phent: u64,
    /// First byte after the highest segment: where the brk heap starts (page-aligned).
    pub image_end: u64,
    /// Function and object symbols from the ELF symbol table, relocated (shared, so callers
    /// can keep them after the machine is gone).
    pub symbols: Arc<HashMap<String, u64>>,
    /// The interpreter a dynamic executable names (PT_INTERP), e.g. `/lib64/ld-linux-x86-64.so.2`.
    pub interp: Option<String>,
}

/// Where an ET_DYN file goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The program: at [`PIE_BASE`] when it starts at 0 (ET_EXEC always at its addresses).
    Program,
    /// An interpreter: ending below this address, 2 MiB-aligned.
    Below(u64),
}

/// The longest PT_INTERP path accepted (Linux: PATH_MAX).
const MAX_INTERP: usize = 4096;

fn elf_err(msg: impl Into<String>) -> Error {
    Error::Elf(msg.into())
}

impl Program {
    /// Parse and validate `bytes` as an x86-64 executable (static, or dynamic with PT_INTERP).
    pub fn parse(bytes: Vec<u8>) -> Result<Program> {
        Self::parse_placed(bytes, Placement::Program)
    }

    /// Parse and validate `bytes` as a program interpreter (ld.so: ET_DYN, no PT_INTERP of its
    /// own), placed to end below `top`.
    pub fn parse_interpreter(bytes: Vec<u8>, top: u64) -> Result<Program> {
        let p = Self::parse_placed(bytes, Placement::Below(top))?;
        if p.interp.is_some() {
            return Err(elf_err("the program interpreter names an interpreter itself"));
        }
        Ok(p)
    }

    fn parse_placed(bytes: Vec<u8>, placement: Placement) -> Result<Program> {
        if bytes.len() < 4 || &bytes[..4] != b"\x7fELF" {
            return Err(elf_err("not an ELF file (bad magic)"));
        }
        if bytes.len() < header::header64::SIZEOF_IDENT {
            return Err(elf_err(format!("truncated ELF header ({} bytes)", bytes.len())));
        }
        if bytes[4] != header::ELFCLASS64 {
            return Err(elf_err("wrong ELF class: only 64-bit (ELFCLASS64) executables are supported"));
        }
        if bytes.len() < header::header64::SIZEOF_EHDR {
            return Err(elf_err(format!("truncated ELF header ({} bytes)", bytes.len())));
        }
        if bytes[5] != header::ELFDATA2LSB {
            return Err(elf_err("wrong byte order: only little-endian executables are supported"));
        }
        let hdr = Elf::parse_header(&bytes).map_err(|e| elf_err(format!("bad ELF header: {e}")))?;
        if hdr.e_machine != header::EM_X86_64 {
            return Err(elf_err(format!("wrong machine: {} (only x86-64 is supported)", header::machine_to_str(hdr.e_machine))));
        }
        if hdr.e_type != header::ET_EXEC && hdr.e_type != header::ET_DYN {
            return Err(elf_err(format!("not an executable (e_type {})", header::et_to_str(hdr.e_type))));
        }
        let ph_end = (hdr.e_phoff as u128) + (hdr.e_phnum as u128) * (hdr.e_phentsize as u128);
        if hdr.e_phentsize as usize != program_header::program_header64::SIZEOF_PHDR || ph_end > bytes.len() as u128 {
            return Err(elf_err("program headers are truncated or malformed"));
        }
        // goblin may panic on adversarial input in corners we do not control; a panic must
        // never take the host down. Only the program headers matter for running: if the
        // section or symbol tables are damaged (the kernel ignores them too), load without
        // symbols.
        let parsed = std::panic::catch_unwind(|| match Elf::parse(&bytes) {
            Ok(elf) => Ok(Self::collect(&elf)),
            Err(full_err) => Self::collect_program_headers(&bytes, &hdr).map_err(|_| full_err),
        });
        let (segments_raw, symbols_raw, interp_range, has_needed) = match parsed {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return Err(elf_err(format!("malformed program headers: {e}"))),
            Err(_) => return Err(elf_err("malformed ELF (parser failure)")),
        };
        let interp = match interp_range {
            None => None,
            Some((off, size)) => Some(Self::interp_path(&bytes, off, size)?),
        };
        if has_needed && interp.is_none() {
            return Err(elf_err("the executable needs shared libraries but names no interpreter (PT_INTERP)"));
        }
        if segments_raw.is_empty() {
            return Err(elf_err("no loadable (PT_LOAD) segments"));
        }
        let min_vaddr = page_down(segments_raw.iter().map(|p| p.p_vaddr).min().unwrap_or(0));
        let max_end = segments_raw.iter().filter_map(|p| p.p_vaddr.checked_add(p.p_memsz)).max().unwrap_or(0);
        let base = match placement {
            _ if hdr.e_type != header::ET_DYN => 0,
            Placement::Program if min_vaddr < PIE_BASE => PIE_BASE - min_vaddr,
            Placement::Program => 0,
            Placement::Below(top) => {
                let span = page_up(max_end).unwrap_or(u64::MAX).saturating_sub(min_vaddr);
                let at = top.checked_sub(span).map(|a| a & !(HUGE_PAGE_SIZE - 1)).filter(|&a| a >= PIE_BASE);
                let at =
                    at.ok_or_else(|| elf_err(format!("the interpreter ({span:#x} bytes) does not fit in guest memory; raise `memory`")))?;
                at.wrapping_sub(min_vaddr)
            }
        };
        if hdr.e_type != header::ET_DYN && matches!(placement, Placement::Below(_)) {
            return Err(elf_err("the program interpreter is not position-independent (ET_DYN)"));
        }

        let mut segments = Vec::new();
        for (i, ph) in segments_raw.iter().enumerate() {
            if ph.p_filesz > ph.p_memsz {
                return Err(elf_err(format!("segment {i}: file size {:#x} exceeds memory size {:#x}", ph.p_filesz, ph.p_memsz)));
            }
            let file_end = ph.p_offset.checked_add(ph.p_filesz).filter(|&e| e <= bytes.len() as u64);
            let Some(file_end) = file_end else {
                return Err(elf_err(format!("segment {i}: file range extends beyond the end of the file (truncated?)")));
            };
            if ph.p_align >= PAGE_SIZE && ph.p_vaddr % PAGE_SIZE != ph.p_offset % PAGE_SIZE {
                return Err(elf_err(format!("segment {i}: address and file offset are not congruent modulo the page size")));
            }
            let vaddr = ph.p_vaddr.checked_add(base).ok_or_else(|| elf_err(format!("segment {i}: address overflows")))?;
            if vaddr.checked_add(ph.p_memsz).and_then(page_up).is_none() {
                return Err(elf_err(format!("segment {i}: size {:#x} overflows the address space", ph.p_memsz)));
            }
            segments.push(Segment {
                vaddr,
                memsz: ph.p_memsz,
                file_range: ph.p_offset as usize..file_end as usize,
                perm: Perm::user(ph.p_flags & program_header::PF_W != 0, ph.p_flags & program_header::PF_X != 0),
            });
        }
        segments.sort_by_key(|s| s.vaddr);
        for w in segments.windows(2) {
            if w[0].vaddr + w[0].memsz > w[1].vaddr {
                return Err(elf_err(format!(
                    "overlapping segments at {:#x}..{:#x} and {:#x}",
                    w[0].vaddr,
                    w[0].vaddr + w[0].memsz,
                    w[1].vaddr
                )));
            }
        }
        let entry = hdr.e_entry.wrapping_add(base);
        if !segments.iter().any(|s| s.perm.exec && entry >= s.vaddr && entry < s.vaddr + s.memsz) {
            return Err(elf_err(format!("entry point {entry:#x} is not inside an executable segment")));
        }
        // AT_PHDR: where the program headers are in memory.
        let phdr_addr = segments
            .iter()
            .find(|s| {
                let off = s.file_range.start as u64;
                hdr.e_phoff >= off && ph_end as u64 <= s.file_range.end as u64
            })
            .map(|s| s.vaddr + (hdr.e_phoff - s.file_range.start as u64))
            .unwrap_or(0);
        let image_end = segments.iter().map(|s| page_up(s.vaddr + s.memsz).unwrap()).max().unwrap();
        let symbols = Arc::new(symbols_raw.into_iter().map(|(n, a)| (n, a.wrapping_add(base))).collect());
        Ok(Program {
            bytes,
            segments,
            base,
            entry,
            phdr_addr,
            phnum: hdr.e_phnum as u64,
            phent: hdr.e_phentsize as u64,
            image_end,
            symbols,
            interp,
        })
    }

    /// The PT_INTERP path: a NUL-terminated absolute path inside the file.
    fn interp_path(bytes: &[u8], off: u64, size: u64) -> Result<String> {
        let bad = || elf_err("malformed PT_INTERP");
        let end = off.checked_add(size).filter(|&e| e <= bytes.len() as u64).ok_or_else(bad)?;
        let raw = &bytes[off as usize..end as usize];
        let raw = raw.split(|&b| b == 0).next().unwrap_or(&[]);
        if raw.is_empty() || raw.len() > MAX_INTERP || raw[0] != b'/' {
            return Err(bad());
        }
        String::from_utf8(raw.to_vec()).map_err(|_| bad())
    }

    #[allow(clippy::type_complexity)]
    fn collect(elf: &Elf) -> (Vec<program_header::ProgramHeader>, Vec<(String, u64)>, Option<(u64, u64)>, bool) {
        let loads = elf.program_headers.iter().filter(|p| p.p_type == program_header::PT_LOAD && p.p_memsz > 0).cloned().collect();
        let has_interp = elf.program_headers.iter().find(|p| p.p_type == program_header::PT_INTERP).map(|p| (p.p_offset, p.p_filesz));
        let has_needed = !elf.libraries.is_empty();
        (loads, defined_symbols(elf), has_interp, has_needed)
    }

    /// Fallback when the full parse fails: program headers only, no symbols.
    #[allow(clippy::type_complexity)]
    fn collect_program_headers(
        bytes: &[u8],
        hdr: &header::Header,
    ) -> goblin::error::Result<(Vec<program_header::ProgramHeader>, Vec<(String, u64)>, Option<(u64, u64)>, bool)> {
        let ctx = goblin::container::Ctx::new(goblin::container::Container::Big, goblin::container::Endian::Little);
        let phdrs = program_header::ProgramHeader::parse(bytes, hdr.e_phoff as usize, hdr.e_phnum as usize, ctx)?;
        let loads = phdrs.iter().filter(|p| p.p_type == program_header::PT_LOAD && p.p_memsz > 0).cloned().collect();
        let has_interp = phdrs.iter().find(|p| p.p_type == program_header::PT_INTERP).map(|p| (p.p_offset, p.p_filesz));
        Ok((loads, Vec::new(), has_interp, false))
    }

    /// Page-aligned regions with the segments' permissions (pages shared by two segments
    /// get the union), checked to fit the user part of `layout`.
    pub fn regions(&self, layout: &Layout) -> Result<Vec<Region>> {
        let mut out: Vec<Region> = Vec::new();
        for s in &self.segments {
            let start = page_down(s.vaddr);
            let end = page_up(s.vaddr + s.memsz).unwrap();
            if start < USER_MIN || end > layout.heap_limit() {
                return Err(elf_err(format!(
                    "segment {:#x}..{:#x} lies outside guest memory (usable: {:#x}..{:#x}; raise `memory`)",
                    s.vaddr,
                    s.vaddr + s.memsz,
                    USER_MIN,
                    layout.heap_limit()
                )));
            }
            match out.last_mut() {
                Some(last) if last.end > start => {
                    // Shared page: split off the shared part with combined rights.
                    let shared_start = start;
                    let shared_end = last.end.min(end);
                    let prev_perm = last.perm;
                    last.end = shared_start;
                    if last.start == last.end {
                        out.pop();
                    }
                    out.push(Region { start: shared_start, end: shared_end, perm: prev_perm.union(s.perm) });
                    if shared_end < end {
                        out.push(Region { start: shared_end, end, perm: s.perm });
                    }
                }
                _ => out.push(Region { start, end, perm: s.perm }),
            }
        }
        Ok(out)
    }

    /// Copy the file-backed parts of every segment into guest memory (the rest is zero
    /// because guest memory starts zeroed).
    pub fn load(&self, mem: &GuestMemory) -> Result<()> {
        for s in &self.segments {
            mem.populate(s.vaddr, s.vaddr + s.file_range.len() as u64);
            mem.write(s.vaddr, &self.bytes[s.file_range.clone()])?;
        }
        Ok(())
    }
}

/// The functions and objects `elf` defines, from its symbol table and then its dynamic symbol
/// table (a stripped shared object has only the latter), unrelocated.
fn defined_symbols(elf: &Elf) -> Vec<(String, u64)> {
    use goblin::elf::sym::{Sym, STT_OBJECT};
    let wanted = |s: &Sym| (s.is_function() || s.st_type() == STT_OBJECT) && s.st_value != 0 && s.st_shndx != 0;
    let mut seen = std::collections::HashSet::new();
    let from_symtab = elf.syms.iter().filter(wanted).filter_map(|s| elf.strtab.get_at(s.st_name).map(|n| (n, s.st_value)));
    let from_dynsym = elf.dynsyms.iter().filter(wanted).filter_map(|s| elf.dynstrtab.get_at(s.st_name).map(|n| (n, s.st_value)));
    from_symtab.chain(from_dynsym).filter(|(n, _)| seen.insert(*n)).map(|(n, v)| (n.to_string(), v)).collect()
}

/// The symbols a shared object file defines (unrelocated: add its load bias), or none if it
/// is not a parseable ELF file. Never panics, whatever the bytes.
pub fn shared_object_symbols(bytes: &[u8]) -> HashMap<String, u64> {
    std::panic::catch_unwind(|| Elf::parse(bytes).map(|elf| defined_symbols(&elf).into_iter().collect()).unwrap_or_default())
        .unwrap_or_default()
}

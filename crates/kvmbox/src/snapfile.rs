//! Snapshot files: `Snapshot::save` / `Snapshot::load`.
//!
//! Layout (little-endian): magic `KVMBOXSN`, format version (u32), then the metadata (layout,
//! symbols, CPU state, emulated-process state), then guest memory as extents of pages that hold
//! data (holes are skipped), and finally a CRC-32 of everything before it. A file is checked
//! completely (magic, version, length, checksum, consistency) before anything is built from
//! it, and the kernel-side structures (descriptor tables, stubs, page tables) are rebuilt from
//! the layout rather than taken from the file, so a crafted file cannot give the guest more
//! than a normal program has.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::{Error, Result};

pub const MAGIC: &[u8; 8] = b"KVMBOXSN";
/// 2: the emulated process keeps every thread (registers, FPU, run state, timeouts).
/// 4: in-memory files, the working directory and umask; the vDSO's pages in the system area.
pub const VERSION: u32 = 4;

fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("invalid snapshot file: {what}"))
}

/// Append-only encoder.
#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.buf.extend_from_slice(b);
    }
    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    /// A plain C struct, byte for byte.
    pub fn pod<T: Copy>(&mut self, v: &T) {
        // SAFETY: T is a plain-old-data kernel ABI struct; we only read its bytes.
        let b = unsafe { std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>()) };
        self.bytes(b);
    }
}

/// Bounds-checked decoder: every read past the end is a "truncated" error, never a panic.
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len()).ok_or_else(|| corrupt("truncated"))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.u64()?;
        self.take(usize::try_from(n).map_err(|_| corrupt("length out of range"))?)
    }
    pub fn str(&mut self) -> Result<String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| corrupt("bad string"))
    }
    /// A count of items that each take at least `min_item` bytes (guards allocations).
    pub fn count(&mut self, min_item: usize) -> Result<usize> {
        let n = self.u64()? as usize;
        if n.saturating_mul(min_item.max(1)) > self.data.len() - self.pos {
            return Err(corrupt("count larger than the file"));
        }
        Ok(n)
    }
    pub fn pod<T: Copy>(&mut self) -> Result<T> {
        let b = self.bytes()?;
        if b.len() != std::mem::size_of::<T>() {
            return Err(corrupt("structure size mismatch (written by another kvmbox build?)"));
        }
        // SAFETY: T is a plain-old-data kernel ABI struct valid for any bytes; the length matches.
        Ok(unsafe { std::ptr::read_unaligned(b.as_ptr() as *const T) })
    }
    pub fn remaining(&self) -> &'a [u8] {
        &self.data[self.pos..]
    }
}

/// Called with (bytes done, bytes in all) as a snapshot file is written or read.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// How often progress is reported.
const PROGRESS_STEP: u64 = 16 << 20;

/// Write `meta` and the `extents` of `image` (the guest memory, whose other bytes are zero) to
/// `path`, reporting the memory bytes written to `progress`.
pub fn write_file(path: &Path, meta: &[u8], image: &[u8], extents: &[(u64, u64)], progress: Progress) -> Result<()> {
    let io = |e: std::io::Error| Error::File(crate::error::FileError::of("write", path, &e));
    let mut out = std::io::BufWriter::new(File::create(path).map_err(io)?);
    let mut crc = crc32fast::Hasher::new();
    let mut put = |out: &mut std::io::BufWriter<File>, b: &[u8]| -> Result<()> {
        crc.update(b);
        out.write_all(b).map_err(io)
    };
    put(&mut out, MAGIC)?;
    put(&mut out, &VERSION.to_le_bytes())?;
    put(&mut out, &(meta.len() as u64).to_le_bytes())?;
    put(&mut out, meta)?;
    let total: u64 = extents.iter().map(|&(s, e)| e.saturating_sub(s)).sum();
    let mut done = 0u64;
    progress(0, total);
    for &(start, end) in extents {
        put(&mut out, &start.to_le_bytes())?;
        put(&mut out, &(end - start).to_le_bytes())?;
        for piece in image[start as usize..end as usize].chunks(PROGRESS_STEP as usize) {
            put(&mut out, piece)?;
            done = done.saturating_add(piece.len() as u64);
            progress(done, total);
        }
    }
    put(&mut out, &u64::MAX.to_le_bytes())?;
    put(&mut out, &0u64.to_le_bytes())?;
    let sum = crc.finalize();
    out.write_all(&sum.to_le_bytes()).map_err(io)?;
    out.flush().map_err(io)
}

/// Read and verify a snapshot file: returns the metadata and a new memfd holding the guest
/// memory. The metadata must start with the memory size (u64), which bounds every extent.
/// Nothing is returned unless the whole file checks out (magic, version, checksum, bounds).
/// `progress` gets the file bytes read.
pub fn read_file(path: &Path, max_memory: u64, progress: Progress) -> Result<(Vec<u8>, File)> {
    let f = File::open(path).map_err(|e| Error::File(crate::error::FileError::of("read", path, &e)))?;
    let file_len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut input = std::io::BufReader::with_capacity(1 << 20, f);
    let mut crc = crc32fast::Hasher::new();
    let mut consumed: u64 = 0;
    let mut reported = 0u64;
    progress(0, file_len);
    let mut read_exact = |input: &mut std::io::BufReader<File>, buf: &mut [u8], crc: &mut crc32fast::Hasher| -> Result<()> {
        input.read_exact(buf).map_err(|_| corrupt("truncated"))?;
        crc.update(buf);
        consumed += buf.len() as u64;
        if consumed.saturating_sub(reported) >= PROGRESS_STEP {
            reported = consumed;
            progress(consumed, file_len);
        }
        Ok(())
    };
    let mut head = [0u8; 12];
    read_exact(&mut input, &mut head, &mut crc).map_err(|_| corrupt("not a kvmbox snapshot (too short)"))?;
    if &head[..8] != MAGIC {
        return Err(corrupt("not a kvmbox snapshot (bad magic)"));
    }
    let version = u32::from_le_bytes(head[8..12].try_into().unwrap());
    if version != VERSION {
        return Err(corrupt(format!("format version {version}, this kvmbox reads version {VERSION}")));
    }
    let mut word = [0u8; 8];
    read_exact(&mut input, &mut word, &mut crc)?;
    let meta_len = u64::from_le_bytes(word);
    if meta_len < 8 || meta_len > file_len {
        return Err(corrupt("metadata length out of range"));
    }
    let mut meta = vec![0u8; meta_len as usize];
    read_exact(&mut input, &mut meta, &mut crc)?;
    let memory = u64::from_le_bytes(meta[..8].try_into().unwrap());
    if memory == 0 || memory > max_memory {
        return Err(corrupt("memory size out of range"));
    }
    let memfd = crate::memory::new_memfd(memory)?;
    let mut chunk = vec![0u8; 1 << 20];
    let mut last_end = 0u64;
    loop {
        read_exact(&mut input, &mut word, &mut crc)?;
        let off = u64::from_le_bytes(word);
        read_exact(&mut input, &mut word, &mut crc)?;
        let len = u64::from_le_bytes(word);
        if off == u64::MAX {
            break;
        }
        let end = off.checked_add(len).filter(|&e| e <= memory && off >= last_end).ok_or_else(|| corrupt("memory extent out of range"))?;
        let mut at = off;
        while at < end {
            let n = ((end - at) as usize).min(chunk.len());
            read_exact(&mut input, &mut chunk[..n], &mut crc)?;
            // SAFETY: pwrite from our buffer into our own memfd.
            let put = unsafe { libc::pwrite(memfd.as_raw_fd(), chunk.as_ptr().cast(), n, at as i64) };
            if put != n as isize {
                return Err(Error::OutOfMemory(format!("loading snapshot memory: {}", std::io::Error::last_os_error())));
            }
            at += n as u64;
        }
        last_end = end;
    }
    let mut sum = [0u8; 4];
    input.read_exact(&mut sum).map_err(|_| corrupt("truncated"))?;
    if crc.finalize() != u32::from_le_bytes(sum) {
        return Err(corrupt("checksum mismatch (the file is corrupt)"));
    }
    let mut extra = [0u8; 1];
    if input.read(&mut extra).map_err(|_| corrupt("truncated"))? != 0 || consumed + 4 != file_len {
        return Err(corrupt("trailing data"));
    }
    progress(file_len, file_len);
    Ok((meta, memfd))
}

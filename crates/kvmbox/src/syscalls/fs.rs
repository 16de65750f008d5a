//! Paths and file metadata: where a path leads (the in-memory filesystem or the read-only
//! host view), open, stat, statx, access, getdents, readlink, getcwd.

use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::files::{self, FdKind};
use super::memfs::{self, Data, Found, Ino, MemOpen};
use super::{errno, host_result, Linux, SyscallEnv, AT_EMPTY_PATH, AT_FDCWD, AT_SYMLINK_NOFOLLOW, PATH_MAX};

/// Where a guest path leads.
#[derive(Debug)]
pub(super) enum Place {
    /// An in-memory file, directory or symlink.
    Mem(Ino),
    /// Nothing yet, in this in-memory directory (where it can be created).
    MemAbsent { parent: Ino, name: Vec<u8> },
    /// The read-only host view (allowRead) at this normalised path, or nothing.
    Host(PathBuf),
    /// A writable host mount, at this path below it (resolved beneath it by the host).
    HostRw(super::hostrw::WritableMount, PathBuf),
}

/// What a permission check asks for.
#[derive(Clone, Copy)]
pub(super) enum Want {
    Read,
    Write,
    Exec,
}

/// Whether `uid`/`gid` may do `want` to a file of `mode` owned by `owner`/`group`, as the
/// kernel decides (root may read and write anything and execute what anyone may).
pub(super) fn permits(mode: u32, owner: u32, group: u32, uid: u32, gid: u32, want: Want) -> bool {
    let bit = match want {
        Want::Read => 4,
        Want::Write => 2,
        Want::Exec => 1,
    };
    if uid == 0 {
        return !matches!(want, Want::Exec) || mode & 0o111 != 0 || mode & libc::S_IFMT == libc::S_IFDIR;
    }
    let shift = if uid == owner {
        6
    } else if gid == group {
        3
    } else {
        0
    };
    (mode >> shift) & bit != 0
}

impl Linux {
    /// Where the normalised absolute guest path `path` leads, following symlinks (the last one
    /// too with `follow_last`) through the in-memory mounts and the host view alike.
    pub(super) fn locate(&mut self, path: PathBuf, follow_last: bool) -> std::result::Result<Place, i32> {
        let mut p = path;
        let mut links = 0u32;
        for _ in 0..=memfs::MAX_LINKS {
            if let Some((w, rel)) = self.fs.writable_of(&p) {
                return Ok(Place::HostRw(w.clone(), rel));
            }
            if let Some(m) = self.fs.mount_of(&p) {
                let rel = p.strip_prefix(&self.fs.mounts()[m].path).unwrap_or(Path::new("")).to_path_buf();
                match self.fs.resolve(&self.policy, m, &rel, follow_last, &mut links)? {
                    Found::Node(ino) => return Ok(Place::Mem(ino)),
                    Found::Absent { parent, name } => return Ok(Place::MemAbsent { parent, name }),
                    Found::Elsewhere(q) => {
                        p = q;
                        continue;
                    }
                }
            }
            // A host symlink may lead into a mount (only those of allowed paths are read).
            if let Ok(r) = self.policy.resolve(&p, follow_last) {
                if r != p && (self.fs.mount_of(&r).is_some() || self.fs.writable_of(&r).is_some()) {
                    p = r;
                    continue;
                }
            }
            return Ok(Place::Host(p));
        }
        Err(errno::ELOOP)
    }

    /// The directory `path` must be in for a new entry, and the entry's name: the parent
    /// looked up (following symlinks), the last component as given. `.`/`..`/`/` as the last
    /// component are refused (`busy` is the errno for them).
    pub(super) fn locate_parent(&mut self, path: &Path, busy: i32) -> std::result::Result<(Place, Vec<u8>), i32> {
        let name = path.file_name().ok_or(busy)?.as_bytes().to_vec();
        let parent = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        Ok((self.locate(parent, true)?, name))
    }

    /// Whether an in-memory inode lets this process do `want`.
    pub(super) fn may(&self, ino: Ino, want: Want) -> bool {
        self.fs.inode(ino).is_some_and(|n| permits(n.mode, n.uid, n.gid, self.uid, self.gid, want))
    }

    /// Free the in-memory files that lost their last name and are no longer open.
    pub(super) fn release_orphans(&mut self) {
        for ino in self.fs.orphans() {
            self.forget_if_closed(ino);
        }
    }

    /// Free in-memory inode `ino` if it has no name left and no descriptor holds it.
    pub(super) fn forget_if_closed(&mut self, ino: Ino) {
        let open = self.fds.mem_holds(ino);
        self.fs.forget_if_unused(ino, open);
    }

    /// A new descriptor for in-memory inode `ino` (an O_PATH one neither reads nor writes).
    fn open_mem(&mut self, ino: Ino, flags: i32) -> std::result::Result<u64, i32> {
        let acc = flags & 3;
        let path_only = flags & libc::O_PATH != 0;
        let read = !path_only && (acc == libc::O_RDONLY || acc == libc::O_RDWR);
        let write = !path_only && (acc == libc::O_WRONLY || acc == libc::O_RDWR);
        let lower = if read { self.fs.open_lower(&self.policy, ino)?.map(Arc::new) } else { None };
        let open = MemOpen { ino, offset: 0, read, write, append: flags & libc::O_APPEND != 0, lower, cursor: None, path_only };
        self.fds.insert(FdKind::Mem(Arc::new(std::sync::Mutex::new(open))), 0)
    }

    /// open/openat/creat of an in-memory path.
    fn open_in_memory(&mut self, place: Place, flags: i32, mode: u32) -> std::result::Result<u64, i32> {
        let acc = flags & 3;
        let writes = acc == libc::O_WRONLY || acc == libc::O_RDWR;
        let ino = match place {
            Place::Host(_) | Place::HostRw(..) => return Err(errno::EIO),
            Place::MemAbsent { parent, name } => {
                if flags & libc::O_CREAT == 0 {
                    return Err(errno::ENOENT);
                }
                if flags & libc::O_DIRECTORY != 0 {
                    return Err(errno::EINVAL);
                }
                if !self.may(parent, Want::Write) || !self.may(parent, Want::Exec) {
                    return Err(errno::EACCES);
                }
                let mode = libc::S_IFREG | (mode & 0o7777 & !self.umask);
                let ino = self.fs.create(parent, &name, mode, self.uid, self.gid, Data::File(Arc::default()))?;
                // A new file opens even if its mode says otherwise (open(…, O_CREAT|O_RDWR, 0444)).
                return self.open_mem(ino, flags);
            }
            Place::Mem(ino) => ino,
        };
        if flags & (libc::O_CREAT | libc::O_EXCL) == libc::O_CREAT | libc::O_EXCL {
            return Err(errno::EEXIST);
        }
        let node = self.fs.inode(ino).ok_or(errno::ENOENT)?;
        match node.mode & libc::S_IFMT {
            libc::S_IFDIR if writes || flags & libc::O_CREAT != 0 => return Err(errno::EISDIR),
            libc::S_IFLNK if flags & libc::O_PATH == 0 => return Err(errno::ELOOP),
            libc::S_IFREG if flags & libc::O_DIRECTORY != 0 => return Err(errno::ENOTDIR),
            _ => {}
        }
        let denied = (acc != libc::O_WRONLY && !self.may(ino, Want::Read)) || (writes && !self.may(ino, Want::Write));
        if flags & libc::O_PATH == 0 && denied {
            return Err(errno::EACCES);
        }
        if flags & libc::O_TRUNC != 0 && writes && node.mode & libc::S_IFMT == libc::S_IFREG {
            // A lower file is emptied without being copied up; its readers read the empty copy.
            self.fs.truncate_to_empty(ino)?;
            self.drop_lower(ino);
        }
        self.open_mem(ino, flags)
    }
    /// The normalised absolute guest path for (dirfd, path).
    pub(super) fn resolve(&self, env: &SyscallEnv, dirfd: u64, path: u64) -> std::result::Result<PathBuf, i32> {
        let raw = env.user().read_cstring(path, PATH_MAX)?.ok_or(errno::ENAMETOOLONG)?;
        if raw.is_empty() {
            return Err(errno::ENOENT);
        }
        let p = Path::new(std::ffi::OsStr::from_bytes(&raw));
        let base = if p.is_absolute() {
            PathBuf::from("/")
        } else if dirfd as i32 == AT_FDCWD {
            self.cwd_path()?
        } else {
            self.dir_path_of(dirfd)?
        };
        Ok(files::normalize(&base.join(p)))
    }

    /// The working directory's path: where an in-memory one is now (renames move it along),
    /// ENOENT once it was removed, as on Linux.
    pub(super) fn cwd_path(&self) -> std::result::Result<PathBuf, i32> {
        match self.cwd_ino {
            Some(ino) if self.fs.inode(ino).is_some_and(|n| n.nlink > 0) => self.fs.path_of(ino).ok_or(errno::ENOENT),
            Some(_) => Err(errno::ENOENT),
            None => Ok(self.cwd.clone()),
        }
    }

    /// The guest path of the directory open as `fd` (a base for *at calls, fchdir).
    pub(super) fn dir_path_of(&self, fd: u64) -> std::result::Result<PathBuf, i32> {
        if let Some(FdKind::Mem(d)) = self.fds.get(fd) {
            let ino = super::ipc::lock(d).ino;
            if !self.fs.inode(ino).is_some_and(memfs::Inode::is_dir) {
                return Err(errno::ENOTDIR);
            }
            return self.fs.path_of(ino).ok_or(errno::ENOENT);
        }
        self.fds.path_of_dir(fd)
    }

    pub(super) fn open(&mut self, env: &SyscallEnv, dirfd: u64, path: u64, flags: u64, mode: u64) -> std::result::Result<u64, i32> {
        let p = self.resolve(env, dirfd, path)?;
        if let Some(dev) = files::Device::at(&p) {
            return self.fds.insert(FdKind::Device(dev), 0);
        }
        let flags = flags as i32;
        // O_CREAT|O_EXCL and O_NOFOLLOW do not follow a symlink in the last component.
        let follow = flags & libc::O_NOFOLLOW == 0 && flags & (libc::O_CREAT | libc::O_EXCL) != libc::O_CREAT | libc::O_EXCL;
        match self.locate(p.clone(), follow)? {
            Place::Host(p) => {
                let (host, is_dir) = self.policy.open(&p, flags)?;
                self.fds.insert(FdKind::File { host, path: p, is_dir, flags: libc::O_RDONLY }, 0)
            }
            Place::HostRw(w, rel) => {
                let (host, is_dir) = w.open(&rel, flags, mode as u32 & !self.umask)?;
                self.fds.insert(FdKind::File { host, path: p, is_dir, flags: flags & (libc::O_ACCMODE | libc::O_APPEND) }, 0)
            }
            place => self.open_in_memory(place, flags, mode as u32),
        }
    }

    pub(super) fn fstat(&self, env: &SyscallEnv, fd: u64, buf: u64) -> std::result::Result<u64, i32> {
        let st = self.stat_fd(fd)?;
        env.user().write_pod(buf, &st)?;
        Ok(0)
    }

    pub(super) fn stat_fd(&self, fd: u64) -> std::result::Result<libc::stat, i32> {
        match self.fds.get(fd) {
            Some(FdKind::Device(d)) => return Ok(d.stat()),
            Some(FdKind::Mem(d)) => {
                let ino = super::ipc::lock(d).ino;
                return self.fs.inode(ino).map(|n| n.stat(ino)).ok_or(errno::EBADF);
            }
            Some(FdKind::Local(d)) if matches!(super::ipc::lock(d).local, super::ipc::Local::Socket(_)) => {
                let mut st = files::pipe_stat(self.uid, self.gid);
                st.st_mode = libc::S_IFSOCK | 0o777;
                return Ok(st);
            }
            _ => {}
        }
        match self.host_fd_of(fd, true)? {
            None => Ok(files::pipe_stat(self.uid, self.gid)),
            Some(h) => {
                // SAFETY: fstat into a local struct.
                let mut st: libc::stat = unsafe { std::mem::zeroed() };
                if unsafe { libc::fstat(h, &mut st) } != 0 {
                    return Err(errno::EBADF);
                }
                Ok(st)
            }
        }
    }

    /// AT_EMPTY_PATH with an empty path: the call is about `dirfd` itself.
    pub(super) fn is_empty_path(env: &SyscallEnv, path: u64, flags: u64) -> std::result::Result<bool, i32> {
        Ok(flags & AT_EMPTY_PATH != 0 && env.user().read_cstring(path, 1)?.is_some_and(|p| p.is_empty()))
    }

    pub(super) fn stat_path(&mut self, env: &SyscallEnv, dirfd: u64, path: u64, buf: u64, flags: u64) -> std::result::Result<u64, i32> {
        if Self::is_empty_path(env, path, flags)? {
            if dirfd as i32 == AT_FDCWD {
                let cwd = self.cwd_path()?;
                return self.stat_path_resolved(env, &cwd, buf);
            }
            return self.fstat(env, dirfd, buf);
        }
        let p = self.resolve(env, dirfd, path)?;
        self.stat_path_resolved_with(env, &p, buf, flags & AT_SYMLINK_NOFOLLOW != 0)
    }

    pub(super) fn stat_path_resolved(&mut self, env: &SyscallEnv, p: &Path, buf: u64) -> std::result::Result<u64, i32> {
        self.stat_path_resolved_with(env, p, buf, false)
    }

    /// stat of an allowed path; with `nofollow` (lstat, AT_SYMLINK_NOFOLLOW) a symlink itself.
    fn stat_path_resolved_with(&mut self, env: &SyscallEnv, p: &Path, buf: u64, nofollow: bool) -> std::result::Result<u64, i32> {
        let st = self.stat_of_path(p, nofollow)?;
        env.user().write_pod(buf, &st)?;
        Ok(0)
    }

    /// stat of a guest path: a device, an in-memory file, an allowed host file, or a
    /// directory on the way to a mount point.
    pub(super) fn stat_of_path(&mut self, p: &Path, nofollow: bool) -> std::result::Result<libc::stat, i32> {
        self.stat_place(p, nofollow).map(|(st, _)| st)
    }

    /// `stat_of_path`, and whether the path is in the in-memory filesystem (writable).
    pub(super) fn stat_place(&mut self, p: &Path, nofollow: bool) -> std::result::Result<(libc::stat, bool), i32> {
        if let Some(dev) = files::Device::at(p) {
            return Ok((dev.stat(), false));
        }
        let p = match self.locate(p.to_path_buf(), !nofollow)? {
            Place::Mem(ino) => return self.fs.inode(ino).map(|n| (n.stat(ino), true)).ok_or(errno::ENOENT),
            Place::HostRw(w, rel) => {
                let fd = w.lookup(&rel, nofollow)?;
                // SAFETY: fstat of our O_PATH handle into a local struct.
                let mut st: libc::stat = unsafe { std::mem::zeroed() };
                if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
                    return Err(errno::EIO);
                }
                return Ok((st, true));
            }
            Place::MemAbsent { .. } => return Err(errno::ENOENT),
            Place::Host(p) => p,
        };
        let flags = if nofollow { libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_PATH } else { libc::O_RDONLY };
        let host = match self.policy.lookup(&p, flags) {
            Ok((host, _)) => host,
            Err(errno::ENOENT) if self.fs.leads_to_mount(&p) => {
                // A directory that exists for the guest only because a mount lies below it.
                // SAFETY: stat is plain old data.
                let mut st: libc::stat = unsafe { std::mem::zeroed() };
                st.st_mode = libc::S_IFDIR | 0o755;
                st.st_nlink = 2;
                st.st_dev = memfs::DEV;
                st.st_ino = 1;
                st.st_blksize = 4096;
                return Ok((st, false));
            }
            Err(e) => return Err(e),
        };
        // SAFETY: fstat into a local struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(host.as_raw_fd(), &mut st) } != 0 {
            return Err(errno::EIO);
        }
        Ok((st, false))
    }

    pub(super) fn statx(&mut self, env: &SyscallEnv, dirfd: u64, path: u64, flags: u64, buf: u64) -> std::result::Result<u64, i32> {
        let empty = Self::is_empty_path(env, path, flags)?;
        let owned;
        let host = if empty && dirfd as i32 != AT_FDCWD {
            match self.fds.get(dirfd).ok_or(errno::EBADF)? {
                FdKind::File { host, .. } => host.as_raw_fd(),
                _ => return self.statx_from_stat(env, dirfd, buf),
            }
        } else {
            let p = if empty { self.cwd_path()? } else { self.resolve(env, dirfd, path)? };
            let nofollow = flags & AT_SYMLINK_NOFOLLOW != 0;
            let p = match self.locate(p.clone(), !nofollow)? {
                Place::Host(p) if files::Device::at(&p).is_none() && !self.fs.leads_to_mount(&p) => p,
                _ => {
                    let st = self.stat_of_path(&p, nofollow)?;
                    env.user().write_pod(buf, &statx_of(&st))?;
                    return Ok(0);
                }
            };
            let nofollow = if nofollow { libc::O_NOFOLLOW | libc::O_PATH } else { 0 };
            owned = self.policy.lookup(&p, libc::O_RDONLY | nofollow)?.0;
            owned.as_raw_fd()
        };
        // SAFETY: statx with AT_EMPTY_PATH on our own fd into a local struct.
        let mut stx: libc::statx = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::statx(host, c"".as_ptr(), libc::AT_EMPTY_PATH, libc::STATX_BASIC_STATS, &mut stx) };
        if r != 0 {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(errno::EIO));
        }
        env.user().write_pod(buf, &stx)?;
        Ok(0)
    }

    /// statx for what has no host file (stdio streams, in-memory files), from its `struct stat`.
    pub(super) fn statx_from_stat(&self, env: &SyscallEnv, fd: u64, buf: u64) -> std::result::Result<u64, i32> {
        let st = self.stat_fd(fd)?;
        env.user().write_pod(buf, &statx_of(&st))?;
        Ok(0)
    }

    /// access/faccessat/faccessat2: F_OK that the path is there; R_OK, W_OK and X_OK from
    /// the file's mode (host files are never writable: EROFS; R_OK of one also needs it to
    /// open, as natively).
    pub(super) fn access(&mut self, env: &SyscallEnv, dirfd: u64, path: u64, mode: u64) -> std::result::Result<u64, i32> {
        let p = self.resolve(env, dirfd, path)?;
        if mode & !7 != 0 {
            return Err(errno::EINVAL);
        }
        if files::Device::at(&p).is_some() {
            return if mode & 1 != 0 { Err(errno::EACCES) } else { Ok(0) };
        }
        let (st, in_memory) = self.stat_place(&p, false)?;
        if !in_memory && mode & 4 != 0 && st.st_mode & libc::S_IFMT == libc::S_IFREG {
            self.policy.open(&p, libc::O_RDONLY)?;
        }
        for (bit, want) in [(4, Want::Read), (2, Want::Write), (1, Want::Exec)] {
            if mode & bit == 0 {
                continue;
            }
            if bit == 2 && !in_memory {
                return Err(errno::EROFS);
            }
            if !permits(st.st_mode, st.st_uid, st.st_gid, self.uid, self.gid, want) {
                return Err(errno::EACCES);
            }
        }
        Ok(0)
    }

    pub(super) fn getdents64(&mut self, env: &SyscallEnv, fd: u64, buf: u64, len: u64) -> std::result::Result<u64, i32> {
        let host = match self.fds.get(fd).ok_or(errno::EBADF)? {
            FdKind::File { host, is_dir: true, .. } => host.as_raw_fd(),
            FdKind::Mem(d) => {
                let d = Arc::clone(d);
                return self.getdents_mem(env, &d, buf, len);
            }
            _ => return Err(errno::ENOTDIR),
        };
        let len = len.min(1 << 20);
        let ptr = env.user().host_range(buf, len, true)?;
        // SAFETY: getdents64 into the checked guest range.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, host, ptr, len as usize) };
        host_result(n)
    }

    /// getdents64 of an in-memory directory: `.` and `..`, then the names after the last one
    /// returned (d_off counts entries, for telldir).
    fn getdents_mem(&mut self, env: &SyscallEnv, d: &memfs::MemDesc, buf: u64, len: u64) -> std::result::Result<u64, i32> {
        let (ino, offset, cursor) = {
            let o = super::ipc::lock(d);
            if o.path_only {
                return Err(errno::EBADF);
            }
            (o.ino, o.offset, o.cursor.clone())
        };
        let len = len.min(1 << 20);
        // Each record takes at least 24 bytes: no more entries than that are looked at.
        let batch = usize::try_from(len / 24).unwrap_or(usize::MAX).saturating_add(1);
        // Past `.` and `..` a listing goes on after the last name it returned; one placed by
        // lseek (or restored from a snapshot) skips that many names from the first.
        let skip = if cursor.is_none() { usize::try_from(offset.saturating_sub(2)).unwrap_or(usize::MAX) } else { 0 };
        let mut entries = self.fs.entries_after(&self.policy, ino, offset, cursor.as_deref(), batch.saturating_add(skip))?;
        let dots = entries.len().min(2usize.saturating_sub(usize::try_from(offset).unwrap_or(2)));
        entries.drain(dots..dots.saturating_add(skip).min(entries.len()));
        let mut last = cursor;
        let mut out: Vec<u8> = Vec::new();
        let mut next = offset;
        for (name, child, kind) in &entries {
            let reclen = (19usize.saturating_add(name.len()).saturating_add(1)).next_multiple_of(8);
            if out.len().saturating_add(reclen) as u64 > len {
                break;
            }
            next = next.saturating_add(1); // the first entry here is number `offset`
            if next > 2 {
                last = Some(name.clone());
            }
            out.extend_from_slice(&child.to_le_bytes());
            out.extend_from_slice(&next.to_le_bytes());
            out.extend_from_slice(&(reclen as u16).to_le_bytes());
            out.push(*kind);
            out.extend_from_slice(name);
            out.resize(out.len().saturating_add(reclen.saturating_sub(19).saturating_sub(name.len())), 0);
        }
        if out.is_empty() && !entries.is_empty() {
            return Err(errno::EINVAL); // the buffer cannot hold the next entry
        }
        env.user().write(buf, &out)?;
        let mut o = super::ipc::lock(d);
        (o.offset, o.cursor) = (next, last);
        Ok(out.len() as u64)
    }

    pub(super) fn readlink(&mut self, env: &SyscallEnv, dirfd: u64, path: u64, buf: u64, size: u64) -> std::result::Result<u64, i32> {
        let p = self.resolve(env, dirfd, path)?;
        if size as i64 <= 0 {
            return Err(errno::EINVAL);
        }
        match self.locate(p.clone(), false)? {
            Place::MemAbsent { .. } => return Err(errno::ENOENT),
            Place::Host(_) => {}
            Place::HostRw(w, rel) => {
                let target = w.readlink(&rel)?;
                let n = target.len().min(size as usize);
                env.user().write(buf, &target[..n])?;
                return Ok(n as u64);
            }
            Place::Mem(ino) => {
                let Some(memfs::Inode { data: Data::Symlink(target), .. }) = self.fs.inode(ino) else { return Err(errno::EINVAL) };
                let n = target.len().min(size as usize);
                env.user().write(buf, &target[..n])?;
                return Ok(n as u64);
            }
        }
        if p == Path::new("/proc/self/exe") {
            let target = self.exe_path.as_os_str().as_encoded_bytes();
            let n = target.len().min(size as usize);
            env.user().write(buf, &target[..n])?;
            return Ok(n as u64);
        }
        let target = self.policy.readlink(&p)?;
        let n = target.len().min(size as usize);
        env.user().write(buf, &target[..n])?;
        Ok(n as u64)
    }

    /// getxattr/lgetxattr and listxattr/llistxattr of a path: kvmbox shows no extended
    /// attributes (no ACLs, no security labels), so an allowed path has none (ENODATA, an
    /// empty list) and any other fails as its lookup does.
    pub(super) fn xattr_path(&mut self, env: &SyscallEnv, path: u64, list: bool, nofollow: bool) -> std::result::Result<u64, i32> {
        let p = self.resolve(env, AT_FDCWD as u64, path)?;
        self.stat_of_path(&p, nofollow)?;
        if list {
            Ok(0)
        } else {
            Err(errno::ENODATA)
        }
    }

    /// fgetxattr/flistxattr: as `xattr_path`, for an open descriptor.
    pub(super) fn xattr_fd(&mut self, fd: u64, list: bool) -> std::result::Result<u64, i32> {
        self.fds.get(fd).ok_or(errno::EBADF)?;
        if list {
            Ok(0)
        } else {
            Err(errno::ENODATA)
        }
    }

    /// statfs of an allowed path, fstatfs of an open file: the host filesystem's figures.
    pub(super) fn statfs(&mut self, env: &SyscallEnv, path: Option<u64>, fd: u64, buf: u64) -> std::result::Result<u64, i32> {
        let owned;
        let host = match path {
            Some(path) => {
                let p = self.resolve(env, AT_FDCWD as u64, path)?;
                match self.locate(p, true)? {
                    Place::Host(p) => {
                        owned = self.policy.lookup(&p, libc::O_RDONLY)?.0;
                        owned.as_raw_fd()
                    }
                    Place::HostRw(w, rel) => {
                        owned = w.lookup(&rel, false)?;
                        owned.as_raw_fd()
                    }
                    Place::Mem(_) => {
                        env.user().write_pod(buf, &self.fs.statfs())?;
                        return Ok(0);
                    }
                    Place::MemAbsent { .. } => return Err(errno::ENOENT),
                }
            }
            None if matches!(self.fds.get(fd), Some(FdKind::Mem(_))) => {
                env.user().write_pod(buf, &self.fs.statfs())?;
                return Ok(0);
            }
            None => match self.host_fd_of(fd, true)? {
                Some(h) => h,
                None => return Err(errno::ENOSYS), // pipes and the like: no filesystem to show
            },
        };
        // SAFETY: fstatfs of our own descriptor into a local struct.
        let mut sfs: libc::statfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstatfs(host, &mut sfs) } != 0 {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(errno::EIO));
        }
        env.user().write_pod(buf, &sfs)?;
        Ok(0)
    }

    pub(super) fn getcwd(&self, env: &SyscallEnv, buf: u64, size: u64) -> std::result::Result<u64, i32> {
        let mut bytes = self.cwd_path()?.as_os_str().as_encoded_bytes().to_vec();
        bytes.push(0);
        if (size as usize) < bytes.len() {
            return Err(errno::ERANGE);
        }
        env.user().write(buf, &bytes)?;
        Ok(bytes.len() as u64)
    }
}

/// A `struct statx` with what a `struct stat` says (basic stats).
pub(super) fn statx_of(st: &libc::stat) -> libc::statx {
    // SAFETY: statx is plain old data.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    stx.stx_mask = libc::STATX_BASIC_STATS;
    stx.stx_mode = st.st_mode as u16;
    stx.stx_nlink = st.st_nlink as u32;
    stx.stx_uid = st.st_uid;
    stx.stx_gid = st.st_gid;
    stx.stx_blksize = st.st_blksize as u32;
    stx.stx_ino = st.st_ino;
    stx.stx_size = st.st_size.max(0) as u64;
    stx.stx_blocks = st.st_blocks.max(0) as u64;
    let ts = |sec: i64, nsec: i64| {
        // SAFETY: statx_timestamp is plain old data.
        let mut t: libc::statx_timestamp = unsafe { std::mem::zeroed() };
        t.tv_sec = sec;
        t.tv_nsec = nsec.clamp(0, 999_999_999) as u32;
        t
    };
    stx.stx_atime = ts(st.st_atime, st.st_atime_nsec);
    stx.stx_mtime = ts(st.st_mtime, st.st_mtime_nsec);
    stx.stx_ctime = ts(st.st_ctime, st.st_ctime_nsec);
    stx.stx_dev_major = libc::major(st.st_dev);
    stx.stx_dev_minor = libc::minor(st.st_dev);
    stx.stx_rdev_major = libc::major(st.st_rdev);
    stx.stx_rdev_minor = libc::minor(st.st_rdev);
    stx
}

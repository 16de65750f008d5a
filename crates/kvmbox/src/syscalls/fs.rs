//! Paths and file metadata: open, stat, statx, access, getdents, readlink, getcwd.

use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::files::{self, FdKind};
use super::{errno, host_result, Linux, SyscallEnv, AT_EMPTY_PATH, AT_FDCWD, AT_SYMLINK_NOFOLLOW, PATH_MAX};

impl Linux {
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
            self.cwd.clone()
        } else {
            self.fds.path_of_dir(dirfd)?
        };
        Ok(files::normalize(&base.join(p)))
    }

    pub(super) fn open(&mut self, env: &SyscallEnv, dirfd: u64, path: u64, flags: u64) -> std::result::Result<u64, i32> {
        let p = self.resolve(env, dirfd, path)?;
        if let Some(dev) = files::Device::at(&p) {
            return self.fds.insert(FdKind::Device(dev), 0);
        }
        let (host, is_dir) = self.policy.open(&p, flags as i32)?;
        self.fds.insert(FdKind::File { host, path: p, is_dir }, 0)
    }

    pub(super) fn fstat(&self, env: &SyscallEnv, fd: u64, buf: u64) -> std::result::Result<u64, i32> {
        let st = self.stat_fd(fd)?;
        env.user().write_pod(buf, &st)?;
        Ok(0)
    }

    pub(super) fn stat_fd(&self, fd: u64) -> std::result::Result<libc::stat, i32> {
        match self.fds.get(fd) {
            Some(FdKind::Device(d)) => return Ok(d.stat()),
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
                return self.stat_path_resolved(env, &self.cwd, buf);
            }
            return self.fstat(env, dirfd, buf);
        }
        let p = self.resolve(env, dirfd, path)?;
        self.stat_path_resolved_with(env, &p, buf, flags & AT_SYMLINK_NOFOLLOW != 0)
    }

    pub(super) fn stat_path_resolved(&self, env: &SyscallEnv, p: &Path, buf: u64) -> std::result::Result<u64, i32> {
        self.stat_path_resolved_with(env, p, buf, false)
    }

    /// stat of an allowed path; with `nofollow` (lstat, AT_SYMLINK_NOFOLLOW) a symlink itself.
    fn stat_path_resolved_with(&self, env: &SyscallEnv, p: &Path, buf: u64, nofollow: bool) -> std::result::Result<u64, i32> {
        if let Some(dev) = files::Device::at(p) {
            env.user().write_pod(buf, &dev.stat())?;
            return Ok(0);
        }
        let flags = if nofollow { libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_PATH } else { libc::O_RDONLY };
        let (host, _) = self.policy.lookup(p, flags)?;
        // SAFETY: fstat into a local struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(host.as_raw_fd(), &mut st) } != 0 {
            return Err(errno::EIO);
        }
        env.user().write_pod(buf, &st)?;
        Ok(0)
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
            let p = if empty { self.cwd.clone() } else { self.resolve(env, dirfd, path)? };
            let nofollow = if flags & AT_SYMLINK_NOFOLLOW != 0 { libc::O_NOFOLLOW | libc::O_PATH } else { 0 };
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

    /// statx for stdio streams, synthesised from their `struct stat`.
    pub(super) fn statx_from_stat(&self, env: &SyscallEnv, fd: u64, buf: u64) -> std::result::Result<u64, i32> {
        let st = self.stat_fd(fd)?;
        // SAFETY: statx is plain old data.
        let mut stx: libc::statx = unsafe { std::mem::zeroed() };
        stx.stx_mask = libc::STATX_BASIC_STATS;
        stx.stx_mode = st.st_mode as u16;
        stx.stx_nlink = st.st_nlink as u32;
        stx.stx_uid = st.st_uid;
        stx.stx_gid = st.st_gid;
        stx.stx_blksize = st.st_blksize as u32;
        stx.stx_ino = st.st_ino;
        env.user().write_pod(buf, &stx)?;
        Ok(0)
    }

    pub(super) fn access(&mut self, env: &SyscallEnv, dirfd: u64, path: u64, mode: u64) -> std::result::Result<u64, i32> {
        let p = self.resolve(env, dirfd, path)?;
        if files::Device::at(&p).is_some() {
            return if mode & 1 != 0 { Err(errno::EACCES) } else { Ok(0) };
        }
        // R_OK needs the file to be readable (as natively); F_OK only that it is there.
        if mode & 4 != 0 {
            self.policy.open(&p, libc::O_RDONLY)?;
        } else {
            self.policy.lookup(&p, libc::O_RDONLY)?;
        }
        if mode & 2 != 0 {
            return Err(errno::EROFS);
        }
        if mode & 1 != 0 {
            return Err(errno::EACCES);
        }
        Ok(0)
    }

    pub(super) fn getdents64(&mut self, env: &SyscallEnv, fd: u64, buf: u64, len: u64) -> std::result::Result<u64, i32> {
        let host = match self.fds.get(fd).ok_or(errno::EBADF)? {
            FdKind::File { host, is_dir: true, .. } => host.as_raw_fd(),
            _ => return Err(errno::ENOTDIR),
        };
        let len = len.min(1 << 20);
        let ptr = env.user().host_range(buf, len, true)?;
        // SAFETY: getdents64 into the checked guest range.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, host, ptr, len as usize) };
        host_result(n)
    }

    pub(super) fn readlink(&mut self, env: &SyscallEnv, dirfd: u64, path: u64, buf: u64, size: u64) -> std::result::Result<u64, i32> {
        let p = self.resolve(env, dirfd, path)?;
        if size as i64 <= 0 {
            return Err(errno::EINVAL);
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
        let flags = if nofollow { libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_PATH } else { libc::O_RDONLY };
        self.policy.lookup(&p, flags)?;
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
                owned = self.policy.lookup(&p, libc::O_RDONLY)?.0;
                owned.as_raw_fd()
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
        let mut bytes = self.cwd.as_os_str().as_encoded_bytes().to_vec();
        bytes.push(0);
        if (size as usize) < bytes.len() {
            return Err(errno::ERANGE);
        }
        env.user().write(buf, &bytes)?;
        Ok(bytes.len() as u64)
    }
}

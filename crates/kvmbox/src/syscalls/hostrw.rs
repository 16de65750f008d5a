//! Writable host mounts: the one way a guest changes host files, and only when the embedder
//! asks for it (`MountSpec::HostWritable`). Every path is resolved beneath the mounted
//! directory with openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS), so neither `..` nor a
//! symlink (an absolute one included) leads out of it; changes to an entry go through an O_PATH
//! handle of its parent directory and the entry's own name (the *at calls never follow a final
//! symlink there), and changes to a file's metadata go through an O_PATH handle of the file
//! itself. Only regular files and directories are opened: a FIFO or device node in the
//! directory is ENOENT, as everywhere else.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::errno;

/// A host directory the guest may change, mounted at a guest path.
#[derive(Clone, Debug)]
pub struct WritableMount {
    pub path: PathBuf,
    pub dir: Arc<OwnedFd>,
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(errno::EIO)
}

/// openat2 beneath `dir` (see `files::openat2_beneath`), close-on-exec and never taking a
/// terminal; an escape (EXDEV) is ENOENT: nothing outside exists for the guest.
fn openat2(dir: RawFd, rel: &Path, flags: i32, mode: u32) -> Result<OwnedFd, i32> {
    // openat2 refuses O_PATH with any flag but O_DIRECTORY, O_NOFOLLOW and O_CLOEXEC.
    let extra = if flags & libc::O_PATH != 0 { libc::O_CLOEXEC } else { libc::O_CLOEXEC | libc::O_NOCTTY };
    super::files::openat2_beneath(dir, rel, flags | extra, mode).map_err(|e| if e == libc::EXDEV { errno::ENOENT } else { e })
}

/// The file type of what `fd` refers to.
fn kind_of(fd: RawFd) -> Result<u32, i32> {
    // SAFETY: fstat into a local struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(last_errno());
    }
    Ok(st.st_mode & libc::S_IFMT)
}

fn check(r: libc::c_int) -> Result<u64, i32> {
    if r < 0 {
        Err(last_errno())
    } else {
        Ok(0)
    }
}

/// `/proc/self/fd/N` of an O_PATH handle: calls that take a path act on that very inode.
fn fd_path(fd: RawFd) -> Result<CString, i32> {
    CString::new(format!("/proc/self/fd/{fd}")).map_err(|_| errno::EINVAL)
}

impl WritableMount {
    /// An O_PATH handle of `rel` (with `nofollow`, a final symlink itself).
    pub fn lookup(&self, rel: &Path, nofollow: bool) -> Result<OwnedFd, i32> {
        let fd = openat2(self.dir.as_raw_fd(), rel, libc::O_PATH | if nofollow { libc::O_NOFOLLOW } else { 0 }, 0)?;
        match kind_of(fd.as_raw_fd())? {
            libc::S_IFREG | libc::S_IFDIR | libc::S_IFLNK => Ok(fd),
            _ => Err(errno::ENOENT),
        }
    }

    /// open/openat/creat with the guest's flags (O_CREAT, O_TRUNC, O_APPEND, O_EXCL, access
    /// mode, O_DIRECTORY, O_NOFOLLOW): an existing entry must be a regular file or directory
    /// (checked without opening it first); returns the descriptor and whether it is a directory.
    pub fn open(&self, rel: &Path, flags: i32, mode: u32) -> Result<(OwnedFd, bool), i32> {
        match openat2(self.dir.as_raw_fd(), rel, libc::O_PATH | (flags & libc::O_NOFOLLOW), 0) {
            Ok(existing) => match kind_of(existing.as_raw_fd())? {
                libc::S_IFREG | libc::S_IFDIR => {}
                libc::S_IFLNK => return Err(errno::ELOOP),
                _ => return Err(errno::ENOENT),
            },
            Err(errno::ENOENT) => {} // to be created (or not there: the open says which)
            Err(e) => return Err(e),
        }
        let pass = libc::O_ACCMODE | libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_APPEND | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        let fd = openat2(self.dir.as_raw_fd(), rel, (flags & pass) | libc::O_NONBLOCK, mode & 0o7777)?;
        let kind = kind_of(fd.as_raw_fd())?;
        if kind != libc::S_IFREG && kind != libc::S_IFDIR {
            return Err(errno::ENOENT); // swapped in meanwhile by someone on the host
        }
        // SAFETY: fcntl on our own descriptor: blocking mode, as the guest asked (files never block).
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & libc::O_APPEND) };
        Ok((fd, kind == libc::S_IFDIR))
    }

    /// The parent directory of `rel` (an O_PATH handle beneath the mount) and the last name.
    fn parent(&self, rel: &Path) -> Result<(OwnedFd, CString), i32> {
        let name = rel.file_name().ok_or(errno::EBUSY)?;
        let dir = openat2(self.dir.as_raw_fd(), rel.parent().unwrap_or(Path::new("")), libc::O_PATH | libc::O_DIRECTORY, 0)?;
        Ok((dir, CString::new(name.as_bytes()).map_err(|_| errno::EINVAL)?))
    }

    pub fn mkdir(&self, rel: &Path, mode: u32) -> Result<u64, i32> {
        let (dir, name) = self.parent(rel)?;
        // SAFETY: mkdirat relative to our handle, with a single-component name.
        check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode & 0o7777) })
    }

    pub fn unlink(&self, rel: &Path, rmdir: bool) -> Result<u64, i32> {
        let (dir, name) = self.parent(rel)?;
        // SAFETY: unlinkat relative to our handle, with a single-component name.
        check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), if rmdir { libc::AT_REMOVEDIR } else { 0 }) })
    }

    pub fn symlink(&self, target: &[u8], rel: &Path) -> Result<u64, i32> {
        let (dir, name) = self.parent(rel)?;
        let target = CString::new(target).map_err(|_| errno::EINVAL)?;
        // SAFETY: symlinkat relative to our handle; the target is only text (followed, later,
        // beneath the mount again).
        check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })
    }

    /// rename/renameat2 from `from` to `to`, both in this mount.
    pub fn rename(&self, from: &Path, to: &Path, flags: u32) -> Result<u64, i32> {
        let (a, an) = self.parent(from)?;
        let (b, bn) = self.parent(to)?;
        // SAFETY: renameat2 between our handles, with single-component names.
        let r = unsafe { libc::syscall(libc::SYS_renameat2, a.as_raw_fd(), an.as_ptr(), b.as_raw_fd(), bn.as_ptr(), flags) };
        check(r as i32)
    }

    /// link: a new name `to` for the file at `from` (not following a final symlink).
    pub fn link(&self, from: &Path, to: &Path) -> Result<u64, i32> {
        let (a, an) = self.parent(from)?;
        let (b, bn) = self.parent(to)?;
        // SAFETY: linkat between our handles, with single-component names, no follow.
        check(unsafe { libc::linkat(a.as_raw_fd(), an.as_ptr(), b.as_raw_fd(), bn.as_ptr(), 0) })
    }

    pub fn chmod(&self, rel: &Path, mode: u32, nofollow: bool) -> Result<u64, i32> {
        let fd = self.lookup(rel, nofollow)?;
        if kind_of(fd.as_raw_fd())? == libc::S_IFLNK {
            return Err(libc::EOPNOTSUPP);
        }
        let p = fd_path(fd.as_raw_fd())?;
        // SAFETY: chmod through the magic link of our O_PATH handle: that very inode.
        check(unsafe { libc::chmod(p.as_ptr(), mode & 0o7777) })
    }

    pub fn chown(&self, rel: &Path, uid: u32, gid: u32, nofollow: bool) -> Result<u64, i32> {
        let fd = self.lookup(rel, nofollow)?;
        // SAFETY: fchownat on our O_PATH handle itself (AT_EMPTY_PATH).
        check(unsafe { libc::fchownat(fd.as_raw_fd(), c"".as_ptr(), uid, gid, libc::AT_EMPTY_PATH) })
    }

    pub fn utimens(&self, rel: &Path, times: &[libc::timespec; 2], nofollow: bool) -> Result<u64, i32> {
        let fd = self.lookup(rel, nofollow)?;
        if kind_of(fd.as_raw_fd())? == libc::S_IFLNK {
            return Err(libc::EOPNOTSUPP);
        }
        let p = fd_path(fd.as_raw_fd())?;
        // SAFETY: utimensat through the magic link of our O_PATH handle, with two timespecs.
        check(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times.as_ptr(), 0) })
    }

    pub fn truncate(&self, rel: &Path, len: i64) -> Result<u64, i32> {
        let (fd, is_dir) = self.open(rel, libc::O_WRONLY, 0)?;
        if is_dir {
            return Err(errno::EISDIR);
        }
        // SAFETY: ftruncate of our own descriptor.
        check(unsafe { libc::ftruncate(fd.as_raw_fd(), len) })
    }

    /// The target of the symlink at `rel`.
    pub fn readlink(&self, rel: &Path) -> Result<Vec<u8>, i32> {
        let fd = self.lookup(rel, true)?;
        let mut buf = vec![0u8; libc::PATH_MAX as usize];
        // SAFETY: readlinkat of our O_PATH handle itself (empty path) into `buf`.
        let n = unsafe { libc::readlinkat(fd.as_raw_fd(), c"".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(last_errno());
        }
        buf.truncate(n.unsigned_abs());
        Ok(buf)
    }
}

/// Reopen the writable host file behind `fd` (for a fork or reset): a new open file
/// description of the very file, with the same access mode and O_APPEND.
pub fn reopen_writable(fd: RawFd, flags: i32) -> Result<OwnedFd, i32> {
    let p = fd_path(fd)?;
    let flags = (flags & (libc::O_ACCMODE | libc::O_APPEND)) | libc::O_CLOEXEC | libc::O_NOCTTY;
    // SAFETY: open of our own descriptor's magic link; the new fd is owned below.
    let n = unsafe { libc::open(p.as_ptr(), flags) };
    if n < 0 {
        return Err(last_errno());
    }
    // SAFETY: a fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

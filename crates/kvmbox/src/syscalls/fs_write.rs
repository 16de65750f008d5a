//! Changing the filesystem: mkdir, unlink, rmdir, rename, link, symlink, chmod, chown, utimens,
//! truncate, fallocate, fsync, file locks, chdir and umask. Changes happen in the in-memory
//! filesystem only; the host view is read-only (EROFS), and a change spanning both is EXDEV.

use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::files::FdKind;
use super::fs::{Place, Want};
use super::hostrw::WritableMount;
use super::memfs::{Data, Ino};
use super::{errno, host_result, Linux, SyscallEnv, AT_EMPTY_PATH, AT_FDCWD, AT_SYMLINK_NOFOLLOW, PATH_MAX};

/// Where a new directory entry goes.
enum NewEntry {
    Mem(Ino, Vec<u8>),
    Host(WritableMount, std::path::PathBuf),
}

/// What a metadata change applies to.
enum Target {
    Mem(Ino),
    /// A path in a writable host mount (below it).
    Host(WritableMount, std::path::PathBuf),
    /// An open file in a writable host mount.
    HostFd(std::os::fd::RawFd),
}

const AT_REMOVEDIR: u64 = 0x200;
const AT_SYMLINK_FOLLOW: u64 = 0x400;
const UTIME_NOW: i64 = (1 << 30) - 1;
const UTIME_OMIT: i64 = (1 << 30) - 2;

impl Linux {
    /// The errno a change to a host-view path gets: EEXIST-like answers first where the
    /// caller asks (`exists` for mkdir/symlink/link targets), else ENOENT for what the guest
    /// cannot see, else EROFS.
    fn host_change(&mut self, p: &Path, exists: i32) -> i32 {
        match self.stat_of_path(p, true) {
            Ok(_) => exists,
            Err(errno::ENOENT) => match p.parent().map(|d| self.stat_of_path(d, false)) {
                Some(Ok(_)) => errno::EROFS,
                _ => errno::ENOENT,
            },
            Err(e) => e,
        }
    }

    /// Where a new entry at guest path `p` goes: an in-memory directory (checked writable)
    /// and the name, or a writable host mount and the path below it; `exists` is the errno
    /// when something is there.
    fn new_entry(&mut self, p: &Path, exists: i32) -> std::result::Result<NewEntry, i32> {
        if self.fs.is_mount_point(p) {
            return Err(exists);
        }
        let (parent, name) = self.locate_parent(p, exists)?;
        let dir = match parent {
            Place::Mem(dir) => dir,
            Place::MemAbsent { .. } => return Err(errno::ENOENT),
            Place::HostRw(w, rel) => return Ok(NewEntry::Host(w, rel.join(std::ffi::OsStr::from_bytes(&name)))),
            Place::Host(_) => return Err(self.host_change(p, exists)),
        };
        if !self.fs.inode(dir).is_some_and(super::memfs::Inode::is_dir) {
            return Err(errno::ENOTDIR);
        }
        if !self.may(dir, Want::Write) || !self.may(dir, Want::Exec) {
            return Err(errno::EACCES);
        }
        Ok(NewEntry::Mem(dir, name))
    }

    pub(super) fn mkdir(&mut self, env: &SyscallEnv, dirfd: u64, path: u64, mode: u64) -> std::result::Result<u64, i32> {
        let p = self.resolve(env, dirfd, path)?;
        let (dir, name) = match self.new_entry(&p, errno::EEXIST)? {
            NewEntry::Mem(dir, name) => (dir, name),
            NewEntry::Host(w, rel) => return w.mkdir(&rel, mode as u32 & !self.umask),
        };
        let mode = libc::S_IFDIR | (mode as u32 & 0o7777 & !self.umask);
        let data = Data::Dir { entries: Default::default(), parent: dir, unlisted: None };
        self.fs.create(dir, &name, mode, self.uid, self.gid, data)?;
        Ok(0)
    }

    pub(super) fn symlink(&mut self, env: &SyscallEnv, target: u64, dirfd: u64, path: u64) -> std::result::Result<u64, i32> {
        let target = env.user().read_cstring(target, PATH_MAX)?.ok_or(errno::ENAMETOOLONG)?;
        if target.is_empty() {
            return Err(errno::ENOENT);
        }
        let p = self.resolve(env, dirfd, path)?;
        let (dir, name) = match self.new_entry(&p, errno::EEXIST)? {
            NewEntry::Mem(dir, name) => (dir, name),
            NewEntry::Host(w, rel) => return w.symlink(&target, &rel),
        };
        self.fs.create(dir, &name, libc::S_IFLNK | 0o777, self.uid, self.gid, Data::Symlink(target))?;
        Ok(0)
    }

    /// unlink/unlinkat/rmdir.
    pub(super) fn unlink(&mut self, env: &SyscallEnv, dirfd: u64, path: u64, flags: u64) -> std::result::Result<u64, i32> {
        if flags & !AT_REMOVEDIR != 0 {
            return Err(errno::EINVAL);
        }
        let dir_wanted = flags & AT_REMOVEDIR != 0;
        let p = self.resolve(env, dirfd, path)?;
        let raw = env.user().read_cstring(path, PATH_MAX)?.unwrap_or_default();
        if dir_wanted && (raw.ends_with(b"/.") || raw == b".") {
            return Err(errno::EINVAL);
        }
        if self.fs.is_mount_point(&p) {
            return Err(if dir_wanted { errno::EBUSY } else { errno::EISDIR });
        }
        let (parent, name) = self.locate_parent(&p, errno::EBUSY)?;
        let dir = match parent {
            Place::Mem(dir) => dir,
            Place::MemAbsent { .. } => return Err(errno::ENOENT),
            Place::HostRw(w, rel) => return w.unlink(&rel.join(std::ffi::OsStr::from_bytes(&name)), dir_wanted),
            Place::Host(_) => {
                if self.fs.mount_of(&p).is_some() || self.fs.writable_of(&p).is_some() || self.fs.leads_to_mount(&p) {
                    return Err(errno::EBUSY); // a mount point
                }
                return Err(self.host_change(&p, errno::EROFS));
            }
        };
        if !self.may(dir, Want::Write) || !self.may(dir, Want::Exec) {
            return Err(errno::EACCES);
        }
        let ino = self.fs.remove(&self.policy, dir, &name, dir_wanted)?;
        self.forget_if_closed(ino);
        Ok(0)
    }

    /// rename/renameat/renameat2.
    pub(super) fn rename(
        &mut self,
        env: &SyscallEnv,
        olddir: u64,
        old: u64,
        newdir: u64,
        new: u64,
        flags: u64,
    ) -> std::result::Result<u64, i32> {
        let flags = u32::try_from(flags).map_err(|_| errno::EINVAL)?;
        let op = self.resolve(env, olddir, old)?;
        let np = self.resolve(env, newdir, new)?;
        if self.fs.is_mount_point(&op) || self.fs.is_mount_point(&np) {
            return Err(errno::EBUSY);
        }
        let (from, oname) = self.locate_parent(&op, errno::EBUSY)?;
        let (to, nname) = self.locate_parent(&np, errno::EBUSY)?;
        let (odir, ndir) = match (from, to) {
            (Place::Mem(a), Place::Mem(b)) => (a, b),
            (Place::HostRw(a, ra), Place::HostRw(b, rb)) if a.path == b.path => {
                return a.rename(&ra.join(std::ffi::OsStr::from_bytes(&oname)), &rb.join(std::ffi::OsStr::from_bytes(&nname)), flags);
            }
            (Place::HostRw(..), _) | (_, Place::HostRw(..)) => return Err(libc::EXDEV),
            (Place::MemAbsent { .. }, _) | (_, Place::MemAbsent { .. }) => return Err(errno::ENOENT),
            (Place::Host(_), Place::Host(_)) => return Err(self.host_change(&op, errno::EROFS)),
            (Place::Host(_), _) => {
                return Err(match self.host_change(&op, libc::EXDEV) {
                    libc::EXDEV | errno::EROFS => libc::EXDEV,
                    e => e,
                });
            }
            (_, Place::Host(_)) => return Err(libc::EXDEV),
        };
        for d in [odir, ndir] {
            if !self.may(d, Want::Write) || !self.may(d, Want::Exec) {
                return Err(errno::EACCES);
            }
        }
        if let Some(replaced) = self.fs.rename(&self.policy, odir, &oname, ndir, &nname, flags)? {
            self.forget_if_closed(replaced);
        }
        Ok(0)
    }

    /// link/linkat.
    pub(super) fn link(
        &mut self,
        env: &SyscallEnv,
        olddir: u64,
        old: u64,
        newdir: u64,
        new: u64,
        flags: u64,
    ) -> std::result::Result<u64, i32> {
        if flags & !(AT_SYMLINK_FOLLOW | AT_EMPTY_PATH) != 0 {
            return Err(errno::EINVAL);
        }
        let ino = if Self::is_empty_path(env, old, flags)? {
            match self.fds.get(olddir).ok_or(errno::EBADF)? {
                FdKind::Mem(d) => super::ipc::lock(d).ino,
                _ => return Err(libc::EXDEV),
            }
        } else {
            let op = self.resolve(env, olddir, old)?;
            match self.locate(op.clone(), flags & AT_SYMLINK_FOLLOW != 0)? {
                Place::HostRw(w, rel) => {
                    let np = self.resolve(env, newdir, new)?;
                    return match self.new_entry(&np, errno::EEXIST)? {
                        NewEntry::Host(w2, rel2) if w2.path == w.path => w.link(&rel, &rel2),
                        _ => Err(libc::EXDEV),
                    };
                }
                Place::Mem(ino) => ino,
                Place::MemAbsent { .. } => return Err(errno::ENOENT),
                Place::Host(p) => {
                    self.stat_of_path(&p, true)?;
                    return Err(libc::EXDEV);
                }
            }
        };
        if self.fs.inode(ino).is_some_and(|n| n.nlink == 0) {
            return Err(errno::ENOENT);
        }
        let np = self.resolve(env, newdir, new)?;
        let (dir, name) = match self.new_entry(&np, errno::EEXIST)? {
            NewEntry::Mem(dir, name) => (dir, name),
            NewEntry::Host(..) => return Err(libc::EXDEV),
        };
        self.fs.link(ino, dir, &name)?;
        Ok(0)
    }

    /// What a path or descriptor names, for the calls that change metadata: an in-memory
    /// inode, or a file in a writable host mount; EROFS for the read-only host view.
    fn target_for_change(&mut self, env: &SyscallEnv, dirfd: u64, path: Option<u64>, follow: bool) -> std::result::Result<Target, i32> {
        let p = match path {
            None => {
                return match self.fds.get(dirfd).ok_or(errno::EBADF)? {
                    FdKind::Mem(d) if super::ipc::lock(d).path_only => Err(errno::EBADF),
                    FdKind::Mem(d) => Ok(Target::Mem(super::ipc::lock(d).ino)),
                    FdKind::File { host, path, .. } if self.fs.writable_of(path).is_some() => Ok(Target::HostFd(host.as_raw_fd())),
                    FdKind::File { .. } => Err(errno::EROFS),
                    _ => Err(errno::EPERM),
                };
            }
            Some(path) => self.resolve(env, dirfd, path)?,
        };
        match self.locate(p, follow)? {
            Place::Mem(ino) => Ok(Target::Mem(ino)),
            Place::MemAbsent { .. } => Err(errno::ENOENT),
            Place::HostRw(w, rel) => Ok(Target::Host(w, rel)),
            Place::Host(p) => {
                self.stat_of_path(&p, !follow)?;
                Err(errno::EROFS)
            }
        }
    }

    /// chmod/fchmod/fchmodat (`path` None: the descriptor itself).
    pub(super) fn chmod(
        &mut self,
        env: &SyscallEnv,
        dirfd: u64,
        path: Option<u64>,
        mode: u64,
        flags: u64,
    ) -> std::result::Result<u64, i32> {
        let path = self.empty_path_is_fd(env, path, flags)?;
        let follow = flags & AT_SYMLINK_NOFOLLOW == 0;
        let ino = match self.target_for_change(env, dirfd, path, follow)? {
            Target::Mem(ino) => ino,
            Target::Host(w, rel) => return w.chmod(&rel, mode as u32, !follow),
            // SAFETY: fchmod of the guest's own open host file.
            Target::HostFd(fd) => return host_result(unsafe { libc::fchmod(fd, mode as u32 & 0o7777) }.into()),
        };
        let (uid, t) = (self.uid, super::memfs::now());
        let n = self.fs.inode_mut(ino).ok_or(errno::ENOENT)?;
        if uid != 0 && uid != n.uid {
            return Err(errno::EPERM);
        }
        if n.mode & libc::S_IFMT == libc::S_IFLNK {
            return Err(libc::EOPNOTSUPP);
        }
        n.mode = (n.mode & libc::S_IFMT) | (mode as u32 & 0o7777);
        n.ctime = t;
        Ok(0)
    }

    /// chown/fchown/lchown/fchownat: only root gives files away (as natively); -1 keeps a value.
    pub(super) fn chown(
        &mut self,
        env: &SyscallEnv,
        dirfd: u64,
        path: Option<u64>,
        owner: u64,
        group: u64,
        flags: u64,
    ) -> std::result::Result<u64, i32> {
        let path = self.empty_path_is_fd(env, path, flags)?;
        let follow = flags & AT_SYMLINK_NOFOLLOW == 0;
        let ino = match self.target_for_change(env, dirfd, path, follow)? {
            Target::Mem(ino) => ino,
            Target::Host(w, rel) => return w.chown(&rel, owner as u32, group as u32, !follow),
            // SAFETY: fchown of the guest's own open host file.
            Target::HostFd(fd) => return host_result(unsafe { libc::fchown(fd, owner as u32, group as u32) }.into()),
        };
        let (uid, gid, t) = (self.uid, self.gid, super::memfs::now());
        let n = self.fs.inode_mut(ino).ok_or(errno::ENOENT)?;
        let (owner, group) = (owner as u32, group as u32);
        let new_uid = if owner == u32::MAX { n.uid } else { owner };
        let new_gid = if group == u32::MAX { n.gid } else { group };
        if uid != 0 && (new_uid != n.uid || uid != n.uid || (new_gid != n.gid && new_gid != gid)) {
            return Err(errno::EPERM);
        }
        (n.uid, n.gid, n.ctime) = (new_uid, new_gid, t);
        Ok(0)
    }

    /// utimensat (a NULL path: the descriptor), and utimes/futimesat/utime through it.
    pub(super) fn utimens(
        &mut self,
        env: &SyscallEnv,
        dirfd: u64,
        path: u64,
        times: Option<[(i64, i64); 2]>,
        flags: u64,
    ) -> std::result::Result<u64, i32> {
        if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH) != 0 {
            return Err(errno::EINVAL);
        }
        let path = if path == 0 { None } else { self.empty_path_is_fd(env, Some(path), flags)? };
        if path.is_none() && dirfd as i32 == AT_FDCWD {
            return Err(errno::EFAULT);
        }
        let follow = flags & AT_SYMLINK_NOFOLLOW == 0;
        let host_times = || {
            let [a, m] = times.unwrap_or([(0, UTIME_NOW), (0, UTIME_NOW)]);
            [libc::timespec { tv_sec: a.0, tv_nsec: a.1 }, libc::timespec { tv_sec: m.0, tv_nsec: m.1 }]
        };
        let ino = match self.target_for_change(env, dirfd, path, follow)? {
            Target::Mem(ino) => ino,
            Target::Host(w, rel) => return w.utimens(&rel, &host_times(), !follow),
            // SAFETY: futimens of the guest's own open host file with two timespecs.
            Target::HostFd(fd) => return host_result(unsafe { libc::futimens(fd, host_times().as_ptr()) }.into()),
        };
        let now = super::memfs::now();
        if times.is_some_and(|[a, m]| a.1 == UTIME_OMIT && m.1 == UTIME_OMIT) {
            return Ok(0); // nothing to change, and nothing checked (as on Linux)
        }
        let (uid, gid) = (self.uid, self.gid);
        let n = self.fs.inode_mut(ino).ok_or(errno::ENOENT)?;
        let owner = uid == 0 || uid == n.uid;
        let set = |t: (i64, i64), old: (i64, i64)| match t.1 {
            UTIME_NOW => Ok(now),
            UTIME_OMIT => Ok(old),
            ns if (0..1_000_000_000).contains(&ns) => Ok(t),
            _ => Err(errno::EINVAL),
        };
        let [a, m] = times.unwrap_or([(0, UTIME_NOW), (0, UTIME_NOW)]);
        let explicit = [a, m].iter().any(|t| t.1 != UTIME_NOW && t.1 != UTIME_OMIT);
        if !owner && (explicit || !super::fs::permits(n.mode, n.uid, n.gid, uid, gid, Want::Write)) {
            return Err(if explicit { errno::EPERM } else { errno::EACCES });
        }
        n.atime = set(a, n.atime)?;
        n.mtime = set(m, n.mtime)?;
        n.ctime = now;
        Ok(0)
    }

    /// AT_EMPTY_PATH with an empty path means the descriptor itself (None).
    fn empty_path_is_fd(&self, env: &SyscallEnv, path: Option<u64>, flags: u64) -> std::result::Result<Option<u64>, i32> {
        match path {
            Some(p) if Self::is_empty_path(env, p, flags)? => Ok(None),
            other => Ok(other),
        }
    }

    /// truncate (a path) and ftruncate (a descriptor open for writing).
    pub(super) fn truncate(&mut self, env: &SyscallEnv, fd: u64, path: Option<u64>, len: u64) -> std::result::Result<u64, i32> {
        if (len as i64) < 0 {
            return Err(errno::EINVAL);
        }
        let ino = match path {
            Some(_) => {
                let ino = match self.target_for_change(env, AT_FDCWD as u64, path, true)? {
                    Target::Mem(ino) => ino,
                    Target::Host(w, rel) => return w.truncate(&rel, len as i64),
                    Target::HostFd(_) => return Err(errno::EINVAL),
                };
                if self.fs.inode(ino).is_some_and(super::memfs::Inode::is_dir) {
                    return Err(errno::EISDIR);
                }
                if !self.may(ino, Want::Write) {
                    return Err(errno::EACCES);
                }
                ino
            }
            None => match self.fds.get(fd).ok_or(errno::EBADF)? {
                FdKind::Mem(d) => {
                    let o = super::ipc::lock(d);
                    if !o.write {
                        return Err(errno::EINVAL);
                    }
                    o.ino
                }
                FdKind::File { host, flags, .. } if flags & libc::O_ACCMODE != libc::O_RDONLY => {
                    // SAFETY: ftruncate of the guest's own writable host file.
                    return host_result(unsafe { libc::ftruncate(host.as_raw_fd(), len as i64) }.into());
                }
                _ => return Err(errno::EINVAL),
            },
        };
        self.fs.copy_up(&self.policy, ino)?;
        self.drop_lower(ino);
        self.fs.set_size(ino, len)?;
        Ok(0)
    }

    /// After a lower file was copied up, its descriptors read the copy.
    pub(super) fn drop_lower(&mut self, ino: Ino) {
        for d in self.fds.iter_mem() {
            let mut o = super::ipc::lock(&d);
            if o.ino == ino {
                o.lower = None;
            }
        }
    }

    /// fallocate: mode 0 makes the file at least offset+len long; other modes are not supported.
    pub(super) fn fallocate(&mut self, fd: u64, mode: u64, offset: u64, len: u64) -> std::result::Result<u64, i32> {
        let (ino, write) = match self.fds.get(fd).ok_or(errno::EBADF)? {
            FdKind::Mem(d) => {
                let o = super::ipc::lock(d);
                (o.ino, o.write)
            }
            FdKind::File { host, flags, .. } if flags & libc::O_ACCMODE != libc::O_RDONLY => {
                if mode != 0 {
                    return Err(libc::EOPNOTSUPP);
                }
                // SAFETY: fallocate of the guest's own writable host file.
                return host_result(unsafe { libc::fallocate(host.as_raw_fd(), 0, offset as i64, len as i64) }.into());
            }
            FdKind::File { .. } | FdKind::Device(_) | FdKind::Stdin | FdKind::Stdout | FdKind::Stderr => return Err(errno::EBADF),
            FdKind::Local(_) => return Err(errno::ESPIPE),
        };
        if !write {
            return Err(errno::EBADF);
        }
        if mode != 0 {
            return Err(libc::EOPNOTSUPP);
        }
        if (offset as i64) < 0 || (len as i64) <= 0 {
            return Err(errno::EINVAL);
        }
        let end = offset.checked_add(len).filter(|&e| e <= i64::MAX as u64).ok_or(libc::EFBIG)?;
        self.fs.copy_up(&self.policy, ino)?;
        self.drop_lower(ino);
        if self.fs.inode(ino).is_some_and(|n| n.size() < end) {
            self.fs.set_size(ino, end)?;
        }
        Ok(0)
    }

    /// fsync/fdatasync: nothing to flush in memory; EINVAL for what cannot be synced (pipes,
    /// sockets, captured stdio), as Linux says.
    pub(super) fn fsync(&self, fd: u64) -> std::result::Result<u64, i32> {
        match self.fds.get(fd).ok_or(errno::EBADF)? {
            FdKind::File { host, flags, .. } if flags & libc::O_ACCMODE != libc::O_RDONLY => {
                // SAFETY: fsync of the guest's own writable host file.
                host_result(unsafe { libc::fsync(host.as_raw_fd()) }.into())
            }
            FdKind::Mem(_) | FdKind::File { .. } | FdKind::Device(_) => Ok(0),
            _ => match self.host_fd_of(fd, false)? {
                Some(h) => {
                    // SAFETY: fsync of an inherited host descriptor.
                    let r = unsafe { libc::fsync(h) };
                    host_result(r.into())
                }
                None => Err(errno::EINVAL),
            },
        }
    }

    /// fcntl record locks (F_GETLK/F_SETLK/F_SETLKW and the OFD ones). One process owns every
    /// lock in the machine, so a request never conflicts: SETLK succeeds once checked (the
    /// type against the descriptor's access), GETLK answers F_UNLCK.
    pub(super) fn record_lock(&mut self, env: &SyscallEnv, fd: u64, cmd: i32, arg: u64) -> std::result::Result<u64, i32> {
        let (read, write) = match self.fds.get(fd).ok_or(errno::EBADF)? {
            FdKind::Mem(d) => {
                let o = super::ipc::lock(d);
                (o.read, o.write)
            }
            FdKind::File { .. } => (true, false),
            _ => return Err(errno::EINVAL),
        };
        // struct flock: l_type and l_whence (shorts), l_start, l_len, l_pid.
        let mut fl: [i64; 4] = env.user().read_pod(arg)?;
        let (l_type, l_whence) = (fl[0] as i16, (fl[0] >> 16) as i16);
        if !matches!(i32::from(l_whence), libc::SEEK_SET | libc::SEEK_CUR | libc::SEEK_END) {
            return Err(errno::EINVAL);
        }
        let is_get = matches!(cmd, libc::F_GETLK | libc::F_OFD_GETLK);
        match i32::from(l_type) {
            libc::F_RDLCK if !is_get && !read => Err(errno::EBADF),
            libc::F_WRLCK if !is_get && !write => Err(errno::EBADF),
            libc::F_RDLCK | libc::F_WRLCK | libc::F_UNLCK => {
                if is_get {
                    fl[0] = (fl[0] & !0xffff) | libc::F_UNLCK as i64;
                    env.user().write_pod(arg, &fl)?;
                }
                Ok(0)
            }
            _ => Err(errno::EINVAL),
        }
    }

    /// flock: no other process can hold a lock, so it is granted.
    pub(super) fn flock(&self, fd: u64, op: u64) -> std::result::Result<u64, i32> {
        self.fds.get(fd).ok_or(errno::EBADF)?;
        let op = op as i32 & !libc::LOCK_NB;
        if !matches!(op, libc::LOCK_SH | libc::LOCK_EX | libc::LOCK_UN) {
            return Err(errno::EINVAL);
        }
        Ok(0)
    }

    pub(super) fn chdir(&mut self, env: &SyscallEnv, path: Option<u64>, fd: u64) -> std::result::Result<u64, i32> {
        let target = match path {
            None => self.dir_path_of(fd)?,
            Some(path) => {
                let p = self.resolve(env, AT_FDCWD as u64, path)?;
                match self.locate(p, true)? {
                    Place::Mem(ino) => {
                        if !self.fs.inode(ino).is_some_and(super::memfs::Inode::is_dir) {
                            return Err(errno::ENOTDIR);
                        }
                        if !self.may(ino, Want::Exec) {
                            return Err(errno::EACCES);
                        }
                        self.fs.path_of(ino).ok_or(errno::ENOENT)?
                    }
                    Place::MemAbsent { .. } => return Err(errno::ENOENT),
                    Place::HostRw(w, rel) => {
                        let dir = w.lookup(&rel, false)?;
                        // SAFETY: fstat of our O_PATH handle into a local struct.
                        let mut st: libc::stat = unsafe { std::mem::zeroed() };
                        if unsafe { libc::fstat(std::os::fd::AsRawFd::as_raw_fd(&dir), &mut st) } != 0
                            || st.st_mode & libc::S_IFMT != libc::S_IFDIR
                        {
                            return Err(errno::ENOTDIR);
                        }
                        w.path.join(rel)
                    }
                    Place::Host(p) => {
                        let st = self.stat_of_path(&p, false)?;
                        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                            return Err(errno::ENOTDIR);
                        }
                        self.policy.resolve(&p, true).unwrap_or(p)
                    }
                }
            }
        };
        // An in-memory working directory is held by its inode (it moves with renames).
        self.cwd_ino = match self.locate(target.clone(), true) {
            Ok(Place::Mem(ino)) => Some(ino),
            _ => None,
        };
        self.cwd = target;
        Ok(0)
    }

    pub(super) fn set_umask(&mut self, mask: u64) -> u64 {
        let old = self.umask;
        self.umask = (mask & 0o777) as u32;
        u64::from(old)
    }
}

/// Read `struct timespec[2]` (utimensat) at `addr`; a NULL pointer is "now" for both.
pub(super) fn read_timespecs(env: &SyscallEnv, addr: u64) -> std::result::Result<Option<[(i64, i64); 2]>, i32> {
    if addr == 0 {
        return Ok(None);
    }
    let t: [i64; 4] = env.user().read_pod(addr)?;
    Ok(Some([(t[0], t[1]), (t[2], t[3])]))
}

/// Read `struct timeval[2]` (utimes, futimesat) at `addr` as timespecs; NULL is "now".
pub(super) fn read_timevals(env: &SyscallEnv, addr: u64) -> std::result::Result<Option<[(i64, i64); 2]>, i32> {
    if addr == 0 {
        return Ok(None);
    }
    let t: [i64; 4] = env.user().read_pod(addr)?;
    let conv = |sec: i64, usec: i64| {
        if !(0..1_000_000).contains(&usec) {
            return Err(errno::EINVAL);
        }
        Ok((sec, usec.saturating_mul(1000)))
    };
    Ok(Some([conv(t[0], t[1])?, conv(t[2], t[3])?]))
}

/// Read `struct utimbuf` (utime): access and modification seconds; NULL is "now".
pub(super) fn read_utimbuf(env: &SyscallEnv, addr: u64) -> std::result::Result<Option<[(i64, i64); 2]>, i32> {
    if addr == 0 {
        return Ok(None);
    }
    let t: [u64; 2] = env.user().read_pod(addr)?;
    Ok(Some([(t[0] as i64, 0), (t[1] as i64, 0)]))
}

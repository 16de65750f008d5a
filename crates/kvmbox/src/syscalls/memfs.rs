//! The writable in-memory filesystem: what a guest writes lands here, never on the host.
//!
//! Each mount (`/tmp` by default, more through [`MountSpec`]) is a tree of inodes held in
//! host memory and counted against one limit per machine. A mount may have a *lower* layer
//! that stays read-only underneath: the allowRead view of the same path (`/tmp`, so files a
//! user allowed there still show) or a host directory mounted at another path. A directory's
//! lower entries are listed into the tree the first time the directory is looked into, as
//! names and metadata only; a lower file's bytes are read from the host until something writes
//! it, which copies it up. So unlink, rename and the rest work on the tree alone (no whiteouts),
//! and what was never written costs only its name.
//!
//! The tree is a plain value (file contents are shared `Arc`s): a snapshot clones it, reset and
//! fork go back to the clone, and a write after that copies only the file it changes.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use super::errno;
use super::files::FilePolicy;
use super::hostrw::WritableMount;

pub type Ino = u64;

/// What counts against the limit for each inode besides its bytes (its host bookkeeping).
pub const INODE_COST: u64 = 256;
/// What counts for each directory entry besides its name (the map node holding it).
pub const ENTRY_COST: u64 = 64;

/// Bytes a directory entry named `name` counts against the limit.
fn entry_cost(name: &[u8]) -> u64 {
    ENTRY_COST.saturating_add(name.len() as u64)
}
/// Most entries one lower directory may bring into the tree.
const MAX_LOWER_ENTRIES: usize = 65_536;
/// Most symlinks one path lookup follows (as Linux: ELOOP beyond).
pub const MAX_LINKS: u32 = 40;
/// st_dev of every in-memory file: an anonymous-device number (major 0, as tmpfs has) whose
/// minor no host hands out in practice, so no host file shares a (dev, ino) pair with one.
pub const DEV: u64 = 0xfff0_00ff; // makedev(0, 0xfffff)
/// What `statfs` reports as f_type: TMPFS_MAGIC.
pub const TMPFS_MAGIC: i64 = 0x0102_1994;
/// The default limit of a machine's in-memory files.
pub const DEFAULT_LIMIT: u64 = 64 << 20;

/// What a mount shows underneath its in-memory layer.
#[derive(Clone, Debug)]
pub enum Lower {
    /// Nothing: an empty directory at first.
    Empty,
    /// The allowRead view of the same guest path.
    Allowed,
    /// A host directory (an O_PATH handle: lookups stay beneath it), read-only.
    HostDir(Arc<OwnedFd>),
}

/// A mount as the embedder asks for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountSpec {
    /// An empty in-memory directory.
    Memory,
    /// A host directory, read-only underneath an in-memory layer (writes stay in memory).
    Host(PathBuf),
    /// A host directory the guest changes for real (opt-in; see `syscalls::hostrw`).
    HostWritable(PathBuf),
}

/// The machine's in-memory filesystem from the embedder's mounts (guest path → what is
/// there; relative host paths are taken from `host_cwd`): `/tmp` is added, over the allowRead
/// view of /tmp, unless a mount names it. Errors say which mount is wrong.
pub fn build(mounts: &[(String, MountSpec)], limit: u64, host_cwd: &Path) -> crate::error::Result<MemFs> {
    let invalid = |m: &str, why: String| crate::error::Error::InvalidArgument(format!("mount {m:?}: {why}"));
    let mut out: Vec<(PathBuf, Lower)> = Vec::new();
    let mut writable: Vec<WritableMount> = Vec::new();
    for (guest, spec) in mounts {
        let path = PathBuf::from(guest);
        if !path.is_absolute() || super::files::normalize(&path) != path || path == Path::new("/") {
            return Err(invalid(guest, "the guest path must be absolute, normalised and not /".into()));
        }
        if out.iter().any(|(p, _)| *p == path) || writable.iter().any(|w| w.path == path) {
            return Err(invalid(guest, "mounted twice".into()));
        }
        let host_dir = |host: &PathBuf| {
            let abs = super::files::normalize(&host_cwd.join(host));
            let canonical = std::fs::canonicalize(&abs).map_err(|e| invalid(guest, format!("{}: {e}", host.display())))?;
            super::files::host_dir_handle(&canonical).map(Arc::new).map_err(|e| invalid(guest, format!("{}: {e}", host.display())))
        };
        let lower = match spec {
            MountSpec::Memory => Lower::Empty,
            MountSpec::Host(host) => Lower::HostDir(host_dir(host)?),
            MountSpec::HostWritable(host) => {
                writable.push(WritableMount { path, dir: host_dir(host)? });
                continue;
            }
        };
        out.push((path, lower));
    }
    if !out.iter().any(|(p, _)| p == Path::new("/tmp")) {
        out.push((PathBuf::from("/tmp"), Lower::Allowed));
    }
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let mut fs = MemFs::new(out, limit, uid, gid);
    fs.writable = writable;
    Ok(fs)
}

#[derive(Clone, Debug)]
pub struct Mount {
    pub path: PathBuf,
    pub root: Ino,
    pub lower: Lower,
}

/// Seconds and nanoseconds since the epoch.
pub type Time = (i64, i64);

pub fn now() -> Time {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (i64::try_from(d.as_secs()).unwrap_or(i64::MAX), i64::from(d.subsec_nanos()))
}

#[derive(Clone, Debug)]
pub enum Data {
    Dir {
        entries: BTreeMap<Vec<u8>, Ino>,
        parent: Ino,
        /// The lower directory (its path in the lower layer) whose entries are not listed yet.
        unlisted: Option<PathBuf>,
    },
    File(Arc<Vec<u8>>),
    /// A file whose bytes are still the lower layer's (its path there, its size).
    Lower {
        path: PathBuf,
        size: u64,
    },
    Symlink(Vec<u8>),
}

#[derive(Clone, Debug)]
pub struct Inode {
    pub data: Data,
    /// Type and permission bits, as st_mode.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
    /// The mount it belongs to (rename and link stay inside one: EXDEV).
    pub mount: usize,
    /// What the lower layer's stat said of it, for an inode listed from there: it keeps the
    /// host's device and inode numbers (as overlayfs does), and its block count while its
    /// bytes are still the lower file's, so `ls -il` shows what it shows natively.
    pub host: Option<HostIds>,
}

/// The lower layer's identity of a file (see [`Inode::host`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostIds {
    pub dev: u64,
    pub ino: u64,
    pub blocks: i64,
    pub size: i64,
}

impl Inode {
    pub fn is_dir(&self) -> bool {
        matches!(self.data, Data::Dir { .. })
    }

    pub fn size(&self) -> u64 {
        match &self.data {
            // As tmpfs counts: 20 bytes per entry, `.` and `..` included.
            Data::Dir { entries, .. } => (entries.len() as u64).saturating_add(2).saturating_mul(20),
            Data::File(b) => b.len() as u64,
            Data::Lower { size, .. } => *size,
            Data::Symlink(t) => t.len() as u64,
        }
    }

    /// Bytes of host memory it holds (what the limit counts), its directory entries apart.
    fn cost(&self) -> u64 {
        INODE_COST.saturating_add(data_cost(&self.data))
    }

    pub fn stat(&self, ino: Ino) -> libc::stat {
        // SAFETY: stat is plain old data.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        st.st_dev = DEV;
        st.st_ino = ino;
        st.st_mode = self.mode;
        st.st_nlink = u64::from(self.nlink);
        st.st_uid = self.uid;
        st.st_gid = self.gid;
        let size = self.size();
        st.st_size = i64::try_from(size).unwrap_or(i64::MAX);
        st.st_blksize = 4096;
        st.st_blocks = i64::try_from(size.div_ceil(4096).saturating_mul(8)).unwrap_or(i64::MAX);
        if let Data::Symlink(_) | Data::Dir { .. } = self.data {
            st.st_blocks = 0; // kept in the inode, as tmpfs keeps short symlinks and directories
        }
        if let Some(h) = self.host {
            (st.st_dev, st.st_ino) = (h.dev, h.ino);
            match self.data {
                Data::Lower { .. } | Data::Symlink(_) => st.st_blocks = h.blocks,
                Data::Dir { .. } => (st.st_size, st.st_blocks) = (h.size, h.blocks),
                _ => {}
            }
        }
        (st.st_atime, st.st_atime_nsec) = self.atime;
        (st.st_mtime, st.st_mtime_nsec) = self.mtime;
        (st.st_ctime, st.st_ctime_nsec) = self.ctime;
        st
    }
}

/// Bytes an inode's data holds besides the inode itself.
fn data_cost(d: &Data) -> u64 {
    match d {
        Data::File(b) => b.len() as u64,
        Data::Symlink(t) => t.len() as u64,
        Data::Lower { path, .. } => path.as_os_str().len() as u64,
        Data::Dir { unlisted, .. } => unlisted.as_ref().map_or(0, |p| p.as_os_str().len() as u64),
    }
}

/// Where a path lookup inside a mount ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    Node(Ino),
    /// Everything but the last component exists: `parent` is a directory without `name`.
    Absent {
        parent: Ino,
        name: Vec<u8>,
    },
    /// The path leaves the mount (`..` above its root, an absolute symlink): look this up instead.
    Elsewhere(PathBuf),
}

/// The entry kind a directory listing reports (d_type).
pub fn d_type(mode: u32) -> u8 {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => libc::DT_DIR,
        libc::S_IFREG => libc::DT_REG,
        libc::S_IFLNK => libc::DT_LNK,
        _ => libc::DT_UNKNOWN,
    }
}

#[derive(Clone, Debug)]
pub struct MemFs {
    inodes: BTreeMap<Ino, Inode>,
    next_ino: Ino,
    used: u64,
    limit: u64,
    mounts: Vec<Mount>,
    /// Inodes without a name that a descriptor may still hold (unlinked while open).
    orphans: std::collections::BTreeSet<Ino>,
    /// Host directories the guest changes for real (not part of the tree).
    writable: Vec<WritableMount>,
}

/// An open file description of an in-memory file or directory (dup'ed descriptors share it).
#[derive(Debug)]
pub struct MemOpen {
    pub ino: Ino,
    pub offset: u64,
    pub read: bool,
    pub write: bool,
    pub append: bool,
    /// The lower file, while its bytes are still the lower layer's.
    pub lower: Option<Arc<OwnedFd>>,
    /// A directory listing's place: the last name it returned, so entries removed or added
    /// meanwhile (readdir-and-unlink loops) neither skip nor repeat what is left.
    pub cursor: Option<Vec<u8>>,
    /// Opened with O_PATH: only a place (fstat, *at calls), no I/O (EBADF).
    pub path_only: bool,
}

pub type MemDesc = Arc<std::sync::Mutex<MemOpen>>;

/// renameat2 flags.
pub const RENAME_NOREPLACE: u32 = 1;
pub const RENAME_EXCHANGE: u32 = 2;

impl MemFs {
    /// Mounts at the normalised absolute guest `paths` with their lower layers; `limit` bytes
    /// of files and inodes at most. The mount roots belong to `uid`/`gid`; `/tmp` is sticky and
    /// writable by all, as natively.
    pub fn new(mounts: Vec<(PathBuf, Lower)>, limit: u64, uid: u32, gid: u32) -> MemFs {
        let mut fs = MemFs {
            inodes: BTreeMap::new(),
            next_ino: 2,
            used: 0,
            limit,
            mounts: Vec::new(),
            orphans: Default::default(),
            writable: Vec::new(),
        };
        let t = now();
        for (path, lower) in mounts {
            let ino = fs.next_ino;
            fs.next_ino = fs.next_ino.saturating_add(1);
            let unlisted = match lower {
                Lower::Empty => None,
                Lower::Allowed => Some(path.clone()),
                Lower::HostDir(_) => Some(PathBuf::from(".")),
            };
            let mode = if path == Path::new("/tmp") { libc::S_IFDIR | 0o1777 } else { libc::S_IFDIR | 0o755 };
            let index = fs.mounts.len();
            fs.inodes.insert(
                ino,
                Inode {
                    data: Data::Dir { entries: BTreeMap::new(), parent: ino, unlisted },
                    mode,
                    uid,
                    gid,
                    nlink: 2,
                    atime: t,
                    mtime: t,
                    ctime: t,
                    mount: index,
                    host: None,
                },
            );
            fs.used = fs.used.saturating_add(fs.inodes.get(&ino).map_or(INODE_COST, Inode::cost));
            fs.mounts.push(Mount { path, root: ino, lower });
        }
        fs
    }

    pub fn mounts(&self) -> &[Mount] {
        &self.mounts
    }

    /// Bytes the files and inodes take now (what the limit counts).
    #[cfg(test)]
    pub fn used(&self) -> u64 {
        self.used
    }

    pub fn inode(&self, ino: Ino) -> Option<&Inode> {
        self.inodes.get(&ino)
    }

    pub fn inode_mut(&mut self, ino: Ino) -> Option<&mut Inode> {
        self.inodes.get_mut(&ino)
    }

    /// The mount `path` (normalised, absolute) is in, the deepest one if they nest.
    pub fn mount_of(&self, path: &Path) -> Option<usize> {
        (0..self.mounts.len()).filter(|&i| path.starts_with(&self.mounts[i].path)).max_by_key(|&i| self.mounts[i].path.as_os_str().len())
    }

    /// True if `path` is a directory on the way to a mount point (`/` for `/tmp`, `/a` for `/a/b`).
    pub fn leads_to_mount(&self, path: &Path) -> bool {
        self.mounts.iter().map(|m| &m.path).chain(self.writable.iter().map(|w| &w.path)).any(|m| m != path && m.starts_with(path))
    }

    /// The writable host mount `path` is in, with the path below it, if that mount is deeper
    /// than any in-memory one holding `path`.
    pub fn writable_of(&self, path: &Path) -> Option<(&WritableMount, PathBuf)> {
        let w = self.writable.iter().filter(|w| path.starts_with(&w.path)).max_by_key(|w| w.path.as_os_str().len())?;
        let deeper_memory = self.mount_of(path).is_some_and(|m| self.mounts[m].path.as_os_str().len() > w.path.as_os_str().len());
        if deeper_memory {
            return None;
        }
        Some((w, path.strip_prefix(&w.path).unwrap_or(Path::new("")).to_path_buf()))
    }

    pub fn writable_mounts(&self) -> &[WritableMount] {
        &self.writable
    }

    fn charge(&mut self, bytes: u64) -> Result<(), i32> {
        let used = self.used.checked_add(bytes).filter(|&u| u <= self.limit).ok_or(errno::ENOSPC)?;
        self.used = used;
        Ok(())
    }

    fn refund(&mut self, bytes: u64) {
        self.used = self.used.saturating_sub(bytes);
    }

    fn alloc(&mut self, inode: Inode) -> Result<Ino, i32> {
        let next = self.next_ino.checked_add(1).ok_or(errno::ENOSPC)?;
        self.charge(inode.cost())?;
        let ino = self.next_ino;
        self.next_ino = next;
        self.inodes.insert(ino, inode);
        Ok(ino)
    }

    /// True if `path` is a mount point (of either kind): it cannot be made, removed or renamed.
    pub fn is_mount_point(&self, path: &Path) -> bool {
        self.mounts.iter().any(|m| m.path == path) || self.writable.iter().any(|w| w.path == path)
    }

    /// Look `rel` (relative to mount `m`'s root) up, following symlinks (the last one too with
    /// `follow_last`); `links` counts the symlinks followed across the whole lookup.
    pub fn resolve(&mut self, policy: &FilePolicy, m: usize, rel: &Path, follow_last: bool, links: &mut u32) -> Result<Found, i32> {
        let mount = self.mounts.get(m).ok_or(errno::ENOENT)?;
        let (root, mount_path) = (mount.root, mount.path.clone());
        let mut pending: Vec<Vec<u8>> = Vec::new();
        push_components(&mut pending, rel);
        let mut stack = vec![root];
        while let Some(c) = pending.pop() {
            if c == b".." {
                if stack.len() > 1 {
                    stack.pop();
                    continue;
                }
                // Above the mount's root: the rest is looked up from the mount point's parent.
                let mut out = mount_path.parent().unwrap_or(Path::new("/")).to_path_buf();
                out.extend(pending.iter().rev().map(|c| OsStr::from_bytes(c)));
                return Ok(Found::Elsewhere(super::files::normalize(&out)));
            }
            let dir = *stack.last().unwrap_or(&root);
            self.list_lower(policy, dir)?;
            let Some(Inode { data: Data::Dir { entries, .. }, .. }) = self.inodes.get(&dir) else { return Err(errno::ENOTDIR) };
            let Some(&ino) = entries.get(&c) else {
                return if pending.is_empty() { Ok(Found::Absent { parent: dir, name: c }) } else { Err(errno::ENOENT) };
            };
            let node = self.inodes.get(&ino).ok_or(errno::EIO)?;
            if let Data::Symlink(target) = &node.data {
                if !pending.is_empty() || follow_last {
                    *links = links.saturating_add(1);
                    if *links > MAX_LINKS {
                        return Err(errno::ELOOP);
                    }
                    if target.first() == Some(&b'/') {
                        let mut out = PathBuf::from(OsStr::from_bytes(target));
                        out.extend(pending.iter().rev().map(|c| OsStr::from_bytes(c)));
                        return Ok(Found::Elsewhere(super::files::normalize(&out)));
                    }
                    let target = target.clone();
                    push_components(&mut pending, Path::new(OsStr::from_bytes(&target)));
                    continue;
                }
            }
            if pending.is_empty() {
                return Ok(Found::Node(ino));
            }
            if !node.is_dir() {
                return Err(errno::ENOTDIR);
            }
            stack.push(ino);
        }
        Ok(Found::Node(*stack.last().unwrap_or(&root)))
    }

    /// The guest path of directory `ino` (through its parents), if it is still in the tree.
    pub fn path_of(&self, ino: Ino) -> Option<PathBuf> {
        let mut names: Vec<&[u8]> = Vec::new();
        let mut cur = ino;
        // Bounded by the inode count: a tree from a snapshot file is checked to have no cycles,
        // and this never loops longer than there are inodes anyway.
        for _ in 0..=self.inodes.len() {
            if let Some(m) = self.mounts.iter().find(|m| m.root == cur) {
                let mut out = m.path.clone();
                out.extend(names.iter().rev().map(|n| OsStr::from_bytes(n)));
                return Some(out);
            }
            let Data::Dir { parent, .. } = &self.inodes.get(&cur)?.data else { return None };
            let Data::Dir { entries, .. } = &self.inodes.get(parent)?.data else { return None };
            names.push(entries.iter().find(|(_, &i)| i == cur)?.0);
            cur = *parent;
        }
        None
    }

    /// Bring a directory's lower entries into the tree (once, all or nothing: if they do not
    /// fit the limit the directory stays unlisted and the lookup fails with ENOMEM).
    fn list_lower(&mut self, policy: &FilePolicy, dir: Ino) -> Result<(), i32> {
        let Some(Inode { data: Data::Dir { unlisted: Some(path), .. }, mount, .. }) = self.inodes.get(&dir) else { return Ok(()) };
        let (path, mount) = (path.clone(), *mount);
        let lower = self.mounts.get(mount).map(|m| m.lower.clone()).unwrap_or(Lower::Empty);
        let mut found = Vec::new();
        for (name, st, link) in list_host_dir(policy, &lower, &path)? {
            let kind = st.st_mode & libc::S_IFMT;
            let child = path.join(OsStr::from_bytes(&name));
            let data = match kind {
                libc::S_IFDIR => Data::Dir { entries: BTreeMap::new(), parent: dir, unlisted: Some(child) },
                libc::S_IFREG => Data::Lower { path: child, size: st.st_size.max(0) as u64 },
                libc::S_IFLNK => Data::Symlink(link),
                _ => continue,
            };
            let inode = Inode {
                data,
                mode: st.st_mode,
                uid: st.st_uid,
                gid: st.st_gid,
                nlink: if kind == libc::S_IFDIR { 2 } else { 1 },
                atime: (st.st_atime, st.st_atime_nsec),
                mtime: (st.st_mtime, st.st_mtime_nsec),
                ctime: (st.st_ctime, st.st_ctime_nsec),
                mount,
                host: Some(HostIds { dev: st.st_dev, ino: st.st_ino, blocks: st.st_blocks, size: st.st_size }),
            };
            found.push((name, inode));
        }
        let first = self.next_ino;
        let end = first.checked_add(found.len() as u64).ok_or(errno::ENOMEM)?;
        // The directory's own lower path goes; its entries and their inodes come.
        let cost = found.iter().fold(0u64, |sum, (name, inode)| sum.saturating_add(inode.cost()).saturating_add(entry_cost(name)));
        self.charge(cost).map_err(|_| errno::ENOMEM)?;
        self.refund(path.as_os_str().len() as u64);
        self.next_ino = end;
        let mut subdirs = 0u32;
        let mut names = Vec::with_capacity(found.len());
        for (i, (name, inode)) in found.into_iter().enumerate() {
            let ino = first.saturating_add(i as u64);
            subdirs = subdirs.saturating_add(u32::from(inode.is_dir()));
            self.inodes.insert(ino, inode);
            names.push((name, ino));
        }
        if let Some(Inode { data: Data::Dir { entries, unlisted, .. }, nlink, .. }) = self.inodes.get_mut(&dir) {
            *unlisted = None;
            entries.extend(names);
            *nlink = nlink.saturating_add(subdirs);
        }
        Ok(())
    }

    /// A new file, directory or symlink `name` in directory `parent`.
    pub fn create(&mut self, parent: Ino, name: &[u8], mode: u32, uid: u32, gid: u32, data: Data) -> Result<Ino, i32> {
        if name.len() > 255 {
            return Err(errno::ENAMETOOLONG);
        }
        let p = self.inodes.get(&parent).ok_or(errno::ENOENT)?;
        let Data::Dir { entries, .. } = &p.data else { return Err(errno::ENOTDIR) };
        if entries.contains_key(name) {
            return Err(errno::EEXIST);
        }
        if p.nlink == 0 {
            return Err(errno::ENOENT); // a removed directory takes no new entries
        }
        let mount = p.mount;
        let is_dir = matches!(data, Data::Dir { .. });
        let t = now();
        let inode = Inode { data, mode, uid, gid, nlink: if is_dir { 2 } else { 1 }, atime: t, mtime: t, ctime: t, mount, host: None };
        self.charge(entry_cost(name))?;
        let ino = match self.alloc(inode) {
            Ok(ino) => ino,
            Err(e) => {
                self.refund(entry_cost(name));
                return Err(e);
            }
        };
        if let Some(p) = self.inodes.get_mut(&parent) {
            if let Data::Dir { entries, .. } = &mut p.data {
                entries.insert(name.to_vec(), ino);
            }
            if is_dir {
                p.nlink = p.nlink.saturating_add(1);
            }
            (p.mtime, p.ctime) = (t, t);
        }
        Ok(ino)
    }

    /// A new directory entry `name` in `parent` for the existing non-directory `ino` (link).
    pub fn link(&mut self, ino: Ino, parent: Ino, name: &[u8]) -> Result<(), i32> {
        if name.len() > 255 {
            return Err(errno::ENAMETOOLONG);
        }
        let node = self.inodes.get(&ino).ok_or(errno::ENOENT)?;
        if node.is_dir() {
            return Err(errno::EPERM);
        }
        let p = self.inodes.get(&parent).ok_or(errno::ENOENT)?;
        if p.mount != node.mount {
            return Err(libc::EXDEV);
        }
        let Data::Dir { entries, .. } = &p.data else { return Err(errno::ENOTDIR) };
        if entries.contains_key(name) {
            return Err(errno::EEXIST);
        }
        self.charge(entry_cost(name))?;
        let t = now();
        if let Some(Inode { data: Data::Dir { entries, .. }, mtime, ctime, .. }) = self.inodes.get_mut(&parent) {
            entries.insert(name.to_vec(), ino);
            (*mtime, *ctime) = (t, t);
        }
        if let Some(n) = self.inodes.get_mut(&ino) {
            n.nlink = n.nlink.saturating_add(1);
            n.ctime = t;
        }
        Ok(())
    }

    /// Remove `name` from `parent` (rmdir with `dir`, else unlink). Returns the inode whose
    /// link count dropped: the caller frees it with [`MemFs::forget_if_unused`] once no
    /// descriptor holds it.
    pub fn remove(&mut self, policy: &FilePolicy, parent: Ino, name: &[u8], dir: bool) -> Result<Ino, i32> {
        let Some(Inode { data: Data::Dir { entries, .. }, .. }) = self.inodes.get(&parent) else { return Err(errno::ENOTDIR) };
        let ino = *entries.get(name).ok_or(errno::ENOENT)?;
        if self.mounts.iter().any(|m| m.root == ino) {
            return Err(errno::EBUSY);
        }
        let is_dir = self.inodes.get(&ino).is_some_and(Inode::is_dir);
        match (dir, is_dir) {
            (true, false) => return Err(errno::ENOTDIR),
            (false, true) => return Err(errno::EISDIR),
            (true, true) => {
                self.list_lower(policy, ino)?;
                if matches!(&self.inodes.get(&ino).map(|n| &n.data), Some(Data::Dir { entries, .. }) if !entries.is_empty()) {
                    return Err(libc::ENOTEMPTY);
                }
            }
            _ => {}
        }
        self.unlink_entry(parent, name, ino);
        Ok(ino)
    }

    fn unlink_entry(&mut self, parent: Ino, name: &[u8], ino: Ino) {
        let t = now();
        let is_dir = self.inodes.get(&ino).is_some_and(Inode::is_dir);
        if let Some(p) = self.inodes.get_mut(&parent) {
            if let Data::Dir { entries, .. } = &mut p.data {
                entries.remove(name);
            }
            if is_dir {
                p.nlink = p.nlink.saturating_sub(1);
            }
            (p.mtime, p.ctime) = (t, t);
        }
        self.refund(entry_cost(name));
        if let Some(n) = self.inodes.get_mut(&ino) {
            n.nlink = if is_dir { 0 } else { n.nlink.saturating_sub(1) };
            n.ctime = t;
            if n.nlink == 0 {
                self.orphans.insert(ino);
            }
        }
    }

    /// Free `ino` if no name and (says `open`) no descriptor refers to it any more.
    pub fn forget_if_unused(&mut self, ino: Ino, open: bool) {
        if open || self.inodes.get(&ino).is_none_or(|n| n.nlink > 0) {
            return;
        }
        self.orphans.remove(&ino);
        if let Some(n) = self.inodes.remove(&ino) {
            self.refund(n.cost());
        }
    }

    /// Inodes without a name (unlinked while open), for the caller to check against its descriptors.
    pub fn orphans(&self) -> Vec<Ino> {
        self.orphans.iter().copied().collect()
    }

    /// rename/renameat2 of `oname` in `odir` to `nname` in `ndir`. Returns an inode replaced
    /// (and so unlinked), if any.
    pub fn rename(
        &mut self,
        policy: &FilePolicy,
        odir: Ino,
        oname: &[u8],
        ndir: Ino,
        nname: &[u8],
        flags: u32,
    ) -> Result<Option<Ino>, i32> {
        if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0 || flags == RENAME_NOREPLACE | RENAME_EXCHANGE {
            return Err(errno::EINVAL);
        }
        if nname.len() > 255 {
            return Err(errno::ENAMETOOLONG);
        }
        let entry = |fs: &MemFs, d: Ino, n: &[u8]| match fs.inodes.get(&d).map(|i| &i.data) {
            Some(Data::Dir { entries, .. }) => Ok(entries.get(n).copied()),
            _ => Err(errno::ENOTDIR),
        };
        let src = entry(self, odir, oname)?.ok_or(errno::ENOENT)?;
        let dst = entry(self, ndir, nname)?;
        let (Some(s), Some(nd)) = (self.inodes.get(&src), self.inodes.get(&ndir)) else { return Err(errno::ENOENT) };
        if s.mount != nd.mount {
            return Err(libc::EXDEV);
        }
        if self.mounts.iter().any(|m| m.root == src || Some(m.root) == dst) {
            return Err(errno::EBUSY);
        }
        let src_dir = s.is_dir();
        // A directory cannot move below itself.
        if src_dir && self.is_ancestor(src, ndir) {
            return Err(errno::EINVAL);
        }
        if flags & RENAME_EXCHANGE != 0 {
            let dst = dst.ok_or(errno::ENOENT)?;
            if self.inodes.get(&dst).is_some_and(Inode::is_dir) && self.is_ancestor(dst, odir) {
                return Err(errno::EINVAL);
            }
            self.set_entry(odir, oname, dst);
            self.set_entry(ndir, nname, src);
            self.reparent(dst, odir);
            self.reparent(src, ndir);
            // A directory changing parents moves its ".." link with it.
            let dst_dir = self.inodes.get(&dst).is_some_and(Inode::is_dir);
            if src_dir != dst_dir && odir != ndir {
                let (from, to) = if src_dir { (odir, ndir) } else { (ndir, odir) };
                if let Some(p) = self.inodes.get_mut(&from) {
                    p.nlink = p.nlink.saturating_sub(1);
                }
                if let Some(p) = self.inodes.get_mut(&to) {
                    p.nlink = p.nlink.saturating_add(1);
                }
            }
            let t = now();
            for i in [src, dst] {
                if let Some(n) = self.inodes.get_mut(&i) {
                    n.ctime = t;
                }
            }
            return Ok(None);
        }
        if let Some(d) = dst {
            if d == src {
                return Ok(None); // the same file under both names: nothing to do, as on Linux
            }
            if flags & RENAME_NOREPLACE != 0 {
                return Err(errno::EEXIST);
            }
            let dst_dir = self.inodes.get(&d).is_some_and(Inode::is_dir);
            match (src_dir, dst_dir) {
                (true, false) => return Err(errno::ENOTDIR),
                (false, true) => return Err(errno::EISDIR),
                (true, true) => {
                    self.list_lower(policy, d)?;
                    if matches!(&self.inodes.get(&d).map(|n| &n.data), Some(Data::Dir { entries, .. }) if !entries.is_empty()) {
                        return Err(libc::ENOTEMPTY);
                    }
                }
                _ => {}
            }
        }
        self.charge(entry_cost(nname))?;
        if let Some(d) = dst {
            self.unlink_entry(ndir, nname, d);
        }
        // Take the old name away (not an unlink: the inode keeps its link count).
        let t = now();
        if let Some(p) = self.inodes.get_mut(&odir) {
            if let Data::Dir { entries, .. } = &mut p.data {
                entries.remove(oname);
            }
            if src_dir {
                p.nlink = p.nlink.saturating_sub(1);
            }
            (p.mtime, p.ctime) = (t, t);
        }
        self.refund(entry_cost(oname));
        if let Some(p) = self.inodes.get_mut(&ndir) {
            if let Data::Dir { entries, .. } = &mut p.data {
                entries.insert(nname.to_vec(), src);
            }
            if src_dir {
                p.nlink = p.nlink.saturating_add(1);
            }
            (p.mtime, p.ctime) = (t, t);
        }
        self.reparent(src, ndir);
        if let Some(n) = self.inodes.get_mut(&src) {
            n.ctime = t;
        }
        Ok(dst)
    }

    fn set_entry(&mut self, dir: Ino, name: &[u8], ino: Ino) {
        if let Some(Inode { data: Data::Dir { entries, .. }, mtime, ctime, .. }) = self.inodes.get_mut(&dir) {
            entries.insert(name.to_vec(), ino);
            let t = now();
            (*mtime, *ctime) = (t, t);
        }
    }

    fn reparent(&mut self, ino: Ino, new_parent: Ino) {
        if let Some(Inode { data: Data::Dir { parent, .. }, .. }) = self.inodes.get_mut(&ino) {
            *parent = new_parent;
        }
    }

    /// True if `dir` is `node` or one of its ancestors.
    fn is_ancestor(&self, dir: Ino, mut node: Ino) -> bool {
        for _ in 0..=self.inodes.len() {
            if node == dir {
                return true;
            }
            match self.inodes.get(&node).map(|n| &n.data) {
                Some(Data::Dir { parent, .. }) if *parent != node => node = *parent,
                _ => return false,
            }
        }
        false
    }

    /// A directory listing's next entries (its lower ones listed first): with `from` 0 and 1
    /// `.` and `..`, then at most `max` names after `after` (all, from the first, when None),
    /// each with the inode number stat shows and its d_type.
    pub fn entries_after(
        &mut self,
        policy: &FilePolicy,
        ino: Ino,
        from: u64,
        after: Option<&[u8]>,
        max: usize,
    ) -> Result<Vec<(Vec<u8>, Ino, u8)>, i32> {
        self.list_lower(policy, ino)?;
        let (entries, parent) = match self.inodes.get(&ino).map(|n| &n.data) {
            Some(Data::Dir { entries, parent, .. }) => (entries, *parent),
            _ => return Err(errno::ENOTDIR),
        };
        let shown = |i: Ino| self.inodes.get(&i).and_then(|n| n.host).map_or(i, |h| h.ino);
        let mut out = Vec::new();
        if from == 0 {
            out.push((b".".to_vec(), shown(ino), libc::DT_DIR));
        }
        if from <= 1 {
            out.push((b"..".to_vec(), shown(parent), libc::DT_DIR));
        }
        let rest = match after {
            Some(last) => entries.range::<[u8], _>((std::ops::Bound::Excluded(last), std::ops::Bound::Unbounded)),
            None => entries.range::<[u8], _>(..),
        };
        for (name, &child) in rest.take(max) {
            let t = self.inodes.get(&child).map_or(libc::DT_UNKNOWN, |n| d_type(n.mode));
            out.push((name.clone(), shown(child), t));
        }
        Ok(out)
    }

    /// Replace an inode's data, counting the difference against the limit (ENOSPC when the new
    /// data does not fit: nothing changes then).
    fn replace_data(&mut self, ino: Ino, data: Data) -> Result<(), i32> {
        let old = self.inodes.get(&ino).map(|n| data_cost(&n.data)).ok_or(errno::ENOENT)?;
        let new = data_cost(&data);
        if new > old {
            self.charge(new.saturating_sub(old))?;
        } else {
            self.refund(old.saturating_sub(new));
        }
        if let Some(n) = self.inodes.get_mut(&ino) {
            n.data = data;
        }
        Ok(())
    }

    /// Make a file's bytes its own (copying a lower file up), for writing.
    pub fn own_bytes(&mut self, ino: Ino, lower_read: impl FnOnce(&Path, u64) -> Result<Vec<u8>, i32>) -> Result<(), i32> {
        let node = self.inodes.get(&ino).ok_or(errno::ENOENT)?;
        match &node.data {
            Data::File(_) => Ok(()),
            Data::Lower { path, size } => {
                let (path, size) = (path.clone(), *size);
                // Room for the copy is held while it is read, so a full filesystem never reads.
                self.charge(size)?;
                let bytes = lower_read(&path, size);
                self.refund(size);
                self.replace_data(ino, Data::File(Arc::new(bytes?)))
            }
            Data::Dir { .. } => Err(errno::EISDIR),
            Data::Symlink(_) => Err(errno::EINVAL),
        }
    }

    /// Empty a file (O_TRUNC): a lower file becomes an empty in-memory one without being read.
    pub fn truncate_to_empty(&mut self, ino: Ino) -> Result<(), i32> {
        match self.inodes.get(&ino).map(|n| &n.data) {
            Some(Data::Lower { .. }) => self.replace_data(ino, Data::File(Arc::default()))?,
            Some(Data::File(_)) => self.set_size(ino, 0)?,
            _ => return Err(errno::EINVAL),
        }
        if let Some(n) = self.inodes.get_mut(&ino) {
            let t = now();
            (n.mtime, n.ctime) = (t, t);
        }
        Ok(())
    }

    /// Write `data` at `offset` into an owned file (see [`MemFs::own_bytes`]); grows it (zeros
    /// in a gap) within the limit: when the whole does not fit, as much as does (a short
    /// write), ENOSPC when nothing does. Returns the bytes written.
    pub fn write(&mut self, ino: Ino, offset: u64, data: &[u8]) -> Result<usize, i32> {
        if data.is_empty() {
            return Ok(0); // nothing moves, wherever the offset points
        }
        let old = match self.inodes.get(&ino).map(|n| &n.data) {
            Some(Data::File(b)) => b.len() as u64,
            Some(_) => return Err(errno::EINVAL),
            None => return Err(errno::ENOENT),
        };
        let end = offset.checked_add(data.len() as u64).filter(|&e| e <= i64::MAX as u64).ok_or(libc::EFBIG)?;
        let room = self.limit.saturating_sub(self.used);
        let end = end.min(old.saturating_add(room).max(old));
        if end <= offset {
            return Err(errno::ENOSPC);
        }
        let data = &data[..usize::try_from(end.saturating_sub(offset)).unwrap_or(0).min(data.len())];
        let grow = end.saturating_sub(old);
        let (start, end) = (usize::try_from(offset).map_err(|_| libc::EFBIG)?, usize::try_from(end).map_err(|_| libc::EFBIG)?);
        self.charge(grow)?;
        let Some(Inode { data: Data::File(bytes), mtime, ctime, .. }) = self.inodes.get_mut(&ino) else {
            self.refund(grow);
            return Err(errno::EINVAL);
        };
        let bytes = Arc::make_mut(bytes);
        if end > bytes.len() {
            // Within the limit, yet the host may still refuse: ENOSPC, never an abort.
            if bytes.try_reserve_exact(end.saturating_sub(bytes.len())).is_err() {
                self.refund(grow);
                return Err(errno::ENOSPC);
            }
            bytes.resize(end, 0);
        }
        bytes[start..end].copy_from_slice(data);
        let t = now();
        (*mtime, *ctime) = (t, t);
        Ok(data.len())
    }

    /// Set an owned file's size (truncate/ftruncate/fallocate), within the limit.
    pub fn set_size(&mut self, ino: Ino, size: u64) -> Result<(), i32> {
        let size_usize = usize::try_from(size).ok().filter(|_| size <= i64::MAX as u64).ok_or(libc::EFBIG)?;
        let old = match self.inodes.get(&ino).map(|n| &n.data) {
            Some(Data::File(b)) => b.len() as u64,
            Some(_) => return Err(errno::EINVAL),
            None => return Err(errno::ENOENT),
        };
        if size > old {
            self.charge(size.saturating_sub(old))?;
        }
        let Some(Inode { data: Data::File(bytes), mtime, ctime, .. }) = self.inodes.get_mut(&ino) else { return Err(errno::EINVAL) };
        let bytes = Arc::make_mut(bytes);
        if bytes.try_reserve_exact(size_usize.saturating_sub(bytes.len())).is_err() {
            self.refund(size.saturating_sub(old));
            return Err(errno::ENOSPC);
        }
        bytes.resize(size_usize, 0);
        let t = now();
        (*mtime, *ctime) = (t, t);
        if size < old {
            self.refund(old.saturating_sub(size));
        }
        Ok(())
    }

    /// Check a tree decoded from a snapshot file, in time linear in its size: every entry names
    /// an inode of its mount with a valid name, every directory has at most one parent that
    /// lists it and says so, every named directory is reachable from a mount root (so there are
    /// no cycles), an unnamed directory is empty; link counts and the counted bytes are
    /// recomputed, never taken from the file.
    pub fn from_parts(mut inodes: BTreeMap<Ino, Inode>, next_ino: Ino, limit: u64, mounts: Vec<Mount>) -> Result<MemFs, String> {
        let mut names: BTreeMap<Ino, u32> = BTreeMap::new();
        let mut subdirs: BTreeMap<Ino, u32> = BTreeMap::new();
        let mut used = 0u64;
        for (&ino, n) in &inodes {
            if ino >= next_ino || n.mount >= mounts.len() {
                return Err(format!("in-memory inode {ino} out of range"));
            }
            used = used.saturating_add(n.cost());
            if let Data::Dir { entries, parent, .. } = &n.data {
                for (name, child) in entries {
                    used = used.saturating_add(entry_cost(name));
                    if name.is_empty() || name.len() > 255 || name.contains(&b'/') || name == b"." || name == b".." {
                        return Err("a bad in-memory file name".into());
                    }
                    let c = inodes.get(child).ok_or("an in-memory entry without its inode")?;
                    if c.mount != n.mount {
                        return Err("an in-memory entry in another mount".into());
                    }
                    if let Data::Dir { parent: cp, .. } = &c.data {
                        if *cp != ino || names.contains_key(child) {
                            return Err("an in-memory directory with two parents".into());
                        }
                        let k = subdirs.entry(ino).or_insert(0);
                        *k = k.saturating_add(1);
                    }
                    let k = names.entry(*child).or_insert(0);
                    *k = k.saturating_add(1);
                }
                if !inodes.contains_key(parent) {
                    return Err("an in-memory directory without its parent".into());
                }
            }
        }
        for (i, m) in mounts.iter().enumerate() {
            match inodes.get(&m.root) {
                Some(n) if n.is_dir() && n.mount == i && !names.contains_key(&m.root) => {}
                _ => return Err("an in-memory mount without its root directory".into()),
            }
        }
        // One walk from the roots reaches every named directory exactly once (no cycles).
        let mut reached = 0usize;
        let mut queue: Vec<Ino> = mounts.iter().map(|m| m.root).collect();
        let mut seen: std::collections::BTreeSet<Ino> = queue.iter().copied().collect();
        while let Some(d) = queue.pop() {
            reached = reached.saturating_add(1);
            if let Some(Data::Dir { entries, .. }) = inodes.get(&d).map(|n| &n.data) {
                for child in entries.values() {
                    if inodes.get(child).is_some_and(Inode::is_dir) && seen.insert(*child) {
                        queue.push(*child);
                    }
                }
            }
        }
        let named_dirs =
            inodes.iter().filter(|(i, n)| n.is_dir() && (names.contains_key(i) || mounts.iter().any(|m| m.root == **i))).count();
        if reached != named_dirs {
            return Err("an in-memory directory outside every mount".into());
        }
        for (i, n) in inodes.iter_mut() {
            let named = names.get(i).copied().unwrap_or(0);
            let root = mounts.iter().any(|m| m.root == *i);
            n.nlink = match &n.data {
                Data::Dir { entries, .. } if named == 0 && !root => {
                    if !entries.is_empty() {
                        return Err("a removed in-memory directory with entries".into());
                    }
                    0
                }
                Data::Dir { .. } => subdirs.get(i).copied().unwrap_or(0).saturating_add(2),
                _ => named,
            };
        }
        let orphans = inodes.iter().filter(|(_, n)| n.nlink == 0).map(|(&i, _)| i).collect();
        let fs = MemFs { inodes, next_ino, used, limit, mounts, orphans, writable: Vec::new() };
        if fs.used > limit {
            return Err("in-memory files beyond the limit".into());
        }
        Ok(fs)
    }

    /// A read-only host descriptor of the lower file behind `ino`, while its bytes are the
    /// lower layer's (None once it was written, or for what is not a file).
    pub fn open_lower(&self, policy: &FilePolicy, ino: Ino) -> Result<Option<OwnedFd>, i32> {
        let Some(Inode { data: Data::Lower { path, .. }, mount, .. }) = self.inodes.get(&ino) else { return Ok(None) };
        match self.mounts.get(*mount).map(|m| &m.lower) {
            Some(Lower::Allowed) => policy.open(path, libc::O_RDONLY).map(|(fd, _)| Some(fd)),
            Some(Lower::HostDir(root)) => super::files::open_beneath(root.as_raw_fd(), path, libc::O_RDONLY).map(Some),
            _ => Err(errno::EIO),
        }
    }

    /// Copy the lower file behind `ino` up into memory (before a write); nothing for a file
    /// already in memory.
    pub fn copy_up(&mut self, policy: &FilePolicy, ino: Ino) -> Result<(), i32> {
        let Some(fd) = self.open_lower(policy, ino)? else { return Ok(()) };
        self.own_bytes(ino, |_, size| {
            use std::io::Read;
            let mut bytes = Vec::new();
            bytes.try_reserve_exact(usize::try_from(size).unwrap_or(usize::MAX)).map_err(|_| errno::ENOSPC)?;
            std::fs::File::from(fd).take(size).read_to_end(&mut bytes).map_err(|e| e.raw_os_error().unwrap_or(errno::EIO))?;
            Ok(bytes)
        })
    }

    /// Read into `buf` at `offset` from an in-memory file; Err(()) when its bytes are the
    /// lower layer's (read them from the lower descriptor).
    pub fn read_at(&self, ino: Ino, offset: u64, buf: &mut [u8]) -> Result<usize, ()> {
        match self.inodes.get(&ino).map(|n| &n.data) {
            Some(Data::File(bytes)) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
                let n = buf.len().min(bytes.len().saturating_sub(start));
                buf[..n].copy_from_slice(&bytes[start..start.saturating_add(n)]);
                Ok(n)
            }
            Some(Data::Lower { .. }) => Err(()),
            _ => Ok(0),
        }
    }

    /// statfs figures: a tmpfs of the limit's size.
    pub fn statfs(&self) -> libc::statfs {
        // SAFETY: statfs is plain old data.
        let mut s: libc::statfs = unsafe { std::mem::zeroed() };
        s.f_type = TMPFS_MAGIC;
        s.f_bsize = 4096;
        s.f_frsize = 4096;
        s.f_blocks = self.limit / 4096;
        s.f_bfree = self.limit.saturating_sub(self.used) / 4096;
        s.f_bavail = s.f_bfree;
        s.f_files = self.limit / INODE_COST;
        s.f_ffree = self.limit.saturating_sub(self.used) / INODE_COST;
        s.f_namelen = 255;
        s
    }

    #[cfg(test)]
    pub fn parts(&self) -> (&BTreeMap<Ino, Inode>, Ino) {
        (&self.inodes, self.next_ino)
    }

    /// Snapshot-file form: the mounts (path, lower kind, root), then every inode.
    pub fn encode(&self, w: &mut crate::snapfile::Writer) {
        w.u64(self.mounts.len() as u64);
        for m in &self.mounts {
            w.bytes(m.path.as_os_str().as_bytes());
            w.u8(lower_code(&m.lower));
            w.u64(m.root);
        }
        w.u64(self.writable.len() as u64);
        for m in &self.writable {
            w.bytes(m.path.as_os_str().as_bytes());
        }
        w.u64(self.next_ino);
        w.u64(self.inodes.len() as u64);
        for (&ino, n) in &self.inodes {
            w.u64(ino);
            for v in [u64::from(n.mode), u64::from(n.uid), u64::from(n.gid), u64::from(n.nlink), n.mount as u64] {
                w.u64(v);
            }
            for (sec, nsec) in [n.atime, n.mtime, n.ctime] {
                w.u64(sec as u64);
                w.u64(nsec as u64);
            }
            w.u8(n.host.is_some() as u8);
            let h = n.host.unwrap_or(HostIds { dev: 0, ino: 0, blocks: 0, size: 0 });
            for v in [h.dev, h.ino, h.blocks as u64, h.size as u64] {
                w.u64(v);
            }
            match &n.data {
                Data::Dir { entries, parent, unlisted } => {
                    w.u8(0);
                    w.u64(*parent);
                    w.u8(unlisted.is_some() as u8);
                    w.bytes(unlisted.as_deref().map_or(&[][..], |p| p.as_os_str().as_bytes()));
                    w.u64(entries.len() as u64);
                    for (name, child) in entries {
                        w.bytes(name);
                        w.u64(*child);
                    }
                }
                Data::File(bytes) => {
                    w.u8(1);
                    w.bytes(bytes);
                }
                Data::Lower { path, size } => {
                    w.u8(2);
                    w.bytes(path.as_os_str().as_bytes());
                    w.u64(*size);
                }
                Data::Symlink(target) => {
                    w.u8(3);
                    w.bytes(target);
                }
            }
        }
    }

    /// Decode [`MemFs::encode`] for a loader whose own mounts are `template`: the file's mounts
    /// must be the same paths with the same kinds of lower layer (the loader's host directories
    /// are used, never paths from the file), and its files fit the loader's limit.
    pub fn decode(r: &mut crate::snapfile::Reader, template: &MemFs) -> crate::error::Result<MemFs> {
        let bad = |what: &str| crate::error::Error::InvalidArgument(format!("invalid snapshot file: {what}"));
        let n = r.count(17)?;
        if n != template.mounts.len() {
            return Err(crate::error::Error::InvalidArgument(format!(
                "the snapshot has {n} in-memory mounts, the loader {}: load it with the mounts it was made with",
                template.mounts.len()
            )));
        }
        let mut mounts = Vec::with_capacity(n);
        for m in &template.mounts {
            let path = PathBuf::from(OsStr::from_bytes(r.bytes()?));
            let code = r.u8()?;
            if path != m.path || code != lower_code(&m.lower) {
                return Err(crate::error::Error::InvalidArgument(format!(
                    "the snapshot's mount {} differs from the loader's {}: load it with the mounts it was made with",
                    path.display(),
                    m.path.display()
                )));
            }
            mounts.push(Mount { path, root: r.u64()?, lower: m.lower.clone() });
        }
        let n = r.count(9)?;
        if n != template.writable.len() {
            return Err(crate::error::Error::InvalidArgument(
                "the snapshot's writable host mounts differ from the loader's: load it with the mounts it was made with".into(),
            ));
        }
        for w in &template.writable {
            if Path::new(OsStr::from_bytes(r.bytes()?)) != w.path {
                return Err(crate::error::Error::InvalidArgument(format!(
                    "the snapshot's writable host mounts differ from the loader's ({}): load it with the mounts it was made with",
                    w.path.display()
                )));
            }
        }
        let next_ino = r.u64()?;
        let count = r.count(8 * 12 + 1)?;
        if count as u64 > template.limit / INODE_COST {
            return Err(bad("more in-memory files than the loader's limit holds"));
        }
        let mut inodes = BTreeMap::new();
        for _ in 0..count {
            let ino = r.u64()?;
            let (mode, uid, gid, nlink, mount) = (r.u64()?, r.u64()?, r.u64()?, r.u64()?, r.u64()?);
            let mut times = [(0i64, 0i64); 3];
            for t in &mut times {
                *t = (r.u64()? as i64, r.u64()? as i64);
            }
            let has_host = r.u8()? != 0;
            let h = HostIds { dev: r.u64()?, ino: r.u64()?, blocks: r.u64()? as i64, size: r.u64()? as i64 };
            let host = has_host.then_some(h);
            let path_of = |b: &[u8]| super::files::normalize(&Path::new("/").join(OsStr::from_bytes(b)));
            let data = match r.u8()? {
                0 => {
                    let parent = r.u64()?;
                    let has = r.u8()? != 0;
                    let p = r.bytes()?;
                    let unlisted = has.then(|| PathBuf::from(OsStr::from_bytes(p)));
                    let k = r.count(9)?;
                    let mut entries = BTreeMap::new();
                    for _ in 0..k {
                        let name = r.bytes()?.to_vec();
                        entries.insert(name, r.u64()?);
                    }
                    Data::Dir { entries, parent, unlisted }
                }
                1 => Data::File(Arc::new(r.bytes()?.to_vec())),
                2 => {
                    let p = PathBuf::from(OsStr::from_bytes(r.bytes()?));
                    Data::Lower { path: p, size: r.u64()? }
                }
                3 => Data::Symlink(r.bytes()?.to_vec()),
                _ => return Err(bad("in-memory file kind")),
            };
            let expected = match &data {
                Data::Dir { .. } => libc::S_IFDIR,
                Data::File(_) | Data::Lower { .. } => libc::S_IFREG,
                Data::Symlink(_) => libc::S_IFLNK,
            };
            let mode = u32::try_from(mode).ok().filter(|m| m & libc::S_IFMT == expected && m & !(libc::S_IFMT | 0o7777) == 0);
            let (Some(mode), Ok(uid), Ok(gid), Ok(nlink), Ok(mount)) =
                (mode, u32::try_from(uid), u32::try_from(gid), u32::try_from(nlink), usize::try_from(mount))
            else {
                return Err(bad("in-memory file metadata"));
            };
            // Lower paths name where the lower layer is read: through the loader's allowRead
            // (an absolute path) or beneath the loader's host directory (a relative one).
            let data = match (data, mounts.get(mount).map(|m| &m.lower)) {
                (Data::Lower { path, size }, Some(Lower::Allowed)) => Data::Lower { path: path_of(path.as_os_str().as_bytes()), size },
                (Data::Dir { entries, parent, unlisted: Some(p) }, Some(Lower::Allowed)) => {
                    Data::Dir { entries, parent, unlisted: Some(path_of(p.as_os_str().as_bytes())) }
                }
                (Data::Lower { path, size }, Some(Lower::HostDir(_))) => {
                    Data::Lower { path: relative(&path).ok_or_else(|| bad("lower path"))?, size }
                }
                (Data::Dir { entries, parent, unlisted: Some(p) }, Some(Lower::HostDir(_))) => {
                    Data::Dir { entries, parent, unlisted: Some(relative(&p).ok_or_else(|| bad("lower path"))?) }
                }
                (Data::Lower { .. } | Data::Dir { unlisted: Some(_), .. }, _) => return Err(bad("a lower file in a mount without one")),
                (d, _) => d,
            };
            inodes.insert(ino, Inode { data, mode, uid, gid, nlink, atime: times[0], mtime: times[1], ctime: times[2], mount, host });
        }
        let mut fs = MemFs::from_parts(inodes, next_ino, template.limit, mounts).map_err(|e| bad(&e))?;
        fs.writable = template.writable.clone();
        Ok(fs)
    }
}

fn lower_code(l: &Lower) -> u8 {
    match l {
        Lower::Empty => 0,
        Lower::Allowed => 1,
        Lower::HostDir(_) => 2,
    }
}

/// `p` as a relative path without `..` (a lower path beneath a host directory), if it is one.
fn relative(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(if out.as_os_str().is_empty() { PathBuf::from(".") } else { out })
}

fn push_components(pending: &mut Vec<Vec<u8>>, p: &Path) {
    for c in p.components().rev() {
        match c {
            Component::Normal(n) => pending.push(n.as_bytes().to_vec()),
            Component::ParentDir => pending.push(b"..".to_vec()),
            _ => {}
        }
    }
}

/// The entries of a lower directory: name, lstat, and the target of a symlink. Only what the
/// lower layer shows: for `Allowed`, the allowRead view (entries that are allowed or lead to
/// something allowed); for a host directory, everything below it, looked up beneath it.
/// One lower directory entry: its name, its lstat, and a symlink's target.
type LowerEntry = (Vec<u8>, libc::stat, Vec<u8>);

fn list_host_dir(policy: &FilePolicy, lower: &Lower, path: &Path) -> Result<Vec<LowerEntry>, i32> {
    let dir = match lower {
        Lower::Empty => return Ok(Vec::new()),
        Lower::Allowed => match policy.lookup(path, libc::O_RDONLY | libc::O_DIRECTORY) {
            Ok((fd, true)) => fd,
            _ => return Ok(Vec::new()), // nothing allowed there (yet): the layer is empty
        },
        Lower::HostDir(root) => super::files::open_beneath(root.as_raw_fd(), path, libc::O_PATH | libc::O_DIRECTORY)?,
    };
    let rd = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd())).map_err(|e| e.raw_os_error().unwrap_or(errno::EIO))?;
    let mut out = Vec::new();
    for entry in rd.flatten().take(MAX_LOWER_ENTRIES) {
        let name = entry.file_name().as_bytes().to_vec();
        if let Lower::Allowed = lower {
            if !policy.shows(&path.join(OsStr::from_bytes(&name))) {
                continue;
            }
        }
        let Ok(cname) = std::ffi::CString::new(name.clone()) else { continue };
        // SAFETY: fstatat relative to our directory handle, not following a final symlink,
        // into a local struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstatat(dir.as_raw_fd(), cname.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } != 0 {
            continue;
        }
        let mut link = Vec::new();
        if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
            let mut buf = vec![0u8; libc::PATH_MAX as usize];
            // SAFETY: readlinkat relative to our directory handle into `buf`.
            let n = unsafe { libc::readlinkat(dir.as_raw_fd(), cname.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                continue;
            }
            buf.truncate(n.unsigned_abs());
            buf.shrink_to_fit();
            link = buf;
        }
        out.push((name, st, link));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs() -> (MemFs, FilePolicy) {
        (MemFs::new(vec![(PathBuf::from("/tmp"), Lower::Empty)], 1 << 20, 1000, 1000), FilePolicy::new(&[], Path::new("/")).unwrap())
    }

    fn file(fs: &mut MemFs, parent: Ino, name: &str) -> Ino {
        fs.create(parent, name.as_bytes(), libc::S_IFREG | 0o644, 0, 0, Data::File(Arc::default())).unwrap()
    }

    #[test]
    fn create_write_rename_unlink() {
        let (mut fs, p) = fs();
        let root = fs.mounts()[0].root;
        let d = fs
            .create(root, b"d", libc::S_IFDIR | 0o755, 0, 0, Data::Dir { entries: BTreeMap::new(), parent: root, unlisted: None })
            .unwrap();
        let f = file(&mut fs, d, "a");
        assert_eq!(fs.write(f, 3, b"xyz"), Ok(3));
        assert_eq!(fs.inode(f).unwrap().size(), 6);
        let mut links = 0;
        assert_eq!(fs.resolve(&p, 0, Path::new("d/a"), true, &mut links), Ok(Found::Node(f)));
        assert_eq!(fs.resolve(&p, 0, Path::new("d/b"), true, &mut links), Ok(Found::Absent { parent: d, name: b"b".to_vec() }));
        assert_eq!(fs.resolve(&p, 0, Path::new("d/a/x"), true, &mut links), Err(errno::ENOTDIR));
        assert_eq!(fs.resolve(&p, 0, Path::new("../etc"), true, &mut links), Ok(Found::Elsewhere(PathBuf::from("/etc"))));
        assert_eq!(fs.rename(&p, d, b"a", root, b"b", 0), Ok(None));
        assert_eq!(fs.path_of(d), Some(PathBuf::from("/tmp/d")));
        assert_eq!(fs.rename(&p, root, b"d", d, b"x", 0), Err(errno::EINVAL));
        assert_eq!(fs.remove(&p, root, b"b", true), Err(errno::ENOTDIR));
        let used = fs.used();
        assert_eq!(fs.remove(&p, root, b"b", false), Ok(f));
        fs.forget_if_unused(f, false);
        assert!(fs.used() < used);
        assert!(fs.inode(f).is_none());
    }

    #[test]
    fn the_limit_holds() {
        let (mut fs, _) = fs();
        let root = fs.mounts()[0].root;
        let f = file(&mut fs, root, "big");
        assert_eq!(fs.write(f, 0, &vec![1u8; 1 << 19]), Ok(1 << 19));
        // What fits is written (a short write), then nothing more: ENOSPC.
        let short = fs.write(f, 1 << 19, &vec![1u8; 1 << 19]).unwrap();
        assert!(short > 0 && short < 1 << 19, "{short}");
        assert_eq!(fs.write(f, (1 << 19) + short as u64, b"x"), Err(errno::ENOSPC));
        assert_eq!(fs.used(), fs.limit);
        // Hard links count too: each name costs its entry.
        fs.set_size(f, 0).unwrap();
        let before = fs.used();
        fs.link(f, root, b"second").unwrap();
        assert_eq!(fs.used(), before + ENTRY_COST + 6);
        assert_eq!(fs.link(f, root, &[b'n'; 256]), Err(errno::ENAMETOOLONG));
        assert_eq!(fs.set_size(f, u64::MAX), Err(libc::EFBIG));
        assert_eq!(fs.write(f, u64::MAX - 1, b"ab"), Err(libc::EFBIG));
        assert_eq!(fs.write(f, u64::MAX - 1, b""), Ok(0), "an empty write anywhere is nothing");
        fs.set_size(f, 0).unwrap();
        assert_eq!(fs.write(f, 0, &vec![1u8; 1 << 19]), Ok(1 << 19));
    }

    #[test]
    fn symlinks_and_loops() {
        let (mut fs, p) = fs();
        let root = fs.mounts()[0].root;
        fs.create(root, b"l", libc::S_IFLNK | 0o777, 0, 0, Data::Symlink(b"l".to_vec())).unwrap();
        fs.create(root, b"abs", libc::S_IFLNK | 0o777, 0, 0, Data::Symlink(b"/etc/passwd".to_vec())).unwrap();
        let mut links = 0;
        assert_eq!(fs.resolve(&p, 0, Path::new("l"), true, &mut links), Err(errno::ELOOP));
        links = 0;
        assert_eq!(fs.resolve(&p, 0, Path::new("abs"), true, &mut links), Ok(Found::Elsewhere(PathBuf::from("/etc/passwd"))));
        links = 0;
        assert!(matches!(fs.resolve(&p, 0, Path::new("abs"), false, &mut links), Ok(Found::Node(_))));
    }

    #[test]
    fn a_decoded_tree_is_checked() {
        let (fs, _) = fs();
        let (inodes, next) = fs.parts();
        let mut bad = inodes.clone();
        let root = fs.mounts()[0].root;
        // A directory listing itself: a cycle.
        if let Some(Inode { data: Data::Dir { entries, .. }, .. }) = bad.get_mut(&root) {
            entries.insert(b"loop".to_vec(), root);
        }
        assert!(MemFs::from_parts(bad, next, 1 << 20, fs.mounts().to_vec()).is_err());
        assert!(MemFs::from_parts(inodes.clone(), next, 1 << 20, fs.mounts().to_vec()).is_ok());
    }
}

//! File descriptors: the guest's stdio (captured, inherited or streamed to a callback),
//! read-only host files from an allowlist, and emulated /dev/null, /dev/zero and /dev/urandom.
//! The guest sees only what the allowlist covers — checked where a path leads once symlinks
//! are followed (merged /usr) — as regular files and directories: anything else (not covered,
//! a link out, a device, a FIFO, a kernel pseudo file) does not exist for it (ENOENT), so
//! programs probing search paths go on as natively and learn nothing about other host files.
//! Every write is EROFS.
//!
//! Files are opened with openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS) below an O_PATH
//! handle of each allowed directory, so neither `..` nor a symlink can lead out of it. The
//! open itself is an O_PATH open (no side effects: a FIFO does not block the host, a device
//! driver's open is never called); only a regular file or directory that does not live on a
//! kernel pseudo filesystem (procfs — /proc/self/mem would be the host's memory —, sysfs,
//! debugfs, …) is then reopened for reading and handed to the guest.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::host::{Host, Stream};
use crate::interrupt::Deadline;

use super::errno;

/// Where the guest's standard input comes from.
#[derive(Clone)]
pub enum Input {
    /// Immediate end of file.
    Empty,
    /// These bytes, then end of file.
    Bytes {
        /// All of the input.
        data: Vec<u8>,
        /// How much the guest has read.
        pos: usize,
    },
    /// The host process's own file descriptor 0.
    Inherit,
}

/// Where the guest's standard output or error goes.
pub enum Output {
    /// Collected in memory, up to `limit` bytes (the rest is dropped and `truncated` set).
    Capture {
        /// What was captured.
        data: Vec<u8>,
        /// Most bytes kept.
        limit: usize,
        /// Whether output beyond `limit` was dropped.
        truncated: bool,
    },
    /// Written straight to this host file descriptor (1 or 2 of the host process).
    Inherit(RawFd),
    /// Handed chunk by chunk to the run's [`crate::Host::output`]; an error stops the guest.
    Host,
}

impl Output {
    /// Capture up to `limit` bytes.
    pub fn capture(limit: usize) -> Output {
        Output::Capture { data: Vec::new(), limit, truncated: false }
    }

    /// Deliver `data`. Returns the byte count the guest's write() reports, or the errno a
    /// failed host write gives the guest (EPIPE for a closed reader); `Err` when a callback
    /// failed, or when the run must stop (`deadline`: a host descriptor whose reader stalls
    /// never holds a run past its timeout or an interrupt).
    pub fn write(
        &mut self,
        stream: Stream,
        data: &[u8],
        host: &mut dyn Host,
        deadline: &Deadline,
    ) -> Result<std::result::Result<usize, i32>> {
        match self {
            Output::Capture { data: buf, limit, truncated } => {
                let room = limit.saturating_sub(buf.len());
                if data.len() > room {
                    *truncated = true;
                }
                buf.extend_from_slice(&data[..data.len().min(room)]);
                Ok(Ok(data.len()))
            }
            Output::Inherit(fd) => write_host_fd(*fd, data, deadline),
            Output::Host => {
                if let Err(e) = host.output(stream, data, deadline) {
                    deadline.check()?; // it gave up because the run must stop
                    return Err(Error::HostCallback(e));
                }
                Ok(Ok(data.len()))
            }
        }
    }

    /// The same destination with nothing captured yet (for forks and resets).
    pub fn fresh_like(&self) -> Output {
        match self {
            Output::Capture { limit, .. } => Output::capture(*limit),
            Output::Inherit(fd) => Output::Inherit(*fd),
            Output::Host => Output::Host,
        }
    }

    /// The captured bytes so far (emptied).
    pub fn take_captured(&mut self) -> Vec<u8> {
        match self {
            Output::Capture { data, .. } => std::mem::take(data),
            _ => Vec::new(),
        }
    }

    /// Whether captured output was cut at the limit.
    pub fn truncated(&self) -> bool {
        matches!(self, Output::Capture { truncated: true, .. })
    }

    /// The host descriptor output goes straight to, if inherited.
    pub(crate) fn host_fd(&self) -> Option<RawFd> {
        match self {
            Output::Inherit(fd) => Some(*fd),
            _ => None,
        }
    }
}

/// One open file description of the guest.
pub enum FdKind {
    Stdin,
    Stdout,
    Stderr,
    File {
        host: OwnedFd,
        path: PathBuf,
        is_dir: bool,
        /// The access mode and O_APPEND it was opened with: O_RDONLY except in a writable
        /// host mount.
        flags: i32,
    },
    /// A pipe end, eventfd or epoll instance inside the machine.
    Local(super::ipc::Desc),
    /// /dev/null, /dev/zero or /dev/urandom, emulated.
    Device(Device),
    /// A file or directory of the in-memory filesystem.
    Mem(super::memfs::MemDesc),
}

/// The character devices a guest may open, emulated in the machine (no host device is
/// opened): programs expect them (perl reads a `-e` script's "file" from /dev/null).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// Reads end at once; writes vanish.
    Null,
    /// Reads give zeros; writes vanish.
    Zero,
    /// Reads give host random bytes (/dev/urandom, /dev/random); writes vanish.
    Random,
}

impl Device {
    /// The device at guest path `path`, if it is one.
    pub fn at(path: &Path) -> Option<Device> {
        match path.as_os_str().as_bytes() {
            b"/dev/null" => Some(Device::Null),
            b"/dev/zero" => Some(Device::Zero),
            b"/dev/urandom" | b"/dev/random" => Some(Device::Random),
            _ => None,
        }
    }

    /// The device's number in snapshots.
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<Device> {
        [Device::Null, Device::Zero, Device::Random].into_iter().find(|d| d.code() == code)
    }

    /// What stat shows: a character device, rw for everyone, Linux's major/minor numbers.
    pub fn stat(self) -> libc::stat {
        // SAFETY: stat is plain old data.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        st.st_mode = libc::S_IFCHR | 0o666;
        st.st_nlink = 1;
        st.st_blksize = 4096;
        st.st_dev = 6;
        let minor = match self {
            Device::Null => 3,
            Device::Zero => 5,
            Device::Random => 9,
        };
        st.st_rdev = libc::makedev(1, minor);
        st.st_ino = u64::from(minor);
        st
    }
}

/// A descriptor as recorded in a snapshot.
#[derive(Debug, Clone)]
pub enum FdSpec {
    Stdin,
    Stdout,
    Stderr,
    Device(Device),
    /// `handle` is a descriptor of the very file (its own open file description), so forks
    /// and resets reopen the same file even if its path was since replaced or removed; a
    /// snapshot loaded from a file has none and reopens by path through the allowlist.
    File {
        path: PathBuf,
        is_dir: bool,
        offset: u64,
        handle: Option<Arc<OwnedFd>>,
        /// Access mode and O_APPEND (writable only in a writable host mount).
        flags: i32,
    },
    /// An in-memory file or directory: `desc` identifies its open file description (descriptors
    /// with the same number share one).
    Mem {
        desc: u64,
        ino: u64,
        offset: u64,
        read: bool,
        write: bool,
        append: bool,
        /// The lower file it reads while its bytes are the lower layer's: the very file (as
        /// for `File`), so a host that replaces it meanwhile does not change what forks read;
        /// a snapshot loaded from a file reopens it.
        lower: Option<Arc<OwnedFd>>,
        path_only: bool,
    },
    /// An in-machine object: `desc` identifies its open file description (descriptors with the
    /// same number share one), `pipe` its pipe (both ends share the bytes).
    Local {
        desc: u64,
        nonblock: bool,
        object: LocalSpec,
    },
}

/// An in-machine object as a snapshot records it.
#[derive(Debug, Clone)]
pub enum LocalSpec {
    PipeRead {
        pipe: u64,
        data: Vec<u8>,
    },
    PipeWrite {
        pipe: u64,
        data: Vec<u8>,
    },
    EventFd {
        value: u64,
        semaphore: bool,
    },
    Epoll {
        interest: Vec<super::ipc::Interest>,
    },
    /// A socket end: the direction it reads and the one it writes (each recorded once, like a
    /// pipe), with the message lengths of datagram sockets.
    Socket {
        rx: PipeSpec,
        tx: PipeSpec,
        kind: i32,
        shut_rd: bool,
        shut_wr: bool,
    },
    /// A timerfd: time left until it expires (u64::MAX: disarmed), its period, expirations
    /// not read yet.
    TimerFd {
        clock: i32,
        left_ns: u64,
        interval_ns: u64,
        expirations: u64,
    },
    SignalFd {
        mask: u64,
    },
}

/// One direction of a socket pair as recorded: which (numbered) buffer, its bytes, its messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipeSpec {
    pub pipe: u64,
    pub data: Vec<u8>,
    pub msgs: Vec<u64>,
}

/// A new, independent open file description of the file behind `fd`.
fn reopen(fd: RawFd, is_dir: bool) -> std::result::Result<OwnedFd, i32> {
    let path = CString::new(format!("/proc/self/fd/{fd}")).map_err(|_| errno::EINVAL)?;
    let flags = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | if is_dir { libc::O_DIRECTORY } else { 0 };
    // SAFETY: open of a valid C string; the new fd is owned below.
    let n = unsafe { libc::open(path.as_ptr(), flags) };
    if n < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(errno::EIO));
    }
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// openat2 of `rel` (empty: the directory itself) beneath `dirfd` with `flags` and `mode`:
/// neither `..` nor a symlink leads out (EXDEV), no magic link is followed. The errno as the
/// kernel gave it.
pub(super) fn openat2_beneath(dirfd: RawFd, rel: &Path, flags: i32, mode: u32) -> std::result::Result<OwnedFd, i32> {
    let rel = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
    let c = CString::new(rel.as_os_str().as_bytes()).map_err(|_| errno::EINVAL)?;
    let how = OpenHow { flags: flags as u64, mode: u64::from(mode), resolve: RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS };
    // SAFETY: openat2 with a valid dirfd, C string and open_how of the size passed.
    let fd = unsafe { libc::syscall(libc::SYS_openat2, dirfd, c.as_ptr(), &how as *const OpenHow, std::mem::size_of::<OpenHow>()) } as i32;
    if fd < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(errno::ENOENT));
    }
    // SAFETY: a fresh descriptor from openat2.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Open `rel` beneath the host directory `dirfd` (a mounted host directory) with `flags`
/// (O_CLOEXEC added): only a regular file or directory that is not on a kernel pseudo
/// filesystem; an escape is ENOENT.
pub(super) fn open_beneath(dirfd: RawFd, rel: &Path, flags: i32) -> std::result::Result<OwnedFd, i32> {
    let path_flags = libc::O_PATH | libc::O_CLOEXEC | (flags & (libc::O_DIRECTORY | libc::O_NOFOLLOW));
    let handle = openat2_beneath(dirfd, rel, path_flags, 0).map_err(|e| if e == libc::EXDEV { errno::ENOENT } else { e })?;
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat of our O_PATH handle into a local struct.
    if unsafe { libc::fstat(handle.as_raw_fd(), &mut st) } != 0 {
        return Err(errno::EIO);
    }
    let kind = st.st_mode & libc::S_IFMT;
    if kind != libc::S_IFREG && kind != libc::S_IFDIR || pseudo_filesystem(handle.as_raw_fd())?.is_some() {
        return Err(errno::ENOENT);
    }
    if flags & libc::O_PATH != 0 {
        return Ok(handle);
    }
    // The very inode checked, now opened for reading.
    reopen(handle.as_raw_fd(), kind == libc::S_IFDIR)
}

/// An O_PATH handle of the host directory `path` (absolute) to mount, refusing kernel pseudo
/// filesystems as allowRead does.
pub(super) fn host_dir_handle(path: &Path) -> std::result::Result<OwnedFd, String> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| "a NUL in the path".to_string())?;
    // SAFETY: O_PATH open of a C string (no side effects); owned below.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    // SAFETY: fresh fd.
    let handle = unsafe { OwnedFd::from_raw_fd(fd) };
    if let Ok(Some(fs)) = pseudo_filesystem(handle.as_raw_fd()) {
        return Err(format!("it is on {fs}, which guests may never read"));
    }
    Ok(handle)
}

/// `reopen`, keeping a writable file's access mode (and O_APPEND).
fn reopen_like(fd: RawFd, is_dir: bool, flags: i32) -> std::result::Result<OwnedFd, i32> {
    if flags & libc::O_ACCMODE == libc::O_RDONLY {
        reopen(fd, is_dir)
    } else {
        super::hostrw::reopen_writable(fd, flags)
    }
}

/// Kernel pseudo filesystems whose files expose the host (its memory, environment, devices,
/// tunables, security policy): never readable by a guest, even below an allowed directory such
/// as `/`. Each is its own mount, so being below /proc or /sys is not what catches them.
const PSEUDO_FILESYSTEMS: &[(i64, &str)] = &[
    (0x9fa0, "procfs"),
    (0x6265_6572, "sysfs"),
    (0x6462_6720, "debugfs"),
    (0x7472_6163, "tracefs"),
    (0x7363_6673, "securityfs"),
    (0x0027_e0eb, "cgroupfs"),
    (0x6367_7270, "cgroup2fs"),
    (0xcafe_4a11, "bpffs"),
    (0x6265_6570, "configfs"),
    (0xde5e_81e4, "efivarfs"),
    (0x6165_676c, "pstorefs"),
    (0x1cd1, "devpts"),
    (0xf97c_ff8c, "selinuxfs"),
    (0x6573_5543, "fusectl"),
    (0x4249_4e4d, "binfmt_misc"),
    (0x0765_5821, "resctrl"),
    (0x1980_0202, "mqueue"),
    (0x6e66_7364, "nfsd"),
    (0x6759_6969, "rpc_pipefs"),
    (0x0187, "autofs"),
    (0x6e73_6673, "nsfs"),
    (0x0904_1934, "anon_inodefs"),
    (0x5049_4446, "pidfs"),
];

/// The pseudo filesystem `fd` lives on, if it is one of [`PSEUDO_FILESYSTEMS`].
fn pseudo_filesystem(fd: RawFd) -> std::result::Result<Option<&'static str>, i32> {
    // SAFETY: fstatfs into a zeroed local struct; works on O_PATH descriptors.
    let mut sfs: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(fd, &mut sfs) } != 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(errno::EIO));
    }
    Ok(PSEUDO_FILESYSTEMS.iter().find(|(magic, _)| *magic == sfs.f_type as i64).map(|(_, name)| *name))
}

/// A path the guest may read (a file, or a directory and everything below it).
struct Allowed {
    path: PathBuf,
    dir: Option<OwnedFd>,
}

pub struct FilePolicy {
    allowed: Vec<Allowed>,
}

const O_ACCMODE: i32 = 3;
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_BENEATH: u64 = 0x08;

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// What a dynamic executable's loader reads on this host, for `allow_read`: the interpreter,
/// its cache and the library directories (those of them that exist). Merged-/usr aliases need
/// no entries of their own: paths are checked where they lead.
pub fn system_libraries() -> Vec<String> {
    const CANDIDATES: &[&str] = &[
        "/lib64/ld-linux-x86-64.so.2",
        "/etc/ld.so.cache",
        "/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
        "/lib64",
        "/usr/lib64",
        "/usr/local/lib",
    ];
    CANDIDATES.iter().filter(|p| Path::new(p).exists()).map(|p| p.to_string()).collect()
}

/// Lexically normalise an absolute path (`.` and `..` removed, `..` at `/` stays at `/`).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
        }
    }
    out
}

impl FilePolicy {
    /// `paths` are host paths (relative ones are taken from `cwd`); each must exist.
    pub fn new(paths: &[String], cwd: &Path) -> Result<FilePolicy> {
        let mut allowed = Vec::new();
        for p in paths {
            let abs = normalize(&cwd.join(p));
            let canonical = std::fs::canonicalize(&abs).map_err(|e| Error::InvalidArgument(format!("allowRead path {p:?}: {e}")))?;
            // One O_PATH handle (no side effects, so a FIFO swapped in cannot block us) for
            // every check; a directory keeps it as the root of its openat2 lookups.
            let c = CString::new(canonical.as_os_str().as_bytes()).map_err(|_| Error::InvalidArgument(format!("bad path {p:?}")))?;
            // SAFETY: valid C string; the O_PATH handle is owned below.
            let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
            if fd < 0 {
                return Err(Error::InvalidArgument(format!("allowRead path {p:?}: {}", std::io::Error::last_os_error())));
            }
            // SAFETY: fresh fd.
            let handle = unsafe { OwnedFd::from_raw_fd(fd) };
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: fstat of our O_PATH handle into a local struct.
            if unsafe { libc::fstat(handle.as_raw_fd(), &mut st) } != 0 {
                return Err(Error::InvalidArgument(format!("allowRead path {p:?}: {}", std::io::Error::last_os_error())));
            }
            if let Ok(Some(fs)) = pseudo_filesystem(handle.as_raw_fd()) {
                return Err(Error::InvalidArgument(format!("allowRead path {p:?} is on {fs}, which guests may never read")));
            }
            let dir = match st.st_mode & libc::S_IFMT {
                libc::S_IFDIR => Some(handle),
                libc::S_IFREG => None,
                _ => return Err(Error::InvalidArgument(format!("allowRead path {p:?} is neither a regular file nor a directory"))),
            };
            // Both the path as the user wrote it and its canonical form are reachable.
            if abs != canonical && dir.is_none() {
                allowed.push(Allowed { path: abs.clone(), dir: None });
            }
            allowed.push(Allowed { path: canonical, dir });
        }
        Ok(FilePolicy { allowed })
    }

    /// Follow the symlinks in the normalised absolute `path` as the kernel does (also in the
    /// last component with `follow_last`; at most 40, else ELOOP), reading them on the host, so
    /// that allowRead is checked against where the path really leads — `/lib/x86_64-linux-gnu`
    /// is `/usr/lib/x86_64-linux-gnu` on a merged-/usr system. Links on kernel pseudo
    /// filesystems (`/proc/self/exe` and the like) are never followed: ENOENT. A component that
    /// does not exist ends the resolution (the open then fails with ENOENT where allowed).
    /// Only components that can matter are looked at on the host — top-level entries (`/lib`),
    /// allowed paths and the directories on the way to them — so a guest path never makes the
    /// host touch anything else (a hung network mount, an automounter).
    pub fn resolve(&self, path: &Path, follow_last: bool) -> std::result::Result<PathBuf, i32> {
        const MAX_LINKS: u32 = 40;
        let mut pending: Vec<std::ffi::OsString> = Vec::new();
        let push_rev = |pending: &mut Vec<std::ffi::OsString>, p: &Path| {
            for c in p.components().rev() {
                match c {
                    Component::Normal(n) => pending.push(n.to_os_string()),
                    Component::ParentDir => pending.push("..".into()),
                    _ => {}
                }
            }
        };
        push_rev(&mut pending, path);
        let mut out = PathBuf::from("/");
        let mut links = 0u32;
        let mut exists = true;
        while let Some(c) = pending.pop() {
            if c == ".." {
                out.pop();
                continue;
            }
            let candidate = out.join(&c);
            let relevant = candidate.parent() == Some(Path::new("/")) || self.covers(&candidate) || self.leads_to_allowed(&candidate);
            if !exists || (pending.is_empty() && !follow_last) || !relevant {
                exists &= relevant;
                out = candidate;
                continue;
            }
            let Ok(name) = CString::new(candidate.as_os_str().as_bytes()) else { return Err(errno::EINVAL) };
            // SAFETY: O_PATH | O_NOFOLLOW open of a C string: no side effects, owned below.
            let fd = unsafe { libc::open(name.as_ptr(), libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
            if fd < 0 {
                exists = false;
                out = candidate;
                continue;
            }
            // SAFETY: fresh fd.
            let handle = unsafe { OwnedFd::from_raw_fd(fd) };
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: fstat of our O_PATH handle into a local struct.
            if unsafe { libc::fstat(handle.as_raw_fd(), &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFLNK {
                out = candidate;
                continue;
            }
            if pseudo_filesystem(handle.as_raw_fd())?.is_some() {
                return Err(errno::ENOENT);
            }
            links = links.saturating_add(1);
            if links > MAX_LINKS {
                return Err(errno::ELOOP);
            }
            let mut buf = vec![0u8; libc::PATH_MAX as usize];
            // SAFETY: readlinkat of the link itself (empty path on an O_PATH handle) into `buf`.
            let n = unsafe { libc::readlinkat(handle.as_raw_fd(), c"".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return Err(errno::ENOENT);
            }
            buf.truncate(n as usize);
            let target = PathBuf::from(std::ffi::OsString::from_vec(buf));
            if target.is_absolute() {
                out = PathBuf::from("/");
            }
            push_rev(&mut pending, &target);
        }
        Ok(out)
    }

    /// The target of the symlink at `path`, if the link is allowed or leads into what is
    /// (`/lib` → `usr/lib` on a merged-/usr system); EINVAL when it is not a link, as readlink
    /// gives; ENOENT for anything else (no host symlink outside the guest's view shows).
    pub fn readlink(&self, path: &Path) -> std::result::Result<Vec<u8>, i32> {
        let link = self.resolve(path, false)?;
        let target = self.resolve(path, true)?;
        if Device::at(&link).is_some() {
            return Err(errno::EINVAL);
        }
        if !self.covers(&link) && !self.covers(&target) && !self.leads_to_allowed(&target) {
            return Err(errno::ENOENT);
        }
        let (Some(parent), Some(name)) = (link.parent(), link.file_name()) else { return Err(errno::EINVAL) };
        let (dir, _) = self.lookup(parent, libc::O_RDONLY | libc::O_DIRECTORY)?;
        let name = CString::new(name.as_bytes()).map_err(|_| errno::EINVAL)?;
        let mut buf = vec![0u8; libc::PATH_MAX as usize];
        // SAFETY: readlinkat relative to our O_PATH handle of the allowed directory, into `buf`.
        let n = unsafe { libc::readlinkat(dir.as_raw_fd(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(errno::EINVAL));
        }
        buf.truncate(n as usize);
        Ok(buf)
    }

    fn covers(&self, path: &Path) -> bool {
        self.allowed.iter().any(|a| if a.dir.is_some() { path.starts_with(&a.path) } else { path == a.path })
    }

    /// Open a normalised absolute guest path read-only; errno on denial or failure. Returns the
    /// descriptor and whether it is a directory.
    pub fn open(&self, path: &Path, guest_flags: i32) -> std::result::Result<(OwnedFd, bool), i32> {
        let (handle, is_dir) = self.find(path, guest_flags, false)?;
        // The very inode checked by `find`, now opened for reading.
        Ok((reopen(handle.as_raw_fd(), is_dir)?, is_dir))
    }

    /// The contents of the regular file at `path`, opened as the guest would open it: errno
    /// on denial or failure, EISDIR for a directory, EFBIG beyond `max` bytes (never more is
    /// read into host memory).
    pub fn read_file(&self, path: &Path, max: u64) -> std::result::Result<Vec<u8>, i32> {
        use std::io::Read;
        let (fd, is_dir) = self.open(path, libc::O_RDONLY)?;
        if is_dir {
            return Err(libc::EISDIR);
        }
        let mut bytes = Vec::new();
        std::fs::File::from(fd).take(max.saturating_add(1)).read_to_end(&mut bytes).map_err(|e| e.raw_os_error().unwrap_or(errno::EIO))?;
        if bytes.len() as u64 > max {
            return Err(libc::EFBIG);
        }
        Ok(bytes)
    }

    /// What `open` checks, without opening the file for reading: an O_PATH descriptor of the
    /// allowed regular file or directory at `path` (enough for stat, and no read permission
    /// needed, as with stat natively), and whether it is a directory.
    pub fn lookup(&self, path: &Path, guest_flags: i32) -> std::result::Result<(OwnedFd, bool), i32> {
        self.find(path, guest_flags, true)
    }

    /// True if the guest may see `path` at all: it is allowed, or on the way to something that is.
    pub fn shows(&self, path: &Path) -> bool {
        self.covers(path) || self.leads_to_allowed(path)
    }

    /// True if `path` is a directory on the way to an allowed path (`/tmp` for `/tmp/x.json`),
    /// or `/dev`, where the emulated devices live.
    fn leads_to_allowed(&self, path: &Path) -> bool {
        path == Path::new("/dev") || self.allowed.iter().any(|a| a.path != path && a.path.starts_with(path))
    }

    /// `lookup`, and with `ancestors` also the directories on the way to allowed paths: they
    /// exist for stat (realpath walks them: node, python), but are never opened for reading
    /// (EACCES: their other entries stay hidden).
    fn find(&self, path: &Path, guest_flags: i32, ancestors: bool) -> std::result::Result<(OwnedFd, bool), i32> {
        let wants_write = guest_flags & O_ACCMODE != libc::O_RDONLY || guest_flags & (libc::O_CREAT | libc::O_TRUNC) != 0;
        // Where the path leads is what must be allowed; the open below then refuses any link
        // swapped in meanwhile that would lead elsewhere (RESOLVE_BENEATH).
        if wants_write {
            return Err(errno::EROFS); // the whole guest filesystem is read-only
        }
        let resolved = self.resolve(path, guest_flags & libc::O_NOFOLLOW == 0)?;
        let path = resolved.as_path();
        if !self.covers(path) {
            if self.leads_to_allowed(path) {
                if !ancestors {
                    return Err(errno::EACCES);
                }
                let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| errno::EINVAL)?;
                // SAFETY: O_PATH open of a C string (no side effects); owned below.
                let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
                if fd < 0 {
                    return Err(errno::ENOENT);
                }
                // SAFETY: fresh fd.
                return Ok((unsafe { OwnedFd::from_raw_fd(fd) }, true));
            }
            // The guest sees only the allowed paths: nothing else exists for it, so a program
            // probing search paths (ld.so, perl's @INC, python's sys.path) goes on as natively
            // when a directory is missing, and learns nothing about the host's files.
            return Err(errno::ENOENT);
        }
        let pass = guest_flags & (libc::O_DIRECTORY | libc::O_NOFOLLOW);
        let flags = libc::O_PATH | libc::O_CLOEXEC | pass;
        let mut last = errno::ENOENT;
        for a in &self.allowed {
            let opened = match &a.dir {
                Some(dirfd) if path.starts_with(&a.path) => {
                    let rel = path.strip_prefix(&a.path).unwrap_or(Path::new("."));
                    openat2_beneath(dirfd.as_raw_fd(), rel, flags, 0)
                }
                None if path == a.path => {
                    let c = CString::new(a.path.as_os_str().as_bytes()).map_err(|_| errno::EINVAL)?;
                    // SAFETY: plain open of an allowlisted path with a valid C string.
                    let fd = unsafe { libc::open(c.as_ptr(), flags) };
                    if fd < 0 {
                        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EACCES))
                    } else {
                        // SAFETY: a fresh descriptor from open.
                        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
                    }
                }
                _ => continue,
            };
            let handle = match opened {
                Ok(h) => h,
                Err(e) => {
                    // Escapes (EXDEV from RESOLVE_BENEATH, magic links) are plain denials.
                    last = if e == libc::EXDEV || e == libc::ELOOP && pass & libc::O_NOFOLLOW == 0 { errno::ENOENT } else { e };
                    continue;
                }
            };
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: fstat (valid on O_PATH descriptors) into a local struct.
            if unsafe { libc::fstat(handle.as_raw_fd(), &mut st) } != 0 {
                return Err(errno::EIO);
            }
            let kind = st.st_mode & libc::S_IFMT;
            if kind == libc::S_IFLNK {
                // O_PATH | O_NOFOLLOW opened the link itself: what lstat wants; a real open
                // fails like this.
                if guest_flags & libc::O_PATH != 0 {
                    return Ok((handle, false));
                }
                return Err(errno::ELOOP);
            }
            if kind != libc::S_IFREG && kind != libc::S_IFDIR || pseudo_filesystem(handle.as_raw_fd())?.is_some() {
                return Err(errno::ENOENT);
            }
            return Ok((handle, kind == libc::S_IFDIR));
        }
        Err(last)
    }
}

/// The guest's descriptor table.
pub struct FdTable {
    fds: Vec<Option<FdKind>>,
}

pub const MAX_FDS: usize = 1024;

impl Default for FdTable {
    fn default() -> Self {
        Self::new()
    }
}

impl FdTable {
    pub fn new() -> FdTable {
        FdTable { fds: vec![Some(FdKind::Stdin), Some(FdKind::Stdout), Some(FdKind::Stderr)] }
    }

    pub fn get(&self, fd: u64) -> Option<&FdKind> {
        self.fds.get(usize::try_from(fd).ok()?)?.as_ref()
    }

    /// The in-machine objects among the descriptors (each description once per descriptor).
    pub fn iter_locals(&self) -> impl Iterator<Item = super::ipc::Desc> + '_ {
        self.fds.iter().filter_map(|k| match k {
            Some(FdKind::Local(d)) => Some(Arc::clone(d)),
            _ => None,
        })
    }

    /// The in-memory open files among the descriptors.
    pub fn iter_mem(&self) -> impl Iterator<Item = super::memfs::MemDesc> + '_ {
        self.fds.iter().filter_map(|k| match k {
            Some(FdKind::Mem(d)) => Some(Arc::clone(d)),
            _ => None,
        })
    }

    /// True if a descriptor holds in-memory inode `ino` open.
    pub fn mem_holds(&self, ino: u64) -> bool {
        self.fds.iter().any(|k| matches!(k, Some(FdKind::Mem(d)) if super::ipc::lock(d).ino == ino))
    }

    /// Install at the lowest free number ≥ `min`.
    pub fn insert(&mut self, kind: FdKind, min: usize) -> std::result::Result<u64, i32> {
        let slot = (min..MAX_FDS).find(|&i| self.fds.get(i).is_none_or(|f| f.is_none())).ok_or(errno::EMFILE)?;
        if slot >= self.fds.len() {
            self.fds.resize_with(slot.saturating_add(1), || None);
        }
        self.fds[slot] = Some(kind);
        Ok(slot as u64)
    }

    pub fn install_at(&mut self, slot: usize, kind: FdKind) {
        if slot >= self.fds.len() {
            self.fds.resize_with(slot.saturating_add(1), || None);
        }
        self.fds[slot] = Some(kind);
    }

    pub fn close(&mut self, fd: u64) -> std::result::Result<u64, i32> {
        let slot = usize::try_from(fd).ok().and_then(|i| self.fds.get_mut(i)).ok_or(errno::EBADF)?;
        slot.take().map(|_| 0).ok_or(errno::EBADF)
    }

    /// A second description referring to the same thing (dup).
    pub fn duplicate(&self, fd: u64) -> std::result::Result<FdKind, i32> {
        Ok(match self.get(fd).ok_or(errno::EBADF)? {
            FdKind::Stdin => FdKind::Stdin,
            FdKind::Stdout => FdKind::Stdout,
            FdKind::Stderr => FdKind::Stderr,
            FdKind::File { host, path, is_dir, flags } => {
                let dup = host.try_clone().map_err(|e| e.raw_os_error().unwrap_or(errno::EMFILE))?;
                FdKind::File { host: dup, path: path.clone(), is_dir: *is_dir, flags: *flags }
            }
            FdKind::Local(d) => FdKind::Local(Arc::clone(d)),
            FdKind::Device(d) => FdKind::Device(*d),
            FdKind::Mem(d) => FdKind::Mem(Arc::clone(d)),
        })
    }

    /// What is open where, with file positions: enough to rebuild an equal table later
    /// (descriptions are reopened, so the copy does not share offsets with this table).
    pub fn describe(&self) -> Vec<(usize, FdSpec)> {
        // Descriptions and pipes are numbered by identity, so sharing survives the copy.
        let mut descs: Vec<*const ()> = Vec::new();
        let mut pipes: Vec<*const ()> = Vec::new();
        let id = |list: &mut Vec<*const ()>, p: *const ()| match list.iter().position(|q| *q == p) {
            Some(i) => i as u64,
            None => {
                list.push(p);
                list.len().saturating_sub(1) as u64
            }
        };
        self.fds
            .iter()
            .enumerate()
            .filter_map(|(i, f)| {
                let spec = match f.as_ref()? {
                    FdKind::Local(d) => {
                        let known = descs.contains(&Arc::as_ptr(d).cast());
                        let desc = id(&mut descs, Arc::as_ptr(d).cast());
                        let g = super::ipc::lock(d);
                        // A dup'ed descriptor only names its description; a pipe's bytes are
                        // recorded once (host memory for a capture stays bounded by the pipes).
                        let mut bytes_of = |p: &Arc<std::sync::Mutex<super::ipc::PipeBuffer>>| {
                            let seen = known || pipes.contains(&Arc::as_ptr(p).cast());
                            let id = id(&mut pipes, Arc::as_ptr(p).cast());
                            (id, if seen { Vec::new() } else { super::ipc::lock(p).data.iter().copied().collect() })
                        };
                        let object = match &g.local {
                            super::ipc::Local::PipeRead(p) => {
                                let (pipe, data) = bytes_of(p);
                                LocalSpec::PipeRead { pipe, data }
                            }
                            super::ipc::Local::PipeWrite(p) => {
                                let (pipe, data) = bytes_of(p);
                                LocalSpec::PipeWrite { pipe, data }
                            }
                            super::ipc::Local::EventFd { value, semaphore } => LocalSpec::EventFd { value: *value, semaphore: *semaphore },
                            super::ipc::Local::Epoll { interest } => LocalSpec::Epoll { interest: interest.clone() },
                            super::ipc::Local::TimerFd(t) => LocalSpec::TimerFd {
                                clock: t.clock,
                                left_ns: t.next.map_or(u64::MAX, |n| {
                                    u64::try_from(n.saturating_duration_since(std::time::Instant::now()).as_nanos()).unwrap_or(u64::MAX - 1)
                                }),
                                interval_ns: u64::try_from(t.interval.as_nanos()).unwrap_or(u64::MAX),
                                expirations: t.expirations,
                            },
                            super::ipc::Local::SignalFd { mask } => LocalSpec::SignalFd { mask: *mask },
                            super::ipc::Local::Socket(s) => {
                                let mut spec_of = |p: &Arc<std::sync::Mutex<super::ipc::PipeBuffer>>| {
                                    let (pipe, data) = bytes_of(p);
                                    let msgs = if data.is_empty() {
                                        Vec::new()
                                    } else {
                                        super::ipc::lock(p).msgs.iter().map(|&m| m as u64).collect()
                                    };
                                    PipeSpec { pipe, data, msgs }
                                };
                                let (rx, tx) = (spec_of(&s.rx), spec_of(&s.tx));
                                LocalSpec::Socket { rx, tx, kind: s.kind, shut_rd: s.shut_rd, shut_wr: s.shut_wr }
                            }
                        };
                        FdSpec::Local { desc, nonblock: g.nonblock, object }
                    }
                    FdKind::Stdin => FdSpec::Stdin,
                    FdKind::Stdout => FdSpec::Stdout,
                    FdKind::Stderr => FdSpec::Stderr,
                    FdKind::Device(d) => FdSpec::Device(*d),
                    FdKind::Mem(d) => {
                        let desc = id(&mut descs, Arc::as_ptr(d).cast());
                        let o = super::ipc::lock(d);
                        FdSpec::Mem {
                            desc,
                            ino: o.ino,
                            offset: o.offset,
                            read: o.read,
                            write: o.write,
                            append: o.append,
                            lower: o.lower.clone(),
                            path_only: o.path_only,
                        }
                    }
                    FdKind::File { host, path, is_dir, flags } => {
                        // SAFETY: lseek on our own fd, only to read its position.
                        let offset = unsafe { libc::lseek(host.as_raw_fd(), 0, libc::SEEK_CUR) }.max(0) as u64;
                        let handle = reopen_like(host.as_raw_fd(), *is_dir, *flags).ok().map(Arc::new);
                        FdSpec::File { path: path.clone(), is_dir: *is_dir, offset, handle, flags: *flags }
                    }
                };
                Some((i, spec))
            })
            .collect()
    }

    /// Rebuild a table from [`FdTable::describe`], reopening files through `policy`; in-memory
    /// files are those of `fs` (the tree captured with the table).
    pub fn rebuild(specs: &[(usize, FdSpec)], policy: &FilePolicy, fs: &super::memfs::MemFs) -> Result<FdTable> {
        use super::ipc::{Description, Local, PipeBuffer};
        let mut table = FdTable { fds: Vec::new() };
        let mut descs: std::collections::HashMap<u64, super::ipc::Desc> = std::collections::HashMap::new();
        let mut mem_descs: std::collections::HashMap<u64, super::memfs::MemDesc> = std::collections::HashMap::new();
        let mut pipes: std::collections::HashMap<u64, Arc<std::sync::Mutex<PipeBuffer>>> = std::collections::HashMap::new();
        // Each buffer has at most one reading and one writing description, of one kind (pipe,
        // stream socket, message socket), and a socket end reads and writes different buffers:
        // a file that shares a buffer otherwise is refused (the same lock twice, or message
        // lengths that do not match the bytes).
        let mut roles: std::collections::HashMap<u64, (u8, u8, u8)> = std::collections::HashMap::new();
        let bad = |what: &str| Error::InvalidArgument(format!("invalid snapshot file: {what}"));
        let mut claim = |id: u64, reader: bool, kind: u8| -> Result<()> {
            let r = roles.entry(id).or_insert((0, 0, kind));
            if r.2 != kind {
                return Err(bad("a buffer shared by different kinds of descriptors"));
            }
            let n = if reader { &mut r.0 } else { &mut r.1 };
            *n = n.saturating_add(1);
            if *n > 1 {
                return Err(bad("a buffer with two readers or two writers"));
            }
            Ok(())
        };
        for (slot, spec) in specs {
            let kind = match spec {
                FdSpec::Local { desc, nonblock, object } => {
                    if let Some(d) = descs.get(desc) {
                        table.install_at(*slot, FdKind::Local(Arc::clone(d)));
                        continue;
                    }
                    let mut pipe = |id: u64, data: &[u8], msgs: &[u64]| {
                        Arc::clone(pipes.entry(id).or_insert_with(|| {
                            Arc::new(std::sync::Mutex::new(PipeBuffer {
                                data: data.iter().copied().collect(),
                                msgs: msgs.iter().map(|&m| m as usize).collect(),
                                readers: 0,
                                writers: 0,
                                gen: 0,
                            }))
                        }))
                    };
                    match object {
                        LocalSpec::PipeRead { pipe: id, .. } => claim(*id, true, 0)?,
                        LocalSpec::PipeWrite { pipe: id, .. } => claim(*id, false, 0)?,
                        LocalSpec::Socket { rx, tx, kind, .. } => {
                            if rx.pipe == tx.pipe {
                                return Err(bad("a socket reading and writing the same buffer"));
                            }
                            let k = if *kind == libc::SOCK_STREAM { 1 } else { 2 };
                            claim(rx.pipe, true, k)?;
                            claim(tx.pipe, false, k)?;
                        }
                        _ => {}
                    }
                    let local = match object {
                        LocalSpec::PipeRead { pipe: id, data } => Local::PipeRead(pipe(*id, data, &[])),
                        LocalSpec::PipeWrite { pipe: id, data } => Local::PipeWrite(pipe(*id, data, &[])),
                        LocalSpec::TimerFd { clock, left_ns, interval_ns, expirations } => Local::TimerFd(super::notifiers::TimerFd {
                            clock: *clock,
                            next: (*left_ns != u64::MAX)
                                .then(|| std::time::Instant::now().checked_add(std::time::Duration::from_nanos(*left_ns)))
                                .flatten(),
                            interval: std::time::Duration::from_nanos(*interval_ns),
                            expirations: *expirations,
                        }),
                        LocalSpec::SignalFd { mask } => Local::SignalFd { mask: *mask },
                        LocalSpec::Socket { rx, tx, kind, shut_rd, shut_wr } => Local::Socket(super::ipc::SocketEnd {
                            rx: pipe(rx.pipe, &rx.data, &rx.msgs),
                            tx: pipe(tx.pipe, &tx.data, &tx.msgs),
                            kind: *kind,
                            shut_rd: *shut_rd,
                            shut_wr: *shut_wr,
                        }),
                        LocalSpec::EventFd { value, semaphore } => Local::EventFd { value: *value, semaphore: *semaphore },
                        LocalSpec::Epoll { interest } => Local::Epoll { interest: interest.clone() },
                    };
                    let d = Description::new(*nonblock, local);
                    descs.insert(*desc, Arc::clone(&d));
                    FdKind::Local(d)
                }
                FdSpec::Stdin => FdKind::Stdin,
                FdSpec::Stdout => FdKind::Stdout,
                FdSpec::Stderr => FdKind::Stderr,
                FdSpec::Device(d) => FdKind::Device(*d),
                FdSpec::Mem { desc, ino, offset, read, write, append, lower, path_only } => {
                    if let Some(d) = mem_descs.get(desc) {
                        FdKind::Mem(Arc::clone(d))
                    } else {
                        let Some(node) = fs.inode(*ino) else {
                            return Err(bad("a descriptor of an in-memory file that is not there"));
                        };
                        // What no open could give: writing a directory or symlink, I/O on O_PATH.
                        if (*write || *append) && node.mode & libc::S_IFMT != libc::S_IFREG || *path_only && (*read || *write) {
                            return Err(bad("a descriptor opened in a way no open allows"));
                        }
                        // Still the lower file's bytes: the very file open at the snapshot.
                        let still_lower = matches!(fs.inode(*ino).map(|n| &n.data), Some(super::memfs::Data::Lower { .. }));
                        let lower = match lower {
                            Some(h) if still_lower => Some(Arc::clone(h)),
                            _ if !*read => None,
                            _ => fs
                                .open_lower(policy, *ino)
                                .map_err(|e| Error::InvalidState(format!("cannot reopen an in-memory file's lower file (errno {e})")))?
                                .map(Arc::new),
                        };
                        let open = super::memfs::MemOpen {
                            ino: *ino,
                            offset: *offset,
                            read: *read,
                            write: *write,
                            append: *append,
                            lower,
                            cursor: None,
                            path_only: *path_only,
                        };
                        let d = Arc::new(std::sync::Mutex::new(open));
                        mem_descs.insert(*desc, Arc::clone(&d));
                        FdKind::Mem(d)
                    }
                }
                FdSpec::File { path, is_dir, offset, handle, flags } => {
                    let open_flags = if *is_dir { libc::O_RDONLY | libc::O_DIRECTORY } else { libc::O_RDONLY };
                    let reopened = match handle {
                        Some(h) => reopen_like(h.as_raw_fd(), *is_dir, *flags).map(|fd| (fd, *is_dir)),
                        // A snapshot file: through the loader's writable mounts or allowRead.
                        None => match fs.writable_of(path) {
                            Some((w, rel)) => {
                                w.open(&rel, (*flags & (libc::O_ACCMODE | libc::O_APPEND)) | (open_flags & libc::O_DIRECTORY), 0)
                            }
                            None if *flags & libc::O_ACCMODE == libc::O_RDONLY => policy.open(path, open_flags),
                            None => Err(errno::EROFS),
                        },
                    };
                    let (host, is_dir) = reopened
                        .map_err(|e| Error::InvalidState(format!("cannot reopen {} (errno {e}) for the snapshot state", path.display())))?;
                    // SAFETY: lseek on the fd just opened.
                    unsafe { libc::lseek(host.as_raw_fd(), *offset as i64, libc::SEEK_SET) };
                    FdKind::File { host, path: path.clone(), is_dir, flags: *flags }
                }
            };
            table.install_at(*slot, kind);
        }
        Ok(table)
    }

    pub fn path_of_dir(&self, fd: u64) -> std::result::Result<PathBuf, i32> {
        match self.get(fd) {
            Some(FdKind::File { path, is_dir: true, .. }) => Ok(path.clone()),
            Some(_) => Err(errno::ENOTDIR),
            None => Err(errno::EBADF),
        }
    }
}

/// A `struct stat` describing a pipe, for captured stdio (what native code sees when its
/// output goes to a pipe, which keeps stdio buffering identical to a native run under spawn).
pub fn pipe_stat(uid: u32, gid: u32) -> libc::stat {
    // SAFETY: stat is plain old data.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    st.st_mode = libc::S_IFIFO | 0o600;
    st.st_nlink = 1;
    st.st_uid = uid;
    st.st_gid = gid;
    st.st_blksize = 4096;
    st.st_dev = 0xd;
    st.st_ino = 1;
    st
}

/// How long a blocking host read or write waits before it looks at the deadline again.
const IO_SLICE: std::time::Duration = std::time::Duration::from_millis(10);

/// Wait until `fd` is ready for `events` (POLLIN/POLLOUT), checking the deadline every slice.
/// Readiness includes errors and hang-ups: the read or write that follows reports them.
fn wait_ready(fd: RawFd, events: i16, deadline: &Deadline) -> Result<()> {
    loop {
        deadline.check()?;
        let mut pfd = libc::pollfd { fd, events, revents: 0 };
        let ms = deadline.poll_slice(IO_SLICE).as_millis().clamp(1, IO_SLICE.as_millis()) as i32;
        // SAFETY: poll on one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n > 0 {
            return Ok(());
        }
        if n < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return Ok(()); // let the read or write report it
        }
    }
}

/// Whether writes to `fd` can block on a reader (pipe, socket, terminal) rather than complete
/// at once (file, /dev/null).
fn may_block(fd: RawFd) -> bool {
    // SAFETY: fstat into a local struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return true;
    }
    !matches!(st.st_mode & libc::S_IFMT, libc::S_IFREG | libc::S_IFBLK)
}

/// Write all of `data` to a host descriptor, waiting for a slow reader only in slices and only
/// as much as fits without blocking (PIPE_BUF after readiness), so the deadline holds.
pub(crate) fn write_host_fd(fd: RawFd, data: &[u8], deadline: &Deadline) -> Result<std::result::Result<usize, i32>> {
    let step = if may_block(fd) { libc::PIPE_BUF } else { 1 << 20 };
    let mut done = 0;
    while done < data.len() {
        if step == libc::PIPE_BUF {
            wait_ready(fd, libc::POLLOUT, deadline)?;
        } else {
            deadline.check()?;
        }
        let len = data.len().saturating_sub(done).min(step);
        // SAFETY: writing from a valid slice to a host fd we were told to inherit.
        let n = unsafe { libc::write(fd, data[done..].as_ptr().cast(), len) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if matches!(e.raw_os_error(), Some(libc::EINTR) | Some(libc::EAGAIN)) {
                continue;
            }
            // Like a short write natively: report what got through, else the errno.
            return Ok(if done > 0 { Ok(done) } else { Err(e.raw_os_error().unwrap_or(libc::EIO)) });
        }
        done = done.saturating_add(n.unsigned_abs());
    }
    Ok(Ok(done))
}

/// Read from a host descriptor (inherited stdin) into `buf`, waiting for input in slices so the
/// deadline holds. Returns the byte count or the errno.
pub(crate) fn read_host_fd(fd: RawFd, buf: *mut u8, len: usize, deadline: &Deadline) -> Result<std::result::Result<usize, i32>> {
    loop {
        wait_ready(fd, libc::POLLIN, deadline)?;
        // SAFETY: the caller passes a checked, writable guest range of `len` bytes.
        let n = unsafe { libc::read(fd, buf.cast(), len) };
        if n >= 0 {
            return Ok(Ok(n as usize));
        }
        let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO);
        if e != libc::EINTR && e != libc::EAGAIN {
            return Ok(Err(e));
        }
    }
}

//! Reading and writing descriptors: stdio, host files, iovecs, poll, ioctl, fcntl, dup.

use std::os::fd::{AsRawFd, RawFd};

use super::files::{self, Device, FdKind, Input};
use super::memfs::MemDesc;
use super::{err, errno, host_result, ret, Flow, Linux, SyscallEnv, MAX_RW_COUNT};
use crate::error::Result;
use crate::host::{Host, Stream};

impl Linux {
    pub(super) fn write(&mut self, env: &SyscallEnv, host: &mut dyn Host, fd: u64, buf: u64, len: u64) -> Result<Flow> {
        let len = len.min(MAX_RW_COUNT);
        let Ok(ptr) = env.user().host_range(buf, len, false) else {
            return Ok(Flow::Return(if self.fds.get(fd).is_none() { err(errno::EBADF) } else { err(errno::EFAULT) }));
        };
        // SAFETY: the range is checked, inside the guest mapping, and nothing else writes it
        // while the vCPU (on this thread) is stopped in this exit.
        let data = unsafe { std::slice::from_raw_parts(ptr as *const u8, len as usize) };
        self.write_parts(env, host, fd, &[data])
    }

    /// Write `parts` in order, as one write/writev: streamed from guest memory in bounded
    /// chunks (no host buffer of the guest's size), the deadline checked between chunks, and
    /// stopping at the first short write.
    pub(super) fn write_parts(&mut self, env: &SyscallEnv, host: &mut dyn Host, fd: u64, parts: &[&[u8]]) -> Result<Flow> {
        const CHUNK: usize = 1 << 20;
        let (out, stream) = match self.fds.get(fd) {
            Some(FdKind::File { host, flags, is_dir: false, .. }) if flags & libc::O_ACCMODE != libc::O_RDONLY => {
                return self.write_host_file(env, host.as_raw_fd(), parts, None).map(|r| Flow::Return(ret(r)));
            }
            None | Some(FdKind::Stdin) | Some(FdKind::File { .. }) => return Ok(Flow::Return(err(errno::EBADF))),
            Some(FdKind::Device(_)) => {
                let total = parts.iter().fold(0u64, |sum, p| sum.saturating_add(p.len() as u64));
                return Ok(Flow::Return(total));
            }
            Some(FdKind::Mem(d)) => {
                let d = std::sync::Arc::clone(d);
                return Ok(Flow::Return(ret(self.write_mem(&d, parts, None))));
            }
            Some(FdKind::Stdout) => (&mut self.stdout, Stream::Stdout),
            Some(FdKind::Stderr) => (&mut self.stderr, Stream::Stderr),
            Some(FdKind::Local(d)) => {
                // In-machine objects take at most a pipe's worth at once: the gathered bytes
                // are copied into one bounded buffer.
                let d = std::sync::Arc::clone(d);
                let mut data = Vec::new();
                for p in parts {
                    let room = super::ipc::PIPE_CAPACITY.saturating_sub(data.len());
                    data.extend_from_slice(&p[..p.len().min(room)]);
                }
                return Ok(self.write_local(&d, &data));
            }
        };
        let mut total = 0u64;
        for chunk in parts.iter().flat_map(|p| p.chunks(CHUNK)) {
            if total > 0 {
                env.deadline.check()?;
            }
            match out.write(stream, chunk, host, env.deadline)? {
                Ok(n) => {
                    total = total.saturating_add(n as u64);
                    if n < chunk.len() {
                        break;
                    }
                }
                Err(_) if total > 0 => break, // what got through, as a short write
                // A closed reader raises SIGPIPE, which ends the process unless ignored.
                Err(libc::EPIPE) => {
                    let info = super::signals::SigInfo::from_process(libc::SIGPIPE as u64, super::signals::SI_USER, self.pid(), self.uid);
                    let me = self.current();
                    self.send(super::signals::Target::Thread(me), info);
                    return Ok(Flow::Return(err(libc::EPIPE)));
                }
                Err(e) => return Ok(Flow::Return(err(e))),
            }
        }
        Ok(Flow::Return(total))
    }

    pub(super) fn read_iovecs(&self, env: &SyscallEnv, iov: u64, count: u64) -> std::result::Result<Vec<(u64, u64)>, i32> {
        if count > 1024 {
            return Err(errno::EINVAL);
        }
        let mut out = Vec::with_capacity(count as usize);
        let mut total: u64 = 0;
        for i in 0..count {
            let v: libc::iovec = env.user().read_pod(iov.checked_add(i.saturating_mul(16)).ok_or(errno::EFAULT)?)?;
            let (base, len) = (v.iov_base as u64, v.iov_len as u64);
            total = total.checked_add(len).filter(|&t| t <= isize::MAX as u64).ok_or(errno::EINVAL)?;
            out.push((base, len));
        }
        Ok(out)
    }

    pub(super) fn writev(&mut self, env: &SyscallEnv, host: &mut dyn Host, fd: u64, iov: u64, count: u64) -> Result<Flow> {
        let vecs = match self.read_iovecs(env, iov, count) {
            Ok(v) => v,
            Err(e) => return Ok(Flow::Return(err(e))),
        };
        if self.fds.get(fd).is_none() {
            return Ok(Flow::Return(err(errno::EBADF)));
        }
        // The iovecs' bytes in guest memory, without copying them out; like Linux, one call
        // moves at most MAX_RW_COUNT bytes (the rest is a short write).
        let user = env.user();
        let mut parts: Vec<&[u8]> = Vec::with_capacity(vecs.len());
        let mut budget = MAX_RW_COUNT;
        for (base, len) in vecs {
            let len = len.min(budget);
            match user.host_range(base, len, false) {
                Ok(ptr) => {
                    if len > 0 {
                        // SAFETY: the range is checked and inside the guest mapping; nothing
                        // else writes it while the vCPU (on this thread) is stopped in this exit.
                        parts.push(unsafe { std::slice::from_raw_parts(ptr as *const u8, len as usize) });
                        budget = budget.saturating_sub(len);
                    }
                }
                // Nothing gathered yet: the whole call faults; else a short write, as on Linux.
                Err(_) if parts.is_empty() => return Ok(Flow::Return(err(errno::EFAULT))),
                Err(_) => break,
            }
            if budget == 0 {
                break;
            }
        }
        self.write_parts(env, host, fd, &parts)
    }

    /// read/pread64 into guest memory.
    pub(super) fn read(&mut self, env: &SyscallEnv, fd: u64, buf: u64, len: u64, offset: Option<u64>) -> Result<Flow> {
        let len = len.min(MAX_RW_COUNT);
        let Ok(ptr) = env.user().host_range(buf, len, true) else {
            return Ok(Flow::Return(if self.fds.get(fd).is_none() { err(errno::EBADF) } else { err(errno::EFAULT) }));
        };
        if let Some(FdKind::Mem(d)) = self.fds.get(fd) {
            let d = std::sync::Arc::clone(d);
            return Ok(Flow::Return(ret(self.read_mem(&d, ptr, len, offset))));
        }
        if let Some(FdKind::Local(d)) = self.fds.get(fd) {
            if offset.is_some() {
                return Ok(Flow::Return(err(errno::ESPIPE)));
            }
            let d = std::sync::Arc::clone(d);
            if let Some(r) = self.read_notifier(&d, env, buf, len) {
                return Ok(r.unwrap_or_else(|e| Flow::Return(err(e))));
            }
            return Ok(self.read_local(&d, ptr, len as usize));
        }
        self.read_host(env, fd, ptr, len, offset).map(Flow::Return)
    }

    /// read/pread of an in-memory file into the checked guest range `[ptr, ptr+len)`: from
    /// its bytes, or while they are the lower layer's, from the lower file (at most 16 MiB at
    /// once, a short read as a regular file may give).
    fn read_mem(&mut self, d: &MemDesc, ptr: *mut u8, len: u64, offset: Option<u64>) -> std::result::Result<u64, i32> {
        let mut o = super::ipc::lock(d);
        if !o.read {
            return Err(errno::EBADF);
        }
        if self.fs.inode(o.ino).is_none_or(super::memfs::Inode::is_dir) {
            return Err(errno::EISDIR);
        }
        let at = offset.unwrap_or(o.offset);
        if (at as i64) < 0 {
            return Err(errno::EINVAL);
        }
        // SAFETY: the caller checked `[ptr, ptr+len)` is writable guest memory; nothing else
        // touches it while the vCPU (on this thread) is stopped in this exit.
        let buf = unsafe { std::slice::from_raw_parts_mut(ptr, len as usize) };
        // In-memory bytes are copied whole (bounded by the file, so by fsLimit), as tmpfs reads.
        let n = match self.fs.read_at(o.ino, at, buf) {
            Ok(n) => n,
            Err(()) => {
                let len = (len as usize).min(16 << 20);
                let lower = o.lower.as_ref().ok_or(errno::EIO)?;
                // SAFETY: pread from our own host descriptor into the same checked range.
                let n = unsafe { libc::pread(lower.as_raw_fd(), ptr.cast(), len, at as i64) };
                host_result(n as i64)? as usize
            }
        };
        if offset.is_none() {
            o.offset = at.saturating_add(n as u64);
        }
        Ok(n as u64)
    }

    /// write/pwrite of `parts` to an in-memory file (a lower file is copied up first); with
    /// O_APPEND a write goes to the end.
    pub(super) fn write_mem(&mut self, d: &MemDesc, parts: &[&[u8]], offset: Option<u64>) -> std::result::Result<u64, i32> {
        let (ino, cur, append) = {
            let o = super::ipc::lock(d);
            if !o.write {
                return Err(errno::EBADF);
            }
            (o.ino, o.offset, o.append)
        };
        if self.fs.inode(ino).is_some_and(|n| matches!(n.data, super::memfs::Data::Lower { .. })) {
            self.fs.copy_up(&self.policy, ino)?;
            self.drop_lower(ino);
        }
        let size = self.fs.inode(ino).map_or(0, super::memfs::Inode::size);
        let mut at = match offset {
            Some(off) if (off as i64) < 0 => return Err(errno::EINVAL),
            // pwrite on an O_APPEND descriptor appends on Linux (see pwrite(2), BUGS).
            Some(_) if append => size,
            Some(off) => off,
            None if append => size,
            None => cur,
        };
        let mut total = 0u64;
        for p in parts.iter().filter(|p| !p.is_empty()) {
            match self.fs.write(ino, at, p) {
                Ok(n) => {
                    at = at.saturating_add(n as u64);
                    total = total.saturating_add(n as u64);
                }
                Err(_) if total > 0 => break,
                Err(e) => return Err(e),
            }
        }
        if offset.is_none() {
            super::ipc::lock(d).offset = at;
        }
        Ok(total)
    }

    /// write/pwrite of `parts` to a file in a writable host mount: in bounded steps with the
    /// deadline checked between them; a short write or an error after some bytes ends it.
    fn write_host_file(&self, env: &SyscallEnv, fd: RawFd, parts: &[&[u8]], offset: Option<u64>) -> Result<std::result::Result<u64, i32>> {
        const STEP: usize = 16 << 20;
        let mut total = 0u64;
        for chunk in parts.iter().flat_map(|p| p.chunks(STEP)) {
            if total > 0 {
                env.deadline.check()?;
            }
            // SAFETY: write/pwrite from a valid slice to the guest's own writable host file.
            let n = unsafe {
                match offset {
                    Some(off) => libc::pwrite(fd, chunk.as_ptr().cast(), chunk.len(), (off as i64).saturating_add(total as i64)),
                    None => libc::write(fd, chunk.as_ptr().cast(), chunk.len()),
                }
            };
            if n < 0 {
                let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(errno::EIO);
                return Ok(if total > 0 { Ok(total) } else { Err(e) });
            }
            total = total.saturating_add(n.unsigned_abs() as u64);
            if n.unsigned_abs() < chunk.len() {
                break;
            }
        }
        Ok(Ok(total))
    }

    /// read from stdin or a host file into the checked guest range `[ptr, ptr+len)`.
    fn read_host(&mut self, env: &SyscallEnv, fd: u64, ptr: *mut u8, len: u64, offset: Option<u64>) -> Result<u64> {
        Ok(match self.fds.get(fd) {
            None | Some(FdKind::Local(_)) | Some(FdKind::Mem(_)) => err(errno::EBADF),
            Some(FdKind::Stdout) | Some(FdKind::Stderr) => err(errno::EBADF),
            Some(FdKind::Device(Device::Null)) => 0,
            Some(FdKind::Device(dev)) => {
                // Bounded like a host read step; a short read of a device is allowed.
                let n = len.min(16 << 20) as usize;
                if *dev == Device::Zero {
                    // SAFETY: ptr covers `len` checked, writable guest bytes; n ≤ len.
                    unsafe { std::ptr::write_bytes(ptr, 0, n) };
                    n as u64
                } else {
                    // SAFETY: the same range, as a slice for the host's random source.
                    match super::host_random(unsafe { std::slice::from_raw_parts_mut(ptr, n) }) {
                        Ok(got) => got as u64,
                        Err(e) => err(e),
                    }
                }
            }
            Some(FdKind::Stdin) if offset.is_some() => err(errno::ESPIPE),
            Some(FdKind::Stdin) => match &mut self.stdin {
                Input::Empty => 0,
                Input::Bytes { data, pos } => {
                    let n = data.len().saturating_sub(*pos).min(len as usize);
                    // SAFETY: ptr covers `len` checked, writable guest bytes; n ≤ len.
                    unsafe { std::ptr::copy_nonoverlapping(data[*pos..].as_ptr(), ptr, n) };
                    *pos = pos.saturating_add(n);
                    n as u64
                }
                Input::Inherit => match files::read_host_fd(0, ptr, len as usize, env.deadline)? {
                    Ok(n) => n as u64,
                    Err(e) => err(e),
                },
            },
            Some(FdKind::File { is_dir: true, .. }) => err(errno::EISDIR),
            Some(FdKind::File { host, .. }) => {
                let fd = host.as_raw_fd();
                if offset.is_some_and(|off| (off as i64) < 0) {
                    return Ok(err(errno::EINVAL));
                }
                // A regular file read is not interrupted by signals: read in 16 MiB steps with
                // the deadline checked in between, so gigabytes cannot outrun the timeout.
                const STEP: u64 = 16 << 20;
                let mut done = 0u64;
                loop {
                    let step = len.saturating_sub(done).min(STEP) as usize;
                    // SAFETY: host read/pread into the checked guest range `[ptr, ptr+len)`;
                    // done + step <= len.
                    let n = unsafe {
                        let at = ptr.add(done as usize).cast();
                        match offset {
                            Some(off) => libc::pread(fd, at, step, (off as i64).saturating_add(done as i64)),
                            None => libc::read(fd, at, step),
                        }
                    };
                    if n < 0 {
                        break if done > 0 { done } else { ret(host_result(n as i64)) };
                    }
                    done = done.saturating_add(n.unsigned_abs() as u64);
                    if n.unsigned_abs() < step || done >= len {
                        break done;
                    }
                    env.deadline.check()?;
                }
            }
        })
    }

    pub(super) fn readv(&mut self, env: &SyscallEnv, fd: u64, iov: u64, count: u64) -> Result<Flow> {
        let vecs = match self.read_iovecs(env, iov, count) {
            Ok(v) => v,
            Err(e) => return Ok(Flow::Return(err(e))),
        };
        // Like Linux, one call moves at most MAX_RW_COUNT in all; the deadline is checked
        // between iovecs (1024 of them may all name the same buffer).
        let mut total = 0u64;
        for (base, len) in vecs {
            let len = len.min(MAX_RW_COUNT.saturating_sub(total));
            if len == 0 && total > 0 {
                break;
            }
            if total > 0 {
                env.deadline.check()?;
            }
            let n = match self.read(env, fd, base, len, None)? {
                Flow::Return(n) => n,
                // Nothing read yet: the whole readv waits (and runs again when woken).
                flow if total == 0 => return Ok(flow),
                _ => break,
            };
            if (n as i64) < 0 {
                return Ok(Flow::Return(if total > 0 { total } else { n }));
            }
            total = total.saturating_add(n);
            if n < len {
                break;
            }
        }
        Ok(Flow::Return(total))
    }

    pub(super) fn pwrite(&mut self, env: &SyscallEnv, fd: u64, buf: u64, len: u64, offset: u64) -> std::result::Result<u64, i32> {
        if let Some(FdKind::Mem(d)) = self.fds.get(fd) {
            let d = std::sync::Arc::clone(d);
            let len = len.min(MAX_RW_COUNT);
            let ptr = env.user().host_range(buf, len, false)?;
            // SAFETY: the range is checked and inside the guest mapping; nothing else writes it
            // while the vCPU (on this thread) is stopped in this exit.
            let data = unsafe { std::slice::from_raw_parts(ptr as *const u8, len as usize) };
            return self.write_mem(&d, &[data], Some(offset));
        }
        match self.fds.get(fd) {
            Some(FdKind::Device(_)) => Ok(0),
            Some(FdKind::File { host, flags, is_dir: false, .. }) if flags & libc::O_ACCMODE != libc::O_RDONLY => {
                if (offset as i64) < 0 {
                    return Err(errno::EINVAL);
                }
                let len = len.min(MAX_RW_COUNT);
                let ptr = env.user().host_range(buf, len, false)?;
                // SAFETY: the range is checked and inside the guest mapping; nothing else writes
                // it while the vCPU (on this thread) is stopped in this exit.
                let data = unsafe { std::slice::from_raw_parts(ptr as *const u8, len as usize) };
                self.write_host_file(env, host.as_raw_fd(), &[data], Some(offset)).unwrap_or(Err(errno::EINTR))
            }
            None | Some(FdKind::Stdin) | Some(FdKind::File { .. }) => Err(errno::EBADF),
            Some(_) => Err(errno::ESPIPE),
        }
    }

    pub(super) fn lseek(&self, fd: u64, off: u64, whence: u64) -> std::result::Result<u64, i32> {
        match self.fds.get(fd) {
            None => Err(errno::EBADF),
            Some(FdKind::Device(_)) => Ok(0),
            Some(FdKind::Mem(d)) => {
                let mut o = super::ipc::lock(d);
                let size = self.fs.inode(o.ino).map_or(0, super::memfs::Inode::size) as i64;
                let (off, cur) = (off as i64, o.offset as i64);
                let new = match whence as i32 {
                    libc::SEEK_SET => Some(off),
                    libc::SEEK_CUR => cur.checked_add(off),
                    libc::SEEK_END => size.checked_add(off),
                    libc::SEEK_DATA if off >= size => return Err(libc::ENXIO),
                    libc::SEEK_DATA => Some(off),
                    libc::SEEK_HOLE if off >= size => return Err(libc::ENXIO),
                    libc::SEEK_HOLE => Some(size),
                    _ => return Err(errno::EINVAL),
                };
                let new = new.filter(|&n| n >= 0).ok_or(errno::EINVAL)?;
                o.offset = new as u64;
                o.cursor = None; // a directory listing goes on from entry `new` (rewinddir: 0)
                Ok(new as u64)
            }
            Some(FdKind::File { host, .. }) => {
                // SAFETY: lseek on our own host fd.
                let r = unsafe { libc::lseek(host.as_raw_fd(), off as i64, whence as i32) };
                host_result(r)
            }
            Some(_) => Err(errno::ESPIPE),
        }
    }

    /// close: in-machine objects may change readiness (a pipe's last writer gone: EOF).
    pub(super) fn close_fd(&mut self, fd: u64) -> std::result::Result<u64, i32> {
        let local = matches!(self.fds.get(fd), Some(FdKind::Local(_)));
        let mem = matches!(self.fds.get(fd), Some(FdKind::Mem(_)));
        let r = self.fds.close(fd);
        if local {
            self.io_changed();
        }
        if mem {
            self.release_orphans();
        }
        r
    }

    pub(super) fn dup2(&mut self, old: u64, new: u64) -> std::result::Result<u64, i32> {
        if new as usize >= files::MAX_FDS {
            return Err(errno::EBADF);
        }
        let kind = self.fds.duplicate(old)?;
        if old == new {
            return Ok(new);
        }
        let _ = self.close_fd(new);
        self.fds.install_at(new as usize, kind);
        Ok(new)
    }

    pub(super) fn fcntl(&mut self, env: &SyscallEnv, fd: u64, cmd: u64, arg: u64) -> std::result::Result<u64, i32> {
        let kind = self.fds.get(fd).ok_or(errno::EBADF)?;
        match cmd as i32 {
            c @ (libc::F_GETLK | libc::F_SETLK | libc::F_SETLKW | libc::F_OFD_GETLK | libc::F_OFD_SETLK | libc::F_OFD_SETLKW) => {
                self.record_lock(env, fd, c, arg)
            }
            libc::F_SETFL if matches!(kind, FdKind::Mem(_)) => {
                if let FdKind::Mem(d) = kind {
                    super::ipc::lock(d).append = arg & libc::O_APPEND as u64 != 0;
                }
                Ok(0)
            }
            libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
                let k = self.fds.duplicate(fd)?;
                self.fds.insert(k, arg as usize)
            }
            libc::F_GETFD | libc::F_SETFD => Ok(0),
            libc::F_SETFL => {
                if let FdKind::Local(d) = kind {
                    super::ipc::lock(d).nonblock = arg & libc::O_NONBLOCK as u64 != 0;
                }
                Ok(0)
            }
            libc::F_GETFL => Ok(match kind {
                FdKind::File { flags, .. } => *flags as u64,
                FdKind::Stdin => libc::O_RDONLY as u64,
                FdKind::Device(_) => libc::O_RDWR as u64,
                FdKind::Mem(d) => {
                    let o = super::ipc::lock(d);
                    let acc = match (o.read, o.write) {
                        (true, true) => libc::O_RDWR,
                        (false, true) => libc::O_WRONLY,
                        _ => libc::O_RDONLY,
                    };
                    (acc | if o.append { libc::O_APPEND } else { 0 }) as u64
                }
                FdKind::Local(d) => {
                    let d = super::ipc::lock(d);
                    let mode = match d.local {
                        super::ipc::Local::PipeRead(_) => libc::O_RDONLY,
                        super::ipc::Local::PipeWrite(_) => libc::O_WRONLY,
                        _ => libc::O_RDWR,
                    };
                    (mode | if d.nonblock { libc::O_NONBLOCK } else { 0 }) as u64
                }
                _ => libc::O_WRONLY as u64,
            }),
            _ => Err(errno::EINVAL),
        }
    }

    /// The host descriptor behind guest `fd`: an inherited stdio stream or an open file
    /// (`None` for captured or fed stdio); `with_files` false leaves files out.
    pub(super) fn host_fd_of(&self, fd: u64, with_files: bool) -> std::result::Result<Option<RawFd>, i32> {
        Ok(match self.fds.get(fd).ok_or(errno::EBADF)? {
            FdKind::Stdin => matches!(self.stdin, Input::Inherit).then_some(0),
            FdKind::Stdout => self.stdout.host_fd(),
            FdKind::Stderr => self.stderr.host_fd(),
            FdKind::File { host, .. } => with_files.then(|| host.as_raw_fd()),
            FdKind::Local(_) | FdKind::Device(_) | FdKind::Mem(_) => None,
        })
    }

    pub(super) fn ioctl(&mut self, env: &SyscallEnv, fd: u64, req: u64, arg: u64) -> std::result::Result<u64, i32> {
        const FIONREAD: u64 = 0x541B;
        const FIONBIO: u64 = 0x5421;
        const FIONCLEX: u64 = 0x5450;
        const FIOCLEX: u64 = 0x5451;
        match req {
            // Close-on-exec: there is no exec.
            FIOCLEX | FIONCLEX => return self.fds.get(fd).map(|_| 0).ok_or(errno::EBADF),
            FIONBIO => {
                let on = u32::from_le_bytes(env.user().read_vec(arg, 4)?.try_into().unwrap_or_default()) != 0;
                return match self.fds.get(fd).ok_or(errno::EBADF)? {
                    FdKind::Local(d) => {
                        super::ipc::lock(d).nonblock = on;
                        Ok(0)
                    }
                    _ => Ok(0),
                };
            }
            FIONREAD => {
                let n = match self.fds.get(fd).ok_or(errno::EBADF)? {
                    FdKind::Local(d) => super::ipc::bytes_readable(&super::ipc::lock(d)).ok_or(errno::ENOTTY)?,
                    FdKind::Stdin => match &self.stdin {
                        Input::Bytes { data, pos } => data.len().saturating_sub(*pos),
                        Input::Empty => 0,
                        Input::Inherit => return Err(errno::ENOTTY),
                    },
                    _ => return Err(errno::ENOTTY),
                };
                env.user().write(arg, &(n.min(i32::MAX as usize) as i32).to_le_bytes())?;
                return Ok(0);
            }
            _ => {}
        }
        // Terminal queries only reach inherited stdio, never files.
        let host = self.host_fd_of(fd, false)?;
        let size = match req {
            0x5401 => 36, // TCGETS: struct termios
            0x5413 => 8,  // TIOCGWINSZ: struct winsize
            _ => return Err(errno::ENOTTY),
        };
        let host = host.ok_or(errno::ENOTTY)?;
        let mut buf = [0u8; 64];
        // SAFETY: TCGETS/TIOCGWINSZ write at most 36 bytes into our 64-byte buffer.
        let r = unsafe { libc::ioctl(host, req as _, buf.as_mut_ptr()) };
        if r < 0 {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(errno::ENOTTY));
        }
        env.user().write(arg, &buf[..size])?;
        Ok(0)
    }
}

//! Sockets inside the machine: AF_UNIX socket pairs (stream, datagram, seqpacket) with
//! send/recv/sendmsg/recvmsg, shutdown and the socket options programs ask about. There is no
//! network: `socket()` itself is not emulated (an embedder can offer networking through host
//! calls). The bytes move through the same buffers as pipes (see `ipc`), so readiness, blocking,
//! epoll, snapshots and resets work the same way.

use std::sync::{Arc, Mutex};

use super::files::FdKind;
use super::ipc::{lock, shut_down, Desc, Description, Local, PipeBuffer, SocketEnd, PIPE_CAPACITY};
use super::{errno, Flow, Linux, SyscallEnv};

const SOCK_NONBLOCK: u64 = 0o4000;
const SOCK_CLOEXEC: u64 = 0o2000000;
const SOL_SOCKET: u64 = 1;
/// `struct msghdr` as seven words: name, namelen (+pad), iov, iovlen, control, controllen,
/// flags (+pad).
fn msghdr(env: &SyscallEnv, msg: u64) -> std::result::Result<[u64; 7], i32> {
    Ok(env.user().read_pod::<[u64; 7]>(msg)?)
}
/// Most iovecs one sendmsg/recvmsg takes (Linux's UIO_MAXIOV).
const MAX_IOV: u64 = 1024;

impl Linux {
    /// The socket end behind `fd`: EBADF if not open, ENOTSOCK if not a socket.
    fn socket_of(&self, fd: u64) -> std::result::Result<Desc, i32> {
        match self.fds.get(fd).ok_or(errno::EBADF)? {
            FdKind::Local(d) if matches!(lock(d).local, Local::Socket(_)) => Ok(Arc::clone(d)),
            _ => Err(libc::ENOTSOCK),
        }
    }

    pub(super) fn socketpair(&mut self, env: &SyscallEnv, domain: u64, kind: u64, protocol: u64, sv: u64) -> std::result::Result<u64, i32> {
        match domain as i32 {
            libc::AF_UNIX => {}
            // Families that exist but have no socket pairs.
            libc::AF_INET | libc::AF_INET6 => return Err(libc::EOPNOTSUPP),
            _ => return Err(libc::EAFNOSUPPORT),
        }
        let base = (kind & !(SOCK_NONBLOCK | SOCK_CLOEXEC)) as i32;
        if ![libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_SEQPACKET].contains(&base) {
            return Err(errno::EINVAL);
        }
        if protocol != 0 {
            return Err(libc::EPROTONOSUPPORT);
        }
        env.user().check(sv, 8, true)?;
        let (a_to_b, b_to_a) = (Arc::new(Mutex::new(PipeBuffer::default())), Arc::new(Mutex::new(PipeBuffer::default())));
        let nonblock = kind & SOCK_NONBLOCK != 0;
        let end = |rx: &Arc<Mutex<PipeBuffer>>, tx: &Arc<Mutex<PipeBuffer>>| {
            Description::new(
                nonblock,
                Local::Socket(SocketEnd { rx: Arc::clone(rx), tx: Arc::clone(tx), kind: base, shut_rd: false, shut_wr: false }),
            )
        };
        let a = self.fds.insert(FdKind::Local(end(&b_to_a, &a_to_b)), 0)?;
        let b = match self.fds.insert(FdKind::Local(end(&a_to_b, &b_to_a)), 0) {
            Ok(b) => b,
            Err(e) => {
                let _ = self.fds.close(a);
                return Err(e);
            }
        };
        env.user().write(sv, &[(a as u32).to_le_bytes(), (b as u32).to_le_bytes()].concat())?;
        Ok(0)
    }

    /// sendto: a socket pair is connected, so a destination is EISCONN; anything else that is
    /// not a socket is ENOTSOCK.
    pub(super) fn sendto(
        &mut self,
        env: &SyscallEnv,
        fd: u64,
        buf: u64,
        len: u64,
        flags: u64,
        dest: u64,
    ) -> std::result::Result<Flow, i32> {
        let d = self.socket_of(fd)?;
        if dest != 0 {
            return Err(libc::EISCONN);
        }
        // A datagram goes whole or not at all (EMSGSIZE beyond a buffer); a stream takes a part.
        let messages = keeps_messages(&d);
        if messages && len > PIPE_CAPACITY as u64 {
            return Err(libc::EMSGSIZE);
        }
        let data = env.user().read_vec(buf, len.min(PIPE_CAPACITY as u64))?;
        Ok(self.send_local(&d, &data, flags))
    }

    /// recvfrom; `from` is where to put the sender's address and its length (both may be 0).
    pub(super) fn recvfrom(
        &mut self,
        env: &SyscallEnv,
        fd: u64,
        buf: u64,
        len: u64,
        flags: u64,
        from: (u64, u64),
    ) -> std::result::Result<Flow, i32> {
        let (src, srclen) = from;
        let d = self.socket_of(fd)?;
        let len = len.min(super::MAX_RW_COUNT);
        let ptr = env.user().host_range(buf, len, true)?;
        let flow = self.receive_local(&d, ptr, len as usize, flags);
        // The peer of a socket pair has no address: a length of 0, as Linux reports.
        if src != 0 && srclen != 0 && matches!(flow, Flow::Return(_)) {
            env.user().write(srclen, &0u32.to_le_bytes())?;
        }
        Ok(flow)
    }

    /// The iovecs of a `struct msghdr` at `msg`, checked (each readable, or writable when
    /// `write`), as (address, length) pairs, and their total capped at a pipe's capacity.
    fn message_iovecs(&self, env: &SyscallEnv, msg: u64, write: bool) -> std::result::Result<Vec<(u64, u64)>, i32> {
        let hdr = msghdr(env, msg)?;
        let (iov, iovlen) = (hdr[2], hdr[3]);
        if iovlen > MAX_IOV {
            return Err(libc::EMSGSIZE);
        }
        let mut out = Vec::with_capacity(iovlen as usize);
        let mut total = 0u64;
        for i in 0..iovlen {
            let at = iov.checked_add(i.saturating_mul(16)).ok_or(errno::EFAULT)?;
            let v: libc::iovec = env.user().read_pod(at)?;
            let (base, len) = (v.iov_base as u64, (v.iov_len as u64).min((PIPE_CAPACITY as u64).saturating_sub(total)));
            env.user().check(base, len, write)?;
            total = total.saturating_add(len);
            out.push((base, len));
        }
        Ok(out)
    }

    pub(super) fn sendmsg(&mut self, env: &SyscallEnv, fd: u64, msg: u64, flags: u64) -> std::result::Result<Flow, i32> {
        let d = self.socket_of(fd)?;
        let hdr = msghdr(env, msg)?;
        if hdr[0] != 0 {
            return Err(libc::EISCONN); // a destination address: the pair is connected
        }
        if hdr[5] != 0 {
            return Err(errno::EINVAL); // ancillary data (descriptor passing) is not supported
        }
        let mut data = Vec::new();
        let iov = self.message_iovecs(env, msg, false)?;
        let messages = keeps_messages(&d);
        if messages && iov.iter().map(|&(_, l)| l).sum::<u64>() >= PIPE_CAPACITY as u64 {
            return Err(libc::EMSGSIZE);
        }
        for (base, len) in iov {
            data.extend(env.user().read_vec(base, len)?);
        }
        Ok(self.send_local(&d, &data, flags))
    }

    pub(super) fn recvmsg(&mut self, env: &SyscallEnv, fd: u64, msg: u64, flags: u64) -> std::result::Result<Flow, i32> {
        let d = self.socket_of(fd)?;
        let iov = self.message_iovecs(env, msg, true)?;
        let total: u64 = iov.iter().map(|&(_, l)| l).sum();
        let mut buf = vec![0u8; total as usize];
        let flow = self.receive_local(&d, buf.as_mut_ptr(), buf.len(), flags);
        let Flow::Return(n) = flow else { return Ok(flow) };
        if (n as i64) < 0 {
            return Ok(flow);
        }
        let mut rest = buf.get(..(n as usize).min(buf.len())).unwrap_or(&[]);
        for (base, len) in iov {
            if rest.is_empty() {
                break;
            }
            let (now, later) = rest.split_at((len as usize).min(rest.len()));
            env.user().write(base, now)?;
            rest = later;
        }
        // No sender address (the pair is unnamed), no ancillary data, no flags.
        let mut hdr = msghdr(env, msg)?;
        if hdr[0] != 0 {
            hdr[1] &= !0xffff_ffff; // msg_namelen
        }
        hdr[5] = 0; // msg_controllen
        hdr[6] &= !0xffff_ffff; // msg_flags
        env.user().write_pod(msg, &hdr)?;
        Ok(Flow::Return(n))
    }

    pub(super) fn shutdown(&mut self, fd: u64, how: u64) -> std::result::Result<u64, i32> {
        let d = self.socket_of(fd)?;
        let (rd, wr) = match how {
            0 => (true, false),
            1 => (false, true),
            2 => (true, true),
            _ => return Err(errno::EINVAL),
        };
        if let Local::Socket(end) = &mut lock(&d).local {
            shut_down(end, rd, wr);
        }
        self.io_changed();
        Ok(0)
    }

    pub(super) fn getsockopt(
        &mut self,
        env: &SyscallEnv,
        fd: u64,
        level: u64,
        name: u64,
        val: u64,
        len_at: u64,
    ) -> std::result::Result<u64, i32> {
        let d = self.socket_of(fd)?;
        let kind = match &lock(&d).local {
            Local::Socket(s) => s.kind,
            _ => return Err(libc::ENOTSOCK),
        };
        if level != SOL_SOCKET {
            return Err(libc::ENOPROTOOPT);
        }
        let value: i32 = match name as i32 {
            libc::SO_TYPE => kind,
            libc::SO_ERROR => 0,
            libc::SO_DOMAIN => libc::AF_UNIX,
            libc::SO_PROTOCOL => 0,
            libc::SO_RCVBUF | libc::SO_SNDBUF => PIPE_CAPACITY as i32,
            libc::SO_ACCEPTCONN => 0,
            _ => return Err(libc::ENOPROTOOPT),
        };
        let len = u32::from_le_bytes(env.user().read_vec(len_at, 4)?.try_into().unwrap_or_default());
        let n = (len as usize).min(4);
        env.user().write(val, &value.to_le_bytes()[..n])?;
        env.user().write(len_at, &(n as u32).to_le_bytes())?;
        Ok(0)
    }

    /// setsockopt: the buffer sizes and timeouts programs set are accepted (and change nothing).
    pub(super) fn setsockopt(&mut self, fd: u64, level: u64, name: u64) -> std::result::Result<u64, i32> {
        self.socket_of(fd)?;
        match (level, name as i32) {
            (SOL_SOCKET, libc::SO_RCVBUF | libc::SO_SNDBUF | libc::SO_RCVTIMEO | libc::SO_SNDTIMEO | libc::SO_PASSCRED) => Ok(0),
            _ => Err(libc::ENOPROTOOPT),
        }
    }

    /// getsockname/getpeername: a socket pair's ends are unnamed AF_UNIX sockets.
    pub(super) fn socket_name(&mut self, env: &SyscallEnv, fd: u64, addr: u64, len_at: u64) -> std::result::Result<u64, i32> {
        self.socket_of(fd)?;
        self.unnamed_address(env, addr, len_at)?;
        Ok(0)
    }

    /// Write an unnamed AF_UNIX address (just the family) at `addr`, its length at `len_at`.
    fn unnamed_address(&self, env: &SyscallEnv, addr: u64, len_at: u64) -> std::result::Result<(), i32> {
        let room = u32::from_le_bytes(env.user().read_vec(len_at, 4)?.try_into().unwrap_or_default());
        let family = (libc::AF_UNIX as u16).to_le_bytes();
        env.user().write(addr, &family[..(room as usize).min(2)])?;
        env.user().write(len_at, &2u32.to_le_bytes())?;
        Ok(())
    }
}

/// True for a datagram or seqpacket socket end (a message goes whole or not at all).
fn keeps_messages(d: &Desc) -> bool {
    matches!(&lock(d).local, Local::Socket(s) if s.messages())
}

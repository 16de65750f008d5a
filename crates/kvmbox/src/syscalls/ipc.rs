//! Objects that live inside the machine: pipes, socket pairs, eventfds and epoll instances,
//! with poll and epoll readiness over every descriptor. A thread that has to wait for one (an empty pipe, an
//! epoll_wait) blocks in [`RunState::IoWait`]; any change to any of these objects wakes such
//! threads, which then run their syscall again (it finds what changed, or blocks again with the
//! deadline it had).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::files::{FdKind, Input};
use super::signals::RestartWhen;
use super::threads::RunState;
use super::{err, errno, Flow, Linux, SyscallEnv};

/// A pipe's capacity (Linux's default, 16 pages).
pub const PIPE_CAPACITY: usize = 65536;
/// Writes up to this size are all or nothing.
const PIPE_BUF: usize = 4096;
/// Most descriptors one epoll instance watches (each descriptor number once).
pub const MAX_INTEREST: usize = super::files::MAX_FDS;

const O_NONBLOCK: u64 = 0o4000;
const O_CLOEXEC: u64 = 0o2000000;
const EFD_SEMAPHORE: u64 = 1;

// poll/epoll event bits (the same values in both).
pub const POLLIN: u32 = 0x1;
pub const POLLOUT: u32 = 0x4;
pub const POLLERR: u32 = 0x8;
pub const POLLHUP: u32 = 0x10;
pub const POLLNVAL: u32 = 0x20;
const EPOLLRDHUP: u32 = 0x2000;
const EPOLLONESHOT: u32 = 1 << 30;
const EPOLLET: u32 = 1 << 31;
/// The event bits a registration may ask for (Linux's EP_PRIVATE_BITS and the event mask).
const EPOLL_EVENTS: u32 = 0x3fff | (1 << 28) | (1 << 29) | EPOLLONESHOT | EPOLLET;
/// Kept in a registration's events (a bit no user flag uses): a one-shot registration fired.
const DISARMED: u32 = 1 << 26;

/// The bytes in a pipe (or one direction of a socket pair) and how many open ends it has.
#[derive(Debug, Default)]
pub struct PipeBuffer {
    pub data: VecDeque<u8>,
    /// Datagram and seqpacket sockets: the length of each message in `data`, oldest first.
    pub msgs: VecDeque<usize>,
    pub readers: usize,
    pub writers: usize,
    /// Bumped by every change (bytes in or out, an end opened or closed): what edge-triggered
    /// epoll compares.
    pub gen: u64,
}

/// One epoll registration: the descriptor, the events asked for, the user's data word, and
/// (for edge-triggered ones) the object state last reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interest {
    pub fd: u64,
    pub events: u32,
    pub data: u64,
    pub reported: Option<u64>,
}

/// What an in-machine descriptor refers to.
#[derive(Debug)]
pub enum Local {
    PipeRead(Arc<Mutex<PipeBuffer>>),
    PipeWrite(Arc<Mutex<PipeBuffer>>),
    EventFd {
        value: u64,
        semaphore: bool,
    },
    Epoll {
        interest: Vec<Interest>,
    },
    /// One end of a socketpair: it reads `rx`, the other end's `tx`, and writes `tx`.
    Socket(SocketEnd),
    TimerFd(super::notifiers::TimerFd),
    /// Readable while a signal in `mask` is pending for the reading thread.
    SignalFd {
        mask: u64,
    },
}

/// One end of an AF_UNIX socket pair.
#[derive(Debug)]
pub struct SocketEnd {
    pub rx: Arc<Mutex<PipeBuffer>>,
    pub tx: Arc<Mutex<PipeBuffer>>,
    /// SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET (the last two keep message boundaries).
    pub kind: i32,
    /// shutdown(SHUT_RD): reads see the end of the stream.
    pub shut_rd: bool,
    /// shutdown(SHUT_WR): the peer sees the end of the stream, writes fail with EPIPE.
    pub shut_wr: bool,
}

impl SocketEnd {
    /// Message boundaries are kept (datagram, seqpacket).
    pub fn messages(&self) -> bool {
        self.kind != libc::SOCK_STREAM
    }
}

/// An open file description of an in-machine object (shared by dup'ed descriptors).
#[derive(Debug)]
pub struct Description {
    pub nonblock: bool,
    pub local: Local,
    /// Bumped by every change to an eventfd's counter (see [`PipeBuffer::gen`]).
    pub gen: u64,
}

pub type Desc = Arc<Mutex<Description>>;

/// Lock a description or buffer (a poisoned lock still holds valid data: no code panics
/// while holding one, and if it did the state is a plain value).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Description {
    pub fn new(nonblock: bool, local: Local) -> Desc {
        count_pipe_end(&local, true);
        Arc::new(Mutex::new(Description { nonblock, local, gen: 0 }))
    }
}

impl Drop for Description {
    fn drop(&mut self) {
        count_pipe_end(&self.local, false);
    }
}

/// A pipe end was opened (or closed): count it in its pipe, which changes (readers see EOF,
/// writers EPIPE, when the other side's count reaches 0).
fn count_pipe_end(local: &Local, opened: bool) {
    let count = |pipe: &Arc<Mutex<PipeBuffer>>, reader: bool| {
        let step = |n: usize| if opened { n.saturating_add(1) } else { n.saturating_sub(1) };
        let mut p = lock(pipe);
        if reader {
            p.readers = step(p.readers);
        } else {
            p.writers = step(p.writers);
        }
        p.gen = p.gen.wrapping_add(1);
    };
    match local {
        Local::PipeRead(p) => count(p, true),
        Local::PipeWrite(p) => count(p, false),
        // A shut-down direction was counted out already (see `shut_down`).
        Local::Socket(s) => {
            if !s.shut_rd {
                count(&s.rx, true);
            }
            if !s.shut_wr {
                count(&s.tx, false);
            }
        }
        _ => {}
    }
}

/// shutdown(2) of a socket end: the directions given stop, and the peer sees it (EOF, EPIPE).
pub fn shut_down(end: &mut SocketEnd, rd: bool, wr: bool) {
    let out = |pipe: &Arc<Mutex<PipeBuffer>>, reader: bool| {
        let mut p = lock(pipe);
        if reader {
            p.readers = p.readers.saturating_sub(1);
        } else {
            p.writers = p.writers.saturating_sub(1);
        }
        p.gen = p.gen.wrapping_add(1);
    };
    if rd && !end.shut_rd {
        end.shut_rd = true;
        out(&end.rx, true);
    }
    if wr && !end.shut_wr {
        end.shut_wr = true;
        out(&end.tx, false);
    }
}

/// Move up to `len` bytes (one message, when `messages`) from `p` to the checked guest range at
/// `ptr`: the bytes moved (a longer message is cut, the rest dropped), 0 at the end of the
/// stream, EAGAIN when there is nothing yet. With `peek` nothing is taken.
fn take_bytes(p: &mut PipeBuffer, ptr: *mut u8, len: usize, messages: bool, peek: bool) -> std::result::Result<usize, i32> {
    if p.data.is_empty() && p.msgs.is_empty() {
        return if p.writers == 0 { Ok(0) } else { Err(errno::EAGAIN) };
    }
    // (Bytes without a recorded length in a message socket count as one message.)
    let available = if messages { p.msgs.front().copied().unwrap_or(p.data.len()) } else { p.data.len() }.min(p.data.len());
    let n = len.min(available);
    let (a, b) = p.data.as_slices();
    let from_a = n.min(a.len());
    // SAFETY: ptr covers `len` checked, writable guest bytes; n ≤ len, and n ≤ data.len().
    unsafe {
        std::ptr::copy_nonoverlapping(a.as_ptr(), ptr, from_a);
        std::ptr::copy_nonoverlapping(b.as_ptr(), ptr.add(from_a), n.saturating_sub(from_a));
    }
    if !peek {
        p.data.drain(..available.min(p.data.len()));
        if messages {
            p.msgs.pop_front();
        }
        p.gen = p.gen.wrapping_add(1);
    }
    Ok(n)
}

/// Append `data` to `p` (one message, when `messages`: all of it or nothing): the bytes taken,
/// EAGAIN when there is no room, EPIPE when nobody reads any more.
fn put_bytes(p: &mut PipeBuffer, data: &[u8], messages: bool) -> std::result::Result<usize, i32> {
    let room = PIPE_CAPACITY.saturating_sub(p.data.len());
    if p.readers == 0 {
        return Err(errno::EPIPE);
    }
    if messages {
        if data.len() > PIPE_CAPACITY {
            return Err(libc::EMSGSIZE);
        }
        if room < data.len() {
            return Err(errno::EAGAIN);
        }
        p.data.extend(data);
        p.msgs.push_back(data.len());
        p.gen = p.gen.wrapping_add(1);
        return Ok(data.len());
    }
    if data.is_empty() {
        return Ok(0);
    }
    if room == 0 || (data.len() <= PIPE_BUF && room < data.len()) {
        return Err(errno::EAGAIN);
    }
    let n = data.len().min(room);
    p.data.extend(&data[..n]);
    p.gen = p.gen.wrapping_add(1);
    Ok(n)
}

/// FIONREAD: the bytes a read would get now (the next message's, for datagram sockets); None
/// for objects it does not apply to.
pub fn bytes_readable(d: &Description) -> Option<usize> {
    match &d.local {
        Local::PipeRead(p) => Some(lock(p).data.len()),
        Local::Socket(s) => {
            let rx = lock(&s.rx);
            Some(if s.messages() { rx.msgs.front().copied().unwrap_or(0) } else { rx.data.len() })
        }
        _ => None,
    }
}

/// A number that changes whenever what a description refers to changes (readiness may have):
/// edge-triggered epoll reports a ready descriptor again only after it moved.
fn state_of(d: &Description) -> u64 {
    match &d.local {
        Local::PipeRead(p) | Local::PipeWrite(p) => lock(p).gen,
        Local::Socket(s) => lock(&s.rx).gen.wrapping_add(lock(&s.tx).gen).wrapping_add(d.gen),
        Local::EventFd { .. } | Local::Epoll { .. } | Local::TimerFd(_) | Local::SignalFd { .. } => d.gen,
    }
}

impl Linux {
    /// Something in-machine changed: every thread waiting for I/O looks again.
    pub(super) fn io_changed(&mut self) {
        for t in self.threads_mut() {
            if matches!(t.state, RunState::IoWait { .. }) {
                t.state = RunState::Runnable;
                t.restart = Some(RestartWhen::Always);
            }
        }
    }

    /// Block the calling thread until an in-machine object changes (or `until`, with result 0).
    pub(super) fn wait_io(&mut self, until: Option<Instant>, on_signal: RestartWhen) -> Flow {
        let t = self.thread_mut();
        t.wait_deadline = Some(until);
        t.state = RunState::IoWait { until, on_signal };
        Flow::Block
    }

    /// The deadline of the wait this syscall is in (kept across its re-runs), else `fresh`.
    fn wait_deadline_or(&self, fresh: impl FnOnce() -> Option<Instant>) -> Option<Instant> {
        self.thread().wait_deadline.unwrap_or_else(fresh)
    }

    fn install(&mut self, desc: Desc, cloexec: bool) -> std::result::Result<u64, i32> {
        let _ = cloexec; // no exec: close-on-exec has nothing to do
        self.fds.insert(FdKind::Local(desc), 0)
    }

    // ---- creation -------------------------------------------------------------------------------

    pub(super) fn pipe2(&mut self, env: &SyscallEnv, fds: u64, flags: u64) -> std::result::Result<u64, i32> {
        if flags & !(O_NONBLOCK | O_CLOEXEC) != 0 {
            return Err(errno::EINVAL);
        }
        env.user().check(fds, 8, true)?;
        let buffer = Arc::new(Mutex::new(PipeBuffer::default()));
        let nonblock = flags & O_NONBLOCK != 0;
        let r = self.install(Description::new(nonblock, Local::PipeRead(Arc::clone(&buffer))), flags & O_CLOEXEC != 0)?;
        let w = match self.install(Description::new(nonblock, Local::PipeWrite(buffer)), flags & O_CLOEXEC != 0) {
            Ok(w) => w,
            Err(e) => {
                let _ = self.fds.close(r);
                return Err(e);
            }
        };
        let pair = [(r as u32).to_le_bytes(), (w as u32).to_le_bytes()].concat();
        env.user().write(fds, &pair)?;
        Ok(0)
    }

    pub(super) fn eventfd2(&mut self, initial: u64, flags: u64) -> std::result::Result<u64, i32> {
        if flags & !(O_NONBLOCK | O_CLOEXEC | EFD_SEMAPHORE) != 0 {
            return Err(errno::EINVAL);
        }
        let local = Local::EventFd { value: initial & 0xffff_ffff, semaphore: flags & EFD_SEMAPHORE != 0 };
        self.install(Description::new(flags & O_NONBLOCK != 0, local), flags & O_CLOEXEC != 0)
    }

    pub(super) fn epoll_create1(&mut self, flags: u64) -> std::result::Result<u64, i32> {
        if flags & !O_CLOEXEC != 0 {
            return Err(errno::EINVAL);
        }
        self.install(Description::new(false, Local::Epoll { interest: Vec::new() }), flags & O_CLOEXEC != 0)
    }

    // ---- reading and writing ----------------------------------------------------------------------

    /// read(2) on an in-machine object into the checked guest range `[ptr, ptr+len)`.
    pub(super) fn read_local(&mut self, desc: &Desc, ptr: *mut u8, len: usize) -> Flow {
        self.receive_local(desc, ptr, len, 0)
    }

    /// read/recv on an in-machine object: `flags` are recv's (MSG_DONTWAIT, MSG_PEEK; only
    /// sockets take them).
    pub(super) fn receive_local(&mut self, desc: &Desc, ptr: *mut u8, len: usize, flags: u64) -> Flow {
        const MSG_PEEK: u64 = 0x2;
        const MSG_DONTWAIT: u64 = 0x40;
        let mut guard = lock(desc);
        let d = &mut *guard;
        let nonblock = d.nonblock || flags & MSG_DONTWAIT != 0;
        let result: std::result::Result<usize, i32> = match &mut d.local {
            Local::PipeRead(_) if len == 0 => Ok(0),
            Local::PipeRead(p) => take_bytes(&mut lock(p), ptr, len, false, false),
            Local::Socket(s) if s.shut_rd => Ok(0),
            Local::Socket(s) => {
                let messages = s.messages();
                take_bytes(&mut lock(&s.rx), ptr, len, messages, flags & MSG_PEEK != 0)
            }
            Local::EventFd { value, semaphore } => {
                if len < 8 {
                    Err(errno::EINVAL)
                } else if *value == 0 {
                    Err(errno::EAGAIN)
                } else {
                    let out = if *semaphore { 1 } else { *value };
                    *value = value.saturating_sub(out);
                    d.gen = d.gen.wrapping_add(1);
                    // SAFETY: ptr covers at least 8 checked, writable guest bytes.
                    unsafe { std::ptr::copy_nonoverlapping(out.to_le_bytes().as_ptr(), ptr, 8) };
                    Ok(8)
                }
            }
            Local::PipeWrite(_) => Err(errno::EBADF),
            Local::Epoll { .. } | Local::TimerFd(_) | Local::SignalFd { .. } => Err(errno::EINVAL),
        };
        drop(guard);
        match result {
            Ok(n) => {
                if n > 0 {
                    self.io_changed();
                }
                Flow::Return(n as u64)
            }
            Err(errno::EAGAIN) if !nonblock => self.wait_io(None, RestartWhen::NoHandlerOrSaRestart),
            Err(e) => Flow::Return(err(e)),
        }
    }

    /// write(2) of `data` to an in-machine object.
    pub(super) fn write_local(&mut self, desc: &Desc, data: &[u8]) -> Flow {
        self.send_local(desc, data, 0)
    }

    /// write/send to an in-machine object: `flags` are send's (MSG_DONTWAIT, MSG_NOSIGNAL; only
    /// sockets take them).
    pub(super) fn send_local(&mut self, desc: &Desc, data: &[u8], flags: u64) -> Flow {
        const MSG_DONTWAIT: u64 = 0x40;
        const MSG_NOSIGNAL: u64 = 0x4000;
        let mut guard = lock(desc);
        let d = &mut *guard;
        let nonblock = d.nonblock || flags & MSG_DONTWAIT != 0;
        let result: std::result::Result<usize, i32> = match &mut d.local {
            Local::PipeWrite(p) => put_bytes(&mut lock(p), data, false),
            Local::Socket(s) if s.shut_wr => Err(errno::EPIPE),
            Local::Socket(s) => {
                let messages = s.messages();
                put_bytes(&mut lock(&s.tx), data, messages)
            }
            Local::EventFd { value, .. } => {
                let add = data.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
                match add {
                    None | Some(u64::MAX) => Err(errno::EINVAL),
                    Some(add) if value.checked_add(add).is_none_or(|v| v == u64::MAX) => Err(errno::EAGAIN),
                    Some(add) => {
                        *value = value.saturating_add(add);
                        d.gen = d.gen.wrapping_add(1);
                        Ok(8)
                    }
                }
            }
            Local::PipeRead(_) => Err(errno::EBADF),
            Local::Epoll { .. } | Local::TimerFd(_) | Local::SignalFd { .. } => Err(errno::EINVAL),
        };
        drop(guard);
        match result {
            Ok(n) => {
                self.io_changed();
                Flow::Return(n as u64)
            }
            Err(errno::EPIPE) if flags & MSG_NOSIGNAL != 0 => Flow::Return(err(errno::EPIPE)),
            Err(errno::EPIPE) => {
                let info = super::signals::SigInfo::from_process(libc::SIGPIPE as u64, super::signals::SI_USER, self.pid(), self.uid);
                let me = self.current();
                self.send(super::signals::Target::Thread(me), info);
                Flow::Return(err(errno::EPIPE))
            }
            Err(errno::EAGAIN) if !nonblock => self.wait_io(None, RestartWhen::NoHandlerOrSaRestart),
            Err(e) => Flow::Return(err(e)),
        }
    }

    // ---- readiness --------------------------------------------------------------------------------

    /// poll(2) events of descriptor `fd` (POLLNVAL if it is not open), and for edge-triggered
    /// epoll the state they reflect.
    pub(super) fn readiness(&self, fd: u64) -> (u32, u64) {
        self.readiness_at(fd, true)
    }

    /// Readiness of `fd`; an epoll instance is looked into only when `look_into_epoll` (one
    /// level: epoll instances inside it count as never ready), which bounds the work of a
    /// poll or epoll_wait to MAX_FDS × MAX_INTEREST checks whatever the guest nests.
    fn readiness_at(&self, fd: u64, look_into_epoll: bool) -> (u32, u64) {
        let Some(kind) = self.fds.get(fd) else { return (POLLNVAL, 0) };
        match kind {
            FdKind::Stdin => (
                match &self.stdin {
                    // Fed or empty input is always readable (data, or end of file).
                    Input::Empty | Input::Bytes { .. } => POLLIN,
                    // The host's own stdin: reported readable (a read waits for it, within the
                    // run's deadline).
                    Input::Inherit => POLLIN,
                },
                0,
            ),
            FdKind::Stdout | FdKind::Stderr => (POLLOUT, 0),
            FdKind::File { .. } | FdKind::Device(_) | FdKind::Mem(_) => (POLLIN | POLLOUT, 0),
            FdKind::Local(desc) => {
                let d = lock(desc);
                let events = match &d.local {
                    Local::PipeRead(p) => {
                        let p = lock(p);
                        (if p.data.is_empty() { 0 } else { POLLIN }) | if p.writers == 0 { POLLHUP | POLLIN | EPOLLRDHUP } else { 0 }
                    }
                    Local::PipeWrite(p) => {
                        let p = lock(p);
                        if p.readers == 0 {
                            POLLERR | POLLOUT
                        } else if PIPE_CAPACITY.saturating_sub(p.data.len()) >= PIPE_BUF {
                            POLLOUT
                        } else {
                            0
                        }
                    }
                    Local::EventFd { value, .. } => (if *value > 0 { POLLIN } else { 0 }) | if *value < u64::MAX - 1 { POLLOUT } else { 0 },
                    Local::TimerFd(t) => {
                        if t.expirations > 0 {
                            POLLIN
                        } else {
                            0
                        }
                    }
                    Local::SignalFd { mask } => {
                        if self.signal_pending_in(*mask) {
                            POLLIN
                        } else {
                            0
                        }
                    }
                    Local::Socket(s) => {
                        let (rx, tx) = (lock(&s.rx), lock(&s.tx));
                        let eof = rx.writers == 0 || s.shut_rd;
                        let readable = !rx.data.is_empty() || !rx.msgs.is_empty() || eof;
                        let writable = tx.readers > 0 && !s.shut_wr && PIPE_CAPACITY.saturating_sub(tx.data.len()) >= PIPE_BUF;
                        let hup = eof && (tx.readers == 0 || s.shut_wr);
                        (if readable { POLLIN } else { 0 })
                            | (if writable { POLLOUT } else { 0 })
                            | (if eof { EPOLLRDHUP } else { 0 })
                            | (if hup { POLLHUP } else { 0 })
                    }
                    Local::Epoll { .. } if !look_into_epoll => 0,
                    Local::Epoll { interest } => {
                        // Readable when a watched descriptor is ready.
                        let interest = interest.clone();
                        let state = state_of(&d);
                        drop(d);
                        let ready = interest.iter().any(|i| self.readiness_at(i.fd, false).0 & i.events & !(EPOLLET | EPOLLONESHOT) != 0);
                        return (if ready { POLLIN } else { 0 }, state);
                    }
                };
                (events, state_of(&d))
            }
        }
    }

    pub(super) fn poll(&mut self, env: &SyscallEnv, fds: u64, n: u64, timeout: Option<Option<Instant>>) -> std::result::Result<Flow, i32> {
        if n > super::files::MAX_FDS as u64 {
            return Err(errno::EINVAL);
        }
        let until = self.wait_deadline_or(|| timeout.unwrap_or(None));
        let mut ready: u64 = 0;
        for i in 0..n {
            let at = fds.checked_add(i.saturating_mul(8)).ok_or(errno::EFAULT)?;
            let mut p: libc::pollfd = env.user().read_pod(at)?;
            p.revents = if p.fd < 0 {
                0
            } else {
                let (events, _) = self.readiness(p.fd as u64);
                // POLLERR, POLLHUP and POLLNVAL are reported whether asked for or not.
                (events & (u32::from(p.events as u16) | POLLERR | POLLHUP | POLLNVAL)) as i16
            };
            if p.revents != 0 {
                ready = ready.saturating_add(1);
            }
            env.user().write_pod(at, &p)?;
        }
        if ready > 0 || until.is_some_and(|u| u <= Instant::now()) {
            return Ok(Flow::Return(ready));
        }
        if n == 0 {
            return Ok(self.sleep(until, 0)); // nothing to wait for but time (or a signal)
        }
        Ok(self.wait_io(until, RestartWhen::NoHandler))
    }

    /// select/pselect6 over `n` descriptors: the three `fd_set`s (any may be 0) are read, and
    /// on return overwritten with the ready ones; blocks like poll. Exceptional conditions
    /// (out-of-band data) never occur here.
    pub(super) fn select(
        &mut self,
        env: &SyscallEnv,
        n: u64,
        sets: [u64; 3],
        timeout: Option<Option<Instant>>,
    ) -> std::result::Result<Flow, i32> {
        if (n as i32) < 0 {
            return Err(errno::EINVAL);
        }
        // As Linux: descriptors beyond the table cannot be open, so the sets end there.
        let n = n.min(super::files::MAX_FDS as u64);
        let bytes = n.div_ceil(64).saturating_mul(8) as usize;
        let read_set = |at: u64| -> std::result::Result<Vec<u8>, i32> {
            if at == 0 {
                Ok(vec![0; bytes])
            } else {
                Ok(env.user().read_vec(at, bytes as u64)?)
            }
        };
        let wanted = [read_set(sets[0])?, read_set(sets[1])?, read_set(sets[2])?];
        let until = self.wait_deadline_or(|| timeout.unwrap_or(None));
        let mut out = [vec![0u8; bytes], vec![0u8; bytes], vec![0u8; bytes]];
        let mut ready = 0u64;
        let mut any = false;
        for fd in 0..n {
            let (byte, bit) = ((fd / 8) as usize, 1u8 << (fd % 8));
            let asked = [0, 1, 2].map(|k| wanted[k][byte] & bit != 0);
            if !asked.iter().any(|&a| a) {
                continue;
            }
            any = true;
            let (events, _) = self.readiness(fd);
            if events == POLLNVAL {
                return Err(errno::EBADF);
            }
            // As Linux: readable also at end of file or on error, writable also on error.
            let hits = [events & (POLLIN | POLLHUP | POLLERR) != 0, events & (POLLOUT | POLLERR) != 0, false];
            for k in 0..3 {
                if asked[k] && hits[k] {
                    out[k][byte] |= bit;
                    ready = ready.saturating_add(1);
                }
            }
        }
        if ready > 0 || until.is_some_and(|u| u <= Instant::now()) {
            for k in 0..3 {
                if sets[k] != 0 {
                    env.user().write(sets[k], &out[k])?;
                }
            }
            return Ok(Flow::Return(ready));
        }
        if !any {
            return Ok(self.sleep(until, 0)); // nothing to wait for but time (or a signal)
        }
        Ok(self.wait_io(until, RestartWhen::NoHandler))
    }

    // ---- epoll ------------------------------------------------------------------------------------

    fn epoll_of(&self, epfd: u64) -> std::result::Result<Desc, i32> {
        match self.fds.get(epfd).ok_or(errno::EBADF)? {
            FdKind::Local(d) if matches!(lock(d).local, Local::Epoll { .. }) => Ok(Arc::clone(d)),
            _ => Err(errno::EINVAL),
        }
    }

    pub(super) fn epoll_ctl(&mut self, env: &SyscallEnv, epfd: u64, op: u64, fd: u64, event: u64) -> std::result::Result<u64, i32> {
        const ADD: u64 = 1;
        const DEL: u64 = 2;
        const MOD: u64 = 3;
        let ep = self.epoll_of(epfd)?;
        match self.fds.get(fd).ok_or(errno::EBADF)? {
            // Regular files and directories are always ready: Linux refuses them.
            FdKind::File { .. } | FdKind::Device(_) | FdKind::Mem(_) => return Err(errno::EPERM),
            FdKind::Local(d) if Arc::ptr_eq(d, &ep) => return Err(errno::EINVAL),
            _ => {}
        }
        let (events, data) = if op == DEL {
            (0, 0)
        } else {
            let mut raw = [0u8; 12]; // struct epoll_event is packed: u32 events, u64 data
            env.user().read(event, &mut raw)?;
            let (e, d) = raw.split_at(4);
            (u32::from_le_bytes(e.try_into().unwrap_or([0; 4])), u64::from_le_bytes(d.try_into().unwrap_or([0; 8])))
        };
        let mut guard = lock(&ep);
        let Local::Epoll { interest } = &mut guard.local else { return Err(errno::EINVAL) };
        let at = interest.iter().position(|i| i.fd == fd);
        match (op, at) {
            (ADD, Some(_)) => return Err(errno::EEXIST),
            (ADD, None) if interest.len() >= MAX_INTEREST => return Err(errno::ENOSPC),
            (ADD, None) => interest.push(Interest { fd, events: events & EPOLL_EVENTS, data, reported: None }),
            (MOD, Some(i)) => interest[i] = Interest { fd, events: events & EPOLL_EVENTS, data, reported: None },
            (DEL, Some(i)) => {
                interest.remove(i);
            }
            (MOD | DEL, None) => return Err(errno::ENOENT),
            _ => return Err(errno::EINVAL),
        }
        drop(guard);
        self.io_changed();
        Ok(0)
    }

    /// epoll_wait / epoll_pwait / epoll_pwait2, `timeout` already converted.
    pub(super) fn epoll_wait(
        &mut self,
        env: &SyscallEnv,
        epfd: u64,
        events: u64,
        max: u64,
        timeout: Option<Option<Instant>>,
    ) -> std::result::Result<Flow, i32> {
        if max == 0 || max > (i32::MAX as u64) / 12 {
            return Err(errno::EINVAL);
        }
        let ep = self.epoll_of(epfd)?;
        env.user().check(events, max.saturating_mul(12), true)?;
        let until = self.wait_deadline_or(|| timeout.unwrap_or(None));
        let interest = match &lock(&ep).local {
            Local::Epoll { interest } => interest.clone(),
            _ => return Err(errno::EINVAL),
        };
        let mut out = Vec::new();
        let mut updated = interest.clone();
        for (k, i) in interest.iter().enumerate() {
            if out.len() as u64 >= max {
                break;
            }
            let (ready, state) = self.readiness_at(i.fd, false);
            if ready == POLLNVAL {
                continue; // closed since it was added
            }
            if i.events & DISARMED != 0 {
                continue; // a one-shot registration that fired, until EPOLL_CTL_MOD re-arms it
            }
            // Errors and hang-ups are reported whether asked for or not.
            let hit = ready & (i.events | POLLERR | POLLHUP) & !(EPOLLET | EPOLLONESHOT);
            if hit == 0 {
                updated[k].reported = None; // not ready: the next readiness is a new edge
                continue;
            }
            if i.events & EPOLLET != 0 && i.reported == Some(state) {
                continue; // edge-triggered: nothing new since it was last reported
            }
            out.extend_from_slice(&hit.to_le_bytes());
            out.extend_from_slice(&i.data.to_le_bytes());
            updated[k].reported = Some(state);
            if i.events & EPOLLONESHOT != 0 {
                updated[k].events |= DISARMED;
            }
        }
        if let Local::Epoll { interest } = &mut lock(&ep).local {
            // Registrations added or removed meanwhile are kept as they are now.
            for u in updated {
                if let Some(cur) = interest.iter_mut().find(|c| c.fd == u.fd) {
                    cur.reported = u.reported;
                    cur.events = u.events;
                }
            }
        }
        if !out.is_empty() {
            env.user().write(events, &out)?;
            return Ok(Flow::Return((out.len() / 12) as u64));
        }
        if until.is_some_and(|u| u <= Instant::now()) {
            return Ok(Flow::Return(0));
        }
        Ok(self.wait_io(until, RestartWhen::NoHandler))
    }
}

/// A poll/epoll timeout in milliseconds (negative: none) as a deadline: `None` waits for ever.
pub fn deadline_in_ms(ms: u64) -> Option<Option<Instant>> {
    let ms = ms as i32;
    if ms < 0 {
        return Some(None);
    }
    Some(Instant::now().checked_add(std::time::Duration::from_millis(ms.unsigned_abs().into())))
}

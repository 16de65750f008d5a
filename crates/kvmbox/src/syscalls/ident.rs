//! Who and where the process is: identity, limits, system information, randomness.

use super::time::host_clock;
use super::{errno, files, host_random, Linux, SyscallEnv};

impl Linux {
    pub(super) fn uname(&self, env: &SyscallEnv, buf: u64) -> std::result::Result<u64, i32> {
        // SAFETY: uname into a local struct.
        let mut u: libc::utsname = unsafe { std::mem::zeroed() };
        unsafe { libc::uname(&mut u) };
        // The sandbox has its own host name.
        u.nodename = [0; 65];
        for (d, s) in u.nodename.iter_mut().zip(b"kvmbox") {
            *d = *s as libc::c_char;
        }
        u.domainname = [0; 65];
        for (d, s) in u.domainname.iter_mut().zip(b"(none)") {
            *d = *s as libc::c_char;
        }
        env.user().write_pod(buf, &u)?;
        Ok(0)
    }

    pub(super) fn prlimit(&self, env: &SyscallEnv, pid: u64, resource: u64, new: u64, old: u64) -> std::result::Result<u64, i32> {
        if pid != 0 && pid != self.pid() {
            return Err(errno::ESRCH);
        }
        const INF: u64 = u64::MAX;
        let (cur, max) = match resource {
            3 => (self.stack_size, INF),                         // RLIMIT_STACK
            7 => (files::MAX_FDS as u64, files::MAX_FDS as u64), // RLIMIT_NOFILE
            9 | 2 => (self.memory, self.memory),                 // RLIMIT_AS, RLIMIT_DATA
            4 => (0, INF),                                       // RLIMIT_CORE
            0..=15 => (INF, INF),
            _ => return Err(errno::EINVAL),
        };
        if new != 0 {
            env.user().read_vec(new, 16)?;
        }
        if old != 0 {
            env.user().write_u64(old, cur)?;
            env.user().write_u64(old.checked_add(8).ok_or(errno::EFAULT)?, max)?;
        }
        Ok(0)
    }

    pub(super) fn sysinfo(&self, env: &SyscallEnv, buf: u64) -> std::result::Result<u64, i32> {
        // SAFETY: sysinfo is plain old data.
        let mut si: libc::sysinfo = unsafe { std::mem::zeroed() };
        si.uptime = host_clock(libc::CLOCK_BOOTTIME as u64, self.mono_offset).map(|t| t.tv_sec).unwrap_or(0);
        si.totalram = self.memory;
        si.freeram = self.mm.free_bytes();
        si.procs = 1;
        si.mem_unit = 1;
        env.user().write_pod(buf, &si)?;
        Ok(0)
    }

    pub(super) fn sched_getaffinity(&self, env: &SyscallEnv, len: u64, mask: u64) -> std::result::Result<u64, i32> {
        if len < 8 || !len.is_multiple_of(8) {
            return Err(errno::EINVAL);
        }
        env.user().write_u64(mask, 1)?; // one vCPU
        Ok(8)
    }

    pub(super) fn getrandom(&self, env: &SyscallEnv, buf: u64, len: u64, flags: u64) -> std::result::Result<u64, i32> {
        if flags & !0x7 != 0 {
            return Err(errno::EINVAL);
        }
        let len = len.min(32 << 20);
        let ptr = env.user().host_range(buf, len, true)?;
        // SAFETY: ptr covers len checked, writable guest bytes.
        host_random(unsafe { std::slice::from_raw_parts_mut(ptr, len as usize) }).map(|n| n as u64)
    }
}

//! Threads of the emulated process: per-thread state, thread ids, TLS bases and futexes.

use kvm_bindings::kvm_regs;

use super::{errno, ExitStatus, Flow, Linux, SyscallEnv};

/// The calling thread's user-mode CPU state at a syscall: the registers `sysret` returns to
/// (rip after the `syscall`, the user rflags) and the TLS bases.
#[derive(Debug, Clone, Copy, Default)]
pub struct UserCpu {
    #[expect(dead_code, reason = "clone copies them into the new thread (next commit)")]
    pub regs: kvm_regs,
    pub fs_base: u64,
    pub gs_base: u64,
}

/// Changes a syscall made to the calling thread's CPU state, which the machine applies
/// before the thread runs again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuUpdate {
    pub fs_base: Option<u64>,
    pub gs_base: Option<u64>,
}

/// What Linux keeps per thread (the process's state — memory, descriptors, dispositions — is
/// shared by all of them).
#[derive(Debug, Clone)]
pub struct Thread {
    pub tid: u64,
    /// Blocked signals.
    pub sigmask: u64,
    /// `stack_t` of the alternate signal stack: ss_sp, ss_flags, ss_size.
    pub altstack: [u64; 3],
    /// set_tid_address / CLONE_CHILD_CLEARTID: zeroed and futex-woken when the thread exits.
    pub clear_child_tid: u64,
    /// set_robust_list: the head of the thread's robust futex list, and its size.
    pub robust_list: (u64, u64),
    /// CPU changes the machine has yet to apply.
    pub cpu_update: CpuUpdate,
}

/// The tid of the first thread, which is also the process id.
pub const MAIN_TID: u64 = 1;

impl Thread {
    /// The first thread of a new process.
    pub fn main() -> Thread {
        Thread {
            tid: MAIN_TID,
            sigmask: 0,
            altstack: [0, 2 /* SS_DISABLE */, 0],
            clear_child_tid: 0,
            robust_list: (0, 0),
            cpu_update: CpuUpdate::default(),
        }
    }
}

impl Linux {
    pub(super) fn set_tid_address(&mut self, addr: u64) -> u64 {
        let thread = self.thread_mut();
        thread.clear_child_tid = addr;
        thread.tid
    }

    pub(super) fn set_robust_list(&mut self, head: u64, len: u64) -> std::result::Result<u64, i32> {
        const ROBUST_LIST_HEAD_SIZE: u64 = 24;
        if len != ROBUST_LIST_HEAD_SIZE {
            return Err(errno::EINVAL);
        }
        self.thread_mut().robust_list = (head, len);
        Ok(0)
    }

    /// `exit`: the calling thread ends (with one thread, the process does).
    pub(super) fn exit_thread(&mut self, status: u64) -> Flow {
        Flow::Exit(ExitStatus::Code((status & 0xff) as i32))
    }

    pub(super) fn arch_prctl(&mut self, env: &SyscallEnv, code: u64, addr: u64) -> std::result::Result<u64, i32> {
        const SET_GS: u64 = 0x1001;
        const SET_FS: u64 = 0x1002;
        const GET_FS: u64 = 0x1003;
        const GET_GS: u64 = 0x1004;
        match code {
            SET_FS | SET_GS => {
                // Non-canonical bases would make the next guest entry fail.
                if addr >= 0x0000_8000_0000_0000 {
                    return Err(errno::EPERM);
                }
                let update = &mut self.thread_mut().cpu_update;
                if code == SET_FS {
                    update.fs_base = Some(addr);
                } else {
                    update.gs_base = Some(addr);
                }
                Ok(0)
            }
            GET_FS | GET_GS => {
                let base = if code == GET_FS { env.cpu.fs_base } else { env.cpu.gs_base };
                env.user().write_u64(addr, base)?;
                Ok(0)
            }
            _ => Err(errno::EINVAL),
        }
    }

    pub(super) fn futex(&self, env: &SyscallEnv, uaddr: u64, op: u64, val: u64) -> std::result::Result<u64, i32> {
        // One thread: nobody can wake a waiter, and wakes find nobody.
        match op & 0x7f {
            0 | 9 => {
                let mut b = [0u8; 4];
                env.user().read(uaddr, &mut b)?;
                if u32::from_le_bytes(b) != val as u32 {
                    Err(errno::EAGAIN)
                } else {
                    Err(errno::ETIMEDOUT)
                }
            }
            1 | 10 => Ok(0),
            _ => Err(errno::ENOSYS),
        }
    }
}

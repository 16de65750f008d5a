//! The initial process stack, laid out as Linux's execve does: argc, argv, envp, auxv, then
//! the strings and the AT_RANDOM bytes above them.

use crate::elf::Program;
use crate::error::{Error, Result};
use crate::memory::GuestMemory;

const AT_NULL: u64 = 0;
const AT_PHDR: u64 = 3;
const AT_PHENT: u64 = 4;
const AT_PHNUM: u64 = 5;
const AT_PAGESZ: u64 = 6;
const AT_BASE: u64 = 7;
const AT_FLAGS: u64 = 8;
const AT_ENTRY: u64 = 9;
const AT_UID: u64 = 11;
const AT_EUID: u64 = 12;
const AT_GID: u64 = 13;
const AT_EGID: u64 = 14;
const AT_PLATFORM: u64 = 15;
const AT_HWCAP: u64 = 16;
const AT_CLKTCK: u64 = 17;
const AT_SECURE: u64 = 23;
const AT_RANDOM: u64 = 25;
const AT_SYSINFO_EHDR: u64 = 33;
const AT_HWCAP2: u64 = 26;
const AT_EXECFN: u64 = 31;
const AT_MINSIGSTKSZ: u64 = 51;

/// Identity and CPU facts reported through the auxiliary vector.
pub struct AuxFacts {
    pub uid: u32,
    pub gid: u32,
    pub hwcap: u64,
    pub hwcap2: u64,
    pub execfn: String,
    /// Where a dynamic program's interpreter was loaded (AT_BASE); 0 for a static program.
    pub interp_base: u64,
    /// Where the vDSO is (AT_SYSINFO_EHDR).
    pub vdso: u64,
}

/// Build the stack below `stack_top`; returns the initial rsp (pointing at argc).
/// `stack_limit` is the lowest address the arguments may occupy.
pub fn build(
    mem: &GuestMemory,
    stack_top: u64,
    stack_limit: u64,
    program: &Program,
    args: &[String],
    env: &[String],
    facts: &AuxFacts,
) -> Result<u64> {
    let mut sp = stack_top;
    let too_big = || Error::InvalidArgument("arguments and environment do not fit in the guest stack".into());
    let push_bytes = |bytes: &[u8], sp: &mut u64| -> Result<u64> {
        *sp = sp.checked_sub(bytes.len() as u64).filter(|&s| s >= stack_limit).ok_or_else(too_big)?;
        mem.write(*sp, bytes)?;
        Ok(*sp)
    };
    let cstr = |s: &str| {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        v
    };
    let execfn = push_bytes(&cstr(&facts.execfn), &mut sp)?;
    let mut env_ptrs = Vec::with_capacity(env.len());
    for e in env.iter().rev() {
        env_ptrs.push(push_bytes(&cstr(e), &mut sp)?);
    }
    env_ptrs.reverse();
    let mut arg_ptrs = Vec::with_capacity(args.len());
    for a in args.iter().rev() {
        arg_ptrs.push(push_bytes(&cstr(a), &mut sp)?);
    }
    arg_ptrs.reverse();
    let platform = push_bytes(b"x86_64\0", &mut sp)?;
    let mut random = [0u8; 16];
    // AT_RANDOM seeds the guest's stack protector and pointer guard: never start without it.
    crate::syscalls::fill_random(&mut random, "AT_RANDOM")?;
    let random_ptr = push_bytes(&random, &mut sp)?;

    let auxv: Vec<(u64, u64)> = vec![
        (AT_PHDR, program.phdr_addr),
        (AT_PHENT, program.phent),
        (AT_PHNUM, program.phnum),
        (AT_PAGESZ, 4096),
        (AT_BASE, facts.interp_base),
        (AT_FLAGS, 0),
        (AT_ENTRY, program.entry),
        (AT_UID, facts.uid as u64),
        (AT_EUID, facts.uid as u64),
        (AT_GID, facts.gid as u64),
        (AT_EGID, facts.gid as u64),
        (AT_PLATFORM, platform),
        (AT_HWCAP, facts.hwcap),
        (AT_HWCAP2, facts.hwcap2),
        (AT_CLKTCK, 100),
        (AT_SECURE, 0),
        (AT_RANDOM, random_ptr),
        (AT_EXECFN, execfn),
        (AT_MINSIGSTKSZ, 2048),
        (AT_SYSINFO_EHDR, facts.vdso),
        (AT_NULL, 0),
    ];
    let mut words: Vec<u64> = Vec::new();
    words.push(args.len() as u64);
    words.extend(&arg_ptrs);
    words.push(0);
    words.extend(&env_ptrs);
    words.push(0);
    for (k, v) in auxv {
        words.push(k);
        words.push(v);
    }
    let table_bytes = words.len() as u64 * 8;
    // rsp must be 16-byte aligned at process entry.
    let rsp = sp.checked_sub(table_bytes).map(|s| s & !15).filter(|&s| s >= stack_limit).ok_or_else(too_big)?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    mem.write(rsp, &bytes)?;
    Ok(rsp)
}

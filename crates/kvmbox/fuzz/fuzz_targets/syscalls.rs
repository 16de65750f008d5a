//! The syscall emulation on arbitrary syscall numbers and arguments, issued against a real,
//! paused guest (KVM needed): every sequence must end in return values or errnos — never a
//! panic, a hang or a host memory access — and the machine must reset afterwards.
//! KVMBOX_FUZZ_GUEST names the guest (scripts/fuzz.sh uses the test suite's calls-musl);
//! KVMBOX_FUZZ_ALLOW a directory it may read.
#![no_main]
use std::sync::Mutex;

use kvmbox::fuzzing::SyscallTarget;
use libfuzzer_sys::fuzz_target;

static TARGET: Mutex<Option<SyscallTarget>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let mut target = TARGET.lock().unwrap();
    let target = target.get_or_insert_with(|| {
        let guest = std::env::var_os("KVMBOX_FUZZ_GUEST").expect("set KVMBOX_FUZZ_GUEST to a guest that pauses");
        let allow = std::env::var("KVMBOX_FUZZ_ALLOW").map(|d| vec![d]).unwrap_or_default();
        SyscallTarget::new(guest.as_ref(), allow).expect("load the fuzzing guest")
    });
    target.run(data);
});

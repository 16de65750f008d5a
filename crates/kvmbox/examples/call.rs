//! Call a guest function and answer its host calls from Rust:
//! `cargo run --release -p kvmbox --example call -- __test__/guests/build/calls-glibc`
//! (a guest built against guest/include/kvmbox.h that pauses once initialized).

use kvmbox::{CallArg, HostCalls, Machine, MachineOptions, RunOutcome};

fn main() -> kvmbox::Result<()> {
    let prog = std::env::args().nth(1).expect("usage: call GUEST (e.g. __test__/guests/build/calls-glibc)");
    let mut vm = Machine::from_file(&prog, MachineOptions::default())?;
    assert_eq!(vm.run()?, RunOutcome::Paused, "the guest should call kvmbox_pause()");

    // Host calls: 0x10000 multiplies by ten, 0x10001 looks a key up in a table.
    let mut host = HostCalls::new();
    host.on(0x10000, |c| Ok(c.args[0] * 10));
    host.on(0x10001, |c| {
        let key = c.read_cstring(c.args[0], 256).map_err(|e| e.to_string())?.unwrap_or_default();
        let value = format!("value of {}", String::from_utf8_lossy(&key));
        c.write(c.args[1], value.as_bytes()).map_err(|e| e.to_string())?;
        Ok(value.len() as u64)
    });

    let add = vm.symbol("add").expect("add");
    let sum = vm.call(add, &mut [CallArg::Int(2), CallArg::Int(3)], None, &mut host)?;
    println!("add(2, 3) = {sum}");

    let echo = vm.symbol("echo_plus_one").expect("echo_plus_one");
    println!("echo_plus_one(4) = {} (a host call inside the call)", vm.call(echo, &mut [CallArg::Int(4)], None, &mut host)?);

    let lookup = vm.symbol("lookup").expect("lookup");
    let mut out = [0u8; 64];
    let n = vm.call(lookup, &mut [CallArg::Str(b"colour"), CallArg::Bytes(&mut out), CallArg::Int(64)], None, &mut host)?;
    println!("lookup(\"colour\") = {:?}", String::from_utf8_lossy(&out[..n as usize]));

    // Snapshot, fork, reset.
    let snap = vm.snapshot()?;
    let mut fork = Machine::fork(&snap)?;
    let counter = fork.symbol("counter_next").expect("counter_next");
    let first = fork.call(counter, &mut [], None, &mut host)?;
    fork.reset()?;
    let again = fork.call(counter, &mut [], None, &mut host)?;
    println!("counter_next() in a fork: {first}, after reset: {again}");
    assert_eq!(first, again);
    Ok(())
}

//! Run a Linux program in kvmbox: `cargo run --release --example run -- prog [args…]`.
//! Set KVMBOX_TRACE=1 to print every syscall, KVMBOX_ALLOW_READ to a `:`-separated list of host
//! paths the guest may read (a dynamic program needs the system libraries: `KVMBOX_ALLOW_READ=system`),
//! KVMBOX_MEMORY_MIB to the guest memory in MiB.

use kvmbox::{Input, Machine, MachineOptions, Output, RunOutcome};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(prog) = args.first() else {
        eprintln!("usage: run PROGRAM [ARGS...]");
        std::process::exit(2);
    };
    let opts = MachineOptions {
        args: args.clone(),
        env: std::env::vars().map(|(k, v)| format!("{k}={v}")).collect(),
        stdin: Input::Inherit,
        stdout: Output::Inherit(1),
        stderr: Output::Inherit(2),
        trace: std::env::var_os("KVMBOX_TRACE").is_some(),
        memory: std::env::var("KVMBOX_MEMORY_MIB").ok().and_then(|m| m.parse::<u64>().ok()).map_or(kvmbox::DEFAULT_MEMORY, |m| m << 20),
        allow_read: std::env::var("KVMBOX_ALLOW_READ")
            .map(|v| v.split(':').flat_map(|p| if p == "system" { kvmbox::system_libraries() } else { vec![p.to_string()] }).collect())
            .unwrap_or_default(),
        ..MachineOptions::default()
    };
    // A guest built for host calls pauses once initialized; here it just continues.
    let run = |mut vm: Machine| loop {
        match vm.run() {
            Ok(RunOutcome::Paused) => continue,
            other => return other,
        }
    };
    let code = match Machine::from_file(prog, opts).and_then(run) {
        Ok(RunOutcome::Exited(c)) => c,
        Ok(RunOutcome::Signaled(s)) => 128 + s,
        Ok(RunOutcome::Paused) => unreachable!(),
        Err(e) => {
            eprintln!("kvmbox: {e}");
            125
        }
    };
    std::process::exit(code);
}

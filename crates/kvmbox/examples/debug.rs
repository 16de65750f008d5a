//! Run a program under gdb: `cargo run --release -p kvmbox --example debug -- PORT prog [args…]`,
//! then `gdb prog -ex 'target remote :PORT'`.

use kvmbox::{Machine, MachineOptions, NoHost, Output, RunOutcome};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port: u16 = args.first().and_then(|p| p.parse().ok()).expect("usage: debug PORT PROGRAM [ARGS...]");
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    eprintln!("waiting for gdb on 127.0.0.1:{port}");
    let opts =
        MachineOptions { args: args[1..].to_vec(), stdout: Output::Inherit(1), stderr: Output::Inherit(2), ..MachineOptions::default() };
    let mut vm = Machine::from_file(&args[1], opts).unwrap();
    let outcome = vm.run_debug(&listener, None, &mut NoHost);
    eprintln!("outcome: {outcome:?}");
    if let Ok(RunOutcome::Exited(c)) = outcome {
        std::process::exit(c);
    }
}

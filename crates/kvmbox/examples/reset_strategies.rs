//! Measure the ways of resetting a fork (and the cost of the request after the reset):
//! `cargo run --release -p kvmbox --example reset_strategies -- benches/build/calls_bench`
//! (the guest is built by `node benches/calls.mjs`, or `gcc -O2 -static benches/calls_bench.c`).

use std::time::{Duration, Instant};

use kvmbox::{CallArg, Machine, MachineOptions, NoHost, ResetStrategy, RunOutcome};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let prog = std::env::args().nth(1).expect("usage: reset_strategies GUEST");
    let mut master = Machine::from_file(&prog, MachineOptions::default()).unwrap();
    assert_eq!(master.run().unwrap(), RunOutcome::Paused);
    let snap = master.snapshot().unwrap();
    let touch = snap.symbol("touch_pages").unwrap();
    println!("{:>10} {:>6} {:>12} {:>16} {:>16}", "strategy", "pages", "reset", "next request", "reset+request");
    for strategy in [ResetStrategy::CopyDirty, ResetStrategy::DropDirty, ResetStrategy::RemapAll] {
        for n in [1u64, 16, 64, 1024] {
            let mut fork = Machine::fork(&snap).unwrap();
            let (mut resets, mut requests) = (Vec::new(), Vec::new());
            for i in 0..40u64 {
                fork.call(touch, &mut [CallArg::Int(n), CallArg::Int(i)], None, &mut NoHost).unwrap();
                let t = Instant::now();
                fork.reset_with(strategy).unwrap();
                let r = t.elapsed();
                let t = Instant::now();
                fork.call(touch, &mut [CallArg::Int(n), CallArg::Int(i + 1)], None, &mut NoHost).unwrap();
                let q = t.elapsed();
                fork.reset_with(strategy).unwrap();
                if i >= 5 {
                    resets.push(r);
                    requests.push(q);
                }
            }
            let (r, q) = (median(resets), median(requests));
            println!("{:>10} {:>6} {:>12?} {:>16?} {:>16?}", format!("{strategy:?}"), n, r, q, r + q);
        }
    }
}

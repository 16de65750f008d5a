// rayon_guest [mode] -- data parallelism with the rayon crate: its global pool of worker
// threads, parallel iterators (map/sum/filter/reduce/collect/chunks), parallel sorts, join,
// scope/spawn, broadcast, a custom ThreadPool, and a panic in a worker.
//
// Run with RAYON_NUM_THREADS set (natively and in kvmbox, e.g. 4): the global pool then has that
// many workers whatever the number of CPUs (kvmbox reports one), and the program proves that all
// of them really ran (broadcast, and which workers took items of a parallel loop). Output depends only on the
// program, never on how work was split or stolen: results are compared with sequential ones and
// only values, sums and yes/no checks are printed, by the main thread. A failed check prints
// "no"; an unexpected panic exits with 101.
//
// Modes, all run in this order when there is no argument; each prints "== <mode> ==" first:
//   pool     current_num_threads, broadcast (one call per worker: indices 0..n-1), a parallel
//            loop of 64 items in which every worker takes part (each item waits until all n
//            workers have started one, or 20 s), thread indices inside and outside
//   iter     10M-element par_iter map/sum, filter/count, min/max/reduce, collect (order kept),
//            par_chunks, zip, enumerate, any/all/find_first, fold
//   sort     par_sort and par_sort_unstable (2M elements), par_sort_by_key, equal to sort()
//   join     rayon::join: fib(30) recursively, with a sequential cutoff
//   scope    rayon::scope with 1000 spawns (atomics and a Mutex<Vec>), nested scopes, in_place_scope
//   custom   a ThreadPoolBuilder pool of 3 named threads: install, broadcast, thread names
//   panic    a panic in a worker of a parallel loop reaches the caller (catch_unwind): its
//            message; the pool still works afterwards
// Unknown mode: usage on stderr, exit 2.
use std::collections::BTreeSet;
use std::panic;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rayon::prelude::*;

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// A fixed pseudo-random sequence (xorshift64*), the same everywhere.
fn data(n: usize, seed: u64) -> Vec<u64> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 20
        })
        .collect()
}

/// Some work that the optimizer cannot remove.
fn work(x: u64, rounds: u32) -> u64 {
    let mut h = x;
    for _ in 0..rounds {
        h = h.rotate_left(5) ^ h.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    h
}

// ---------------------------------------------------------------------------- pool

fn pool() {
    let n = rayon::current_num_threads();
    assert!(n <= 64, "at most 64 workers (a bit mask of them is kept)");
    println!("current_num_threads: {n}");
    println!("main thread's current_thread_index: {:?}", rayon::current_thread_index());

    let mut idx = rayon::broadcast(|ctx| {
        assert_eq!(Some(ctx.index()), rayon::current_thread_index());
        (ctx.index(), ctx.num_threads())
    });
    idx.sort();
    println!("broadcast: one call per worker: {:?}", idx);

    // 64 items; each records which worker runs it, then waits (yielding) until every worker
    // has started an item, so no worker can take them all: the others must steal.
    let all = u64::MAX >> (64 - n);
    let seen = AtomicU64::new(0);
    let start = Instant::now();
    let per_item: Vec<(usize, u64)> = (0..64usize)
        .into_par_iter()
        .with_max_len(1)
        .map(|i| {
            let me = rayon::current_thread_index().expect("items run on pool workers");
            seen.fetch_or(1 << me, Ordering::SeqCst);
            while seen.load(Ordering::SeqCst) != all && start.elapsed() < Duration::from_secs(20) {
                std::thread::yield_now();
            }
            (me, work(i as u64, 100_000))
        })
        .collect();
    let workers: BTreeSet<usize> = per_item.iter().map(|&(w, _)| w).collect();
    let sum = per_item.iter().fold(0u64, |a, &(_, h)| a.wrapping_add(h));
    println!("parallel loop of 64 items: workers that took items: {:?}; checksum {:016x}", workers, sum);
    println!("every worker took part: {}", yes(workers.len() == n));
}

// ---------------------------------------------------------------------------- iter

fn iter() {
    let v = data(10_000_000, 0x1234_5678);
    let seq_sum: u64 = v.iter().map(|&x| x % 1000).sum();
    let par_sum: u64 = v.par_iter().map(|&x| x % 1000).sum();
    println!("10M elements: sum of x%1000 = {par_sum}; equal to sequential: {}", yes(par_sum == seq_sum));

    let evens = v.par_iter().filter(|&&x| x % 2 == 0).count();
    println!("filter/count even: {evens}; equal to sequential: {}", yes(evens == v.iter().filter(|&&x| x % 2 == 0).count()));

    let (min, max) = (v.par_iter().min().unwrap(), v.par_iter().max().unwrap());
    let xor = v.par_iter().cloned().reduce(|| 0, |a, b| a ^ b);
    println!("min {min} max {max} xor-reduce {xor:x}; equal to sequential: {}", yes(xor == v.iter().fold(0, |a, b| a ^ b)));

    let mapped: Vec<u64> = v.par_iter().map(|&x| work(x, 4)).collect();
    let seq: Vec<u64> = v.iter().map(|&x| work(x, 4)).collect();
    println!("collect of map: same values in the same order: {}", yes(mapped == seq));

    let chunk_sums: Vec<u64> = v.par_chunks(100_000).map(|c| c.iter().sum::<u64>()).collect();
    println!(
        "par_chunks(100000): {} chunks, total equal: {}",
        chunk_sums.len(),
        yes(chunk_sums.iter().sum::<u64>() == v.iter().sum::<u64>())
    );

    let w = data(10_000_000, 0x9abc_def0);
    let dot: u64 = v.par_iter().zip(w.par_iter()).map(|(a, b)| (a % 65_536) * (b % 65_536)).sum();
    let weighted: u64 = v.par_iter().enumerate().map(|(i, x)| (i as u64 % 7) * (x % 11)).sum();
    println!("zip dot product {dot}, enumerate weighted sum {weighted}");

    let target = v[7_654_321];
    let first = v.par_iter().position_first(|&x| x == target);
    let any_big = v.par_iter().any(|&x| x > (1 << 43) - 1000);
    let all_small = v.par_iter().all(|&x| x < 1 << 44);
    println!(
        "position_first {:?} (sequential {:?}), any > 2^43-1000: {}, all < 2^44: {}",
        first,
        v.iter().position(|&x| x == target),
        yes(any_big),
        yes(all_small)
    );

    let histogram = v
        .par_iter()
        .fold(
            || [0u64; 8],
            |mut h, &x| {
                h[(x % 8) as usize] += 1;
                h
            },
        )
        .reduce(
            || [0u64; 8],
            |mut a, b| {
                for i in 0..8 {
                    a[i] += b[i];
                }
                a
            },
        );
    println!("fold/reduce histogram of x%8: {:?}", histogram);
}

// ---------------------------------------------------------------------------- sort

fn sort() {
    let v = data(2_000_000, 42);
    let mut expected = v.clone();
    expected.sort();

    let mut a = v.clone();
    a.par_sort();
    let mut b = v.clone();
    b.par_sort_unstable();
    println!("par_sort of 2M: equal to sort(): {}; par_sort_unstable: {}", yes(a == expected), yes(b == expected));
    println!("smallest {:?} largest {}", &a[..3], a[a.len() - 1]);

    let mut pairs: Vec<(u64, usize)> = v.iter().map(|&x| x % 1000).zip(0..).collect();
    pairs.par_sort_by_key(|&(k, _)| k);
    let stable = pairs.windows(2).all(|w| w[0].0 < w[1].0 || (w[0].0 == w[1].0 && w[0].1 < w[1].1));
    println!("par_sort_by_key on 1000 keys: sorted and stable: {}", yes(stable));

    let mut strings: Vec<String> = v.iter().take(200_000).map(|x| format!("{:x}", x)).collect();
    let mut seq = strings.clone();
    seq.sort();
    strings.par_sort_unstable();
    println!("par_sort_unstable of 200k strings: equal to sort(): {}; first {}", yes(strings == seq), strings[0]);
}

// ---------------------------------------------------------------------------- join

fn fib(n: u64) -> u64 {
    if n < 20 {
        return fib_seq(n);
    }
    let (a, b) = rayon::join(|| fib(n - 1), || fib(n - 2));
    a + b
}

fn fib_seq(n: u64) -> u64 {
    if n < 2 {
        n
    } else {
        fib_seq(n - 1) + fib_seq(n - 2)
    }
}

fn join() {
    println!("fib(30) with rayon::join: {}", fib(30));
    let (l, r) = rayon::join(|| (0..1_000_000u64).sum::<u64>(), || (0..1_000_000u64).map(|x| x * 2).sum::<u64>());
    println!("two sums in join: {l} {r}");
    let mut v = data(100_000, 7);
    let (left, right) = v.split_at_mut(50_000);
    rayon::join(|| left.sort(), || right.sort());
    println!(
        "halves sorted in join: {}",
        yes(v[..50_000].windows(2).all(|w| w[0] <= w[1]) && v[50_000..].windows(2).all(|w| w[0] <= w[1]))
    );
}

// ---------------------------------------------------------------------------- scope

fn scope() {
    let total = AtomicU64::new(0);
    let collected = Mutex::new(Vec::new());
    rayon::scope(|s| {
        for i in 0..1000u64 {
            let (total, collected) = (&total, &collected);
            s.spawn(move |_| {
                total.fetch_add(work(i, 1000) % 1000, Ordering::Relaxed);
                collected.lock().unwrap().push(i);
            });
        }
    });
    let mut c = collected.into_inner().unwrap();
    c.sort();
    println!("scope with 1000 spawns: total {}, every spawn ran once: {}", total.into_inner(), yes(c == (0..1000).collect::<Vec<_>>()));

    let counter = AtomicUsize::new(0);
    rayon::scope(|s| {
        for _ in 0..10 {
            s.spawn(|s| {
                for _ in 0..10 {
                    s.spawn(|_| {
                        counter.fetch_add(1, Ordering::Relaxed);
                    });
                }
            });
        }
    });
    println!("nested spawns: {}", counter.into_inner());

    let mut buf = vec![0u64; 16];
    rayon::in_place_scope(|s| {
        for (i, slot) in buf.iter_mut().enumerate() {
            s.spawn(move |_| *slot = work(i as u64, 10_000) % 100);
        }
    });
    println!("in_place_scope filled {:?}", buf);
}

// ---------------------------------------------------------------------------- custom

fn custom() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(3).thread_name(|i| format!("custom-{i}")).build().expect("build a pool");
    let n = pool.install(rayon::current_num_threads);
    let mut names = pool.broadcast(|ctx| format!("{}:{}", ctx.index(), std::thread::current().name().unwrap_or("?")));
    names.sort();
    println!("custom pool: {n} threads, broadcast from {:?}", names);
    let s: u64 = pool.install(|| (0..1_000_000u64).into_par_iter().map(|x| x % 13).sum());
    println!("sum in the custom pool: {s}; global pool still has {} threads", rayon::current_num_threads());
    drop(pool);
    println!("custom pool dropped");
}

// ---------------------------------------------------------------------------- panic

fn panics() {
    // Report a worker's panic without its thread id (which differs between runs).
    panic::set_hook(Box::new(|info| {
        let msg = info.payload().downcast_ref::<&str>().copied().unwrap_or("?");
        eprintln!("panic hook: {msg}");
    }));
    let r = panic::catch_unwind(|| {
        (0..1000u64).into_par_iter().for_each(|i| {
            if i == 500 {
                panic!("boom at item 500");
            }
        })
    });
    let msg = r.as_ref().err().and_then(|e| e.downcast_ref::<&str>().copied());
    println!("panic in a parallel loop reached the caller: {}; message {:?}", yes(r.is_err()), msg);
    let s: u64 = (0..1000u64).into_par_iter().sum();
    println!("the pool works afterwards: sum {s}");
    let _ = panic::take_hook();
}

const MODES: &[(&str, fn())] =
    &[("pool", pool), ("iter", iter), ("sort", sort), ("join", join), ("scope", scope), ("custom", custom), ("panic", panics)];

fn main() {
    let arg = std::env::args().nth(1);
    let mut ran = false;
    for (name, f) in MODES {
        if arg.as_deref().map_or(true, |a| a == *name) {
            println!("== {name} ==");
            f();
            ran = true;
        }
    }
    if !ran {
        let names: Vec<&str> = MODES.iter().map(|(n, _)| *n).collect();
        eprintln!("usage: rayon_guest [{}]", names.join("|"));
        std::process::exit(2);
    }
}

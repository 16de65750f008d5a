// threads_rust [mode] -- Rust std threads: spawn/join with values, mpsc channels, Arc<Mutex>,
// Condvar, Barrier, thread::scope, thread_local!, RwLock, atomics, park/unpark, panics in
// threads.
//
// Output depends only on the program, never on how the threads interleave or on the number
// of CPUs: only the main thread prints, and only final counters, sums, values in a fixed order
// and yes/no checks. A failed check panics (exit status 101).
//
// Modes, all run in this order when there is no argument; each prints "== <mode> ==" first:
//   spawn         spawn + join with return values (in order), named threads, Builder with a
//                 stack size, thread ids distinct
//   mpsc          4 producers (cloned Senders) -> 1 consumer over std::sync::mpsc::channel;
//                 a bounded sync_channel(2) ping-pong; recv_timeout that times out
//   mutex         Arc<Mutex<u64>> incremented by 8 threads, AtomicU64 alongside
//   condvar       Condvar: a bounded queue with 3 producers and 2 consumers; wait_timeout
//                 that times out
//   barrier       Barrier with 4 threads x 5 phases; exactly one leader per phase
//   scope         thread::scope borrowing local data mutably (chunks) and shared
//   thread_local  thread_local! values with a Drop impl, distinct per thread
//   rwlock        RwLock readers/writers keep an invariant
//   park          park/unpark hand-off, OnceLock initialised once from 6 threads
//   panic         a thread panics: join returns Err with its message; the rest goes on
// Unknown mode: usage on stderr, exit 2.
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::panic;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Condvar, Mutex, OnceLock, RwLock};
use std::thread;
use std::time::{Duration, Instant};

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn payload_msg(e: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = e.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = e.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string payload>".to_string()
    }
}

fn scenario_spawn() {
    let handles: Vec<_> = (0..6u64).map(|i| thread::spawn(move || i * i + 1)).collect();
    let ids: Vec<_> = handles.iter().map(|h| h.thread().id()).collect();
    let values: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    println!("returned: {:?}", values);
    let mut set: HashSet<_> = ids.into_iter().collect();
    set.insert(thread::current().id());
    println!("thread ids distinct (incl. main): {}", yes(set.len() == 7));

    let named = thread::Builder::new()
        .name("worker-7".into())
        .stack_size(256 << 10)
        .spawn(|| {
            // Uses a good part of the 256 KiB stack.
            let buf = [7u8; 64 << 10];
            let s: u64 = std::hint::black_box(&buf).iter().map(|&b| b as u64).sum();
            (thread::current().name().unwrap_or("?").to_string(), s)
        })
        .unwrap();
    let (name, s) = named.join().unwrap();
    println!("named thread: {} computed {}", name, s);
    println!("main thread name: {}", thread::current().name().unwrap_or("?"));
}

fn scenario_mpsc() {
    let (tx, rx) = mpsc::channel::<(usize, u64)>();
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let tx = tx.clone();
            thread::spawn(move || {
                for i in 0..250u64 {
                    tx.send((p, i)).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let mut per_producer = [0u64; 4];
    let mut count = 0;
    let mut in_order = true;
    let mut last = [None::<u64>; 4];
    for (p, i) in rx {
        // Messages from one sender arrive in the order it sent them.
        if let Some(prev) = last[p] {
            in_order &= i == prev + 1;
        }
        last[p] = Some(i);
        per_producer[p] += i;
        count += 1;
    }
    for h in producers {
        h.join().unwrap();
    }
    println!("received {} messages, per-producer sums {:?}, each sender's order kept: {}", count, per_producer, yes(in_order));

    let (to_worker, worker_rx) = mpsc::sync_channel::<u32>(2);
    let (to_main, main_rx) = mpsc::sync_channel::<u32>(2);
    let pong = thread::spawn(move || {
        let mut n = 0;
        for v in worker_rx {
            to_main.send(v * 2).unwrap();
            n += 1;
        }
        n
    });
    let mut replies = Vec::new();
    for v in 1..=5 {
        to_worker.send(v).unwrap();
        replies.push(main_rx.recv().unwrap());
    }
    drop(to_worker);
    println!("sync_channel ping-pong replies {:?}, worker handled {}", replies, pong.join().unwrap());

    let (_keep, silent) = mpsc::channel::<u8>();
    let t0 = Instant::now();
    let r = silent.recv_timeout(Duration::from_millis(30));
    println!(
        "recv_timeout 30 ms: {}, waited at least 30 ms: {}",
        if r == Err(mpsc::RecvTimeoutError::Timeout) { "Timeout" } else { "other" },
        yes(t0.elapsed() >= Duration::from_millis(30))
    );
}

fn scenario_mutex() {
    let counter = Arc::new(Mutex::new(0u64));
    let atomic = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let c = Arc::clone(&counter);
            let a = Arc::clone(&atomic);
            thread::spawn(move || {
                for _ in 0..20000 {
                    *c.lock().unwrap() += 1;
                    a.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    println!(
        "threads=8 iterations=20000 mutex counter={} atomic={} Arc strong count back to {}",
        *counter.lock().unwrap(),
        atomic.load(Ordering::SeqCst),
        Arc::strong_count(&counter)
    );
}

fn scenario_condvar() {
    const CAP: usize = 4;
    let state = Arc::new((Mutex::new(std::collections::VecDeque::<i64>::new()), Condvar::new(), Condvar::new()));
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            let st = Arc::clone(&state);
            thread::spawn(move || {
                let (m, not_empty, not_full) = &*st;
                let mut sum = 0i64;
                let mut count = 0u64;
                loop {
                    let mut q = not_empty.wait_while(m.lock().unwrap(), |q| q.is_empty()).unwrap();
                    let v = q.pop_front().unwrap();
                    not_full.notify_one();
                    drop(q);
                    if v < 0 {
                        return (sum, count);
                    }
                    sum += v;
                    count += 1;
                }
            })
        })
        .collect();
    let push = |st: &(Mutex<std::collections::VecDeque<i64>>, Condvar, Condvar), v: i64| {
        let (m, not_empty, not_full) = st;
        let mut q = not_full.wait_while(m.lock().unwrap(), |q| q.len() >= CAP).unwrap();
        q.push_back(v);
        not_empty.notify_one();
    };
    let producers: Vec<_> = (0..3i64)
        .map(|p| {
            let st = Arc::clone(&state);
            thread::spawn(move || {
                for i in 0..500 {
                    push(&st, p * 500 + i);
                }
            })
        })
        .collect();
    for h in producers {
        h.join().unwrap();
    }
    push(&state, -1);
    push(&state, -1);
    let (mut sum, mut count) = (0, 0);
    for h in consumers {
        let (s, c) = h.join().unwrap();
        sum += s;
        count += c;
    }
    println!("items={} sum={} expected={}", count, sum, 1500 * 1499 / 2);

    let (m, cv, _) = &*state;
    let t0 = Instant::now();
    let (_g, res) = cv.wait_timeout_while(m.lock().unwrap(), Duration::from_millis(30), |_| true).unwrap();
    println!(
        "wait_timeout 30 ms with nobody notifying: timed_out={} waited at least 30 ms: {}",
        res.timed_out(),
        yes(t0.elapsed() >= Duration::from_millis(30))
    );
}

fn scenario_barrier() {
    const N: usize = 4;
    const PHASES: usize = 5;
    let barrier = Arc::new(Barrier::new(N));
    let slots: Arc<Vec<AtomicU64>> = Arc::new((0..N).map(|_| AtomicU64::new(0)).collect());
    let leaders = Arc::new(Mutex::new(vec![0u32; PHASES]));
    let handles: Vec<_> = (0..N)
        .map(|id| {
            let (b, s, l) = (Arc::clone(&barrier), Arc::clone(&slots), Arc::clone(&leaders));
            thread::spawn(move || {
                let mut sums = Vec::new();
                for ph in 0..PHASES {
                    s[id].store(((ph + 1) * 100 + id) as u64, Ordering::SeqCst);
                    b.wait();
                    sums.push(s.iter().map(|x| x.load(Ordering::SeqCst)).sum::<u64>());
                    if b.wait().is_leader() {
                        l.lock().unwrap()[ph] += 1;
                    }
                }
                sums
            })
        })
        .collect();
    let all: Vec<Vec<u64>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    println!("threads={} phases={} sums {:?}", N, PHASES, all[0]);
    println!("all threads saw the same sums: {}", yes(all.iter().all(|s| *s == all[0])));
    println!("one leader per phase: {}", yes(leaders.lock().unwrap().iter().all(|&n| n == 1)));
}

fn scenario_scope() {
    let mut data: Vec<u64> = (1..=1000).collect();
    let factor = 3;
    let total = AtomicU64::new(0);
    thread::scope(|s| {
        for chunk in data.chunks_mut(100) {
            let total = &total;
            s.spawn(move || {
                for x in chunk.iter_mut() {
                    *x *= factor;
                }
                total.fetch_add(chunk.iter().sum::<u64>(), Ordering::Relaxed);
            });
        }
    });
    let words = ["alpha", "beta", "gamma", "delta"];
    let lens: Vec<usize> = thread::scope(|s| {
        let hs: Vec<_> = words.iter().map(|w| s.spawn(move || w.len())).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    println!(
        "scoped: data[0]={} data[999]={} total={} sum check {}; word lengths {:?}",
        data[0],
        data[999],
        total.load(Ordering::SeqCst),
        yes(data.iter().sum::<u64>() == total.load(Ordering::SeqCst)),
        lens
    );
}

static DROPS: AtomicUsize = AtomicUsize::new(0);
struct Tracked(Cell<u64>);
impl Drop for Tracked {
    fn drop(&mut self) {
        DROPS.fetch_add(1, Ordering::SeqCst);
    }
}
thread_local! {
    static TRACKED: Tracked = Tracked(Cell::new(100));
    static NAME: RefCell<String> = RefCell::new(String::from("initial"));
}

fn scenario_thread_local() {
    const N: usize = 6;
    TRACKED.with(|t| t.0.get()); // the main thread's instance exists before counting
    let drops_before = DROPS.load(Ordering::SeqCst);
    let barrier = Arc::new(Barrier::new(N));
    let handles: Vec<_> = (0..N)
        .map(|i| {
            let b = Arc::clone(&barrier);
            thread::spawn(move || {
                let initial = TRACKED.with(|t| t.0.get()) == 100 && NAME.with(|n| *n.borrow() == "initial");
                TRACKED.with(|t| t.0.set(1000 + i as u64));
                NAME.with(|n| *n.borrow_mut() = format!("thread-{}", i));
                let addr = TRACKED.with(|t| t as *const Tracked as usize);
                b.wait();
                let kept = TRACKED.with(|t| t.0.get()) == 1000 + i as u64 && NAME.with(|n| *n.borrow() == format!("thread-{}", i));
                (initial, kept, addr)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut addrs: HashSet<usize> = results.iter().map(|r| r.2).collect();
    addrs.insert(TRACKED.with(|t| t as *const Tracked as usize));
    println!("threads={} initial values in every thread: {}", N, yes(results.iter().all(|r| r.0)));
    println!("addresses distinct (incl. main): {}", yes(addrs.len() == N + 1));
    println!("values kept: {}", yes(results.iter().all(|r| r.1)));
    println!(
        "main's values untouched: {}",
        yes(TRACKED.with(|t| t.0.get()) == 100 && NAME.with(|n| *n.borrow() == "initial"))
    );
    // join() returns after the thread's TLS destructors ran.
    println!("destructors run at thread exit: {}", DROPS.load(Ordering::SeqCst) - drops_before);
}

fn scenario_rwlock() {
    let lock = Arc::new(RwLock::new((0u64, 0u64)));
    let violations = Arc::new(AtomicU64::new(0));
    let mut hs = Vec::new();
    for _ in 0..2 {
        let l = Arc::clone(&lock);
        hs.push(thread::spawn(move || {
            for _ in 0..500 {
                let mut g = l.write().unwrap();
                g.0 += 1;
                g.1 += 1;
            }
        }));
    }
    for _ in 0..4 {
        let (l, v) = (Arc::clone(&lock), Arc::clone(&violations));
        hs.push(thread::spawn(move || {
            for _ in 0..2000 {
                let g = l.read().unwrap();
                if g.0 != g.1 {
                    v.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for h in hs {
        h.join().unwrap();
    }
    let g = lock.read().unwrap();
    println!("rwlock: a={} b={} violations={}", g.0, g.1, violations.load(Ordering::SeqCst));
}

fn scenario_park() {
    let ready = Arc::new(AtomicBool::new(false));
    let r = Arc::clone(&ready);
    let parked = thread::spawn(move || {
        let mut wakeups = 0;
        while !r.load(Ordering::Acquire) {
            thread::park(); // may wake spuriously: loop on the flag
            wakeups += 1;
        }
        wakeups > 0 || r.load(Ordering::Acquire)
    });
    ready.store(true, Ordering::Release);
    parked.thread().unpark();
    println!("park/unpark: woke with the flag set: {}", yes(parked.join().unwrap()));

    static ONCE: OnceLock<String> = OnceLock::new();
    static INITS: AtomicUsize = AtomicUsize::new(0);
    let hs: Vec<_> = (0..6)
        .map(|i| {
            thread::spawn(move || {
                ONCE.get_or_init(|| {
                    INITS.fetch_add(1, Ordering::SeqCst);
                    format!("value set by one of 6 threads ({})", i < 6)
                })
                .len()
            })
        })
        .collect();
    let lens: Vec<usize> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    println!(
        "OnceLock: initialised {} time(s), all threads saw the same value: {}",
        INITS.load(Ordering::SeqCst),
        yes(lens.iter().all(|&l| l == lens[0]))
    );
}

fn scenario_panic() {
    let h = thread::spawn(|| -> u32 {
        if std::hint::black_box(true) {
            panic!("boom in a thread");
        }
        1
    });
    match h.join() {
        Ok(v) => println!("thread returned {}", v),
        Err(e) => println!("join: Err({})", payload_msg(&*e)),
    }
    let m = Arc::new(Mutex::new(5));
    let m2 = Arc::clone(&m);
    let _ = thread::spawn(move || {
        let _g = m2.lock().unwrap();
        panic!("poisoning the mutex");
    })
    .join();
    println!("mutex poisoned: {}, value still {}", yes(m.is_poisoned()), m.lock().unwrap_or_else(|e| e.into_inner()));
    let after = thread::spawn(|| 40 + 2).join().unwrap();
    println!("threads still work after the panics: {}", after);
}

fn main() {
    // The default hook prints "thread '<unnamed>' (<tid>) panicked at ...": the tid differs
    // between runs. Print a deterministic line instead.
    panic::set_hook(Box::new(|info| {
        let loc = info.location().map(|l| format!("{}:{}", l.line(), l.column())).unwrap_or_default();
        let name = thread::current().name().unwrap_or("<unnamed>").to_string();
        eprintln!("thread '{}' panicked at line {}: {}", name, loc, payload_msg(info.payload()));
    }));
    let scenarios: [(&str, fn()); 10] = [
        ("spawn", scenario_spawn),
        ("mpsc", scenario_mpsc),
        ("mutex", scenario_mutex),
        ("condvar", scenario_condvar),
        ("barrier", scenario_barrier),
        ("scope", scenario_scope),
        ("thread_local", scenario_thread_local),
        ("rwlock", scenario_rwlock),
        ("park", scenario_park),
        ("panic", scenario_panic),
    ];
    let mode = std::env::args().nth(1);
    let mut ran = false;
    for (name, f) in scenarios {
        if mode.as_deref().is_some_and(|m| m != name) {
            continue;
        }
        println!("== {} ==", name);
        f();
        ran = true;
    }
    if !ran {
        eprintln!("usage: threads_rust [spawn|mpsc|mutex|condvar|barrier|scope|thread_local|rwlock|park|panic]");
        std::process::exit(2);
    }
}

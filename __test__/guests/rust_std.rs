// Rust std smoke test: collections, formatting, iterators, trait objects,
// catch_unwind. Modes: (none) -> exit 0; "panic" -> uncaught panic after the
// normal output, which makes the process exit with status 101 and prints the
// panic message of our custom (deterministic) hook to stderr.
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::panic;

trait Shape {
    fn area(&self) -> f64;
    fn name(&self) -> String;
}
struct Circle {
    r: f64,
}
struct Rect {
    w: f64,
    h: f64,
}
impl Shape for Circle {
    fn area(&self) -> f64 {
        3.0 * self.r * self.r // deliberately not PI: keep it exact
    }
    fn name(&self) -> String {
        format!("Circle(r={})", self.r)
    }
}
impl Shape for Rect {
    fn area(&self) -> f64 {
        self.w * self.h
    }
    fn name(&self) -> String {
        format!("Rect({}x{})", self.w, self.h)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Point {
    x: i32,
    y: i32,
}
impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "({}, {})", self.x, self.y)
    }
}

/// Message carried by a panic payload (`panic!` with a constant message yields
/// `&'static str`, a formatted one yields `String`).
fn payload_msg(e: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = e.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = e.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string payload>".to_string()
    }
}

fn main() {
    // The default panic hook prints "thread 'main' (<tid>) panicked at ..." (the
    // tid differs between runs) and, with RUST_BACKTRACE set, a backtrace that
    // reads /proc/self/exe. Install a deterministic hook instead.
    panic::set_hook(Box::new(|info| {
        let loc = info.location().map(|l| format!("{}:{}", l.line(), l.column())).unwrap_or_default();
        eprintln!("panicked at line {}: {}", loc, payload_msg(info.payload()));
    }));
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("");

    // Vec + iterators
    let v: Vec<u64> = (1..=20).collect();
    let evens: Vec<u64> = v.iter().copied().filter(|n| n % 2 == 0).collect();
    let squares_sum: u64 = v.iter().map(|n| n * n).sum();
    let folded = v.iter().fold(String::new(), |acc, n| if acc.is_empty() { n.to_string() } else { acc + "-" + &n.to_string() });
    println!("evens={:?}", evens);
    println!("squares_sum={} product(1..=10)={}", squares_sum, (1..=10u64).product::<u64>());
    println!("folded={}", folded);
    let zipped: Vec<(char, u64)> = "abcde".chars().zip(v.iter().rev().copied()).collect();
    println!("zipped={:?}", zipped);
    let windows: Vec<u64> = v.windows(3).map(|w| w.iter().sum()).take(5).collect();
    println!("windows={:?} chunks={}", windows, v.chunks(6).count());
    let (small, large): (Vec<u64>, Vec<u64>) = v.iter().partition(|&&n| n < 8);
    println!("partition: {} small, {} large, any>19={} all>0={}", small.len(), large.len(), v.iter().any(|&n| n > 19), v.iter().all(|&n| n > 0));
    let mut sorted_desc = v.clone();
    sorted_desc.sort_by(|a, b| b.cmp(a));
    sorted_desc.dedup();
    sorted_desc.truncate(5);
    println!("sorted_desc={:?} pos(15)={:?}", sorted_desc, v.iter().position(|&n| n == 15));

    // HashMap (random iteration order -> print sorted)
    let text = "the quick brown fox jumps over the lazy dog the end";
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for w in text.split_whitespace() {
        *counts.entry(w).or_insert(0) += 1;
    }
    let mut entries: Vec<(&&str, &usize)> = counts.iter().collect();
    entries.sort();
    println!("hashmap ({} keys):", counts.len());
    for (k, c) in entries {
        println!("  {:<6} => {}", k, c);
    }
    let set: HashSet<i32> = [5, 3, 5, 1, 3, 9].iter().copied().collect();
    let mut set_sorted: Vec<_> = set.into_iter().collect();
    set_sorted.sort_unstable();
    println!("hashset sorted={:?}", set_sorted);
    let mut points: HashMap<Point, &str> = HashMap::new();
    points.insert(Point { x: 1, y: 2 }, "a");
    points.insert(Point { x: -1, y: 0 }, "b");
    points.insert(Point { x: 1, y: -5 }, "c");
    let bt: BTreeMap<_, _> = points.into_iter().collect();
    for (p, n) in &bt {
        println!("  point {} {:?} -> {}", p, p, n);
    }
    let mut dq: VecDeque<i32> = VecDeque::new();
    dq.push_back(1);
    dq.push_front(0);
    dq.push_back(2);
    println!("vecdeque={:?} front={:?}", dq, dq.front());

    // Formatting
    let pi = 3.14159265358979_f64;
    println!("fmt: [{:>8}] [{:<8}] [{:^8}] [{:08.3}] [{:+}] [{:#x}] [{:#b}] [{:e}]", "r", "l", "c", pi, 5, 255, 5, 1234.5);
    let s = format!("{name} is {age} years; {0}", "pos", name = "Ann", age = 30);
    println!("{}", s);
    println!("debug pretty: {:#?}", Point { x: 3, y: 4 });
    let owned: String = "héllo wörld".to_uppercase();
    println!("unicode upper={} chars={} bytes={}", owned, owned.chars().count(), owned.len());
    println!("parse: {:?} {:?} {:?}", "42".parse::<i32>(), "x".parse::<i32>().is_err(), "2.5".parse::<f64>());

    // Trait objects
    let shapes: Vec<Box<dyn Shape>> = vec![Box::new(Circle { r: 2.0 }), Box::new(Rect { w: 3.0, h: 4.5 }), Box::new(Circle { r: 0.5 })];
    let total: f64 = shapes.iter().map(|s| s.area()).sum();
    for s in &shapes {
        println!("shape {} area={:.3}", s.name(), s.area());
    }
    println!("total area={:.3}", total);

    // catch_unwind (the hook above still reports these to stderr)
    let r = panic::catch_unwind(|| {
        let v: Vec<i32> = Vec::new();
        if v.is_empty() {
            panic!("deliberate panic #{}", 1);
        }
        v[0]
    });
    let r2 = panic::catch_unwind(|| {
        let idx = std::hint::black_box(10usize);
        let arr = [1, 2, 3];
        arr[idx]
    });
    match r {
        Ok(_) => println!("catch_unwind: no panic?!"),
        Err(e) => println!("catch_unwind caught: {}", payload_msg(&*e)),
    }
    match r2 {
        Ok(_) => println!("catch_unwind #2: no panic?!"),
        Err(e) => println!("catch_unwind #2 caught: {}", payload_msg(&*e)),
    }

    eprintln!("rust_std: stderr works (mode={:?})", mode);
    if mode == "panic" {
        println!("about to panic uncaught");
        panic!("uncaught panic requested");
    }
    println!("rust_std done");
}

// threads_cpp [mode] -- C++17 threads (static glibc): std::thread, std::mutex,
// std::condition_variable, std::async / futures / promises, std::atomic, thread_local,
// std::shared_mutex, std::call_once.
//
// Output depends only on the program, never on how the threads interleave or on the number
// of CPUs: only the main thread prints, and only final counters, sums, values in a fixed
// order and yes/no checks. A failed check prints "FAIL: ..." to stderr and exits 1.
//
// Modes, all run in this order when there is no argument; each prints "== <mode> ==" first:
//   thread        std::thread with arguments (by value and std::ref), join, joinable,
//                 thread ids distinct, detach + completion via std::promise
//   mutex         8 threads x 20000 increments under std::mutex / std::lock_guard, and the
//                 same with std::atomic<long> fetch_add and a compare_exchange loop
//   condvar       std::condition_variable bounded queue: 3 producers, 2 consumers; a
//                 wait_for that times out (std::cv_status::timeout)
//   async         std::async(std::launch::async) futures summed in order; an exception
//                 crossing a future; std::packaged_task; std::shared_future seen by 4 threads
//   thread_local  thread_local values (with a constructor and destructor) distinct per thread
//   shared_mutex  std::shared_mutex readers/writers keep an invariant; std::call_once
// Unknown mode: usage on stderr, exit 2.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <iostream>
#include <mutex>
#include <numeric>
#include <set>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

[[noreturn]] static void fail(int line, const std::string &what) {
    std::fprintf(stderr, "FAIL (line %d): %s\n", line, what.c_str());
    std::exit(1);
}
#define CHECK(cond) \
    do { \
        if (!(cond)) fail(__LINE__, #cond); \
    } while (0)

static const char *yes(bool b) { return b ? "yes" : "no"; }

// ------------------------------------------------------------------ thread

static void scale(std::vector<long> &out, int idx, long factor) { out[idx] = (idx + 1) * factor; }

static void scenario_thread() {
    std::vector<long> out(6);
    std::vector<std::thread> ts;
    for (int i = 0; i < 6; i++) ts.emplace_back(scale, std::ref(out), i, 10L);
    std::vector<std::thread::id> ids;
    for (auto &t : ts) ids.push_back(t.get_id());
    bool joinable = true;
    for (auto &t : ts) joinable = joinable && t.joinable();
    for (auto &t : ts) t.join();
    bool none_joinable = true;
    for (auto &t : ts) none_joinable = none_joinable && !t.joinable();
    std::set<std::thread::id> distinct(ids.begin(), ids.end());
    distinct.insert(std::this_thread::get_id());
    std::cout << "results:";
    for (long v : out) std::cout << ' ' << v;
    std::cout << "\njoinable before join and not after: " << yes(joinable && none_joinable)
              << "\nthread ids distinct (incl. main): " << yes(distinct.size() == ids.size() + 1) << '\n';

    std::promise<std::string> done;
    auto fut = done.get_future();
    std::thread detached([p = std::move(done)]() mutable {
        std::string s;
        for (int i = 0; i < 5; i++) s += std::to_string(i * i) + (i < 4 ? "," : "");
        p.set_value(s);
    });
    detached.detach();
    std::cout << "detached thread delivered: " << fut.get() << '\n';
}

// ------------------------------------------------------------------ mutex / atomic

static void scenario_mutex() {
    constexpr int N = 8, ITERS = 20000;
    long counter = 0;
    std::mutex m;
    std::atomic<long> atomic_counter{0};
    std::atomic<long> cas_counter{0};
    std::vector<std::thread> ts;
    for (int i = 0; i < N; i++)
        ts.emplace_back([&] {
            for (int k = 0; k < ITERS; k++) {
                {
                    std::lock_guard<std::mutex> g(m);
                    counter++;
                }
                atomic_counter.fetch_add(1, std::memory_order_relaxed);
                long cur = cas_counter.load();
                while (!cas_counter.compare_exchange_weak(cur, cur + 2)) {
                }
            }
        });
    for (auto &t : ts) t.join();
    std::cout << "threads=" << N << " iterations=" << ITERS << " mutex counter=" << counter
              << " atomic=" << atomic_counter.load() << " cas=" << cas_counter.load() << '\n';
    CHECK(counter == long(N) * ITERS && atomic_counter == long(N) * ITERS && cas_counter == 2L * N * ITERS);
}

// ------------------------------------------------------------------ condvar

static void scenario_condvar() {
    constexpr int PRODUCERS = 3, CONSUMERS = 2, ITEMS = 500, CAP = 4;
    std::mutex m;
    std::condition_variable not_empty, not_full;
    std::deque<int> q;
    auto push = [&](int v) {
        std::unique_lock<std::mutex> lk(m);
        not_full.wait(lk, [&] { return q.size() < CAP; });
        q.push_back(v);
        not_empty.notify_one();
    };
    std::vector<long> sums(CONSUMERS), counts(CONSUMERS);
    std::vector<int> seen(PRODUCERS * ITEMS);
    std::vector<std::thread> cons, prod;
    for (int c = 0; c < CONSUMERS; c++)
        cons.emplace_back([&, c] {
            for (;;) {
                std::unique_lock<std::mutex> lk(m);
                not_empty.wait(lk, [&] { return !q.empty(); });
                int v = q.front();
                q.pop_front();
                not_full.notify_one();
                if (v < 0) return;
                seen[v]++;
                lk.unlock();
                sums[c] += v;
                counts[c]++;
            }
        });
    for (int p = 0; p < PRODUCERS; p++)
        prod.emplace_back([&, p] {
            for (int i = 0; i < ITEMS; i++) push(p * ITEMS + i);
        });
    for (auto &t : prod) t.join();
    for (int c = 0; c < CONSUMERS; c++) push(-1);
    for (auto &t : cons) t.join();
    long sum = std::accumulate(sums.begin(), sums.end(), 0L);
    long count = std::accumulate(counts.begin(), counts.end(), 0L);
    bool once = true;
    for (int s : seen) once = once && s == 1;
    std::cout << "items=" << count << " sum=" << sum << " every item consumed exactly once: " << yes(once) << '\n';

    std::unique_lock<std::mutex> lk(m);
    auto t0 = std::chrono::steady_clock::now();
    std::cv_status st = std::cv_status::no_timeout;
    while (st == std::cv_status::no_timeout && std::chrono::steady_clock::now() - t0 < 30ms)
        st = not_empty.wait_for(lk, 30ms - (std::chrono::steady_clock::now() - t0));
    bool waited = std::chrono::steady_clock::now() - t0 >= 30ms;
    std::cout << "wait_for 30 ms with nobody notifying: "
              << (st == std::cv_status::timeout ? "timeout" : "no_timeout") << ", waited at least 30 ms: " << yes(waited)
              << '\n';
}

// ------------------------------------------------------------------ async / futures

static long work(int i) {
    long s = 0;
    for (int k = 0; k <= 1000 * i; k++) s += k % 7;
    return s;
}

static void scenario_async() {
    std::vector<std::future<long>> fs;
    for (int i = 0; i < 8; i++) fs.push_back(std::async(std::launch::async, work, i));
    std::cout << "async results:";
    long total = 0;
    for (auto &f : fs) {
        long v = f.get();
        total += v;
        std::cout << ' ' << v;
    }
    std::cout << "\nasync total=" << total << '\n';

    auto bad = std::async(std::launch::async, []() -> int { throw std::runtime_error("thrown in a thread"); });
    try {
        bad.get();
        std::cout << "no exception\n";
    } catch (const std::runtime_error &e) {
        std::cout << "exception through the future: " << e.what() << '\n';
    }

    std::packaged_task<std::string(int)> task([](int n) { return std::string(n, '*'); });
    auto tf = task.get_future();
    std::thread(std::move(task), 5).join();
    std::cout << "packaged_task: " << tf.get() << '\n';

    std::promise<int> go;
    std::shared_future<int> shared = go.get_future().share();
    std::vector<std::future<int>> readers;
    for (int i = 0; i < 4; i++)
        readers.push_back(std::async(std::launch::async, [shared, i] { return shared.get() * 10 + i; }));
    go.set_value(7);
    std::cout << "shared_future readers:";
    for (auto &r : readers) std::cout << ' ' << r.get();
    std::cout << '\n';
}

// ------------------------------------------------------------------ thread_local

static std::atomic<int> tl_constructed{0}, tl_destroyed{0};
struct Tracked {
    std::string name = "fresh";
    int value = 100;
    Tracked() { tl_constructed++; }
    ~Tracked() { tl_destroyed++; }
};
static thread_local Tracked tracked;
static thread_local int tl_plain = 5;

static void scenario_thread_local() {
    constexpr int N = 6;
    std::vector<const void *> addrs(N);
    std::vector<int> initial_ok(N), kept(N);
    std::mutex m;
    std::condition_variable cv;
    int arrived = 0;
    std::vector<std::thread> ts;
    (void)tracked.value; // the main thread's instance exists before counting
    int before = tl_constructed.load();
    int destroyed_before = tl_destroyed.load();
    for (int i = 0; i < N; i++)
        ts.emplace_back([&, i] {
            initial_ok[i] = tracked.name == "fresh" && tracked.value == 100 && tl_plain == 5;
            tracked.name = "thread-" + std::to_string(i);
            tracked.value = 1000 + i;
            tl_plain = i;
            addrs[i] = &tracked;
            {
                // All threads alive with their values written before any checks them.
                std::unique_lock<std::mutex> lk(m);
                if (++arrived == N) cv.notify_all();
                cv.wait(lk, [&] { return arrived == N; });
            }
            kept[i] = tracked.name == "thread-" + std::to_string(i) && tracked.value == 1000 + i && tl_plain == i;
        });
    for (auto &t : ts) t.join();
    std::set<const void *> distinct(addrs.begin(), addrs.end());
    distinct.insert(&tracked);
    bool init = true, keep = true;
    for (int i = 0; i < N; i++) init = init && initial_ok[i], keep = keep && kept[i];
    std::cout << "threads=" << N << " initial values in every thread: " << yes(init)
              << "\naddresses distinct (incl. main): " << yes(distinct.size() == N + 1)
              << "\nvalues kept: " << yes(keep) << "\nmain's values untouched: "
              << yes(tracked.name == "fresh" && tracked.value == 100 && tl_plain == 5)
              << "\nconstructed in workers: " << tl_constructed.load() - before
              << ", destroyed at thread exit: " << tl_destroyed.load() - destroyed_before << '\n';
}

// ------------------------------------------------------------------ shared_mutex / call_once

static void scenario_shared_mutex() {
    std::shared_mutex sm;
    long a = 0, b = 0;
    std::atomic<long> violations{0};
    std::vector<std::thread> ts;
    for (int w = 0; w < 2; w++)
        ts.emplace_back([&] {
            for (int i = 0; i < 500; i++) {
                std::unique_lock<std::shared_mutex> lk(sm);
                a++;
                b++;
            }
        });
    for (int r = 0; r < 4; r++)
        ts.emplace_back([&] {
            for (int i = 0; i < 2000; i++) {
                std::shared_lock<std::shared_mutex> lk(sm);
                if (a != b) violations++;
            }
        });
    for (auto &t : ts) t.join();
    std::cout << "shared_mutex: a=" << a << " b=" << b << " violations=" << violations.load() << '\n';

    std::once_flag once;
    std::atomic<int> calls{0};
    std::vector<std::thread> os;
    for (int i = 0; i < 6; i++) os.emplace_back([&] { std::call_once(once, [&] { calls++; }); });
    for (auto &t : os) t.join();
    std::cout << "call_once from 6 threads ran " << calls.load() << " time(s)\n";
}

int main(int argc, char **argv) {
    const std::pair<const char *, void (*)()> scenarios[] = {
        {"thread", scenario_thread},           {"mutex", scenario_mutex},
        {"condvar", scenario_condvar},         {"async", scenario_async},
        {"thread_local", scenario_thread_local}, {"shared_mutex", scenario_shared_mutex},
    };
    bool ran = false;
    for (auto &[name, fn] : scenarios) {
        if (argc > 1 && std::strcmp(argv[1], name) != 0) continue;
        std::cout << "== " << name << " ==\n";
        fn();
        ran = true;
    }
    if (!ran) {
        std::cerr << "usage: threads_cpp [thread|mutex|condvar|async|thread_local|shared_mutex]\n";
        return 2;
    }
    return 0;
}

// go_basics [mode] -- the Go runtime in kvmbox: goroutines and channels, sync, timers, the
// garbage collector, runtime errors from CPU faults turned into recoverable panics, os/signal,
// asynchronous preemption, and the ways a Go program ends (unrecovered panic, os.Exit, a fatal
// deadlock, a signal with the default action).
//
// Built with CGO_ENABLED=0 (a static executable). Output depends only on the program, never on
// timing, on how goroutines interleave or on the number of CPUs (GOMAXPROCS and NumCPU are never
// printed; kvmbox has one vCPU): only final counters, checksums, values in a fixed order and
// yes/no checks. Only the main goroutine prints.
//
// Modes, all run in this order when there is no argument; each prints "== <mode> ==" first:
//   channels   unbuffered ping-pong, buffered channel fill/drain/close, fan-out/fan-in over
//              1000 goroutines with sync.WaitGroup and a sync.Mutex counter, select with a
//              default case and with a timeout, sync.Once, sync/atomic, deep recursion (stack
//              growth), runtime.Gosched
//   timers     time.Sleep (never returns early), time.After, time.NewTimer + Stop/Reset,
//              time.AfterFunc, time.Ticker (5 ticks, in increasing order), context.WithTimeout
//   gc         200 MB allocated in short-lived slices while a checksum is kept, runtime.GC(),
//              NumGC grew, a finalizer runs, a 1e6-element sort and map
//   recover    runtime errors recovered: nil pointer dereference (SIGSEGV), integer divide by
//              zero (SIGFPE), a fault at an unmapped non-nil address with SetPanicOnFault (the
//              address is reported), index out of range, nil map write, failed type assertion;
//              a panic in a goroutine recovered there; panics with custom values
//   signal     os/signal: Notify(SIGUSR1) + kill(getpid, SIGUSR1) is received, SIGUSR2 sent to
//              a thread with tgkill, Ignore(SIGHUP) + kill does nothing, Stop
//   preempt    GOMAXPROCS(1), a goroutine spins in a loop without function calls; main's sleep
//              still ends (sysmon preempts the spinner with a signal)
// Modes not in the default run:
//   panic      an unrecovered panic two calls down: the deferred call runs, then "panic: ..."
//              and the goroutine's stack on stderr, exit 2
//   exit       prints to stdout and stderr, then os.Exit(3) (deferred calls do not run)
//   deadlock   main and a goroutine block on channels for good: the Go runtime's own check says
//              "fatal error: all goroutines are asleep - deadlock!" and both stacks, exit 2
//   sigterm    signal.Notify then signal.Reset(SIGTERM), kill(getpid, SIGTERM): killed by SIGTERM
// Unknown mode: usage on stderr, exit 2.

package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// ---------------------------------------------------------------------------- channels

func recurse(n int) int {
	var pad [64]byte // a bigger frame: the goroutine's stack must be grown (copied) many times
	pad[n%64] = byte(n)
	if n == 0 {
		return int(pad[0])
	}
	return recurse(n-1) + int(pad[n%64]&1)
}

func channels() {
	// Unbuffered ping-pong: every send meets a receive.
	ping, pong := make(chan int), make(chan int)
	go func() {
		for v := range ping {
			pong <- v * 2
		}
		close(pong)
	}()
	sum := 0
	for i := 1; i <= 1000; i++ {
		ping <- i
		sum += <-pong
	}
	close(ping)
	_, open := <-pong
	fmt.Printf("unbuffered ping-pong: 1000 round trips, sum=%d, closed after: %s\n", sum, yes(!open))

	// Buffered: fills without a receiver, drains in FIFO order after close.
	buf := make(chan string, 3)
	buf <- "a"
	buf <- "b"
	buf <- "c"
	fmt.Printf("buffered: len=%d cap=%d\n", len(buf), cap(buf))
	close(buf)
	var got []string
	for s := range buf {
		got = append(got, s)
	}
	fmt.Printf("buffered drained in order: %s\n", strings.Join(got, ","))

	// Fan-out/fan-in: 1000 goroutines, a WaitGroup, a Mutex-protected counter and a channel.
	var wg sync.WaitGroup
	var mu sync.Mutex
	counter := 0
	results := make(chan int, 1000)
	for i := 0; i < 1000; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := 0; j < 100; j++ {
				mu.Lock()
				counter++
				mu.Unlock()
			}
			results <- i * i
		}(i)
	}
	wg.Wait()
	close(results)
	squares := 0
	for r := range results {
		squares += r
	}
	fmt.Printf("1000 goroutines: mutex counter=%d, sum of squares=%d\n", counter, squares)

	// Workers pulling from a shared job channel; results summed.
	jobs := make(chan int)
	out := make(chan int)
	for w := 0; w < 8; w++ {
		go func() {
			for j := range jobs {
				out <- j % 7
			}
		}()
	}
	go func() {
		for j := 0; j < 10000; j++ {
			jobs <- j
		}
		close(jobs)
	}()
	total := 0
	for j := 0; j < 10000; j++ {
		total += <-out
	}
	fmt.Printf("8 workers over 10000 jobs: total=%d\n", total)

	// select: default when nothing is ready; a timeout when a channel never becomes ready.
	never := make(chan int)
	select {
	case <-never:
		fmt.Println("select default: no")
	default:
		fmt.Println("select with nothing ready takes default: yes")
	}
	select {
	case <-never:
		fmt.Println("select timeout: no")
	case <-time.After(20 * time.Millisecond):
		fmt.Println("select on a silent channel and time.After(20ms): timed out")
	}
	ready := make(chan int, 1)
	ready <- 7
	select {
	case v := <-ready:
		fmt.Printf("select with a ready channel and time.After(1h): got %d\n", v)
	case <-time.After(time.Hour):
		fmt.Println("select ready: no")
	}

	// sync.Once from 50 goroutines; atomics.
	var once sync.Once
	var onceRuns, adds int64
	var wg2 sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg2.Add(1)
		go func() {
			defer wg2.Done()
			once.Do(func() { atomic.AddInt64(&onceRuns, 1) })
			for j := 0; j < 1000; j++ {
				atomic.AddInt64(&adds, 1)
			}
			runtime.Gosched()
		}()
	}
	wg2.Wait()
	fmt.Printf("sync.Once from 50 goroutines ran %d time(s); atomic adds=%d\n", onceRuns, atomic.LoadInt64(&adds))

	// Deep recursion in a fresh goroutine: its stack starts small and is grown by copying.
	deep := make(chan int)
	go func() { deep <- recurse(200000) }()
	fmt.Printf("recursion 200000 deep in a goroutine: %d\n", <-deep)
}

// ---------------------------------------------------------------------------- timers

func timers() {
	t0 := time.Now()
	time.Sleep(20 * time.Millisecond)
	fmt.Printf("time.Sleep(20ms) slept at least 20ms: %s\n", yes(time.Since(t0) >= 20*time.Millisecond))

	t0 = time.Now()
	<-time.After(15 * time.Millisecond)
	fmt.Printf("<-time.After(15ms) after at least 15ms: %s\n", yes(time.Since(t0) >= 15*time.Millisecond))

	tm := time.NewTimer(time.Hour)
	fmt.Printf("Stop of a pending 1h timer: %v; Stop again: %v\n", tm.Stop(), tm.Stop())
	t0 = time.Now()
	tm.Reset(10 * time.Millisecond)
	<-tm.C
	fmt.Printf("Reset(10ms) fired after at least 10ms: %s\n", yes(time.Since(t0) >= 10*time.Millisecond))
	fmt.Printf("Stop of a fired timer: %v\n", tm.Stop())

	done := make(chan string)
	time.AfterFunc(5*time.Millisecond, func() { done <- "AfterFunc ran" })
	fmt.Println(<-done)

	ticker := time.NewTicker(3 * time.Millisecond)
	var ticks []time.Time
	for len(ticks) < 5 {
		ticks = append(ticks, <-ticker.C)
	}
	ticker.Stop()
	increasing := true
	for i := 1; i < len(ticks); i++ {
		increasing = increasing && ticks[i].After(ticks[i-1])
	}
	fmt.Printf("ticker: %d ticks, in increasing order: %s\n", len(ticks), yes(increasing))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	<-ctx.Done()
	fmt.Printf("context.WithTimeout(10ms): %v, is DeadlineExceeded: %s\n", ctx.Err(), yes(errors.Is(ctx.Err(), context.DeadlineExceeded)))

	// Many goroutines sleeping at once: every one wakes up.
	var wg sync.WaitGroup
	var woke int64
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			time.Sleep(time.Duration(i%10) * time.Millisecond)
			atomic.AddInt64(&woke, 1)
		}(i)
	}
	wg.Wait()
	fmt.Printf("200 goroutines sleeping 0-9 ms: %d woke\n", woke)
}

// ---------------------------------------------------------------------------- gc

type finalized struct{ buf [1 << 16]byte }

func gc() {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)

	// 200 MB in 1 MiB slices, each short-lived: the heap stays small only if the GC runs.
	var sum uint64
	for i := 0; i < 200; i++ {
		b := make([]byte, 1<<20)
		for j := range b {
			b[j] = byte(i*31 + j)
		}
		for j := 0; j < len(b); j += 4093 {
			sum = sum*1099511628211 + uint64(b[j])
		}
	}
	// Many small objects in a linked list, dropped, then a forced collection.
	type node struct {
		next *node
		val  int
	}
	var head *node
	for i := 0; i < 1000000; i++ {
		head = &node{head, i}
	}
	listSum := 0
	for n := head; n != nil; n = n.next {
		listSum += n.val
	}
	head = nil
	runtime.GC()
	runtime.ReadMemStats(&after)
	fmt.Printf("200 x 1 MiB slices: checksum %016x; 1e6-node list sum %d\n", sum, listSum)
	fmt.Printf("collections ran: %s; heap after runtime.GC() below 64 MiB: %s\n", yes(after.NumGC > before.NumGC), yes(after.HeapAlloc < 64<<20))

	// A finalizer runs after the object becomes unreachable and is collected.
	ran := make(chan bool, 1)
	func() {
		f := &finalized{}
		runtime.SetFinalizer(f, func(*finalized) { ran <- true })
	}()
	finalizerRan := false
	for i := 0; i < 500 && !finalizerRan; i++ {
		runtime.GC()
		select {
		case <-ran:
			finalizerRan = true
		case <-time.After(10 * time.Millisecond):
		}
	}
	fmt.Printf("finalizer ran: %s\n", yes(finalizerRan))

	// Sort and map with a fixed seed (math/rand's sequence for a seed is fixed).
	r := rand.New(rand.NewSource(42))
	xs := make([]int, 1000000)
	for i := range xs {
		xs[i] = r.Intn(1 << 30)
	}
	sort.Ints(xs)
	m := make(map[int]int)
	for i, x := range xs {
		m[x%100003] += i
	}
	fmt.Printf("sorted 1e6 ints: sorted=%s min=%d median=%d max=%d; map of %d keys, m[0]=%d\n",
		yes(sort.IntsAreSorted(xs)), xs[0], xs[len(xs)/2], xs[len(xs)-1], len(m), m[0])
}

// ---------------------------------------------------------------------------- recover

// try runs f and returns what it panicked with, formatted with its type's kind.
func try(f func()) (msg string) {
	defer func() {
		r := recover()
		if err, ok := r.(runtime.Error); ok {
			msg = "runtime.Error: " + err.Error()
			if a, ok := r.(interface{ Addr() uintptr }); ok {
				msg += fmt.Sprintf(" (Addr()=%#x)", a.Addr())
			}
		} else if err, ok := r.(error); ok {
			msg = "error: " + err.Error()
		} else {
			msg = fmt.Sprintf("%T: %v", r, r)
		}
	}()
	f()
	return "no panic"
}

type point struct{ x, y int }

var zero = 0 // a variable, so the compiler cannot see the division by zero

func recoverMode() {
	var p *point
	fmt.Printf("nil pointer dereference: %s\n", try(func() { p.y = 1 }))
	fmt.Printf("integer divide by zero: %s\n", try(func() { fmt.Println(10 / zero) }))
	fmt.Printf("integer modulo by zero: %s\n", try(func() { fmt.Println(10 % zero) }))
	fmt.Printf("fault at 0xdead0000 with SetPanicOnFault: %s\n", try(func() {
		old := debug.SetPanicOnFault(true)
		defer debug.SetPanicOnFault(old)
		fmt.Println(*(*int)(unsafe.Pointer(uintptr(0xdead0000))))
	}))
	xs := []int{1, 2, 3}
	i := 5
	fmt.Printf("index out of range: %s\n", try(func() { fmt.Println(xs[i]) }))
	var m map[string]int
	fmt.Printf("nil map write: %s\n", try(func() { m["a"] = 1 }))
	var v interface{} = "text"
	fmt.Printf("type assertion: %s\n", try(func() { fmt.Println(v.(int)) }))
	fmt.Printf("panic(errors.New): %s\n", try(func() { panic(errors.New("custom error")) }))
	fmt.Printf("panic(42): %s\n", try(func() { panic(42) }))

	// Faults in other goroutines, recovered there, several times over (the signal handler runs
	// on whichever thread the goroutine is on).
	res := make(chan string)
	for g := 0; g < 10; g++ {
		go func(g int) {
			if g%2 == 0 {
				res <- try(func() { p.x = g })
			} else {
				res <- try(func() { fmt.Println(g / zero) })
			}
		}(g)
	}
	counts := map[string]int{}
	for g := 0; g < 10; g++ {
		counts[<-res]++
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Printf("10 goroutines: %d x %s\n", counts[k], k)
	}

	// A panic unwinds through deferred calls (run in LIFO order) to the recover.
	var order []string
	func() {
		defer func() { order = append(order, fmt.Sprint("recovered: ", recover())) }()
		defer func() { order = append(order, "defer 2") }()
		defer func() { order = append(order, "defer 3") }()
		var q *point
		_ = q.x
	}()
	fmt.Printf("deferred calls: %s\n", strings.Join(order, " | "))
}

// ---------------------------------------------------------------------------- signal

func signalMode() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGUSR1)
	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
		fmt.Printf("kill: %v\n", err)
	}
	s := <-c
	fmt.Printf("Notify(SIGUSR1), kill(getpid, SIGUSR1): received %q (%d)\n", s, s.(syscall.Signal))

	for i := 0; i < 3; i++ {
		syscall.Kill(os.Getpid(), syscall.SIGUSR1)
		<-c
	}
	fmt.Println("three more SIGUSR1, each received: yes")

	c2 := make(chan os.Signal, 1)
	signal.Notify(c2, syscall.SIGUSR2)
	runtime.LockOSThread()
	if err := syscall.Tgkill(os.Getpid(), syscall.Gettid(), syscall.SIGUSR2); err != nil {
		fmt.Printf("tgkill: %v\n", err)
	}
	runtime.UnlockOSThread()
	fmt.Printf("Notify(SIGUSR2), tgkill(getpid, gettid, SIGUSR2): received %q\n", <-c2)

	signal.Ignore(syscall.SIGHUP)
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	fmt.Printf("Ignore(SIGHUP), kill(getpid, SIGHUP): still running, Ignored(SIGHUP)=%v\n", signal.Ignored(syscall.SIGHUP))

	signal.Stop(c)
	signal.Ignore(syscall.SIGUSR1)
	syscall.Kill(os.Getpid(), syscall.SIGUSR1)
	select {
	case <-c:
		fmt.Println("after Stop: SIGUSR1 still delivered: no")
	case <-time.After(20 * time.Millisecond):
		fmt.Println("after Stop and Ignore(SIGUSR1): nothing delivered to the channel")
	}
}

// ---------------------------------------------------------------------------- preempt

func preempt() {
	prev := runtime.GOMAXPROCS(1)
	var stop int32
	started := make(chan bool)
	spins := make(chan uint64)
	go func() {
		started <- true
		var n uint64
		for atomic.LoadInt32(&stop) == 0 { // no function call: only a signal can preempt this
			n++
		}
		spins <- n
	}()
	<-started
	t0 := time.Now()
	time.Sleep(30 * time.Millisecond)
	slept := time.Since(t0)
	atomic.StoreInt32(&stop, 1)
	n := <-spins
	fmt.Printf("GOMAXPROCS(1) with a goroutine spinning: main woke from a 30ms sleep: %s; the spinner ran: %s\n",
		yes(slept >= 30*time.Millisecond), yes(n > 0))
	runtime.GOMAXPROCS(prev)
}

// ---------------------------------------------------------------------------- endings

// No arguments anywhere on the panicking stack: the traceback prints argument words, and those
// of a function with arguments can be stale register spills (addresses, "0xc000...?").

//go:noinline
func level2() {
	panic(fmt.Sprintf("unrecovered panic, %d levels down", 2))
}

//go:noinline
func level1() { level2() }

func panicMode() {
	defer fmt.Println("deferred call runs before the crash")
	level1()
}

func exitMode() {
	defer fmt.Println("deferred call: not printed")
	fmt.Println("before os.Exit(3)")
	fmt.Fprintln(os.Stderr, "on stderr before os.Exit(3)")
	os.Exit(3)
}

func deadlock() {
	a, b := make(chan int), make(chan int)
	go func() {
		<-a // blocks for good
		b <- 1
	}()
	fmt.Println("main receives from a channel nobody will send on")
	<-b
}

func sigterm() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM)
	signal.Reset(syscall.SIGTERM)
	fmt.Println("Notify(SIGTERM), Reset(SIGTERM), kill(getpid, SIGTERM)")
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	time.Sleep(10 * time.Second)
	fmt.Println("still alive: no")
}

var modes = []struct {
	name string
	f    func()
}{
	{"channels", channels},
	{"timers", timers},
	{"gc", gc},
	{"recover", recoverMode},
	{"signal", signalMode},
	{"preempt", preempt},
}

var extraModes = map[string]func(){
	"panic":    panicMode,
	"exit":     exitMode,
	"deadlock": deadlock,
	"sigterm":  sigterm,
}

func main() {
	if len(os.Args) < 2 {
		for _, m := range modes {
			fmt.Printf("== %s ==\n", m.name)
			m.f()
		}
		fmt.Fprintln(os.Stderr, "go_basics: all modes done")
		return
	}
	mode := os.Args[1]
	for _, m := range modes {
		if m.name == mode {
			fmt.Printf("== %s ==\n", mode)
			m.f()
			return
		}
	}
	if f, ok := extraModes[mode]; ok {
		fmt.Printf("== %s ==\n", mode)
		f()
		return
	}
	names := make([]string, 0, len(modes)+len(extraModes))
	for _, m := range modes {
		names = append(names, m.name)
	}
	for n := range extraModes {
		names = append(names, n)
	}
	sort.Strings(names[len(modes):])
	fmt.Fprintf(os.Stderr, "usage: go_basics [%s]\n", strings.Join(names, "|"))
	os.Exit(2)
}

// Go programs, differentially: the go_basics guest (built with CGO_ENABLED=0 by build-guests.mjs;
// see the comment at the top of __test__/guests/go_basics.go) and Debian's static gofmt run
// natively and in kvmbox with the same argv, environment (empty) and stdin; stdout, stderr and the
// exit status (or the signal that killed it) must be identical. The Go runtime brings its own
// threads (sysmon, GC workers, one per P), futexes, timers on epoll and eventfd, signal handlers
// on sigaltstacks, SIGURG preemption and faults turned into panics: the guest prints only what
// does not depend on timing, the scheduler or the number of CPUs (kvmbox has one vCPU, so
// GOMAXPROCS differs: it is never printed), so one run of each side is compared.
//
// scripts/test-deps.sh installs Go (golang-go; Debian 12 has Go 1.19).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import test from 'ava';

import { guest, requireKvm, runKvm, runNative, summarize, TEST_DIR } from './helpers.mjs';

requireKvm(test);

/**
 * kvmbox options for every run here. The timeout only turns a hang into a failure: natively every
 * run takes well under a second (the default run ~0.7 s). The memory is address space: the Go
 * runtime reserves ~600 MiB of it (PROT_NONE arena index and heap hints) up front, and kvmbox
 * counts reservations against `memory` (README, "Limits"); only touched pages use host memory.
 */
const KVM_OPTS = { timeout: 60_000, memory: 2 * 1024 ** 3 };

/**
 * Lines the native stdout must contain per mode of the default run, in its order (so that the
 * comparison means something: natively the check really happened and came out as Go defines it).
 */
const SCENARIOS = {
  channels: [
    'unbuffered ping-pong: 1000 round trips, sum=1001000, closed after: yes\n',
    'buffered drained in order: a,b,c\n',
    '1000 goroutines: mutex counter=100000, sum of squares=332833500\n',
    '8 workers over 10000 jobs: total=29994\n',
    'select on a silent channel and time.After(20ms): timed out\n',
    'sync.Once from 50 goroutines ran 1 time(s); atomic adds=50000\n',
    'recursion 200000 deep in a goroutine: 100000\n',
  ],
  timers: [
    'time.Sleep(20ms) slept at least 20ms: yes\n',
    'Stop of a pending 1h timer: true; Stop again: false\n',
    'Reset(10ms) fired after at least 10ms: yes\n',
    'AfterFunc ran\n',
    'ticker: 5 ticks, in increasing order: yes\n',
    'context.WithTimeout(10ms): context deadline exceeded, is DeadlineExceeded: yes\n',
    '200 goroutines sleeping 0-9 ms: 200 woke\n',
  ],
  gc: [
    '200 x 1 MiB slices: checksum 57055887975ad1bc; 1e6-node list sum 499999500000\n',
    'collections ran: yes; heap after runtime.GC() below 64 MiB: yes\n',
    'finalizer ran: yes\n',
  ],
  recover: [
    'nil pointer dereference: runtime.Error: runtime error: invalid memory address or nil pointer dereference\n',
    'integer divide by zero: runtime.Error: runtime error: integer divide by zero\n',
    'fault at 0xdead0000 with SetPanicOnFault: runtime.Error: runtime error: invalid memory address or nil pointer dereference (Addr()=0xdead0000)\n',
    'index out of range: runtime.Error: runtime error: index out of range [5] with length 3\n',
    '10 goroutines: 5 x runtime.Error: runtime error: integer divide by zero\n',
    '10 goroutines: 5 x runtime.Error: runtime error: invalid memory address or nil pointer dereference\n',
    'deferred calls: defer 3 | defer 2 | recovered: runtime error: invalid memory address or nil pointer dereference\n',
  ],
  signal: [
    'Notify(SIGUSR1), kill(getpid, SIGUSR1): received "user defined signal 1" (10)\n',
    'three more SIGUSR1, each received: yes\n',
    'Notify(SIGUSR2), tgkill(getpid, gettid, SIGUSR2): received "user defined signal 2"\n',
    'Ignore(SIGHUP), kill(getpid, SIGHUP): still running, Ignored(SIGHUP)=true\n',
    'after Stop and Ignore(SIGUSR1): nothing delivered to the channel\n',
  ],
  preempt: ['GOMAXPROCS(1) with a goroutine spinning: main woke from a 30ms sleep: yes; the spinner ran: yes\n'],
};

/** The panicking goroutine's stack: function, then file:line +offset (the same binary both sides). */
const frame = (fn) => `${fn.replace(/[.()]/g, '\\$&')}\\n\\t\\./go_basics\\.go:\\d+ \\+0x[0-9a-f]+\\n`;

/**
 * Cases: { label, argv, env, status: expected natively ({ exitCode } or { signal }), stderr
 * (expected natively: a string or a RegExp), stdoutHas (lines the native stdout must contain) }.
 */
const CASES = [
  { label: 'all default modes', stderr: 'go_basics: all modes done\n', stdoutHas: Object.values(SCENARIOS).flat() },
  ...Object.entries(SCENARIOS).map(([mode, lines]) => ({ label: mode, argv: [mode], stdoutHas: [`== ${mode} ==\n`, ...lines] })),
  {
    label: 'panic: unrecovered, two calls down -> deferred call runs, stack on stderr, exit 2',
    argv: ['panic'],
    status: { exitCode: 2 },
    stderr: new RegExp(
      `^panic: unrecovered panic, 2 levels down\\n\\ngoroutine 1 \\[running\\]:\\n${['main.level2()', 'main.level1()', 'main.panicMode()', 'main.main()'].map(frame).join('')}$`,
    ),
    stdoutHas: ['deferred call runs before the crash\n'],
  },
  {
    label: 'exit: os.Exit(3) -> exit 3, deferred call skipped',
    argv: ['exit'],
    status: { exitCode: 3 },
    stderr: 'on stderr before os.Exit(3)\n',
    stdoutHas: ['before os.Exit(3)\n'],
  },
  {
    label: "deadlock: the Go runtime's own check -> fatal error, both goroutines' stacks, exit 2",
    argv: ['deadlock'],
    // The second goroutine's id is printed, and goroutine ids come from per-P caches: with
    // several Ps (natively, GOMAXPROCS = the number of CPUs) it depends on which P the main
    // goroutine runs on. With one P on both sides (kvmbox has one CPU anyway) it is fixed.
    env: { GOMAXPROCS: '1' },
    status: { exitCode: 2 },
    stderr:
      /^fatal error: all goroutines are asleep - deadlock!\n\ngoroutine 1 \[chan receive\]:\nmain\.deadlock\(\)\n(.|\n)*\ngoroutine \d+ \[chan receive\]:\nmain\.deadlock\.func1\(\)\n/,
  },
  { label: 'sigterm: Notify then Reset(SIGTERM), kill(getpid, SIGTERM) -> killed by SIGTERM', argv: ['sigterm'], status: { signal: 'SIGTERM' } },
  { label: 'unknown mode: usage, exit 2', argv: ['bogus'], status: { exitCode: 2 }, stderr: /^usage: go_basics / },
];

/** Runs natively and in kvmbox; asserts the same result and returns the native one's summary. */
function sameAsNative(t, file, opts, kvmOpts = {}) {
  const native = summarize(runNative(file, opts));
  let kvm;
  try {
    kvm = runKvm(file, { ...opts, ...KVM_OPTS, ...kvmOpts });
  } catch (e) {
    // A typed error (a timeout, a fault): show what the guest printed next to the native run.
    const out = (b) => b?.toString() ?? '';
    t.fail(
      `kvmbox: ${e.name}: ${e.message}\n--- kvmbox stdout so far:\n${out(e.stdout)}--- kvmbox stderr so far:\n${out(e.stderr)}--- native stdout:\n${native.stdout}`,
    );
    return native;
  }
  const k = summarize(kvm);
  t.is(k.status, native.status, 'status');
  if (native.status === 'signaled') t.is(k.signal, native.signal, 'signal');
  else t.is(k.exitCode, native.exitCode, 'exit code');
  t.deepEqual(k.stdout, native.stdout, 'stdout');
  t.deepEqual(k.stderr, native.stderr, 'stderr');
  t.false(kvm.stdoutTruncated);
  t.false(kvm.stderrTruncated);
  return native;
}

/** Sanity of a native run, so the comparison means something. */
function checkNative(t, native, { status = { exitCode: 0 }, stderr = '', stdoutHas = [] }) {
  if (status.signal) t.deepEqual({ status: native.status, signal: native.signal }, { status: 'signaled', signal: status.signal }, 'native run');
  else t.deepEqual({ status: native.status, exitCode: native.exitCode }, { status: 'exited', exitCode: status.exitCode }, 'native run');
  if (stderr instanceof RegExp) t.regex(native.stderr, stderr, 'native stderr');
  else t.is(native.stderr, stderr, 'native stderr');
  for (const line of stdoutHas) t.true(native.stdout.includes(line), `native stdout lacks ${JSON.stringify(line)}`);
  t.false(native.stdout.includes(': no\n'), 'native run: no check printed "no"');
}

for (const c of CASES) {
  test(`go_basics: ${c.label}`, (t) => {
    const file = guest('go_basics');
    const opts = { args: [file, ...(c.argv ?? [])], env: c.env ?? {} };
    checkNative(t, summarize(runNative(file, opts)), c);
    sameAsNative(t, file, opts);
  });
}

// --------------------------------------------------------------- gofmt

/** Debian's gofmt: a Go program built without cgo, so a static executable. */
function findGofmt() {
  const r = spawnSync('go', ['env', 'GOROOT'], { encoding: 'utf8' });
  const p = r.status === 0 ? path.join(r.stdout.trim(), 'bin', 'gofmt') : null;
  return p && fs.existsSync(p) ? fs.realpathSync(p) : null;
}
const GOFMT = findGofmt();

/** Whether the ELF file has no PT_INTERP program header (kvmbox runs static executables only). */
function isStatic(file) {
  const b = fs.readFileSync(file);
  const [phoff, phentsize, phnum] = [Number(b.readBigUInt64LE(0x20)), b.readUInt16LE(0x36), b.readUInt16LE(0x38)];
  for (let i = 0; i < phnum; i++) if (b.readUInt32LE(phoff + i * phentsize) === 3) return false;
  return true;
}

const FIXTURES = path.join(TEST_DIR, 'fixtures');
const UNFORMATTED = path.join(FIXTURES, 'unformatted.go');

/** Runs gofmt with `args` (and stdin `input`) natively and in kvmbox, reading only FIXTURES. */
function gofmt(t, args, input = '') {
  t.truthy(GOFMT, 'gofmt is installed ($(go env GOROOT)/bin/gofmt; scripts/test-deps.sh installs golang-go)');
  if (!GOFMT) return undefined;
  t.true(isStatic(GOFMT), `${GOFMT} is a static executable`);
  return sameAsNative(t, GOFMT, { args: [GOFMT, ...args], input }, { allowRead: [FIXTURES] });
}

test('gofmt FILE: reformats a badly formatted Go file', (t) => {
  const native = gofmt(t, [UNFORMATTED]);
  if (!native) return;
  t.is(native.status, 'exited');
  t.is(native.exitCode, 0);
  t.is(native.stderr, '');
  t.true(native.stdout.includes('package fixture\n\nimport (\n\t"fmt"\n\t"os"\n\t"strings"\n)\n'), 'imports sorted and indented');
  t.true(native.stdout.includes('type Point struct {\n\tX, Y  int\n\tLabel string `json:"label"`\n\tTags  []string\n}\n'), 'fields aligned');
});

test('gofmt -s FILE: also simplifies composite literals and range loops', (t) => {
  const native = gofmt(t, ['-s', UNFORMATTED]);
  if (!native) return;
  t.is(native.exitCode, 0);
  t.true(native.stdout.includes('var points = []Point{{X: 1, Y: 2, Label: "a"}, {X: 3, Y: 4, Label: "bb", Tags: []string{"x", "y"}}}\n'));
  t.true(native.stdout.includes('\tfor range xs {\n'));
});

test("gofmt -r 'a[b:len(a)] -> a[b:]' FILE: a rewrite rule", (t) => {
  const native = gofmt(t, ['-r', 'a[b:len(a)] -> a[b:]', UNFORMATTED]);
  if (!native) return;
  t.is(native.exitCode, 0);
  t.true(native.stdout.includes('fmt.Println(os.Args[1:])\n'));
});

test('gofmt -l DIR: walks a directory and lists the files that need formatting', (t) => {
  const native = gofmt(t, ['-l', FIXTURES]);
  if (native) t.deepEqual(native, { status: 'exited', exitCode: 0, stdout: `${UNFORMATTED}\n`, stderr: '' }, 'native run');
});

test('gofmt < FILE: formats stdin, the same as from the file', (t) => {
  const native = gofmt(t, [], fs.readFileSync(UNFORMATTED));
  if (native) t.is(native.stdout, summarize(runNative(GOFMT, { args: [GOFMT, UNFORMATTED] })).stdout);
});

test('gofmt with a syntax error on stdin: the error on stderr, exit 2', (t) => {
  const native = gofmt(t, [], 'package x\nfunc {\n');
  if (native) t.deepEqual(native, { status: 'exited', exitCode: 2, stdout: '', stderr: "<standard input>:2:6: expected 'IDENT', found '{'\n" }, 'native run');
});

test('gofmt on a missing file in an allowed directory: stat fails with ENOENT, exit 2', (t) => {
  const missing = path.join(FIXTURES, 'missing.go');
  const native = gofmt(t, [missing]);
  if (native) t.deepEqual(native, { status: 'exited', exitCode: 2, stdout: '', stderr: `stat ${missing}: no such file or directory\n` }, 'native run');
});

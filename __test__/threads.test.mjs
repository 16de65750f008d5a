// Thread support, differentially: the pthreads guest (glibc, static-pie, musl), C++
// std::thread, Rust std::thread and OpenMP guests run natively and in kvmbox with the same
// argv, environment and stdin; stdout, stderr and the exit status must be identical. Every
// guest prints only what does not depend on how its threads interleave or on the number of
// CPUs (see the comment at the top of each), so one run of each side is compared.
//
// Plus, kvmbox only: a guest whose threads all block forever (a cycle of joins, an ABBA
// mutex deadlock) ends with a typed error (code DEADLOCK_CODE) instead of hanging.
import { spawn } from 'node:child_process';

import test from 'ava';

import { assertHealthy, guest, KvmboxError, Machine, requireKvm, runKvm, runNative, summarize, TimeoutError, VARIANTS } from './helpers.mjs';

requireKvm(test);

/**
 * kvmbox options for every run here. The timeout only turns a hang into a failure: it is far
 * above what any run needs (natively each takes well under a second), so nothing here depends
 * on the machine's speed. The memory is address space (only touched pages use host memory):
 * glibc gives each thread a stack of RLIMIT_STACK (8 MiB with 128 MiB or more of memory), and
 * the 'many' scenario has 100 threads alive at once — 800 MiB of stacks.
 */
const KVM_OPTS = { timeout: 30_000, memory: 2 * 1024 ** 3 };

/**
 * The error kvmbox throws when every guest thread is blocked for good: a DeadlockError (checked
 * by name, so this file loads with a dist/ built before the class existed) with code DEADLOCK.
 */
const DEADLOCK_CODE = 'DEADLOCK';
const DEADLOCK_CLASS = 'DeadlockError';

const PTHREAD_MODES = [
  'mutex',
  'condvar',
  'rwlock',
  'barrier',
  'tls',
  'detached',
  'join',
  'pthread-exit',
  'gettid',
  'spin',
  'yield',
  'sleep',
  'sleep-spin',
  'many',
  'timed',
  'main-exit',
];
const CPP_MODES = ['thread', 'mutex', 'condvar', 'async', 'thread_local', 'shared_mutex'];
const RUST_MODES = ['spawn', 'mpsc', 'mutex', 'condvar', 'barrier', 'scope', 'thread_local', 'rwlock', 'park', 'panic'];

/**
 * Cases: { name (guest), label, argv, env, exitCode (expected natively, default 0), stderr
 * (expected natively, default ''), stdoutHas (a line the native stdout must contain) }.
 */
const CASES = [];
for (const v of VARIANTS) {
  const name = `threads-${v}`;
  CASES.push({ name, label: 'all default scenarios', stdoutHas: 'worker: returning (last thread: process exits 0)\n' });
  for (const mode of PTHREAD_MODES) CASES.push({ name, label: mode, argv: [mode], stdoutHas: `== ${mode} ==\n` });
  CASES.push({ name, label: 'main-exit-code: the last thread calls exit(3)', argv: ['main-exit-code'], exitCode: 3, stdoutHas: 'worker: exit(3)\n' });
  CASES.push({ name, label: 'worker-exit: a worker calls exit(6) while main joins it', argv: ['worker-exit'], exitCode: 6 });
  CASES.push({ name, label: 'exit-group: main returns 4 while threads block and spin', argv: ['exit-group'], exitCode: 4 });
  CASES.push({ name, label: 'unknown mode: usage, exit 2', argv: ['bogus'], exitCode: 2, stderr: /^usage: threads / });
}
CASES.push({ name: 'threads_cpp', label: 'all scenarios', stdoutHas: '== shared_mutex ==\n' });
for (const mode of CPP_MODES) CASES.push({ name: 'threads_cpp', label: mode, argv: [mode], stdoutHas: `== ${mode} ==\n` });
const RUST_PANICS = /^thread '<unnamed>' panicked at line \d+:\d+: boom in a thread\nthread '<unnamed>' panicked at line \d+:\d+: poisoning the mutex\n$/;
CASES.push({ name: 'threads_rust', label: 'all scenarios', stderr: RUST_PANICS, stdoutHas: '== panic ==\n' });
for (const mode of RUST_MODES) {
  CASES.push({ name: 'threads_rust', label: mode, argv: [mode], stderr: mode === 'panic' ? RUST_PANICS : '', stdoutHas: `== ${mode} ==\n` });
}
for (const v of ['glibc', 'pie']) {
  for (const n of ['4', '16']) {
    CASES.push({ name: `openmp-${v}`, label: `OMP_NUM_THREADS=${n}`, env: { OMP_NUM_THREADS: n }, stdoutHas: 'tasks: fib(25)=75025\n' });
  }
}

for (const c of CASES) {
  test(`${c.name}: ${c.label}`, (t) => {
    const file = guest(c.name);
    const opts = { args: [file, ...(c.argv ?? [])], env: c.env ?? {} };
    const native = summarize(runNative(file, opts));

    // Sanity of the native run itself, so the comparison means something.
    t.deepEqual({ status: native.status, exitCode: native.exitCode }, { status: 'exited', exitCode: c.exitCode ?? 0 }, 'native run');
    if (c.stderr instanceof RegExp) t.regex(native.stderr, c.stderr, 'native stderr');
    else t.is(native.stderr, c.stderr ?? '', 'native stderr');
    if (c.stdoutHas) t.true(native.stdout.includes(c.stdoutHas), `native stdout lacks ${JSON.stringify(c.stdoutHas)}`);
    t.false(native.stdout.includes(': no\n'), 'native run: no check printed "no"');

    const kvm = runKvm(file, { ...opts, ...KVM_OPTS });
    const k = summarize(kvm);
    t.is(k.status, native.status, 'status');
    if (native.status === 'signaled') t.is(k.signal, native.signal, 'signal');
    else t.is(k.exitCode, native.exitCode, 'exit code');
    t.deepEqual(k.stdout, native.stdout, 'stdout');
    t.deepEqual(k.stderr, native.stderr, 'stderr');
    t.false(kvm.stdoutTruncated);
    t.false(kvm.stderrTruncated);
  });
}

// The scheduler must not make a difference between runs (nor between run() and runAsync()).
for (const v of ['glibc', 'musl']) {
  test(`threads-${v}: all default scenarios, 3 more kvmbox runs and one runAsync, all the same as native`, async (t) => {
    const file = guest(`threads-${v}`);
    const native = summarize(runNative(file, { args: [file] }));
    for (let i = 0; i < 3; i++) t.deepEqual(summarize(runKvm(file, { args: [file], ...KVM_OPTS })), native, `run ${i + 1}`);
    const vm = Machine.fromFile(file, { args: [file], env: {}, stdin: '', ...KVM_OPTS });
    t.deepEqual(summarize(await vm.runAsync()), native, 'runAsync');
  });
}

// ---------------------------------------------------------------------------- deadlocks

/** What each deadlock mode prints (flushed) before every thread blocks. */
const DEADLOCKS = {
  'join-self-deadlock': '== join-self-deadlock ==\nmain joins A, A joins B, B joins main\n',
  'mutex-deadlock': '== mutex-deadlock ==\nmain holds mutex 1 and wants 2, the worker holds 2 and wants 1\n',
};

/** Runs `file args` natively for `ms`; resolves { ended, stdout } (ended: it exited by itself). */
function runNativeFor(file, args, ms) {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env: {}, stdio: ['ignore', 'pipe', 'pipe'] });
    const out = [];
    child.stdout.on('data', (b) => out.push(b));
    let ended = true;
    const timer = setTimeout(() => {
      ended = false;
      child.kill('SIGKILL');
    }, ms);
    child.on('error', reject);
    child.on('close', () => {
      clearTimeout(timer);
      resolve({ ended, stdout: Buffer.concat(out).toString() });
    });
  });
}

test('natively, the deadlock modes really never end (still blocked after 1 s)', async (t) => {
  const runs = [];
  for (const v of VARIANTS) {
    for (const [mode, printed] of Object.entries(DEADLOCKS)) {
      runs.push(
        runNativeFor(guest(`threads-${v}`), [mode], 1000).then((r) => {
          t.false(r.ended, `threads-${v} ${mode} ended by itself`);
          t.is(r.stdout, printed, `threads-${v} ${mode} stdout`);
        }),
      );
    }
  }
  await Promise.all(runs);
});

for (const v of VARIANTS) {
  for (const [mode, printed] of Object.entries(DEADLOCKS)) {
    test(`threads-${v} ${mode}: every thread blocked for good -> typed ${DEADLOCK_CODE} error, not a hang`, (t) => {
      const file = guest(`threads-${v}`);
      const vm = Machine.fromFile(file, { args: [file, mode], ...KVM_OPTS });
      const t0 = performance.now();
      const err = t.throws(() => vm.run());
      const elapsed = performance.now() - t0;
      t.true(err instanceof KvmboxError, `a KvmboxError, got ${err?.name}: ${err?.message}`);
      t.false(err instanceof TimeoutError, `detected, not timed out (after ${elapsed.toFixed(0)} ms)`);
      t.is(err.code, DEADLOCK_CODE);
      t.is(err.name, DEADLOCK_CLASS);
      t.is(err.stdout?.toString(), printed, 'output before the deadlock is kept');
      t.is(err.stderr?.toString(), '');
      assertHealthy(t, v);
    });
  }
}

// Hardening round 2: each test performs an attack that once aborted Node, leaked data across a
// reset, widened a snapshot's file access or outran a timeout — and checks it no longer does.
// Then interrupts and AbortSignals, which stop a guest wherever it is.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import test from 'ava';

import {
  assertHealthy,
  guest,
  InterruptedError,
  InvalidArgumentError,
  Machine,
  Pool,
  pausedMachine,
  REPO_DIR,
  requireKvm,
  Snapshot,
  TimeoutError,
  tempDir,
} from './helpers.mjs';

requireKvm(test);

const bin = guest('hostile-glibc');
const calls = guest('calls-glibc');
const delay = (ms) => new Promise((r) => setTimeout(r, ms));
const HOSTCALL = 0x10000;

test('writev of 1024 iovecs x 100 MiB over one guest range: bounded host memory, a short write as on Linux', (t) => {
  const before = process.memoryUsage().rss;
  const vm = Machine.fromFile(bin, { args: [bin, 'writev_flood'], memory: 256 << 20, outputLimit: 1 << 20 });
  const r = vm.run();
  t.is(r.exitCode, 0);
  // Linux moves at most MAX_RW_COUNT (2 GiB - 4 KiB) per call; the rest is a short write.
  t.is(r.stderr.toString(), `writev ${0x7ffff000}\n`);
  t.true(r.stdoutTruncated);
  t.is(r.stdout.length, 1 << 20);
  const grown = process.memoryUsage().rss - before;
  t.true(grown < 256 << 20, `host RSS grew by ${grown >> 20} MiB`);
});

test('nanosleep with tv_sec = INT64_MAX ends at the timeout, sync and async, and leaves no machine busy', async (t) => {
  const sync = Machine.fromFile(bin, { args: [bin, 'nanosleep_max'], timeout: 200 });
  t.throws(() => sync.run(), { instanceOf: TimeoutError });
  const vm = Machine.fromFile(bin, { args: [bin, 'nanosleep_max'], timeout: 200 });
  await t.throwsAsync(vm.runAsync(), { instanceOf: TimeoutError });
  t.is(vm.state, 'closed', 'not busy for ever');
  // A fork sleeping for ever in a call is stopped the same way and can be reset and reused.
  const f = pausedMachine(t, bin).snapshot().fork();
  await t.throwsAsync(f.callAsync('sleep_ms', -1, { timeout: 100 }), { instanceOf: TimeoutError });
  f.reset();
  t.is(await f.callAsync('sleep_ms', 1), 0);
  f.close();
});

test('a private file mapping is undone by reset: the next request never sees the file data', (t) => {
  const dir = tempDir();
  const file = path.join(dir, 'secret.bin');
  fs.writeFileSync(file, Buffer.alloc(4096, 'S'));
  const snap = pausedMachine(t, bin, { allowRead: [dir] }).snapshot();
  const f = snap.fork();
  t.teardown(() => f.close());
  const at = 0x2000000;
  t.is(f.call('map_file', file, at), 'S'.charCodeAt(0), 'the file is mapped');
  f.reset();
  t.is(f.call('anon_sum', at), 0, 'fresh anonymous memory at the same address reads as zero');
});

test("Snapshot.load resolves relative allowRead against this process's cwd, not the file's", (t) => {
  const dir = tempDir();
  fs.writeFileSync(path.join(dir, 'inside.txt'), 'inside');
  const file = path.join(dir, 'snap.kvmsnap');
  const home = process.cwd();
  try {
    process.chdir('/'); // the snapshot records '/' as the guest's working directory
    pausedMachine(t, bin).snapshot().save(file);
    process.chdir(dir);
    const f = Snapshot.load(file, { allowRead: ['.'] }).fork();
    t.teardown(() => f.close());
    t.is(f.call('read_file', path.join(dir, 'inside.txt')), 6, "'.' is this process's cwd");
    t.is(f.call('read_file', '/etc/passwd'), -2, 'ENOENT: the recorded cwd (/) widens nothing');
  } finally {
    process.chdir(home);
  }
});

test('timeouts: Infinity, NaN and negative values are refused; huge finite ones never expire; unknown option keys are refused', async (t) => {
  for (const timeout of [Infinity, -Infinity, NaN, -1, '5', 1n]) {
    t.throws(() => Machine.fromFile(bin, { timeout }), { instanceOf: InvalidArgumentError }, `machine timeout ${String(timeout)}`);
  }
  const vm = pausedMachine(t, bin, { timeout: 1e300 });
  for (const timeout of [Infinity, NaN, -5]) {
    t.throws(() => vm.call('read_file', '/x', { timeout }), { instanceOf: InvalidArgumentError });
    await t.throwsAsync(vm.callAsync('read_file', '/x', { timeout }), { instanceOf: InvalidArgumentError });
    t.throws(() => vm.run({ timeout }), { instanceOf: InvalidArgumentError });
  }
  t.is(vm.state, 'paused', 'refused options leave the machine as it was');
  for (const timeout of [1e22, 1e300, Number.MAX_VALUE, 2 ** 64]) {
    t.is(vm.call('sleep_ms', 0, { timeout }), 0, `call timeout ${timeout}`);
    t.is(await vm.callAsync('sleep_ms', 0, { timeout }), 0);
  }
  t.throws(() => Machine.fromFile(bin, { timeoutMs: 5 }), { instanceOf: InvalidArgumentError, message: /timeoutMs/ });
  t.throws(() => vm.call('sleep_ms', 0, { timeot: 5 }), { instanceOf: InvalidArgumentError, message: /timeot/ });
  t.throws(() => vm.run({ timeOut: 5 }), { instanceOf: InvalidArgumentError });
  t.throws(() => Snapshot.load('/nonexistent', { memory: 5 }), { instanceOf: InvalidArgumentError, message: /memory/ });
});

test('readCString/readString with max = Infinity or 2^64 is refused; any finite max ends', (t) => {
  const vm = pausedMachine(t, bin);
  const at = vm.symbol('chunk');
  vm.memory.write(at, 'hello\0');
  for (const max of [Infinity, 2 ** 64, -1, NaN, 1.5]) {
    t.throws(() => vm.memory.readCString(at, max), { instanceOf: InvalidArgumentError }, `max ${max}`);
  }
  t.is(vm.memory.readCString(at, Number.MAX_SAFE_INTEGER), 'hello');
  vm.onSyscall(HOSTCALL, (c) => {
    t.throws(() => c.readString(at, Infinity), { instanceOf: InvalidArgumentError });
    return c.readString(at, 2 ** 53 - 1).length;
  });
  t.is(vm.call('hostcall', 0), 5);
  for (const len of [Infinity, 2 ** 64, -1]) t.throws(() => vm.memory.read(at, len), { instanceOf: InvalidArgumentError });
});

test('close() of a machine whose async call is in flight stops the guest and settles the call', async (t) => {
  for (const [file, fn, arg] of [
    [bin, 'sleep_ms', -1],
    [calls, 'spin', Number.MAX_SAFE_INTEGER],
  ]) {
    const vm = pausedMachine(t, file);
    const p = vm.callAsync(fn, arg);
    await delay(30);
    vm.close();
    await t.throwsAsync(p, { instanceOf: InterruptedError }, fn);
    t.is(vm.state, 'closed');
  }
});

test('an async host-call handler slower than the timeout is cut off at the deadline (its signal aborts); one that never settles too', async (t) => {
  const vm = pausedMachine(t, bin);
  let finished = false;
  let aborted = false;
  vm.onSyscall(HOSTCALL, async (c) => {
    c.signal.addEventListener('abort', () => (aborted = true));
    await delay(1000);
    finished = true;
    return 1;
  });
  await t.throwsAsync(vm.callAsync('hostcall', 1, { timeout: 200 }), { instanceOf: TimeoutError });
  t.false(finished, 'the call rejected before the handler settled');
  t.true(aborted, "the handler's signal aborted");

  const never = pausedMachine(t, bin, { timeout: 150 });
  never.onSyscall(HOSTCALL, () => new Promise(() => {}));
  await t.throwsAsync(never.callAsync('hostcall', 1), { instanceOf: TimeoutError });
  const run = Machine.fromFile(bin, { timeout: 150 });
  t.teardown(() => run.close());
  t.is((await run.runAsync()).status, 'paused');
});

test('interrupt(): stops a sleeping, spinning or handler-waiting guest with an AbortError-named InterruptedError; idle, it does nothing', async (t) => {
  const vm = pausedMachine(t, bin);
  t.false(vm.interrupt(), 'nothing in progress');
  t.is(await vm.callAsync('sleep_ms', 1), 0, 'and nothing pending for the next call');
  const snap = vm.snapshot();

  const sleeper = snap.fork();
  const p = sleeper.callAsync('sleep_ms', -1);
  await delay(20);
  t.true(sleeper.interrupt());
  const err = await t.throwsAsync(p, { instanceOf: InterruptedError });
  t.is(err.name, 'AbortError');
  t.is(err.code, 'INTERRUPTED');
  t.is(sleeper.reset() >= 0, true, 'an interrupted fork resets');
  t.is(await sleeper.callAsync('sleep_ms', 1), 0);
  sleeper.close();

  const waiter = snap.fork();
  let aborted = false;
  waiter.onSyscall(HOSTCALL, (c) => new Promise(() => c.signal.addEventListener('abort', () => (aborted = true))));
  const q = waiter.callAsync('hostcall', 7);
  await delay(20);
  t.true(waiter.interrupt());
  await t.throwsAsync(q, { instanceOf: InterruptedError });
  t.true(aborted);
  waiter.close();

  const spinner = pausedMachine(t, calls);
  const s = spinner.callAsync('spin', Number.MAX_SAFE_INTEGER);
  await delay(20);
  t.true(spinner.interrupt());
  await t.throwsAsync(s, { instanceOf: InterruptedError });
});

test('AbortSignal on runAsync, callAsync and callBigIntAsync; an aborted signal does not start the operation', async (t) => {
  const vm = pausedMachine(t, bin);
  const snap = vm.snapshot();
  const ac = new AbortController();
  ac.abort();
  await t.throwsAsync(vm.callAsync('sleep_ms', 1, { signal: ac.signal }), { instanceOf: InterruptedError });
  t.is(vm.state, 'paused', 'not started');
  t.is(await vm.callBigIntAsync('sleep_ms', 1, { signal: new AbortController().signal }), 0n);

  const f = snap.fork();
  t.teardown(() => f.close());
  await t.throwsAsync(f.callBigIntAsync('sleep_ms', -1, { signal: AbortSignal.timeout(30) }), { instanceOf: InterruptedError });

  const run = Machine.fromFile(bin, { args: [bin, 'nanosleep_max'] });
  t.teardown(() => run.close());
  await t.throwsAsync(run.runAsync({ signal: AbortSignal.timeout(30) }), { instanceOf: InterruptedError });
  t.throws(() => run.run({ signal: ac.signal }), { instanceOf: InvalidArgumentError }, 'sync runs take no signal');
  t.throws(() => vm.call('sleep_ms', 1, { signal: 'no' }), { instanceOf: InvalidArgumentError });
});

test('pool.with({ signal }) interrupts the fork it lent, in-thread and in a worker; the fork serves the next use', async (t) => {
  const snap = pausedMachine(t, bin).snapshot();
  for (const workers of [0, 1]) {
    const pool = new Pool(snap, { size: 1, workers });
    await pool.ready;
    await t.throwsAsync(
      pool.with((m) => m.callAsync('sleep_ms', -1), { signal: AbortSignal.timeout(50) }),
      { instanceOf: InterruptedError },
      `workers ${workers}`,
    );
    t.is(await pool.with((m) => m.callAsync('sleep_ms', 1)), 0, 'the fork was reset and serves again');
    // Waiting for a busy pool's fork: the signal rejects the wait.
    const busy = pool.with((m) => m.callAsync('sleep_ms', 200));
    await t.throwsAsync(
      pool.with((m) => m.callAsync('sleep_ms', 1), { signal: AbortSignal.timeout(20) }),
      { instanceOf: InterruptedError },
    );
    t.is(await busy, 0);
    pool.close();
  }
});

test('stdout inherited by a pipe whose reader stalls: the timeout still holds', async (t) => {
  const script = `
    const { Machine } = require(${JSON.stringify(path.join(REPO_DIR, 'dist', 'index.js'))});
    const vm = Machine.fromFile(${JSON.stringify(bin)}, { args: ['hostile', 'write_forever'], stdout: 'inherit', timeout: 300 });
    try { vm.run(); process.stderr.write('finished without a timeout\\n') } catch (e) { process.stderr.write('code ' + e.code + '\\n') }
  `;
  // The child's stdout is a pipe nobody reads: once it is full, every guest write blocks.
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.pause();
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const guard = setTimeout(() => child.kill('SIGKILL'), 60_000);
  const code = await new Promise((resolve) => child.on('exit', (c, sig) => resolve(sig ?? c)));
  clearTimeout(guard);
  t.is(code, 0, `child ended by ${code}: ${stderr}`);
  t.is(stderr, 'code TIMEOUT\n');
});

test('async output callbacks are bounded while the JS thread is blocked (the guest waits)', async (t) => {
  const mib = 1024;
  let got = 0;
  const vm = Machine.fromFile(bin, { args: [bin, 'stdout_mib', String(mib)], stdout: (chunk) => (got += chunk.length) });
  const before = process.memoryUsage().rss;
  const done = vm.runAsync();
  // Block this thread for a while, as a synchronous run of another machine would.
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1500);
  const grown = process.memoryUsage().rss - before;
  const r = await done;
  t.is(r.exitCode, 0);
  t.is(got, mib << 20, 'every byte delivered, none dropped');
  t.true(grown < 256 << 20, `host RSS grew by ${grown >> 20} MiB while the callbacks could not run`);
});

test('after all of that the host is fine', (t) => {
  assertHealthy(t);
});

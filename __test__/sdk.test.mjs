// SDK conveniences a new user expects (issue "a newcomer's first hour"): errors that say what
// happened, resources released with `using`/close(), worker pools that do not hold the process.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import test from 'ava';

import {
  FileError,
  GuestExitedError,
  guest,
  HOSTCALL_FIRST,
  HOSTCALL_LAST,
  InvalidArgumentError,
  InvalidStateError,
  Machine,
  Pool,
  pausedMachine,
  probe,
  REPO_DIR,
  requireKvm,
  Snapshot,
  setVmPoolSize,
  TimeoutError,
  tempDir,
} from './helpers.mjs';

requireKvm(test);

const calls = guest('calls-glibc');

test('GuestExitedError names the signal as a signaled run result does', (t) => {
  const vm = pausedMachine(t, calls);
  const err = t.throws(() => vm.call('die'), { instanceOf: GuestExitedError });
  t.is(err.signal, 'SIGABRT');
  t.is(err.signalNumber, 6);
  t.is(err.exitCode, 134);
  const run = Machine.fromFile(guest('faults-glibc'), { args: ['faults', 'abort'] }).run();
  t.is(run.status, 'signaled');
  t.is(run.signal, err.signal);
  t.is(run.signalNumber, err.signalNumber);
});

test('a finished machine says why it finished', async (t) => {
  const snap = pausedMachine(t, calls).snapshot();
  const cases = [
    [(f) => f.call('spin', Number.MAX_SAFE_INTEGER, { timeout: 50 }), /timed out after 50 ms/],
    [(f) => f.call('crash'), /faulted \(#PF page fault at rip 0x/],
    [(f) => f.call('quit', 3), /exited with status 3 during a call/],
    [(f) => f.run(), /exited with status 7/],
    [(f) => f.close(), /close\(\) was called/],
  ];
  for (const [end, why] of cases) {
    const f = snap.fork();
    try {
      end(f);
    } catch {}
    const err = t.throws(() => f.call('add', 1, 2), { instanceOf: InvalidStateError });
    t.regex(err.message, why);
    f.close();
  }
  const async = snap.fork();
  await t.throwsAsync(async.callAsync('spin', Number.MAX_SAFE_INTEGER, { timeout: 50 }), { instanceOf: TimeoutError });
  t.regex(t.throws(() => async.call('add', 1, 2)).message, /finished: it timed out after 50 ms; reset\(\) it/);
  async.reset();
  t.is(async.call('add', 1, 2), 3, 'and reset() clears it');
  async.close();
});

test("onSyscall refuses kvmbox's own numbers and numbers out of range; setVmPoolSize refuses nonsense", (t) => {
  const vm = pausedMachine(t, calls);
  for (const nr of [0x100000, 0x100001, HOSTCALL_LAST + 1, -1, 2 ** 32, 1.5, NaN]) {
    t.throws(() => vm.onSyscall(nr, () => 0), { instanceOf: InvalidArgumentError }, `nr ${nr}`);
  }
  vm.onSyscall(HOSTCALL_FIRST, () => 1)
    .onSyscall(HOSTCALL_LAST, () => 1)
    .onSyscall(39, () => 1);
  for (const n of [-1, 1.5, NaN, Infinity, 1e9]) t.throws(() => setVmPoolSize(n), { instanceOf: InvalidArgumentError });
});

test('Symbol.dispose closes machines, snapshots and pools; Snapshot.close keeps its forks working', async (t) => {
  // What `using vm = …` does at the end of its scope (the syntax needs Node >= 24).
  const vm = Machine.fromFile(calls);
  t.is(vm.run().status, 'paused');
  vm[Symbol.dispose]();
  t.is(vm.state, 'closed');
  const base = pausedMachine(t, calls);
  const snap = base.snapshot();
  const fork = snap.fork();
  snap.close();
  snap.close(); // idempotent
  t.throws(() => snap.fork(), { instanceOf: InvalidStateError, message: /snapshot was closed/ });
  t.is(fork.call('add', 2, 3), 5, 'a fork keeps the image alive');
  fork.close();
  const pool = new Pool(base.snapshot(), { size: 1 });
  pool[Symbol.dispose]();
  await t.throwsAsync(pool.acquire(), { instanceOf: InvalidStateError });
  t.is(typeof Snapshot.prototype[Symbol.dispose], 'function');
  t.is(typeof Pool.prototype[Symbol.asyncDispose], 'function');
});

test('a worker Pool nobody closed does not keep the process alive', (t) => {
  const script = `
    const { Machine, Pool } = require(${JSON.stringify(path.join(REPO_DIR, 'dist', 'index.js'))});
    const vm = Machine.fromFile(${JSON.stringify(calls)});
    vm.run();
    const pool = new Pool(vm.snapshot(), { size: 2, workers: 1 });
    pool.with((m) => m.callAsync('add', 2, 3)).then((v) => console.log('answer', v));
  `;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 });
  t.is(r.signal, null, 'exited by itself, not killed by the timeout');
  t.is(r.status, 0, r.stderr);
  t.is(r.stdout, 'answer 5\n');
});

test('probe() reports the backend as one of its four names', (t) => {
  t.true(['pvm', 'vmx', 'svm', 'unknown'].includes(probe().backend));
});

test('Snapshot.load({ handlers }) and new Pool(snap, { setup }) give every fork its host-call handlers', async (t) => {
  const file = path.join(tempDir(), 'calls.kvmsnap');
  pausedMachine(t, calls).snapshot().save(file);
  const loaded = Snapshot.load(file, { handlers: { [HOSTCALL_FIRST]: (c) => c.args[0] * 10n } });
  const f = loaded.fork();
  t.is(f.call('echo_plus_one', 4), 41, 'the handler from load() answered');
  f.close();
  t.throws(() => Snapshot.load(file, { handlers: { [HOSTCALL_LAST + 1]: () => 0 } }), { instanceOf: InvalidArgumentError });
  t.throws(() => Snapshot.load(file, { handlers: { 65536: 'no' } }), { instanceOf: InvalidArgumentError });
  let made = 0;
  const pool = new Pool(Snapshot.load(file), {
    size: 2,
    setup(m) {
      made++;
      m.onSyscall(HOSTCALL_FIRST, (c) => c.args[0] + 100n);
    },
  });
  t.is(made, 2);
  t.is(await pool.with((m) => m.callAsync('echo_plus_one', 1)), 102);
  t.is(await pool.with((m) => m.callAsync('echo_plus_one', 2)), 103, 'handlers stay across resets');
  pool.close();
  t.throws(() => new Pool(loaded, { workers: 1, setup() {} }), { instanceOf: InvalidArgumentError, message: /workerSetup/ });
});

test('saveAsync/loadAsync keep the event loop running and report progress; errors are typed', async (t) => {
  const dir = tempDir();
  const file = path.join(dir, 'big.kvmsnap');
  const vm = Machine.fromFile(calls, { memory: 256 << 20 });
  t.teardown(() => vm.close());
  t.is(vm.run().status, 'paused');
  // 64 MiB of data in guest memory, so the file is big enough to report progress.
  const at = vm.call('alloc_sevens', 64 << 20);
  t.true(at > 0);
  const snap = vm.snapshot();
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  const saved = [];
  await snap.saveAsync(file, { onProgress: (done, total) => saved.push([done, total]) });
  const loaded = [];
  const back = await Snapshot.loadAsync(file, { onProgress: (done, total) => loaded.push([done, total]), handlers: { [HOSTCALL_FIRST]: () => 5 } });
  clearInterval(timer);
  t.true(ticks > 0, 'timers ran while saving and loading');
  t.true(saved.length >= 3 && loaded.length >= 3, `progress reports: ${saved.length} saving, ${loaded.length} loading`);
  t.deepEqual(saved.at(-1)[0], saved.at(-1)[1], 'saving ends complete');
  t.deepEqual(loaded.at(-1), [fs.statSync(file).size, fs.statSync(file).size], 'loading ends at the file size');
  t.true(
    saved.every(([d], i) => i === 0 || d >= saved[i - 1][0]),
    'progress only grows',
  );
  const f = back.fork();
  t.deepEqual(f.memory.read(at + (63 << 20), 4), Buffer.from([7, 7, 7, 7]), 'the data came back');
  t.is(f.call('echo_plus_one', 0), 6, 'handlers from loadAsync');
  f.close();
  const missing = await t.throwsAsync(Snapshot.loadAsync(path.join(dir, 'missing')), { instanceOf: FileError });
  t.is(missing.syscallCode, 'ENOENT');
  await t.throwsAsync(snap.saveAsync(path.join(dir, 'no-such-dir', 'x')), { instanceOf: FileError });
  fs.writeFileSync(path.join(dir, 'junk'), 'not a snapshot');
  await t.throwsAsync(Snapshot.loadAsync(path.join(dir, 'junk')), { instanceOf: InvalidArgumentError });
});

test('lastStats: wall time, VM exits and syscalls of the last run or call, pages the reset restored', async (t) => {
  const vm = pausedMachine(t, calls);
  const snap = vm.snapshot();
  const f = snap.fork();
  t.teardown(() => f.close());
  const none = { resetDirtyLogNs: 0, resetMemoryNs: 0, resetCpuNs: 0, resetProcessNs: 0 };
  t.deepEqual(f.lastStats, { wallNs: 0, exits: 0, syscalls: 0, pagesRestored: 0, pageTableCommits: 0, ...none });
  t.is(f.call('add', 1, 2), 3);
  const pure = f.lastStats;
  t.is(pure.syscalls, 0, 'add() makes no syscall');
  t.is(pure.exits, 1, 'only the call return exits');
  t.true(pure.wallNs > 0);
  t.is(f.call('getpid_twice') > 0, true);
  t.is(f.lastStats.syscalls, 2);
  t.is(f.lastStats.exits, 3);
  t.is(await f.callAsync('syscall_spin', 10), 10 * f.call('syscall_spin', 1));
  t.is(f.lastStats.syscalls, 1);
  f.call('counter_next');
  const pages = f.reset();
  t.true(pages > 0);
  t.is(f.lastStats.pagesRestored, pages);
  // The reset's parts: reading the dirty log, memory, the vCPU, the process each took time.
  const parts = f.lastStats;
  for (const k of Object.keys(none)) t.true(parts[k] > 0, `${k} ${parts[k]}`);
  f.call('add', 1, 1);
  t.is(f.lastStats.pagesRestored, pages, 'kept until the next reset');
  t.is(f.lastStats.resetCpuNs, parts.resetCpuNs, 'so is the breakdown');
});

test('trace: a function gets every syscall (sync and async, forks too) instead of stderr', async (t) => {
  const events = [];
  const vm = Machine.fromFile(calls, { trace: (e) => events.push(e) });
  t.teardown(() => vm.close());
  t.is(vm.run().status, 'paused');
  const write = events.find((e) => e.name === 'write');
  t.truthy(write, 'the start-up wrote "initialized"');
  t.is(write.nr, 1);
  t.is(write.args.length, 6);
  t.is(typeof write.args[0], 'bigint');
  t.is(write.result, '0xc');
  events.length = 0;
  t.true(vm.call('getpid_twice') > 0);
  t.deepEqual(
    events.map((e) => e.name),
    ['getpid', 'getpid'],
  );
  const f = vm.snapshot().fork();
  events.length = 0;
  await f.callAsync('getpid_twice');
  await new Promise((r) => setTimeout(r, 50)); // async events arrive on the event loop
  t.deepEqual(
    events.map((e) => e.name),
    ['getpid', 'getpid'],
    'forks keep the trace callback',
  );
  f.close();
  const throwing = Machine.fromFile(calls, {
    trace: () => {
      throw new Error('ignored');
    },
  });
  t.is(throwing.run().status, 'paused', 'a throwing trace callback does not stop the guest');
  throwing.close();
  t.throws(() => Machine.fromFile(calls, { trace: 'yes' }), { instanceOf: InvalidArgumentError });
});

test('per-request entropy: a guest exporting kvmbox_reseed gets fresh random bytes after every fork and reset', async (t) => {
  const vm = pausedMachine(t, guest('entropy-glibc'));
  const snap = vm.snapshot();
  const a = snap.fork();
  const b = snap.fork();
  t.teardown(() => {
    a.close();
    b.close();
  });
  const first = a.call('next_random');
  t.not(b.call('next_random'), first, 'two forks of one snapshot draw different numbers');
  a.reset();
  t.not(a.call('next_random'), first, 'and so does the same fork after a reset');
  t.is(a.call('reseed_count'), 1, 'once per reset, before the first call');
  a.reset();
  t.is(await a.callAsync('reseed_count'), 1, 'async calls too');
  // Without the hook every fork repeats the snapshot's numbers: what the hook is for.
  const plain = pausedMachine(t, guest('calls-glibc')).snapshot();
  const [x, y] = [plain.fork(), plain.fork()];
  t.is(x.call('counter_next'), y.call('counter_next'));
  x.close();
  y.close();
});

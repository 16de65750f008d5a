// The vDSO: clock reads (clock_gettime, gettimeofday, time, getcpu) run in the guest without a
// VM exit, agree with the host's clocks, never step back — within a run, across reset, fork and
// snapshot files — and are what glibc, musl and Go use.
import path from 'node:path';

import test from 'ava';

import { guest, Machine, requireKvm, runKvm, runNative, Snapshot, summarize, tempDir, VARIANTS } from './helpers.mjs';

requireKvm(test);

/** The syscall names a run made, from the trace callback. */
function tracedNames(file, args, opts = {}) {
  const names = [];
  const vm = Machine.fromFile(file, { args: [file, ...args], trace: (e) => names.push(e.name), ...opts });
  const r = vm.run();
  return { r, names };
}

for (const variant of VARIANTS) {
  test(`clocks-${variant}: every clock as natively, read without a syscall`, (t) => {
    const file = guest(`clocks-${variant}`);
    const native = summarize(runNative(file));
    t.is(native.exitCode, 0);
    t.true(native.stdout.includes('CLOCK_MONOTONIC          steps back: 0, between raw syscall reads: yes'), native.stdout);
    t.deepEqual(summarize(runKvm(file)), native);
    // 500 000 clock reads in the program: none of them is a clock_gettime exit (the checks'
    // own raw syscalls are the only ones).
    const { r, names } = tracedNames(file, []);
    t.is(r.status, 'exited');
    const clockCalls = names.filter((n) => n === 'clock_gettime').length;
    t.true(clockCalls <= 10, `${clockCalls} clock_gettime exits`);
    t.false(names.includes('gettimeofday') || names.includes('time'), names.join(' '));
  });
}

test('Go reads its clocks through the vDSO', (t) => {
  const file = guest('go_basics');
  const { r, names } = tracedNames(file, ['timers'], { memory: 2 * 1024 ** 3, timeout: 60_000 });
  t.is(r.status, 'exited', r.stderr?.toString());
  t.is(names.filter((n) => n === 'clock_gettime').length, 0);
});

test('CLOCK_MONOTONIC follows the host and never steps back across reset, fork and a snapshot file', (t) => {
  const file = guest('clocks-glibc');
  const vm = Machine.fromFile(file, { args: [file, 'pause'] });
  t.teardown(() => vm.close());
  t.is(vm.run().status, 'paused');
  const host = () => process.hrtime.bigint(); // CLOCK_MONOTONIC
  const now = (m) => BigInt(m.call('now_ns'));
  const close = (g, label) => {
    const h = host();
    // The guest read came first; the host's clock is the same clock, read after it.
    t.true(g <= h && h - g < 1_000_000_000n, `${label}: guest ${g} host ${h}`);
  };
  const a = now(vm);
  close(a, 'machine');
  const snap = vm.snapshot();
  const fork = snap.fork();
  t.teardown(() => fork.close());
  const b = now(fork);
  t.true(b >= a, 'a fork reads on from the snapshot');
  close(b, 'fork');
  fork.reset();
  const c = now(fork);
  t.true(c >= b, 'a reset fork does not step back');
  close(c, 'reset fork');
  const file2 = path.join(tempDir('kvmbox-vdso-'), 'clocks.snap');
  snap.save(file2);
  const loaded = Snapshot.load(file2);
  const f2 = loaded.fork();
  t.teardown(() => f2.close());
  const d = now(f2);
  t.true(d >= c, 'a fork of a loaded snapshot file does not step back');
  close(d, 'loaded fork');
});

// CPU faults, timeouts, bad syscall pointers, memory exhaustion and signals:
// every one must surface as a typed error or result, and leave the host fine.
import test from 'ava';

import {
  assertHealthy,
  GuestFaultError,
  guest,
  InvalidStateError,
  KvmboxError,
  Machine,
  nmSymbols,
  requireKvm,
  runKvm,
  runNative,
  summarize,
  TimeoutError,
  VARIANTS,
} from './helpers.mjs';

requireKvm(test);

function machine(variant, mode, opts = {}) {
  const file = guest(`faults-${variant}`);
  return Machine.fromFile(file, { args: [file, ...(Array.isArray(mode) ? mode : [mode])], ...opts });
}

/** Runs a mode that must fault; returns { err, vm }. */
function expectFault(t, variant, mode, opts) {
  const vm = machine(variant, mode, opts);
  // Look symbols up before run(): the fault analysis below must not depend on
  // the machine still being open afterwards (api.test.mjs checks that separately).
  const syms = {};
  for (const name of ['main', 'text_victim', 'recurse']) syms[name] = vm.symbol(name);
  const err = t.throws(() => vm.run(), { instanceOf: GuestFaultError });
  t.true(err instanceof KvmboxError);
  t.is(err.code, 'GUEST_FAULT');
  t.is(typeof err.rip, 'bigint');
  t.is(typeof err.address, 'bigint');
  t.is(typeof err.vectorName, 'string');
  t.is(err.stdout.toString(), `faults: mode=${Array.isArray(mode) ? mode[0] : mode}\n`, 'output before the fault is kept');
  return { err, syms };
}

/**
 * Name of the function containing `addr` in the guest as loaded. Uses nm on the
 * file and the load bias derived from the loaded address of main (PIE is relocated).
 */
function functionAt(variant, loaded, addr) {
  const syms = nmSymbols(guest(`faults-${variant}`));
  const main = syms.find((s) => s.name === 'main');
  const loadedMain = loaded.main;
  if (typeof loadedMain !== 'bigint') throw new Error(`symbol('main') of faults-${variant} is ${loadedMain}`);
  const bias = loadedMain - main.addr;
  let best;
  for (const s of syms) if (s.addr + bias <= addr && (!best || s.addr >= best.addr)) best = s;
  return best?.name;
}

const TEXT_LO = 0x400000n;
const TEXT_HI = 0x800000n;

for (const v of VARIANTS) {
  test(`${v}: null -> #PF (14) at address 0 with rip in main`, (t) => {
    const { err, syms } = expectFault(t, v, 'null');
    t.is(err.vector, 14);
    t.regex(err.vectorName, /PF|page/i);
    t.is(err.address, 0n);
    t.true(err.rip >= TEXT_LO && err.rip < TEXT_HI, `rip 0x${err.rip.toString(16)} in program text`);
    t.regex(functionAt(v, syms, err.rip), /^main/);
    // A user-mode write to a not-present page: error code W|U set, P clear.
    if (err.errorCode !== undefined) t.is(err.errorCode & 0x6n, 0x6n, `error code 0x${err.errorCode.toString(16)}`);
    t.regex(err.message, /0x0\b|page/);
    assertHealthy(t, v);
  });

  test(`${v}: ud2 -> #UD (6)`, (t) => {
    const { err, syms } = expectFault(t, v, 'ud2');
    t.is(err.vector, 6);
    t.is(err.address, 0n);
    t.true(err.rip >= TEXT_LO && err.rip < TEXT_HI);
    t.regex(functionAt(v, syms, err.rip), /^main/);
    assertHealthy(t, v);
  });

  test(`${v}: div0 -> #DE (0)`, (t) => {
    const { err, syms } = expectFault(t, v, 'div0');
    t.is(err.vector, 0);
    t.true(err.rip >= TEXT_LO && err.rip < TEXT_HI);
    t.regex(functionAt(v, syms, err.rip), /^main/);
    assertHealthy(t, v);
  });

  test(`${v}: divovf (INT_MIN / -1) -> #DE (0)`, (t) => {
    const { err } = expectFault(t, v, 'divovf');
    t.is(err.vector, 0);
    assertHealthy(t, v);
  });

  test(`${v}: write_text -> #PF at the address of text_victim`, (t) => {
    const { err, syms } = expectFault(t, v, 'write_text');
    t.is(err.vector, 14);
    const victim = syms.text_victim;
    t.is(typeof victim, 'bigint', 'text_victim is in the symbol table');
    t.is(err.address, victim);
    t.true(err.address >= TEXT_LO && err.address < TEXT_HI);
    // Present page, write, user: P|W|U.
    if (err.errorCode !== undefined) t.is(err.errorCode & 0x7n, 0x7n, `error code 0x${err.errorCode.toString(16)}`);
    t.regex(functionAt(v, syms, err.rip), /^main/);
    assertHealthy(t, v);
  });

  test(`${v}: jump_high -> #PF with rip == target`, (t) => {
    const { err } = expectFault(t, v, 'jump_high');
    t.is(err.vector, 14);
    t.is(err.rip, 0x7ffffffff000n);
    t.is(err.address, 0x7ffffffff000n);
    assertHealthy(t, v);
  });

  test(`${v}: jump_high to a non-canonical address faults`, (t) => {
    // A jump to a non-canonical address raises #GP (13) on real hardware.
    const { err } = expectFault(t, v, ['jump_high', '0x800000000000']);
    t.true(err.vector === 13 || err.vector === 14, `vector ${err.vector}`);
    assertHealthy(t, v);
  });

  test(`${v}: stack (unbounded recursion) -> #PF`, (t) => {
    const { err, syms } = expectFault(t, v, 'stack');
    t.is(err.vector, 14);
    t.regex(functionAt(v, syms, err.rip), /^recurse/);
    assertHealthy(t, v);
  });

  test(`${v}: loop with timeout 300 ms -> TimeoutError`, (t) => {
    const vm = machine(v, 'loop', { timeout: 300 });
    const t0 = performance.now();
    const err = t.throws(() => vm.run(), { instanceOf: TimeoutError });
    const elapsed = performance.now() - t0;
    t.is(err.code, 'TIMEOUT');
    t.is(err.timeoutMs, 300);
    t.true(elapsed >= 300 && elapsed < 3000, `elapsed ${elapsed.toFixed(0)} ms`);
    t.is(err.stdout.toString(), 'faults: mode=loop\n');
    assertHealthy(t, v);
  });

  test(`${v}: efault -> bad syscall pointers give EFAULT, same as native`, (t) => {
    const file = guest(`faults-${v}`);
    const opts = { args: [file, 'efault'], input: 'some stdin bytes\n' };
    const native = summarize(runNative(file, opts));
    const kvm = summarize(runKvm(file, opts));
    t.deepEqual(kvm, native);
    const efaults = kvm.stdout.split('\n').filter((l) => l.endsWith(' EFAULT'));
    t.true(efaults.length >= 5, kvm.stdout);
    t.true(kvm.stdout.includes('text intact: yes'));
    t.true(kvm.stdout.includes('efault done\n'));
    assertHealthy(t, v);
  });

  test(`${v}: bomb with 64 MiB -> malloc returns NULL, exit 0`, (t) => {
    const vm = machine(v, 'bomb', { memory: 64 * 1024 * 1024 });
    const r = vm.run();
    t.is(r.status, 'exited');
    t.is(r.exitCode, 0);
    t.is(r.stdout.toString(), 'faults: mode=bomb\nbomb: got NULL\n');
    const m = /^malloc returned NULL after (\d+) MiB\n$/.exec(r.stderr.toString());
    t.truthy(m, r.stderr.toString());
    if (m) t.true(Number(m[1]) > 0 && Number(m[1]) < 64, `${m[1]} MiB`);
    assertHealthy(t, v);
  });

  test(`${v}: bomb with a cap below the memory limit stops at the cap`, (t) => {
    const file = guest(`faults-${v}`);
    const opts = { args: [file, 'bomb', '8'] };
    t.deepEqual(summarize(runKvm(file, opts)), summarize(runNative(file, opts)));
  });

  test(`${v}: abort -> signaled SIGABRT`, (t) => {
    const r = machine(v, 'abort').run();
    t.is(r.status, 'signaled');
    t.is(r.signal, 'SIGABRT');
    t.is(r.signalNumber, 6);
    t.is(r.exitCode, 134);
    t.is(r.stdout.toString(), 'faults: mode=abort\n');
    assertHealthy(t, v);
  });

  test(`${v}: raise(SIGTERM) -> signaled SIGTERM, same as native`, (t) => {
    const file = guest(`faults-${v}`);
    const opts = { args: [file, 'raise'] };
    const native = summarize(runNative(file, opts));
    const r = runKvm(file, opts);
    t.deepEqual(summarize(r), native);
    t.is(r.signal, 'SIGTERM');
    t.is(r.exitCode, 128 + 15);
    assertHealthy(t, v);
  });
}

test('run() with a per-run timeout overrides the machine timeout', (t) => {
  const vm = machine('glibc', 'loop', { timeout: 60_000 });
  const t0 = performance.now();
  const err = t.throws(() => vm.run({ timeout: 200 }), { instanceOf: TimeoutError });
  const elapsed = performance.now() - t0;
  t.is(err.timeoutMs, 200);
  t.true(elapsed >= 200 && elapsed < 3000, `elapsed ${elapsed.toFixed(0)} ms`);
});

test('run({ timeout: 0 }) disables the machine timeout', (t) => {
  // clock_random sleeps 10 ms, longer than the 1 ms machine timeout.
  const file = guest('clock_random-glibc');
  t.throws(() => Machine.fromFile(file, { timeout: 1 }).run(), { instanceOf: TimeoutError });
  const r = Machine.fromFile(file, { timeout: 1 }).run({ timeout: 0 });
  t.is(r.exitCode, 0, r.stdout.toString());
});

test('a second run() on a finished machine throws InvalidStateError', (t) => {
  const file = guest('hello-glibc');
  const vm = Machine.fromFile(file);
  t.is(vm.run().exitCode, 0);
  const err = t.throws(() => vm.run(), { instanceOf: InvalidStateError });
  t.is(err.code, 'INVALID_STATE');
  t.true(err instanceof KvmboxError);
});

test('a second run() on a faulted machine throws InvalidStateError', (t) => {
  const vm = machine('musl', 'null');
  t.throws(() => vm.run(), { instanceOf: GuestFaultError });
  t.throws(() => vm.run(), { instanceOf: InvalidStateError });
});

test('a second run() on a timed-out machine throws InvalidStateError', (t) => {
  const vm = machine('musl', 'loop', { timeout: 50 });
  t.throws(() => vm.run(), { instanceOf: TimeoutError });
  t.throws(() => vm.run(), { instanceOf: InvalidStateError });
});

test('many faulting machines in a row do not leak or break the host', (t) => {
  for (let i = 0; i < 30; i++) {
    const mode = ['null', 'ud2', 'div0', 'write_text', 'jump_high'][i % 5];
    const vm = machine(VARIANTS[i % 3], mode);
    t.throws(() => vm.run(), { instanceOf: GuestFaultError });
  }
  assertHealthy(t, 'glibc');
});

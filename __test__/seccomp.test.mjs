// `seccomp: true`: the guest runs only on its own vCPU thread under kvmbox's seccomp filter.
// Everything a guest does still works there (async calls, host calls, output, files, timeouts,
// faults, forks, pools); sync run/call refuse; the thread really is filtered.
import fs from 'node:fs';
import path from 'node:path';

import test from 'ava';

import { GUEST_DIR, GuestFaultError, guest, InvalidStateError, Machine, Pool, requireKvm, TimeoutError } from './helpers.mjs';

requireKvm(test);

/** A file of thread `t` of this process, or '' when the thread has ended meanwhile. */
function taskFile(t, name) {
  try {
    return fs.readFileSync(`/proc/self/task/${t}/${name}`, 'utf8');
  } catch (e) {
    if (e.code === 'ENOENT' || e.code === 'ESRCH') return '';
    throw e;
  }
}

/** Seccomp mode (0 none, 2 filter) of every thread named kvmbox-vcpu, and of the main thread. */
function seccompModes() {
  const mode = (t) => Number(/^Seccomp:\s+(\d)/m.exec(taskFile(t, 'status'))?.[1] ?? -1);
  // Threads come and go (pool refills, reapers): one that ended between the listing and the
  // read is left out.
  const vcpu = fs.readdirSync('/proc/self/task').filter((t) => taskFile(t, 'comm').trim() === 'kvmbox-vcpu');
  return { main: mode(String(process.pid)), vcpu: vcpu.map(mode) };
}

test('a seccomp machine runs asynchronously on a filtered thread, with everything a guest needs', async (t) => {
  const out = [];
  const vm = Machine.fromFile(guest('calls-glibc'), { seccomp: true, stdout: (c) => out.push(c.toString()) });
  t.throws(() => vm.run(), { instanceOf: InvalidStateError, message: /seccomp/ });
  t.is((await vm.runAsync()).status, 'paused');
  vm.onSyscall(0x10000, async (ctx) => Number(ctx.args[0]) * 10);
  t.is(await vm.callAsync('echo_plus_one', 4), 41, 'async host call');
  t.is(await vm.callAsync('say', 'hi from a filtered thread'), 0);
  t.true(out.join('').includes('hi from a filtered thread'));
  t.is(await vm.callAsync('alloc_cycle', 3, 1 << 20), 3, 'malloc of a megabyte (mmap)');
  const buf = Buffer.from('shout');
  t.is(await vm.callAsync('upcase', buf, buf.length), 5);
  t.is(buf.toString(), 'SHOUT');
  t.throws(() => vm.call('add', 1, 2), { instanceOf: InvalidStateError, message: /seccomp/ });
  const modes = seccompModes();
  t.is(modes.main, 0, 'the JS thread is not filtered');
  t.true(modes.vcpu.includes(2), `a kvmbox-vcpu thread runs under a seccomp filter (modes ${modes.vcpu})`);

  // Forks keep the setting; timeouts, faults and resets work on the filtered thread.
  const snap = vm.snapshot();
  const fork = snap.fork();
  t.throws(() => fork.call('add', 1, 2), { instanceOf: InvalidStateError });
  await t.throwsAsync(() => fork.callAsync('spin', -1, { timeout: 30 }), { instanceOf: TimeoutError });
  fork.reset();
  await t.throwsAsync(() => fork.callAsync('crash'), { instanceOf: GuestFaultError });
  fork.reset();
  t.is(await fork.callAsync('add', 40, 2), 42);
  const pool = new Pool(snap, { size: 2 });
  t.deepEqual(await Promise.all([1, 2, 3, 4].map((i) => pool.with((m) => m.callAsync('add', i, i)))), [2, 4, 6, 8]);
  pool.close();
  fork.close();
  vm.close();
});

test('a seccomp machine reads allowed files (and still not others)', async (t) => {
  const file = guest('files-glibc');
  const allowed = path.join(GUEST_DIR, 'calls.c');
  const vm = Machine.fromFile(file, { seccomp: true, args: [file, allowed, '/etc/hostname'], allowRead: [path.dirname(allowed)] });
  const r = await vm.runAsync();
  t.is(r.exitCode, 0, r.stdout.toString());
  t.true(r.stdout.toString().includes('A guest that initializes'));
  t.true(r.stdout.toString().includes('second open errno: ENOENT'));
});

test('debug() is refused by a seccomp machine, and a pending debug() refuses async runs and calls', async (t) => {
  const vm = Machine.fromFile(guest('calls-glibc'), { seccomp: true });
  t.teardown(() => vm.close());
  t.throws(() => vm.debug({ port: 0 }), { instanceOf: InvalidStateError, message: /seccomp/ });
  t.is((await vm.runAsync()).status, 'paused', 'the machine is still usable');
  const plain = Machine.fromFile(guest('calls-glibc'));
  t.teardown(() => plain.close());
  plain.debug({ port: 0 });
  await t.throwsAsync(() => plain.runAsync(), { instanceOf: InvalidStateError, message: /debug\(\)/ });
});

// Exhaustion (second part of the hardening issue): output floods hit the documented cap,
// descriptors run out with EMFILE, unbounded recursion faults, busy host-call loops time out,
// memory bombs get NULL — and after each the fork resets and serves correctly.
import test from 'ava';

import { GuestFaultError, guest, kvmbox, pausedMachine, requireKvm, TimeoutError } from './helpers.mjs';

requireKvm(test);

const bin = guest('exhaust-glibc');
const file = guest('hello-glibc');

function fork(t, opts = {}) {
  return pausedMachine(t, bin, { args: [bin, file], allowRead: [file], memory: 64 << 20, ...opts })
    .snapshot()
    .fork();
}

function resetsAndServes(t, m) {
  m.reset();
  t.is(m.state, 'paused');
  t.is(m.call('ok', 41), 42, 'the fork serves correctly after reset');
}

test('an output flood is capped at outputLimit and the fork resets', (t) => {
  const m = fork(t, { outputLimit: 1 << 20 });
  t.is(m.call('flood', 32), 32 << 20, 'writes succeed for the guest');
  const out = m.takeOutput();
  t.is(out.stdout.length, 1 << 20, 'only outputLimit bytes are kept');
  resetsAndServes(t, m);
});

test('descriptor exhaustion is EMFILE at the documented limit, then reset closes them', (t) => {
  const m = fork(t);
  const n = m.call('fds');
  t.true(n >= 1000 && n <= 1024, `opened ${n} before EMFILE`);
  resetsAndServes(t, m);
  t.is(m.call('fds'), n, 'the reset closed every descriptor opened after the snapshot');
});

test('unbounded recursion is a page fault on the stack guard', (t) => {
  const m = fork(t);
  const err = t.throws(() => m.call('recurse'), { instanceOf: GuestFaultError });
  t.is(err.vector, 14);
  resetsAndServes(t, m);
});

test('a busy host-call loop times out; the handler ran many times', (t) => {
  const m = fork(t);
  let calls = 0;
  m.onSyscall(0x10000, () => {
    calls++;
    return 0;
  });
  t.throws(() => m.call('hostcall_storm', { timeout: 300 }), { instanceOf: TimeoutError });
  t.true(calls > 100, `${calls} host calls`);
  resetsAndServes(t, m);
});

test('a memory bomb gets NULL from malloc within the memory limit', (t) => {
  const m = fork(t);
  const mib = m.call('bomb');
  t.true(mib > 10 && mib < 64, `${mib} MiB before NULL`);
  resetsAndServes(t, m);
  t.is(m.call('bomb'), mib, 'the same again after reset: the allocator was reset too');
  t.truthy(kvmbox.Machine);
});

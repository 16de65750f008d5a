// Soak and leaks (CI-sized; `npm run bench:soak` runs 10^5 resets and 10^4 machines): many
// reset+call cycles and many machines created and closed, sync and async, with faults and
// timeouts mixed in — every answer right, and RSS, descriptors and threads end flat.

import v8 from 'node:v8';
import nodeVm from 'node:vm';

import test from 'ava';

import { drift, resetCycles, resources, vmCycles } from '../benches/soak.mjs';
import { guest, Machine, requireKvm } from './helpers.mjs';

requireKvm(test);

const MiB = 1 << 20;
v8.setFlagsFromString('--expose-gc');
const gc = nodeVm.runInNewContext('gc');

function pausedSnapshot(file) {
  const vm = Machine.fromFile(file, { memory: 16 * MiB });
  if (vm.run().status !== 'paused') throw new Error('guest did not pause');
  return vm.snapshot();
}

/**
 * Lets exited vCPU threads, finalizers and the background teardown thread settle before a
 * resource reading: at least 250 ms, then until `done()` holds (at most 5 s more, for a busy
 * host where up to 64 VMs wait in the teardown queue).
 */
async function settle(done = () => true) {
  for (let i = 0; i < 5 || (i < 105 && !done()); i++) {
    gc();
    await new Promise((r) => setTimeout(r, 50));
  }
}

test.serial('20000 reset+call cycles on one fork (sync, async, faults, timeouts): right answers, flat resources', async (t) => {
  const r = await resetCycles(pausedSnapshot(guest('calls-glibc')), 20_000);
  t.deepEqual(r.wrong.slice(0, 5), []);
  const d = drift(r.samples);
  t.log(`${r.usPerCycle.toFixed(0)} µs per cycle; drift: RSS ${(d.rss / MiB).toFixed(1)} MiB, fds ${d.fds}, threads ${d.threads}`);
  t.true(d.rss < 16 * MiB, `RSS grew ${(d.rss / MiB).toFixed(1)} MiB after warm-up`);
  t.is(d.fds, 0, 'no descriptor left behind');
  t.true(d.threads <= 0, `threads grew by ${d.threads}`);
});

test.serial('2000 machines created, used and closed (ELF loads and forks; sync and async; faults, timeouts): flat resources', async (t) => {
  const file = guest('calls-glibc');
  await settle();
  const before = resources();
  const r = await vmCycles(file, pausedSnapshot(file), 2000);
  t.deepEqual(r.wrong.slice(0, 5), []);
  const d = drift(r.samples);
  await settle(() => resources().fds <= before.fds + 3);
  const after = resources();
  t.log(
    `${r.usPerCycle.toFixed(0)} µs per machine; drift: RSS ${(d.rss / MiB).toFixed(1)} MiB; threads ${before.threads} → ${after.threads}; fds ${before.fds} → ${after.fds}`,
  );
  t.true(d.rss < 16 * MiB, `RSS grew ${(d.rss / MiB).toFixed(1)} MiB after warm-up`);
  t.true(after.fds <= before.fds + 3, `descriptors ${before.fds} → ${after.fds} (the snapshot's memfd and blank VMs may stay)`);
  t.true(after.threads <= before.threads + 2, `threads ${before.threads} → ${after.threads}`);
});

test.serial('machines dropped without close() are collected with their VMs (no reference cycle through native callbacks)', async (t) => {
  const file = guest('calls-glibc');
  await settle();
  const before = resources();
  let output = 0;
  for (let i = 0; i < 200; i++) {
    // A callback and a handler that capture their own machine: the worst case for cycles.
    const m = Machine.fromFile(file, { memory: 16 * MiB, stdout: (c) => (output += c.length + (m ? 0 : 1)) });
    m.onSyscall(0x10000, () => (m ? 7 : 0));
    t.is(m.run().status, 'paused');
    t.is(m.call('echo_plus_one', 1), 8);
  }
  await settle(() => resources().fds <= before.fds + 3);
  const after = resources();
  t.log(`fds ${before.fds} → ${after.fds}, RSS ${(before.rss / MiB).toFixed(1)} → ${(after.rss / MiB).toFixed(1)} MiB`);
  t.true(after.fds <= before.fds + 3, `200 unclosed machines left ${after.fds - before.fds} descriptors open`);
});

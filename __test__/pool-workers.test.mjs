// Pool with worker threads: forks of one shared snapshot live in workers, calls are forwarded,
// failures come back as typed errors and the forks keep serving after their reset.
import path from 'node:path';

import test from 'ava';

import {
  GuestFaultError,
  InvalidArgumentError,
  InvalidStateError,
  Pool,
  pausedMachine,
  RemoteMachine,
  requireKvm,
  TEST_DIR,
  TimeoutError,
} from './helpers.mjs';

requireKvm(test);

function snapshot(t) {
  const vm = pausedMachine(t);
  for (let i = 0; i < 5; i++) vm.call('counter_next');
  return vm.snapshot();
}

test('forks in worker threads serve calls with fresh state each time', async (t) => {
  const pool = new Pool(snapshot(t), { size: 4, workers: 2 });
  await pool.ready;
  t.is(pool.size, 4);
  const results = await Promise.all(Array.from({ length: 40 }, () => pool.with((m) => m.callAsync('counter_next'))));
  t.deepEqual(results, Array(40).fill(6));
  t.true(await pool.with((m) => m instanceof RemoteMachine));
  const sums = await Promise.all(Array.from({ length: 20 }, (_, i) => pool.with((m) => m.callAsync('add', i, 1000))));
  t.deepEqual(
    sums,
    Array.from({ length: 20 }, (_, i) => i + 1000),
  );
  t.is(await pool.with((m) => m.callBigIntAsync('add', 1n << 60n, 1n)), (1n << 60n) + 1n);
  const buf = Buffer.from('make me loud');
  t.is(await pool.with((m) => m.callAsync('upcase', buf, buf.length)), buf.length);
  t.is(buf.toString(), 'MAKE ME LOUD', 'buffers come back from the worker');
  // Several calls in flight on one fork, each with its own buffer (they share the fork's
  // transfer arena, so they must not see each other's bytes), one larger than the arena.
  const words = ['alpha', 'bravo', 'x'.repeat(300_000), 'delta'];
  const bufs = words.map((w) => Buffer.from(w));
  const lens = await pool.with((m) => Promise.all(bufs.map((b) => m.callAsync('upcase', b, b.length))));
  t.deepEqual(
    lens,
    words.map((w) => w.length),
  );
  t.deepEqual(
    bufs.map((b) => b.toString()),
    words.map((w) => w.toUpperCase()),
  );
  pool.close();
});

test('a fault or timeout in a worker fork is a typed error, and the pool keeps serving', async (t) => {
  const pool = new Pool(snapshot(t), { size: 2, workers: 2 });
  const fault = await t.throwsAsync(() => pool.with((m) => m.callAsync('crash')), { instanceOf: GuestFaultError });
  t.is(fault.vector, 14);
  t.is(fault.address, 16n);
  await t.throwsAsync(() => pool.with((m) => m.callAsync('spin', -1, { timeout: 100 })), { instanceOf: TimeoutError });
  const after = await Promise.all(Array.from({ length: 10 }, () => pool.with((m) => m.callAsync('counter_next'))));
  t.deepEqual(after, Array(10).fill(6));
  pool.close();
  await t.throwsAsync(() => pool.with((m) => m.callAsync('add', 1, 2)), { instanceOf: InvalidStateError });
});

test('an error from a worker fork arrives with its class, its fields and the output before it', async (t) => {
  const pool = new Pool(snapshot(t), { size: 1, workers: 1 });
  t.teardown(() => pool.close());
  const err = await t.throwsAsync(
    () =>
      pool.with(async (m) => {
        await m.callAsync('say', 'said in a worker');
        return m.callAsync('crash');
      }),
    { instanceOf: GuestFaultError },
  );
  t.is(err.code, 'GUEST_FAULT');
  t.is(err.address, 16n);
  t.true(err.rip > 0n);
  t.is(err.stdout?.toString(), 'said in a worker\n');
});

test('a fork in a worker handles operations in the order they were made', async (t) => {
  const pool = new Pool(snapshot(t), { size: 1, workers: 1 });
  // The first call on a fork with an empty buffer (no arena yet).
  t.is(await pool.with((m) => m.callAsync('upcase', Buffer.alloc(0), 0)), 0);
  // Calls a user did not await still run before the reset that follows its use…
  await pool.with((m) => {
    void m.callAsync('counter_next');
    void m.callAsync('counter_next');
  });
  // …so the next user sees the snapshot's state, not theirs.
  t.is(await pool.with((m) => m.callAsync('counter_next')), 6);
  t.deepEqual(
    await pool
      .with((m) => Promise.all([m.callAsync('counter_next'), m.takeOutput(), m.callAsync('counter_next'), m.reset(), m.callAsync('counter_next')]))
      .then((r) => [r[0], r[2], r[4]]),
    [6, 7, 6],
  );
  pool.close();
});

test("workers: 'auto' starts one worker per CPU", async (t) => {
  const cpus = (await import('node:os')).availableParallelism();
  const pool = new Pool(snapshot(t), { workers: 'auto', size: 1 });
  await pool.ready;
  t.is(pool.size, cpus, 'at least one fork per worker');
  t.deepEqual(await Promise.all(Array.from({ length: cpus * 3 }, () => pool.with((m) => m.callAsync('counter_next')))), Array(cpus * 3).fill(6));
  pool.close();
  t.throws(() => new Pool(snapshot(t), { workers: 'many' }), { instanceOf: InvalidArgumentError });
});

test('workerSetup registers host-call handlers inside the workers', async (t) => {
  const pool = new Pool(snapshot(t), { size: 2, workers: 2, workerSetup: path.join(TEST_DIR, 'fixtures', 'pool-setup.cjs') });
  const r = await Promise.all([3, 4, 5].map((x) => pool.with((m) => m.callAsync('echo_plus_one', x))));
  t.deepEqual(r, [301, 401, 501]);
  pool.close();
});

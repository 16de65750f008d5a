// Concurrency (part of the hardening issue): many VMs at once — forks in worker threads and
// async calls on this thread — with random faults and timeouts mixed in. Every request gets
// its own correct answer (no cross-talk), failures stay typed, and everything finishes in
// bounded time (no deadlock).
import test from 'ava';

import { GuestFaultError, Pool, pausedMachine, requireKvm, TimeoutError } from './helpers.mjs';

requireKvm(test);

function snapshot(t) {
  return pausedMachine(t).snapshot();
}

/** A deterministic mix: mostly additions, some crashes, some infinite loops. */
function plan(n, seed) {
  let x = seed;
  const rnd = () => (x = (x * 1103515245 + 12345) >>> 0) % 100;
  return Array.from({ length: n }, (_, i) => {
    const r = rnd();
    return r < 10 ? { kind: 'crash' } : r < 15 ? { kind: 'loop' } : { kind: 'add', a: i, b: r };
  });
}

async function exercise(t, run, n) {
  const start = Date.now();
  const outcomes = await Promise.all(
    plan(n, 42).map(async (p) => {
      try {
        if (p.kind === 'add') return { p, v: await run((m) => m.callAsync('add', p.a, p.b)) };
        if (p.kind === 'crash') return { p, v: await run((m) => m.callAsync('crash')) };
        return { p, v: await run((m) => m.callAsync('spin', -1, { timeout: 50 })) };
      } catch (e) {
        return { p, e };
      }
    }),
  );
  for (const { p, v, e } of outcomes) {
    if (p.kind === 'add') t.is(v, p.a + p.b, `add(${p.a}, ${p.b})`);
    else if (p.kind === 'crash') t.true(e instanceof GuestFaultError, `crash gave ${e}`);
    else t.true(e instanceof TimeoutError, `loop gave ${e}`);
  }
  t.true(Date.now() - start < 60_000, 'bounded time');
}

test('a pool in 2 worker threads under a mixed load', async (t) => {
  const pool = new Pool(snapshot(t), { size: 6, workers: 2 });
  await exercise(t, (fn) => pool.with(fn), 300);
  pool.close();
});

test('an in-thread pool under the same load (each call on its own vCPU thread)', async (t) => {
  const pool = new Pool(snapshot(t), { size: 6 });
  await exercise(t, (fn) => pool.with(fn), 300);
  pool.close();
});

test('many independent machines running async calls at once', async (t) => {
  const snap = snapshot(t);
  const machines = Array.from({ length: 12 }, () => snap.fork());
  let next = 0;
  // Each request takes any idle machine; faulted machines are reset before reuse.
  const idle = [...machines];
  const waiters = [];
  const take = () => (idle.length ? Promise.resolve(idle.pop()) : new Promise((r) => waiters.push(r)));
  const give = (m) => {
    if (m.state === 'finished') m.reset();
    const w = waiters.shift();
    if (w) w(m);
    else idle.push(m);
  };
  await exercise(
    t,
    async (fn) => {
      next++;
      const m = await take();
      try {
        return await fn(m);
      } finally {
        give(m);
      }
    },
    200,
  );
  t.true(next >= 200);
  for (const m of machines) m.close();
});

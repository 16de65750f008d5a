// A guest with a pool of worker threads, paused: calls hand work to the pool (the workers run
// while the call waits), and snapshots, forks, resets and snapshot files keep every thread.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';

import { guest, Machine, requireKvm, Snapshot } from './helpers.mjs';

requireKvm(test);

const bin = guest('threadpool-glibc');
const SQUARES = (n) => (n * (n + 1) * (2 * n + 1)) / 6;
const OPTS = { memory: 256 << 20, timeout: 30_000 };

function paused(variant = 'glibc') {
  const vm = Machine.fromFile(guest(`threadpool-${variant}`), OPTS);
  const r = vm.run();
  if (r.status !== 'paused') throw new Error(`not paused: ${JSON.stringify(r)}`);
  return vm;
}

for (const variant of ['glibc', 'musl']) {
  test(`${variant}: a call waits on worker threads, which run meanwhile`, (t) => {
    const vm = paused(variant);
    t.is(vm.call('distinct_tids'), 1);
    t.is(vm.call('run_jobs', 10), SQUARES(10));
    t.is(vm.call('run_jobs', 64), SQUARES(64));
    t.is(vm.call('jobs_done'), 74);
    // Running on after the pause: the pool serves one more batch and the process exits.
    const r = vm.run();
    t.is(r.status, 'exited');
    t.is(r.exitCode, 0);
    t.regex(r.stdout.toString(), /run_jobs\(10\) = 385/);
    vm.close();
  });
}

test('forks of a snapshot each have the whole pool, isolated from each other', (t) => {
  const vm = paused();
  const snap = vm.snapshot();
  const a = snap.fork();
  const b = snap.fork();
  t.is(a.call('run_jobs', 20), SQUARES(20));
  t.is(a.call('run_jobs', 5), SQUARES(5));
  t.is(b.call('run_jobs', 7), SQUARES(7));
  t.is(a.call('calls_served'), 2);
  t.is(b.call('calls_served'), 1);
  t.is(a.call('jobs_done'), 25);
  t.is(b.call('jobs_done'), 7);
  t.is(b.call('distinct_tids'), 1);
  for (const m of [a, b, vm]) m.close();
  snap.close();
});

test('reset returns the pool to the snapshot: counters, queue and every thread', (t) => {
  const vm = paused();
  const snap = vm.snapshot();
  const f = snap.fork();
  for (let round = 0; round < 5; round++) {
    t.is(f.call('calls_served'), 0, `round ${round}`);
    t.is(f.call('run_jobs', 30), SQUARES(30));
    t.is(f.call('jobs_done'), 30);
    f.reset();
  }
  f.close();
  vm.close();
  snap.close();
});

test('a snapshot file keeps the threads: a loaded snapshot serves calls with its pool', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvmbox-pool-'));
  try {
    const vm = paused();
    t.is(vm.call('run_jobs', 3), SQUARES(3));
    const snap = vm.snapshot();
    const file = path.join(dir, 'pool.snap');
    snap.save(file);
    const loaded = Snapshot.load(file);
    const f = loaded.fork();
    t.is(f.call('calls_served'), 1);
    t.is(f.call('run_jobs', 12), SQUARES(12));
    t.is(f.call('jobs_done'), 15);
    t.is(f.call('distinct_tids'), 1);
    for (const m of [f, vm]) m.close();
    loaded.close();
    snap.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('natively the same program serves the batch and exits', (t) => {
  const r = spawnSync(bin, [], { encoding: 'utf8' });
  t.is(r.status, 0);
  t.regex(r.stdout, /pool of 4 ready\nrun_jobs\(10\) = 385/);
});

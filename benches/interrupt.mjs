#!/usr/bin/env node
// Interrupt latency (`npm run bench` runs it): how long from `vm.interrupt()` — or an
// AbortSignal's abort — until the async call it stops has rejected on the JS thread, for a
// guest that spins in user code, one sleeping in nanosleep for ever, and one waiting for an
// async host-call handler that never settles. Medians and p90 of REPS interrupts each, with the
// same run's bare async call round trip (callAsync of an empty function) as the baseline: an
// interrupt cannot come back sooner than a call does.

import path from 'node:path';

import { compileGuest, kvmbox, median, ROOT, requireKvm } from './common.mjs';

const { Machine } = kvmbox;
const REPS = 40;
const now = () => process.hrtime.bigint();
const us = (ns) => `${(ns / 1000).toFixed(0)} µs`;
const p90 = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.9)];

const pr = requireKvm();
const calls = compileGuest('interrupt_calls', path.join(ROOT, '__test__', 'guests', 'calls.c'));
const hostile = compileGuest('interrupt_hostile', path.join(ROOT, '__test__', 'guests', 'hostile.c'));

function pausedSnapshot(file) {
  const vm = Machine.fromFile(file);
  if (vm.run().status !== 'paused') throw new Error(`${file} did not pause`);
  return vm.snapshot();
}

/** ns from stop() to the rejection of the call `start(fork)` began, once the guest is in it. */
async function latency(snap, start, stop, setup = () => {}) {
  const samples = [];
  const fork = snap.fork();
  setup(fork);
  for (let i = 0; i < REPS; i++) {
    const op = start(fork);
    await new Promise((r) => setTimeout(r, 5)); // let the guest get going
    const t = now();
    stop(fork);
    try {
      await op;
      throw new Error('the call was not interrupted');
    } catch (e) {
      if (e.code !== 'INTERRUPTED') throw e;
    }
    samples.push(Number(now() - t));
    fork.reset();
  }
  fork.close();
  return samples;
}

const callsSnap = pausedSnapshot(calls);
const hostileSnap = pausedSnapshot(hostile);
const baseline = [];
{
  const f = callsSnap.fork();
  for (let i = 0; i < REPS; i++) {
    const t = now();
    await f.callAsync('empty');
    baseline.push(Number(now() - t));
  }
  f.close();
}
const rows = [
  [
    'spinning in user code, `interrupt()`',
    await latency(
      callsSnap,
      (f) => f.callAsync('spin', Number.MAX_SAFE_INTEGER),
      (f) => f.interrupt(),
    ),
  ],
  [
    'sleeping in `nanosleep` for ever, `interrupt()`',
    await latency(
      hostileSnap,
      (f) => f.callAsync('sleep_ms', -1),
      (f) => f.interrupt(),
    ),
  ],
  [
    'waiting for an async handler that never settles, `interrupt()`',
    await latency(
      hostileSnap,
      (f) => f.callAsync('hostcall', 1),
      (f) => f.interrupt(),
      (f) => f.onSyscall(0x10000, () => new Promise(() => {})),
    ),
  ],
];
{
  let ac;
  rows.push([
    'spinning, `AbortSignal` aborted',
    await latency(
      callsSnap,
      (f) => f.callAsync('spin', Number.MAX_SAFE_INTEGER, { signal: (ac = new AbortController()).signal }),
      () => ac.abort(),
    ),
  ]);
}

console.log(
  `Measured ${new Date().toISOString().slice(0, 10)} · backend \`${pr.backend}\` · Node ${process.version}. Medians (p90) of ${REPS} each; \`node benches/interrupt.mjs\`.\n`,
);
console.log('| interrupting an async call … | until it rejected | vs. an empty `callAsync` |');
console.log('|---|---:|---:|');
console.log(`| (baseline: an empty \`callAsync\` round trip) | ${us(median(baseline))} (${us(p90(baseline))}) | 1.0× |`);
for (const [name, s] of rows) console.log(`| ${name} | ${us(median(s))} (${us(p90(s))}) | ${(median(s) / median(baseline)).toFixed(1)}× |`);

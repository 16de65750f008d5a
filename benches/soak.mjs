#!/usr/bin/env node
// Soak: many reset+call cycles on one fork and many VM create/destroy cycles, sync and async,
// with guest faults and timeouts mixed in. Samples the process's RSS, open descriptors and
// threads as it goes and checks that every answer is right and the resources end flat.
//
//   npm run bench:soak                         # 10^5 reset+call cycles, 10^4 VMs
//   RESETS=20000 VMS=2000 node benches/soak.mjs
//
// The same loops run (shorter) in __test__/soak.test.mjs.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { compileGuest, kvmbox, ROOT, requireKvm } from './common.mjs';

const { Machine, GuestFaultError, TimeoutError } = kvmbox;
const MiB = 1 << 20;

/** The process's resources right now. */
export function resources() {
  const status = fs.readFileSync('/proc/self/status', 'utf8');
  return {
    rss: process.memoryUsage.rss(),
    fds: fs.readdirSync('/proc/self/fd').length,
    threads: Number(/^Threads:\s+(\d+)/m.exec(status)[1]),
  };
}

/** What one request of the loops does: the kind of call, fault or timeout for cycle `i`. */
function kindOf(i) {
  if (i % 1000 === 999) return 'fault';
  if (i % 5000 === 2500) return 'timeout';
  return i % 2 === 0 ? 'sync' : 'async';
}

/** Runs one request on `m`; returns an error string when the answer was wrong. */
async function request(m, i) {
  const kind = kindOf(i);
  try {
    if (kind === 'sync') {
      // A fresh fork has no allocations: only slot i % 64 holds a byte (i & 0xff).
      const v = m.call('alloc_cycle', i, 256);
      return v === (i & 0xff) ? undefined : `alloc_cycle(${i}) = ${v}`;
    }
    if (kind === 'async') {
      const v = await m.callAsync('add', i, 1);
      return v === i + 1 ? undefined : `add(${i}, 1) = ${v}`;
    }
    if (kind === 'fault') {
      await m.callAsync('crash');
    } else {
      m.call('spin', -1, { timeout: 5 });
    }
    return `${kind} did not throw`;
  } catch (e) {
    const want = kind === 'fault' ? GuestFaultError : kind === 'timeout' ? TimeoutError : undefined;
    return want && e instanceof want ? undefined : `cycle ${i} (${kind}): ${e}`;
  }
}

/**
 * `n` requests on one fork, reset after each. Returns samples of resources (`samples` of them,
 * the first after a warm-up of n/10 cycles) and the wrong answers.
 */
export async function resetCycles(snapshot, n, samples = 10) {
  const m = snapshot.fork();
  const wrong = [];
  const taken = [];
  const every = Math.max(1, Math.floor((n * 0.9) / samples));
  const start = performance.now();
  for (let i = 0; i < n; i++) {
    const err = await request(m, i);
    if (err) wrong.push(err);
    m.reset();
    if (i + 1 >= n / 10 && (i + 1 - Math.ceil(n / 10)) % every === 0) taken.push({ at: i + 1, ...resources() });
  }
  const ms = performance.now() - start;
  m.close();
  return { samples: taken, wrong, usPerCycle: (ms * 1000) / n };
}

/**
 * `n` machines created, used once and closed: every 4th one loads the ELF and runs it to its
 * pause, the rest are forks of `snapshot`; requests as in resetCycles (faults, timeouts, sync
 * and async calls).
 */
export async function vmCycles(file, snapshot, n, samples = 10) {
  const wrong = [];
  const taken = [];
  const every = Math.max(1, Math.floor((n * 0.9) / samples));
  const start = performance.now();
  for (let i = 0; i < n; i++) {
    let m;
    if (i % 4 === 0) {
      m = Machine.fromFile(file, { memory: 16 * MiB });
      const r = i % 8 === 0 ? m.run() : await m.runAsync();
      if (r.status !== 'paused') wrong.push(`run ${i}: ${r.status}`);
    } else {
      m = snapshot.fork();
    }
    const err = await request(m, i);
    if (err) wrong.push(err);
    m.close();
    if (i + 1 >= n / 10 && (i + 1 - Math.ceil(n / 10)) % every === 0) taken.push({ at: i + 1, ...resources() });
  }
  const ms = performance.now() - start;
  return { samples: taken, wrong, usPerCycle: (ms * 1000) / n };
}

/** Growth between the first and last sample (after warm-up). */
export function drift(samples) {
  const [a, b] = [samples[0], samples[samples.length - 1]];
  return { rss: b.rss - a.rss, fds: b.fds - a.fds, threads: b.threads - a.threads };
}

function table(title, r) {
  const d = drift(r.samples);
  return [
    `${title} — ${r.usPerCycle.toFixed(0)} µs per cycle, ${r.wrong.length} wrong answers; after warm-up RSS ${(d.rss / MiB).toFixed(1)} MiB, descriptors ${d.fds >= 0 ? '+' : ''}${d.fds}, threads ${d.threads >= 0 ? '+' : ''}${d.threads}:`,
    '',
    '| cycle | RSS | descriptors | threads |',
    '|---:|---:|---:|---:|',
    ...r.samples.map((s) => `| ${s.at} | ${(s.rss / MiB).toFixed(1)} MiB | ${s.fds} | ${s.threads} |`),
  ].join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  requireKvm();
  const RESETS = Number(process.env.RESETS ?? 100_000);
  const VMS = Number(process.env.VMS ?? 10_000);
  const file = compileGuest('soak-calls', path.join(ROOT, '__test__', 'guests', 'calls.c'));
  const vm = Machine.fromFile(file, { memory: 16 * MiB });
  if (vm.run().status !== 'paused') throw new Error('guest did not pause');
  const snap = vm.snapshot();
  const before = resources();
  const resets = await resetCycles(snap, RESETS);
  const vms = await vmCycles(file, snap, VMS);
  const md = [
    `Measured ${new Date().toISOString().slice(0, 10)}; \`npm run bench:soak\` (RESETS=${RESETS}, VMS=${VMS}). ` +
      `Requests alternate sync \`call\` and \`callAsync\`; every 1000th faults, every 5000th times out. ` +
      `Before: RSS ${(before.rss / MiB).toFixed(1)} MiB, ${before.fds} descriptors, ${before.threads} threads.`,
    '',
    table(`${RESETS} reset+call cycles on one fork`, resets),
    '',
    table(`${VMS} machines created, used and closed (1 in 4 loads the ELF, sync or async run; the rest are forks)`, vms),
  ].join('\n');
  console.log(`\n----- markdown for README (soak) -----\n${md}\n----- end markdown -----`);
  const bad = [...resets.wrong, ...vms.wrong];
  if (bad.length) {
    console.error('wrong answers:', bad.slice(0, 10));
    process.exit(1);
  }
}

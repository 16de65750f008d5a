#!/usr/bin/env node
// Native speed: the same static binary natively (spawnSync) and in kvmbox, with and without
// huge pages, in one run. Medians of REPS runs; each workload times itself inside the program
// (CLOCK_MONOTONIC), so process and VM start-up are not counted.
//   sha256 64 MiB   CPU-bound
//   stream 128 MiB  STREAM copy/scale/add/triad (best of 10 passes), three 128 MiB arrays
//   touch 256 MiB   first touch of fresh memory
import { spawnSync } from 'node:child_process';
import os from 'node:os';

import { compileGuest, kvmbox, median, requireKvm } from './common.mjs';

const { Machine } = kvmbox;
const REPS = 7;

const pr = requireKvm();
const bin = compileGuest('native_speed');

const parse = (out) =>
  Object.fromEntries(
    out
      .trim()
      .split('\n')
      .map((l) => l.split(' '))
      .map(([k, ms, ...rest]) => [k, { ms: Number(ms), rest }]),
  );
function native(args) {
  const r = spawnSync(bin, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`native ${args}: ${r.stderr}`);
  return parse(r.stdout);
}
function kvm(args, hugepages) {
  const vm = Machine.fromFile(bin, { args: [bin, ...args], memory: 1 << 30, hugepages, timeout: 120_000 });
  const r = vm.run();
  if (r.status !== 'exited' || r.exitCode !== 0) throw new Error(`kvmbox ${args}: ${r.status} ${r.stderr}`);
  return parse(r.stdout.toString());
}

const workloads = [
  ['sha256', '64'],
  ['stream', '128'],
  ['touch', '256'],
];
const sides = { native: (a) => native(a), kvmbox: (a) => kvm(a, false), 'kvmbox hugepages': (a) => kvm(a, true) };
const results = {}; // metric -> side -> [ms]
for (const args of workloads) {
  for (const run of Object.values(sides)) run(args); // warm-up (THP compaction, caches)
  for (let i = 0; i < REPS; i++) {
    for (const [side, run] of Object.entries(sides)) {
      const out = run(args);
      for (const [metric, { ms, rest }] of Object.entries(out)) {
        if (metric === 'check') continue;
        ((results[metric] ??= {})[side] ??= []).push(ms);
        if (metric === 'sha256') (results.sha256_digest ??= new Set()).add(rest[0]);
      }
    }
  }
}
if (results.sha256_digest.size !== 1) throw new Error('SHA-256 digests differ between runs');
delete results.sha256_digest;

const rows = Object.entries(results).map(([metric, bySide]) => {
  const n = median(bySide.native);
  const k = median(bySide.kvmbox);
  const h = median(bySide['kvmbox hugepages']);
  return `| ${metric} | ${n.toFixed(2)} ms | ${k.toFixed(2)} ms | ${h.toFixed(2)} ms | ${(n / k).toFixed(3)}× | ${(n / h).toFixed(3)}× |`;
});
const md = [
  `Measured ${new Date().toISOString().slice(0, 10)} · backend \`${pr.backend}\` · ${os.cpus().length} cores · medians of ${REPS}; \`node benches/native.mjs\`. Speed = native time / kvmbox time (1.0 = native speed, higher is faster).`,
  '',
  '| workload | native | kvmbox | kvmbox + hugepages | speed | speed with hugepages |',
  '|---|---:|---:|---:|---:|---:|',
  ...rows,
].join('\n');
console.log(`\n----- markdown for README (native speed) -----\n${md}\n----- end markdown -----`);

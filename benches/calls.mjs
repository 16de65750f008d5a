#!/usr/bin/env node
// kvmbox call benchmark (`npm run bench` runs it after benches/run.mjs).
//
// In one run, medians over interleaved samples:
//   call floor      measureCallFloor(n): a raw VM whose only code is `ret`; set rip/rsp, run,
//                   take the call-return trampoline's exit. No kvmbox logic at all.
//   vm.call         vm.call('empty') from TypeScript, sync, and vm.callAsync('empty').
//   host call       a guest loop of N kvmbox_hostcall()s answered by a TypeScript handler,
//                   per host call, against the raw syscall floor (measureSyscallFloor) and an
//                   emulated getpid in the same guest.
//   peers           worker_threads postMessage round trip, a persistent child process pipe
//                   round trip, and isolated-vm applySync (when it is installed).

import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import os from 'node:os';
import { Worker } from 'node:worker_threads';

import { compileGuest, kvmbox, median, requireKvm } from './common.mjs';

const require = createRequire(import.meta.url);
const { Machine, measureCallFloor, measureSyscallFloor } = kvmbox;

const REPS = 15;
const N = 2000;
const now = () => process.hrtime.bigint();
const fmt = (ns) => (ns >= 1000 ? `${(ns / 1000).toFixed(2)} µs` : `${ns.toFixed(0)} ns`);

const pr = requireKvm();
const guest = compileGuest('calls_bench');

const vm = Machine.fromFile(guest);
if (vm.run().status !== 'paused') throw new Error('calls_bench did not pause');
vm.onSyscall(0x10000, (c) => c.args[0]);
const avm = Machine.fromFile(guest);
// The same on a machine whose vCPU thread runs under kvmbox's seccomp filter.
const svm = Machine.fromFile(guest, { seccomp: true });
await svm.runAsync();
await avm.runAsync();

/** ns per iteration of `f` over `n` iterations. */
function perOp(n, f) {
  const t = now();
  for (let i = 0; i < n; i++) f(i);
  return Number(now() - t) / n;
}
async function perOpAsync(n, f) {
  const t = now();
  for (let i = 0; i < n; i++) await f(i);
  return Number(now() - t) / n;
}

// Peers.
const worker = new Worker('const { parentPort } = require("node:worker_threads"); parentPort.on("message", (m) => parentPort.postMessage(m))', { eval: true });
const workerRoundTrip = (n) =>
  new Promise((resolve) => {
    let i = 0;
    const t = now();
    worker.on('message', function onMsg() {
      if (++i === n) {
        worker.off('message', onMsg);
        resolve(Number(now() - t) / n);
      } else worker.postMessage(i);
    });
    worker.postMessage(0);
  });
const child = spawn(process.execPath, ['-e', 'process.stdin.on("data", (d) => process.stdout.write(d))'], { stdio: ['pipe', 'pipe', 'inherit'] });
const childRoundTrip = (n) =>
  new Promise((resolve) => {
    let i = 0;
    const t = now();
    const onData = () => {
      if (++i === n) {
        child.stdout.off('data', onData);
        resolve(Number(now() - t) / n);
      } else child.stdin.write('x');
    };
    child.stdout.on('data', onData);
    child.stdin.write('x');
  });
let ivmApply = null;
try {
  const ivm = require('isolated-vm');
  const isolate = new ivm.Isolate({ memoryLimit: 32 });
  const ctx = isolate.createContextSync();
  const fn = ctx.evalSync('(function empty() { return 0 })', { reference: true });
  ivmApply = (n) => perOp(n, () => fn.applySync(undefined, []));
} catch (e) {
  console.log(`isolated-vm not available (${e.message.split('\n')[0]}); skipping it`);
}

// Warm up everything once.
measureCallFloor(200);
measureSyscallFloor(200);
perOp(200, () => vm.call('empty'));
vm.call('hostcall_loop', 100);
vm.call('getpid_loop', 100);
await perOpAsync(50, () => avm.callAsync('empty'));
await perOpAsync(50, () => svm.callAsync('empty'));
await workerRoundTrip(200);
await childRoundTrip(200);
ivmApply?.(1000);

const s = {
  callFloor: [],
  call: [],
  callAsync: [],
  callAsyncSeccomp: [],
  getpidAsync: [],
  getpidSeccomp: [],
  syscallFloor: [],
  hostcall: [],
  getpid: [],
  worker: [],
  child: [],
  ivm: [],
};
for (let r = 0; r < REPS; r++) {
  s.callFloor.push(measureCallFloor(N));
  s.call.push(perOp(N, () => vm.call('empty')));
  s.callAsync.push(await perOpAsync(N / 4, () => avm.callAsync('empty')));
  s.callAsyncSeccomp.push(await perOpAsync(N / 4, () => svm.callAsync('empty')));
  // Emulated syscalls on the vCPU thread, with and without the filter (per getpid).
  for (const [key, m] of [
    ['getpidAsync', avm],
    ['getpidSeccomp', svm],
  ]) {
    const t0 = now();
    await m.callAsync('getpid_loop', N);
    s[key].push(Number(now() - t0) / N);
  }
  s.syscallFloor.push(measureSyscallFloor(N));
  // Per host call: the loop's time minus one empty call, over N.
  const t = now();
  if (vm.call('hostcall_loop', N) !== ((N - 1) * N) / 2) throw new Error('hostcall_loop: wrong result');
  s.hostcall.push((Number(now() - t) - median(s.call)) / N);
  const t2 = now();
  vm.call('getpid_loop', N);
  s.getpid.push((Number(now() - t2) - median(s.call)) / N);
  s.worker.push(await workerRoundTrip(N));
  s.child.push(await childRoundTrip(N / 4));
  if (ivmApply) s.ivm.push(ivmApply(N * 5));
}
worker.terminate();
child.kill();

const m = Object.fromEntries(Object.entries(s).map(([k, v]) => [k, v.length ? median(v) : null]));
const x = (v, ref) => `${(v / ref).toFixed(2)}×`;
const rows = [
  ['raw call floor (raw VM: set regs, run, `ret` to an exiting trampoline)', fmt(m.callFloor), '1.00× call floor'],
  ["`vm.call('empty')`, sync", fmt(m.call), `${x(m.call, m.callFloor)} call floor`],
  ["`await vm.callAsync('empty')`", fmt(m.callAsync), `${x(m.callAsync, m.callFloor)} call floor`],
  ["`await vm.callAsync('empty')` on a `seccomp: true` machine", fmt(m.callAsyncSeccomp), `${x(m.callAsyncSeccomp, m.callAsync)} of callAsync`],
  [
    'emulated `getpid` inside `callAsync` (per syscall), without → with `seccomp`',
    `${fmt(m.getpidAsync)} → ${fmt(m.getpidSeccomp)}`,
    `${x(m.getpidSeccomp, m.getpidAsync)}`,
  ],
  ['raw syscall floor (raw VM: `syscall`, resumed with no dispatch)', fmt(m.syscallFloor), '1.00× syscall floor'],
  [
    'guest → TypeScript host call round trip (`vm.onSyscall` handler)',
    fmt(m.hostcall),
    `${x(m.hostcall, m.syscallFloor)} syscall floor (+${fmt(m.hostcall - m.syscallFloor)})`,
  ],
  ['guest → emulated `getpid` round trip (for comparison)', fmt(m.getpid), `${x(m.getpid, m.syscallFloor)} syscall floor`],
  ['peer: `worker_threads` postMessage round trip', fmt(m.worker), `${x(m.worker, m.call)} of vm.call`],
  ['peer: persistent child process pipe round trip', fmt(m.child), `${x(m.child, m.call)} of vm.call`],
  ...(m.ivm !== null ? [['peer: isolated-vm `applySync` of an empty function', fmt(m.ivm), `${x(m.ivm, m.call)} of vm.call`]] : []),
];
const md = [
  `Measured ${new Date().toISOString().slice(0, 10)} · backend \`${pr.backend}\` · Node ${process.version} · ${os.cpus().length} cores. Medians of ${REPS} samples (× ${N} operations, async and pipe × ${N / 4}); \`npm run bench\`.`,
  '',
  '| Operation | median | ratio |',
  '|---|---:|---:|',
  ...rows.map((r) => `| ${r.join(' | ')} |`),
].join('\n');
console.log(`\n----- markdown for README (calls) -----\n${md}\n----- end markdown -----`);

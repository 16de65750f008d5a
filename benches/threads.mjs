#!/usr/bin/env node
// Threads in kvmbox against the same static binary natively, in one run: thread create+join,
// a futex ping-pong between two threads, a contended mutex counter (each program times itself
// with CLOCK_MONOTONIC, so start-up is not counted), and a Go hello world end to end
// (Machine.fromFile().run() against spawnSync). Native runs twice: on every CPU, and pinned to
// one (taskset -c 0), which is what kvmbox's one vCPU is. Medians of REPS runs.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { BUILD, compileGuest, kvmbox, median, ROOT, requireKvm } from './common.mjs';

const { Machine } = kvmbox;
const REPS = 7;
const pr = requireKvm();
const bin = (() => {
  const out = path.join(BUILD, 'threads');
  const src = path.join(ROOT, 'benches', 'threads.c');
  if (!fs.existsSync(out) || fs.statSync(out).mtimeMs < fs.statSync(src).mtimeMs) {
    fs.mkdirSync(BUILD, { recursive: true });
    const r = spawnSync('gcc', ['-O2', '-static', '-pthread', '-o', out, src], { stdio: 'inherit' });
    if (r.status !== 0) process.exit(1);
  }
  return out;
})();
void compileGuest;

const WORKLOADS = [
  ['create', 2000],
  ['pingpong', 20000],
  ['mutex', 2_000_000],
];
const parse = (out) => {
  const [name, ms, ns] = out.trim().split(' ');
  return { name, ms: Number(ms), ns: Number(ns) };
};
function native(args, pinned) {
  const r = pinned ? spawnSync('taskset', ['-c', '0', bin, ...args], { encoding: 'utf8' }) : spawnSync(bin, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`native ${args}: ${r.status} ${r.stderr}`);
  return parse(r.stdout);
}
function kvm(args) {
  const vm = Machine.fromFile(bin, { args: [bin, ...args], memory: 1 << 30, timeout: 120_000 });
  const r = vm.run();
  if (r.status !== 'exited' || r.exitCode !== 0) throw new Error(`kvmbox ${args}: ${r.status} ${r.exitCode} ${r.stderr}`);
  return parse(r.stdout.toString());
}

const rows = [];
for (const [name, n] of WORKLOADS) {
  const args = [name, String(n)];
  const sides = { native: () => native(args, false), 'native, 1 CPU': () => native(args, true), kvmbox: () => kvm(args) };
  for (const run of Object.values(sides)) run(); // warm-up
  const ns = {};
  for (let i = 0; i < REPS; i++) for (const [side, run] of Object.entries(sides)) (ns[side] ??= []).push(run().ns);
  const m = Object.fromEntries(Object.entries(ns).map(([k, v]) => [k, median(v)]));
  const label = { create: 'thread create + join', pingpong: 'futex ping-pong (one round trip)', mutex: 'contended mutex (4 threads, per increment)' }[name];
  rows.push(
    `| ${label} | ${m.native.toFixed(0)} ns | ${m['native, 1 CPU'].toFixed(0)} ns | ${m.kvmbox.toFixed(0)} ns | ${(m.kvmbox / m['native, 1 CPU']).toFixed(2)}× |`,
  );
}

// Go hello world, end to end, when the Go toolchain is there.
const goSrc = path.join(ROOT, 'benches', 'go_hello.go');
const goBin = path.join(BUILD, 'go_hello');
let goRow = null;
if (spawnSync('go', ['version']).status === 0) {
  if (!fs.existsSync(goBin) || fs.statSync(goBin).mtimeMs < fs.statSync(goSrc).mtimeMs) {
    const env = { ...process.env, CGO_ENABLED: '0', GO111MODULE: 'off', GOCACHE: path.join(BUILD, 'gocache') };
    const r = spawnSync('go', ['build', '-o', goBin, goSrc], { stdio: 'inherit', env });
    if (r.status !== 0) process.exit(1);
  }
  const t = (f) => {
    const s = process.hrtime.bigint();
    f();
    return Number(process.hrtime.bigint() - s) / 1e6;
  };
  const spawnMs = [];
  const kvmMs = [];
  for (let i = 0; i < REPS + 1; i++) {
    const a = t(() => {
      if (spawnSync(goBin, [], { encoding: 'utf8' }).stdout !== 'hello from go\n') throw new Error('native go hello');
    });
    const b = t(() => {
      const r = Machine.fromFile(goBin, { memory: 1024 << 20, timeout: 60_000 }).run();
      if (r.stdout.toString() !== 'hello from go\n') throw new Error(`kvmbox go hello: ${r.status} ${r.stderr}`);
    });
    if (i > 0) {
      spawnMs.push(a);
      kvmMs.push(b);
    }
  }
  goRow = `| Go hello world, end to end (memory 1 GiB) | spawnSync ${median(spawnMs).toFixed(2)} ms | | kvmbox ${median(kvmMs).toFixed(2)} ms | ${(median(kvmMs) / median(spawnMs)).toFixed(2)}× |`;
}

const md = [
  `Measured ${new Date().toISOString().slice(0, 10)} · backend \`${pr.backend}\` · ${os.cpus().length} cores · medians of ${REPS}; \`node benches/threads.mjs\`. Ratio = kvmbox / native on one CPU (lower is better).`,
  '',
  '| workload | native | native, 1 CPU | kvmbox | ratio |',
  '|---|---:|---:|---:|---:|',
  ...rows,
  ...(goRow ? [goRow] : []),
].join('\n');
console.log(`\n----- markdown for README (threads) -----\n${md}\n----- end markdown -----`);

#!/usr/bin/env node
// Page-right changes in kvmbox against the same static binary natively, in one run: an
// mprotect round trip (rights taken away, then given back), a JIT's W^X flip (RW → patch →
// RX → call) and mmap + touch + munmap. Each program times its own loop; medians of REPS runs.
// Also reports how many ring-0 commit-stub runs (Machine.lastStats.pageTableCommits) and VM
// exits one iteration costs in kvmbox.
import { spawnSync } from 'node:child_process';

import { compileGuest, kvmbox, median, requireKvm } from './common.mjs';

const { Machine } = kvmbox;
const REPS = 7;
const pr = requireKvm();
const bin = compileGuest('pagerights');

const WORKLOADS = [
  ['roundtrip', 'mprotect NONE → RW round trip', 2000],
  ['jitflip', 'JIT W^X flip (RW, patch, RX, call)', 2000],
  ['mapunmap', 'mmap + touch + munmap of a page', 2000],
];
const parse = (out) => Number(out.trim().split(' ')[2]);
function native(args) {
  const r = spawnSync(bin, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`native ${args}: ${r.status} ${r.stderr}`);
  return parse(r.stdout);
}
let stats = null;
function kvm(args) {
  const vm = Machine.fromFile(bin, { args: [bin, ...args], timeout: 120_000 });
  const r = vm.run();
  stats = vm.lastStats;
  vm.close();
  if (r.status !== 'exited' || r.exitCode !== 0) throw new Error(`kvmbox ${args}: ${r.status} ${r.exitCode} ${r.stderr}`);
  return parse(r.stdout.toString());
}

console.log(`page-right changes, backend ${pr.backend}, medians of ${REPS} runs (per iteration)\n`);
console.log('| operation | native | kvmbox | ratio | stub runs / iteration | VM exits / iteration |');
console.log('|---|---|---|---|---|---|');
for (const [name, label, n] of WORKLOADS) {
  const args = [name, String(n)];
  native(args);
  kvm(args); // warm-up
  const ns = { native: [], kvmbox: [] };
  for (let i = 0; i < REPS; i++) {
    ns.native.push(native(args));
    ns.kvmbox.push(kvm(args));
  }
  const [a, b] = [median(ns.native), median(ns.kvmbox)];
  const per = (x) => (x / n).toFixed(2);
  console.log(
    `| ${label} | ${a.toFixed(0)} ns | ${(b / 1000).toFixed(1)} µs | ${(b / a).toFixed(0)}× | ${per(stats.pageTableCommits)} | ${per(stats.exits)} |`,
  );
}

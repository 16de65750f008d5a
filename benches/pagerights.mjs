#!/usr/bin/env node
// Page-right changes in kvmbox against the same static binary natively, in one run: an
// mprotect round trip (rights taken away, then given back), a JIT's W^X flip (RW → patch →
// RX → call) and mmap + touch + munmap. Each side times its own loop (natively the program;
// in kvmbox a call into the paused program), medians of REPS runs. Also reports how many VM
// exits and ring-0 commit-stub runs (Machine.lastStats) one iteration costs in kvmbox.
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
const vm = Machine.fromFile(bin, { args: [bin, 'serve', '0'], timeout: 120_000 });
if (vm.run().status !== 'paused') throw new Error('the bench guest did not pause');
let stats = null;
function kvm(mode, n) {
  const ns = vm.call('bench', mode, n);
  stats = vm.lastStats;
  if (ns < 0) throw new Error(`kvmbox bench(${mode}, ${n}) failed`);
  return ns;
}

console.log(`page-right changes, backend ${pr.backend}, medians of ${REPS} runs (per iteration)\n`);
console.log('| operation | native | kvmbox | ratio | commit-stub runs / iteration | VM exits / iteration |');
console.log('|---|---|---|---|---|---|');
for (const [mode, [name, label, n]] of WORKLOADS.entries()) {
  const args = [name, String(n)];
  native(args);
  kvm(mode, n); // warm-up
  const ns = { native: [], kvmbox: [] };
  for (let i = 0; i < REPS; i++) {
    ns.native.push(native(args));
    ns.kvmbox.push(kvm(mode, n));
  }
  const [a, b] = [median(ns.native), median(ns.kvmbox)];
  const per = (x) => (x / n).toFixed(2);
  console.log(
    `| ${label} | ${a.toFixed(0)} ns | ${(b / 1000).toFixed(1)} µs | ${(b / a).toFixed(0)}× | ${per(stats.pageTableCommits)} | ${per(stats.exits)} |`,
  );
}

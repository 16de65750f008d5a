#!/usr/bin/env node
// Clock reads in kvmbox against the same static binary natively, in one run: a loop of
// clock_gettime(CLOCK_MONOTONIC) through libc (the vDSO in both), timed by the program itself,
// for glibc and musl builds; and for scale, the same loop through the raw syscall in kvmbox
// (what every clock read cost before the vDSO: one VM exit each). Medians of REPS runs.
import { spawnSync } from 'node:child_process';
import path from 'node:path';

import { compileGuest, kvmbox, median, ROOT, requireKvm } from './common.mjs';

const { Machine } = kvmbox;
const REPS = 7;
const N = 1_000_000;
const pr = requireKvm();
const src = path.join(ROOT, '__test__', 'guests', 'clocks.c');
const builds = [
  ['glibc', compileGuest('clocks', src)],
  ['musl', compileGuest('clocks-musl', src, 'musl-gcc')],
];

const parse = (out) => Number(out.trim().split(' ')[0]);
function native(bin, args) {
  const r = spawnSync(bin, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`native ${args}: ${r.status} ${r.stderr}`);
  return parse(r.stdout);
}
function kvm(bin, args, trace) {
  const vm = Machine.fromFile(bin, { args: [bin, ...args], timeout: 120_000, trace });
  const r = vm.run();
  if (r.status !== 'exited' || r.exitCode !== 0) throw new Error(`kvmbox ${args}: ${r.status}`);
  return parse(r.stdout.toString());
}
/** clock_gettime syscalls (VM exits) a run of `args` makes, counted by a trace (untimed). */
function clockExits(bin, args) {
  let n = 0;
  kvm(bin, args, (e) => {
    if (e.name === 'clock_gettime') n++;
  });
  return n;
}

console.log(`clock reads, backend ${pr.backend}, medians of ${REPS} runs\n`);
console.log('| clock_gettime(CLOCK_MONOTONIC) | native | kvmbox | ratio | clock_gettime exits in kvmbox |');
console.log('|---|---|---|---|---|');
for (const [name, bin] of builds) {
  const args = ['loop', String(N)];
  const ns = { native: [], kvmbox: [] };
  for (let i = 0; i < REPS; i++) {
    ns.native.push(native(bin, args));
    ns.kvmbox.push(kvm(bin, args));
  }
  const [a, b] = [median(ns.native), median(ns.kvmbox)];
  console.log(`| ${name}, vDSO (${N} calls) | ${a} ns | ${b} ns | ${(b / a).toFixed(2)}× | ${clockExits(bin, args)} |`);
}
const raw = [];
for (let i = 0; i < REPS; i++) raw.push(kvm(builds[0][1], ['rawloop', '20000']));
console.log(`| raw syscall, no vDSO (20000 calls) | — | ${median(raw)} ns | — | ${clockExits(builds[0][1], ['rawloop', '20000'])} |`);

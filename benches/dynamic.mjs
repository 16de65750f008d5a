#!/usr/bin/env node
// Dynamic programs in kvmbox, in one run: end to end (Machine.fromFile().run(), ld.so and the
// libraries included) against spawnSync of the same program — python3 -c pass, /bin/ls -l of a
// directory, /bin/true — and the host memory of forks of a paused python3 (a snapshot taken
// after `import json, hashlib`; each fork resumes, works and exits). Medians of REPS runs.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import { kvmbox, median, requireKvm } from './common.mjs';

const { Machine, systemLibraries } = kvmbox;
const REPS = 15;
const pr = requireKvm();
const MiB = 1024 * 1024;
const PYTHON = '/usr/bin/python3';
const stdlib = spawnSync(PYTHON, ['-c', 'import sysconfig; print(sysconfig.get_path("stdlib"))'], { encoding: 'utf8' }).stdout.trim();
const dir = path.dirname(new URL(import.meta.url).pathname);
const libs = systemLibraries();
const names = ['/etc/passwd', '/etc/group', '/etc/nsswitch.conf'].filter((p) => fs.existsSync(p));

const CASES = [
  ['python3 -c pass', PYTHON, ['-c', 'pass'], { allowRead: [...libs, stdlib], memory: 512 * MiB }],
  ['/bin/ls -l (this directory)', '/bin/ls', ['-l', dir], { allowRead: [...libs, dir, ...names], env: ['TZ=UTC', 'LANG=C'] }],
  ['/bin/true', '/bin/true', [], { allowRead: libs }],
];

const ms = (f) => {
  const s = process.hrtime.bigint();
  f();
  return Number(process.hrtime.bigint() - s) / 1e6;
};

console.log(`dynamic programs end to end, backend ${pr.backend}, medians of ${REPS} runs\n`);
console.log('| program | spawnSync | kvmbox | ratio | syscalls (kvmbox) |');
console.log('|---|---|---|---|---|');
for (const [label, file, args, opts] of CASES) {
  const native = () => {
    const r = spawnSync(file, args, { env: Object.fromEntries((opts.env ?? []).map((e) => e.split('='))) });
    if (r.status !== 0) throw new Error(`${label} natively: ${r.status}`);
  };
  const kvm = (extra = {}) => {
    const vm = Machine.fromFile(file, { args: [file, ...args], ...opts, ...extra });
    const r = vm.run();
    vm.close();
    if (r.exitCode !== 0) throw new Error(`${label} in kvmbox: ${r.status} ${r.exitCode} ${r.stderr}`);
  };
  native();
  // An untimed run counts the syscalls (each one VM exit).
  let syscalls = 0;
  kvm({ trace: () => void syscalls++ });
  const a = [];
  const b = [];
  for (let i = 0; i < REPS; i++) {
    a.push(ms(native));
    b.push(ms(kvm));
  }
  const [na, kb] = [median(a), median(b)];
  console.log(`| ${label} | ${na.toFixed(1)} ms | ${kb.toFixed(1)} ms | ${(kb / na).toFixed(2)}× | ${syscalls} |`);
}

// Forks of a paused python3: it pauses itself (ctypes → syscall(KVMBOX_SYS_PAUSE)).
const script = [
  'import ctypes, json, hashlib',
  'ctypes.CDLL(None).syscall(0x100000)',
  'print(json.dumps({"h": hashlib.sha256(b"x" * 100000).hexdigest()}))',
].join('\n');
const vm = Machine.fromFile(PYTHON, { args: [PYTHON, '-c', script], allowRead: [...libs, stdlib], memory: 512 * MiB });
if (vm.run().status !== 'paused') throw new Error('python3 did not pause');
const snap = vm.snapshot();
const FORKS = 10;
const forks = [];
for (let i = 0; i < FORKS; i++) {
  const f = snap.fork();
  const r = f.run();
  if (r.exitCode !== 0) throw new Error(`fork ${i}: ${r.status} ${r.exitCode}`);
  forks.push(f);
}
const priv = median(forks.map((f) => f.memoryUsage().privateBytes / MiB));
const shared = forks[0].memoryUsage().sharedBytes / MiB;
console.log(
  `\nforks of a paused python3 (after import json, hashlib; each resumed, hashed 100 KB and exited): ${priv.toFixed(2)} MiB private per fork (median of ${FORKS}), ${shared.toFixed(1)} MiB shared snapshot image`,
);
for (const f of forks) f.close();
snap.close();
vm.close();

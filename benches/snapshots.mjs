#!/usr/bin/env node
// kvmbox snapshot benchmark: `node benches/snapshots.mjs` (after `npm run build`).
//
// In one run (~8 s), medians and p99 over individual samples (plain hrtime around each one):
//   1. fork        snap.fork() of a paused calls_bench guest with the blank-VM pool warm, and the
//                  first vm.call('empty') after it (the new VM's shadow MMU / TLB warm-up), then
//                  a second call for reference; also forks with the pool empty (VM created inline)
//                  and with the pool refilling concurrently; m.close().
//   2. reset       m.reset() after call('touch_pages', n, i) for n = 1, 16, 64, 1024 dirty pages
//                  (one fork per n, samples interleaved).
//   3. fresh state + one call: reset + call('touch_pages', 64, i) against peers doing the same
//                  job in the same run, in interleaved blocks (see there for why): spawnSync of a static
//                  native program that touches 64 pages (benches/fresh_native.c),
//                  vm.createContext() + a script in it (node:vm), new WebAssembly.Instance of a
//                  module with 64 MiB of memory + a call writing 64 pages; and pool.with().
//   4. memory      benches/bigmem.c fills 1 GiB at initialization, pauses; snapshot; 32 forks
//                  each handle one request. Per-fork cost from memoryUsage().privateBytes and from
//                  /proc/self/smaps_rollup (before the forks vs after all 32 handled a request).
//
// Guests are compiled into benches/build/ when stale. Prints a markdown block for the README.
// The host has 2 cores that other work (a test suite) may share: hence medians and p99, and a
// forced GC between rounds (untimed) so no sample pays for garbage of earlier ones.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import nodeVm from 'node:vm';

import { compileGuest, kvmbox, median, requireKvm, settle } from './common.mjs';

const { Machine, Pool, setVmPoolSize } = kvmbox;

const POOL_N = 16; // blank VMs kept ready for section 1 (one batch of forks)
const FORK_SAMPLES = 208; // 13 batches of POOL_N
const COLD_FORK_SAMPLES = 40;
const RESET_SAMPLES = 400;
const RESET_PAGES = [1, 16, 64, 1024];
const FRESH_ROUNDS = 25; // × FRESH_BLOCK samples per side
const FRESH_BLOCK = 10;
const FRESH_WARMUP = 3;
const BIG_FORKS = 32;
const MiB = 2 ** 20;

const now = () => process.hrtime.bigint();
const since = (t) => Number(now() - t);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const sorted = (xs) => [...xs].sort((a, b) => a - b);
/** Nearest-rank percentile. */
const pct = (xs, p) => {
  const s = sorted(xs);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
};
const st = (xs) => ({ n: xs.length, med: median(xs), p99: pct(xs, 99), max: Math.max(...xs) });
const fmt = (ns) => (ns >= 1e6 ? `${(ns / 1e6).toFixed(2)} ms` : ns >= 1000 ? `${(ns / 1000).toFixed(1)} µs` : `${ns.toFixed(0)} ns`);
const fmtB = (b) =>
  Math.abs(b) >= 2 ** 30 ? `${(b / 2 ** 30).toFixed(2)} GiB` : Math.abs(b) >= MiB ? `${(b / MiB).toFixed(2)} MiB` : `${(b / 1024).toFixed(0)} KiB`;
const x = (a, b) => `${(a / b).toFixed(1)}×`;

const pr = requireKvm();
const callsGuest = compileGuest('calls_bench');
const nativeGuest = compileGuest('fresh_native');
const bigGuest = compileGuest('bigmem');

const tStart = now();
const master = Machine.fromFile(callsGuest);
if (master.run().status !== 'paused') throw new Error('calls_bench did not pause');
const snap = master.snapshot();

// ---------------------------------------------------------------------------------------------
// 1. fork → ready to call

/** One fork: times fork(), the first call and a second call; the fork is returned open. */
function forkSample(out) {
  let t = now();
  const m = snap.fork();
  out.fork.push(since(t));
  t = now();
  m.call('empty');
  out.first.push(since(t));
  t = now();
  m.call('empty');
  out.second.push(since(t));
  return m;
}
function closeAll(ms, closeTimes) {
  for (const m of ms) {
    const t = now();
    m.close();
    closeTimes?.push(since(t));
  }
  ms.length = 0;
}
const newForkStats = () => ({ fork: [], first: [], second: [] });

// Pool empty: every fork creates its KVM VM + vCPU inline (KVM_CREATE_VM, KVM_CREATE_VCPU, CPUID).
setVmPoolSize(0);
const cold = newForkStats();
for (let i = 0; i < 3; i++) forkSample(newForkStats()).close(); // one-time setup (/dev/kvm, CPUID)
for (let i = 0; i < COLD_FORK_SAMPLES; i++) {
  await settle();
  await sleep(2); // let the reaper finish tearing down the previous fork off-thread
  forkSample(cold).close();
}

// Pool warm. The pool is filled by one background thread (~0.3–1 ms per VM here) and there is no
// API to ask how full it is, so "warm" is established by waiting: after setVmPoolSize(POOL_N) we
// sleep far longer than POOL_N creations take (100 ms vs ~5–15 ms), and then check afterwards
// that the forks were fast (a sample slower than the inline-creation median is counted as a
// likely pool miss and printed). During a measured batch the refill target is set to 0: on 2
// shared cores the refill thread creating replacement VMs (and the reaper tearing down closed
// forks) would otherwise compete with the forks being measured — that case is measured
// separately below ("refilling concurrently").
const warm = newForkStats();
const closeTimes = [];
const live = [];
while (warm.fork.length < FORK_SAMPLES) {
  closeAll(live, closeTimes);
  setVmPoolSize(POOL_N);
  await settle();
  await sleep(100);
  setVmPoolSize(0);
  for (let i = 0; i < POOL_N; i++) live.push(forkSample(warm));
}
closeAll(live, closeTimes);
const coldMed = median(cold.fork);
const poolMisses = warm.fork.filter((t) => t > coldMed).length;

// Pool warm but refilling while forks are taken back to back (a burst of requests).
const busy = newForkStats();
for (let b = 0; b < 8; b++) {
  setVmPoolSize(POOL_N);
  await settle();
  await sleep(100);
  for (let i = 0; i < 8; i++) live.push(forkSample(busy));
  closeAll(live);
}
setVmPoolSize(0);
await sleep(100);

// ---------------------------------------------------------------------------------------------
// 2. reset with n dirty pages. One fork per n, so each fork's written-page set is exactly what
// its own loop writes (kvmbox keeps pages the guest writes in the dirty log and re-learns the
// set every 64 resets; that re-learning reset re-protects the pages and is part of the p99).

const resetForks = RESET_PAGES.map(() => snap.fork());
const resetNs = RESET_PAGES.map(() => []);
const restored = RESET_PAGES.map(() => []);
/** The core's own breakdown of each reset (Machine.lastStats after the next call). */
const PARTS = ['resetDirtyLogNs', 'resetMemoryNs', 'resetCpuNs', 'resetProcessNs'];
const parts = RESET_PAGES.map(() => Object.fromEntries(PARTS.map((p) => [p, []])));
for (let i = 0; i < 100; i++) {
  RESET_PAGES.forEach((n, k) => {
    resetForks[k].call('touch_pages', n, i);
    resetForks[k].reset();
  });
}
for (let i = 0; i < RESET_SAMPLES; i++) {
  if (i % 50 === 0) await settle();
  RESET_PAGES.forEach((n, k) => {
    const m = resetForks[k];
    if (m.call('touch_pages', n, i) !== n) throw new Error('touch_pages: wrong result');
    if (i > 0) for (const p of PARTS) parts[k][p].push(m.lastStats[p]);
    const t = now();
    const r = m.reset();
    resetNs[k].push(since(t));
    restored[k].push(r);
  });
}
closeAll(resetForks);

// ---------------------------------------------------------------------------------------------
// 3. fresh state + one call (64 pages written), kvmbox vs peers, round-robin in one loop.

/**
 * (module (memory (export "memory") 1024)          ;; 64 MiB
 *   (func (export "touch") (param $n i32) (param $v i32) (result i32) (local $i i32)
 *     (loop (i32.store8 (i32.shl (local.get $i) (i32.const 12)) (local.get $v))
 *           (br_if 0 (i32.lt_u (local.tee $i (i32.add (local.get $i) (i32.const 1))) (local.get $n))))
 *     (local.get $n)))
 */
function touchWasm() {
  const leb = (n) => {
    const out = [];
    do {
      let b = n & 0x7f;
      n >>>= 7;
      if (n) b |= 0x80;
      out.push(b);
    } while (n);
    return out;
  };
  const name = (s) => [...leb(s.length), ...Buffer.from(s)];
  const section = (id, bytes) => [id, ...leb(bytes.length), ...bytes];
  const vec = (items) => [...leb(items.length), ...items.flat()];
  const body = [
    0x01,
    0x01,
    0x7f, // locals: 1 × i32 ($i = local 2)
    0x03,
    0x40, // loop (no result)
    0x20,
    0x02,
    0x41,
    0x0c,
    0x74, // local.get $i, i32.const 12, i32.shl  → address i * 4096
    0x20,
    0x01,
    0x3a,
    0x00,
    0x00, // local.get $v, i32.store8 align=1 offset=0
    0x20,
    0x02,
    0x41,
    0x01,
    0x6a,
    0x22,
    0x02, // $i = $i + 1 (local.tee)
    0x20,
    0x00,
    0x49,
    0x0d,
    0x00, // local.get $n, i32.lt_u, br_if 0
    0x0b, // end loop
    0x20,
    0x00,
    0x0b, // local.get $n, end
  ];
  return new Uint8Array([
    0x00,
    0x61,
    0x73,
    0x6d,
    0x01,
    0x00,
    0x00,
    0x00,
    ...section(1, vec([[0x60, 0x02, 0x7f, 0x7f, 0x01, 0x7f]])), // type: (i32, i32) -> i32
    ...section(3, vec([[0x00]])), // function 0 has type 0
    ...section(5, vec([[0x00, ...leb(1024)]])), // memory: min 1024 pages, no max
    ...section(
      7,
      vec([
        [...name('memory'), 0x02, 0x00],
        [...name('touch'), 0x00, 0x00],
      ]),
    ),
    ...section(10, vec([[...leb(body.length), ...body]])),
  ]);
}
const wasmModule = new WebAssembly.Module(touchWasm());
{
  const inst = new WebAssembly.Instance(wasmModule);
  const mem = new Uint8Array(inst.exports.memory.buffer);
  if (inst.exports.touch(64, 7) !== 64 || mem.length !== 64 * MiB || mem[63 * 4096] !== 7 || mem[64 * 4096] !== 0) {
    throw new Error('wasm touch module: wrong behaviour');
  }
}
// Compiled once (the best case for node:vm); each sample is a new context + one run.
const vmScript = new nodeVm.Script('let a = new Array(64 * 1024).fill(1); a.length');

const freshFork = snap.fork();
freshFork.call('touch_pages', 64, 0);
const pool = new Pool(snap, { size: 1 });
const fresh = {
  kvmbox: () => {
    freshFork.reset();
    return freshFork.call('touch_pages', 64, 1) === 64;
  },
  pool: () => pool.with((m) => m.call('touch_pages', 64, 1) === 64),
  spawnSync: () => spawnSync(nativeGuest, [], { stdio: 'ignore' }).status === 0,
  nodeVm: () => vmScript.runInContext(nodeVm.createContext()) === 64 * 1024,
  wasm: () => new WebAssembly.Instance(wasmModule).exports.touch(64, 1) === 64,
};
const freshNs = Object.fromEntries(Object.keys(fresh).map((k) => [k, []]));
const kinds = Object.keys(fresh);
// Blocks of FRESH_BLOCK samples per side, sides in a new (seeded) random order each round, GC
// before each block. Not one sample per side per round: the sides disturb each other through the
// shared process. spawnSync fork()s this whole process, which write-protects every private page
// (the forks' written guest pages too) and makes KVM drop its mappings of them, so a reset + call
// right after a spawnSync costs several times more (measured separately below); a forced GC or a
// wasm instance's 64 MiB mapping also cost the next sample something. The first FRESH_WARMUP
// samples of each block are not recorded, for every side alike.
let seed = 12345;
const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
for (let r = -1; r < FRESH_ROUNDS; r++) {
  const order = [...kinds];
  for (let j = order.length - 1; j > 0; j--) {
    const q = Math.floor(rand() * (j + 1));
    [order[j], order[q]] = [order[q], order[j]];
  }
  for (const k of order) {
    await settle();
    for (let i = 0; i < FRESH_WARMUP + FRESH_BLOCK; i++) {
      const t = now();
      const ok = await fresh[k]();
      const ns = since(t);
      if (!ok) throw new Error(`fresh state + call: ${k} gave a wrong result`);
      if (r >= 0 && i >= FRESH_WARMUP) freshNs[k].push(ns);
    }
  }
}
// The interference itself: reset + call right after a spawnSync from this process.
const afterSpawn = [];
for (let i = 0; i < 50; i++) {
  if (i % 10 === 0) await settle();
  fresh.spawnSync();
  const t = now();
  fresh.kvmbox();
  afterSpawn.push(since(t));
}
freshFork.close();
pool.close();
setVmPoolSize(0); // Pool asked for blank VMs; section 4 wants none made behind its back

// ---------------------------------------------------------------------------------------------
// 4. memory: 1 GiB initialized once, 32 forks.

const rollup = () =>
  Object.fromEntries([...fs.readFileSync('/proc/self/smaps_rollup', 'utf8').matchAll(/^(\w+):\s+(\d+) kB$/gm)].map((m) => [m[1], Number(m[2]) * 1024]));
const meminfo = () =>
  Object.fromEntries([...fs.readFileSync('/proc/meminfo', 'utf8').matchAll(/^(\w+):\s+(\d+) kB$/gm)].map((m) => [m[1], Number(m[2]) * 1024]));
// Kernel memory a VM costs beyond the process's own mappings (KVM MMU pages are SecPageTables).
const KERNEL_KEYS = ['SecPageTables', 'PageTables', 'KernelStack', 'SUnreclaim', 'VmallocUsed'];
const kernelBytes = (mi) => KERNEL_KEYS.reduce((a, k) => a + (mi[k] ?? 0), 0);

// Use up blank VMs left in the pool, so every fork below creates (and is charged for) its own.
for (let i = 0; i < POOL_N + 4; i++) snap.fork().close();
await settle();
await sleep(200);

let t = now();
const big = Machine.fromFile(bigGuest, { memory: 1280 * MiB });
const bigRun = big.run();
const bigInitNs = since(t);
if (bigRun.status !== 'paused') throw new Error(`bigmem did not pause: ${JSON.stringify(bigRun)}`);
t = now();
const bigSnap = big.snapshot();
const bigSnapNs = since(t);
const residentBytes = bigSnap.residentBytes;

await settle();
await sleep(100);
const before = { r: rollup(), mi: meminfo() };
const bigForks = [];
const forkHandleNs = [];
for (let i = 0; i < BIG_FORKS; i++) {
  const t = now();
  const m = bigSnap.fork();
  const v = m.call('handle', i);
  forkHandleNs.push(since(t));
  let want = 0x5a;
  for (let p = 0; p < 4; p++) want += (i + p) & 0xff;
  if (v !== want) throw new Error(`bigmem handle(${i}) = ${v}, expected ${want}`);
  bigForks.push(m);
}
const privateBytes = bigForks.map((m) => m.memoryUsage().privateBytes);
await settle();
const after = { r: rollup(), mi: meminfo() };
const perFork = (k) => (after.r[k] - before.r[k]) / BIG_FORKS;
const kernelPerFork = (kernelBytes(after.mi) - kernelBytes(before.mi)) / BIG_FORKS;
closeAll(bigForks);
big.close();
master.close();
const elapsedS = since(tStart) / 1e9;

// ---------------------------------------------------------------------------------------------
// Report

const s = {
  cold: Object.fromEntries(Object.entries(cold).map(([k, v]) => [k, st(v)])),
  warm: Object.fromEntries(Object.entries(warm).map(([k, v]) => [k, st(v)])),
  busy: Object.fromEntries(Object.entries(busy).map(([k, v]) => [k, st(v)])),
  readyToCall: st(warm.fork.map((f, i) => f + warm.first[i])),
  close: st(closeTimes),
  reset: resetNs.map(st),
  fresh: Object.fromEntries(Object.entries(freshNs).map(([k, v]) => [k, st(v)])),
  forkHandle: st(forkHandleNs),
  afterSpawn: st(afterSpawn),
  priv: st(privateBytes),
};
const aim = (ok) => (ok ? '✓' : '✗ missed');
const fk = s.fresh.kvmbox;
const spawnRatio = s.fresh.spawnSync.med / fk.med;
const vmRatio = s.fresh.nodeVm.med / fk.med;
const priv = perFork('Private_Dirty');
const pss = perFork('Pss');

console.log(
  `\nsection 1: ${poolMisses} of ${warm.fork.length} pool-warm forks were slower than the inline-creation median (${fmt(coldMed)}): likely pool misses`,
);
console.log(
  `section 4: init ${fmt(bigInitNs)}, snapshot ${fmt(bigSnapNs)}, residentBytes ${fmtB(residentBytes)}; smaps_rollup per fork: ` +
    ['Rss', 'Pss', 'Private_Dirty', 'Shared_Dirty', 'Shared_Clean', 'Pss_Shmem', 'Anonymous'].map((k) => `${k} ${fmtB(perFork(k))}`).join(', ') +
    `; kernel (system-wide, noisy) ${fmtB(kernelPerFork)}: ` +
    KERNEL_KEYS.map((k) => `${k} ${fmtB(((after.mi[k] ?? 0) - (before.mi[k] ?? 0)) / BIG_FORKS)}`).join(', '),
);
console.log(
  `aims: spawnSync/kvmbox ${spawnRatio.toFixed(1)}× (≥ 25×) ${aim(spawnRatio >= 25)}; node:vm/kvmbox ${vmRatio.toFixed(1)}× (≥ 8×) ${aim(vmRatio >= 8)}; ` +
    `per-fork Private_Dirty ${fmtB(priv)}, Pss ${fmtB(pss)} (≤ 8 MiB) ${aim(Math.max(priv, pss) <= 8 * MiB)}; total ${elapsedS.toFixed(1)} s`,
);

const row = (name, v, note = '') => `| ${name} | ${fmt(v.med)} | ${fmt(v.p99)} | ${note} |`;
const md = [
  `Measured ${new Date().toISOString().slice(0, 10)} · backend \`${pr.backend}\` · Node ${process.version} · ${os.cpus().length} cores (shared). ` +
    `Median and p99 of single operations (sample counts in the table); \`node benches/snapshots.mjs\`.`,
  '',
  '| Operation | median | p99 | notes |',
  '|---|---:|---:|---|',
  row(
    `\`snap.fork()\`, blank-VM pool warm (\`setVmPoolSize(${POOL_N})\`)`,
    s.warm.fork,
    `${s.warm.fork.n} samples; ${poolMisses} slower than pool-empty median`,
  ),
  row("first `m.call('empty')` after a fork (shadow MMU warm-up)", s.warm.first, `second call: ${fmt(s.warm.second.med)} / ${fmt(s.warm.second.p99)}`),
  row('fork + first call (ready to call → answered)', s.readyToCall, ''),
  row('`snap.fork()`, pool empty (VM created inline)', s.cold.fork, `${s.cold.fork.n} samples; first call ${fmt(s.cold.first.med)}`),
  row(
    '`snap.fork()`, pool refilling concurrently (8 back to back)',
    s.busy.fork,
    `${s.busy.fork.n} samples; first call ${fmt(s.busy.first.med)} / ${fmt(s.busy.first.p99)}`,
  ),
  row('`m.close()` of a fork (teardown on a background thread)', s.close, ''),
  ...RESET_PAGES.map((n, k) =>
    row(`\`m.reset()\` after \`touch_pages(${n})\``, s.reset[k], `${s.reset[k].n} samples; ${median(restored[k])} pages restored (call's stack included)`),
  ),
  ...RESET_PAGES.map((n, k) =>
    [
      `| … of which inside the core, after \`touch_pages(${n})\` | ${fmt(PARTS.reduce((sum, p) => sum + median(parts[k][p]), 0))} | — |`,
      ` dirty log ${fmt(median(parts[k].resetDirtyLogNs))} · memory ${fmt(median(parts[k].resetMemoryNs))} ·`,
      ` vCPU ${fmt(median(parts[k].resetCpuNs))} · process ${fmt(median(parts[k].resetProcessNs))} (medians) |`,
    ].join(''),
  ),
  row("**fresh state + one call**: `m.reset()` + `m.call('touch_pages', 64)`", fk, `${fk.n} samples`),
  row(
    "same, right after a `spawnSync` from this process (its fork() write-protects the guest's pages)",
    s.afterSpawn,
    `${s.afterSpawn.n} samples; not in the ratios`,
  ),
  row('same through `await pool.with(m => m.call(…))` (reset after use)', s.fresh.pool, `${x(s.fresh.pool.med, fk.med)} of reset + call`),
  row(
    'peer: `spawnSync` of a static native program touching 64 pages',
    s.fresh.spawnSync,
    `${x(s.fresh.spawnSync.med, fk.med)} kvmbox (p99 ${x(s.fresh.spawnSync.p99, fk.p99)}); aim ≥ 25×`,
  ),
  row(
    'peer: `vm.createContext()` + a script filling a 64 Ki-element array',
    s.fresh.nodeVm,
    `${x(s.fresh.nodeVm.med, fk.med)} kvmbox (p99 ${x(s.fresh.nodeVm.p99, fk.p99)}); aim ≥ 8×`,
  ),
  row(
    'peer: `new WebAssembly.Instance` (64 MiB memory) + a call writing 64 pages',
    s.fresh.wasm,
    `${x(s.fresh.wasm.med, fk.med)} kvmbox (p99 ${x(s.fresh.wasm.p99, fk.p99)})`,
  ),
  '',
  `Memory: a guest that fills 1 GiB at initialization (\`benches/bigmem.c\`, \`memory: 1280 MiB\`): initialization ${fmt(bigInitNs)} ` +
    `(load + run to \`kvmbox_pause()\`), \`snapshot()\` ${fmt(bigSnapNs)}, \`snap.residentBytes\` ${fmtB(residentBytes)} (shared by every fork). ` +
    `${BIG_FORKS} forks, each handling one request (4 pages written):`,
  '',
  '| Per fork | bytes |',
  '|---|---:|',
  `| \`memoryUsage().privateBytes\` (median / max) | ${fmtB(s.priv.med)} / ${fmtB(s.priv.max)} |`,
  `| process \`Private_Dirty\` (smaps_rollup, after − before, ÷ ${BIG_FORKS}) | ${fmtB(priv)} |`,
  `| process \`Pss\` (same) | ${fmtB(pss)} |`,
  `| kernel: SecPageTables + PageTables + KernelStack + SUnreclaim + VmallocUsed (system-wide, noisy) | ${fmtB(kernelPerFork)} |`,
  `| fork + first \`handle()\` latency, pool off (median / max) | ${fmt(s.forkHandle.med)} / ${fmt(s.forkHandle.max)} |`,
].join('\n');
console.log(`\n----- markdown for README (snapshots) -----\n${md}\n----- end markdown -----`);

#!/usr/bin/env node
// kvmbox benchmark.  `npm run bench` (builds first) or `node benches/run.mjs`.
//
// Measures, in one run, medians over repeated samples:
//   (a) floor      measureSyscallFloor(n): one bare guest-syscall round trip in a raw VM,
//                  resumed by the host with no dispatch -- the physical floor of the mechanism.
//   (b) getpid     benches/getpid_loop.c: N raw syscall(SYS_getpid) between two
//                  CLOCK_MONOTONIC readings, in kvmbox and natively (reference).  Also a
//                  host-side cross-check that does not trust the guest's clock:
//                  (wall(N) - wall(1)) / (N - 1) over whole Machine runs.
//   (c) hello      Machine.fromFile(hello).run() vs child_process.spawnSync of the same
//                  static binary (glibc, and musl if musl-gcc exists), end to end.
//
// Guest programs are compiled at bench time into benches/build/ (skipped when up to date).
// Prints a table, then a markdown block for the README, and writes benches/results.json.
// Plain process.hrtime.bigint(); kvmbox and native samples are interleaved so that noise
// from other work on the machine hits both sides alike.
//
// Between samples (outside the timed region) the bench forces a GC and yields to the event
// loop, so every sample starts from the same clean heap. (Machines release their VM as soon
// as run() finishes; before that fix, dropped Machines piled up ~250 fds and GiBs of mappings
// in a synchronous loop and slowed the spawnSync reference. `--no-settle` skips settling.)

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { compileGuest, kvmbox, ROOT, requireKvm, settle as settleHeap } from './common.mjs';

const RESULTS_FILE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'results.json');

const CONFIG = {
  floorReps: 15, // (a) samples
  floorIterations: 2000, // round trips per floor sample
  loopReps: 15, // (b) samples per variant
  loopNKvm: 2000, // getpid calls per kvmbox sample
  loopNNative: 200000, // getpid calls per native sample
  helloWarmup: 5, // (c) unrecorded runs per side, per libc
  helloSamples: 50, // (c) recorded runs per side, per libc
};
const TIME_BUDGET_MS = 120_000;
const SETTLE = !process.argv.includes('--no-settle');
const HELLO_EXPECTED = 'hello from kvmbox guest\n';

const { Machine, measureSyscallFloor } = kvmbox;

// ---------------------------------------------------------------------------------------------
// Helpers

/** Untimed: collect garbage from earlier samples (unless --no-settle). */
async function settle() {
  if (SETTLE) await settleHeap();
}

const openFds = () => fs.readdirSync('/proc/self/fd').length;

const now = () => process.hrtime.bigint();
const msSince = (t0) => Number(now() - t0) / 1e6;

/** Linear-interpolated quantile (q in [0,1]) of a numeric array. */
function quantile(xs, q) {
  const s = [...xs].sort((a, b) => a - b);
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}

function stats(samples) {
  return {
    n: samples.length,
    median: quantile(samples, 0.5),
    p90: quantile(samples, 0.9),
    min: Math.min(...samples),
    max: Math.max(...samples),
    samples,
  };
}

function hasCommand(cmd) {
  const r = spawnSync(cmd, ['--version'], { stdio: 'ignore' });
  return !r.error;
}

/** Run a guest in kvmbox; checks it exited 0; returns { ms (host wall), createMs, runMs, stdout }. */
function runKvm(bin, args) {
  const t0 = now();
  const m = Machine.fromFile(bin, { args: [bin, ...args], timeout: 30_000 });
  const t1 = now();
  const r = m.run();
  const t2 = now();
  const ms = Number(t2 - t0) / 1e6;
  if (r.status !== 'exited' || r.exitCode !== 0) {
    throw new Error(`kvmbox ${path.basename(bin)} ${args.join(' ')}: ${r.status} ${r.exitCode}\n${r.stderr}`);
  }
  return { ms, createMs: Number(t1 - t0) / 1e6, runMs: Number(t2 - t1) / 1e6, stdout: r.stdout.toString() };
}

/** Run the same binary natively; checks it exited 0; returns { ms, stdout }. */
function runNative(bin, args) {
  const t0 = now();
  const r = spawnSync(bin, args, { env: {}, timeout: 30_000 }); // kvmbox guests also get an empty env
  const ms = msSince(t0);
  if (r.error || r.status !== 0) {
    throw new Error(`native ${path.basename(bin)} ${args.join(' ')}: ${r.error ?? `status ${r.status}`}\n${r.stderr}`);
  }
  return { ms, stdout: r.stdout.toString() };
}

function parseLoop(stdout) {
  const m = /ns_per_call=([\d.]+) n=(\d+) total_ns=(\d+)/.exec(stdout);
  if (!m) throw new Error(`getpid_loop: unexpected output ${JSON.stringify(stdout)}`);
  return Number(m[1]);
}

const fmtNs = (ns) => (ns >= 1000 ? `${(ns / 1000).toFixed(2)} µs` : `${ns.toFixed(1)} ns`);
const fmtMs = (ms) => `${ms.toFixed(2)} ms`;
const fmtX = (x) => `${x.toFixed(x < 10 ? 2 : 1)}×`;

// ---------------------------------------------------------------------------------------------
// Environment and guests

const tStart = now();
const pr = requireKvm();
const cpuModel = /^model name\s*:\s*(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? os.cpus()[0]?.model ?? 'unknown';
const env = {
  date: new Date().toISOString(),
  backend: pr.backend,
  syscallInRing3: pr.syscallInRing3 ?? null,
  node: process.version,
  cpu: cpuModel,
  cpus: os.cpus().length,
  kernel: os.release(),
  loadavgAtStart: os.loadavg().map((x) => +x.toFixed(2)),
  settle: SETTLE,
};
console.log(
  `kvmbox bench  ${env.date}\n  backend ${env.backend} (syscall in ring 3: ${env.syscallInRing3}), node ${env.node}, ` +
    `${env.cpu} × ${env.cpus}, kernel ${env.kernel}, load ${env.loadavgAtStart.join(' ')}` +
    (SETTLE ? '' : '\n  --no-settle: dropped Machines are NOT collected between samples'),
);
const fdsAtStart = openFds();

console.log('\nguests:');
const helloSrc = path.join(ROOT, '__test__', 'guests', 'hello.c');
const getpidLoop = compileGuest('getpid_loop');
const hellos = [{ name: 'glibc', bin: compileGuest('hello-glibc', helloSrc) }];
if (hasCommand('musl-gcc')) {
  hellos.push({ name: 'musl', bin: compileGuest('hello-musl', helloSrc, 'musl-gcc') });
} else {
  console.log('  skipped     musl hello (musl-gcc not found; apt-get install musl-tools)');
}

// ---------------------------------------------------------------------------------------------
// (a) floor and (b) guest getpid in kvmbox, interleaved rep by rep

console.log(
  `\n(a)+(b) floor ×${CONFIG.floorReps} (n=${CONFIG.floorIterations}), ` +
    `kvmbox getpid_loop ×${CONFIG.loopReps} (N=${CONFIG.loopNKvm}, plus N=1 runs for the host-side check) ...`,
);
measureSyscallFloor(200); // warm up
runKvm(getpidLoop, ['10']);
const floorNs = [];
const kvmLoopNs = [];
const kvmWallN = [];
const kvmWall1 = [];
for (let i = 0; i < Math.max(CONFIG.floorReps, CONFIG.loopReps); i++) {
  if (i < CONFIG.floorReps) {
    await settle();
    floorNs.push(measureSyscallFloor(CONFIG.floorIterations));
  }
  if (i < CONFIG.loopReps) {
    await settle();
    const big = runKvm(getpidLoop, [String(CONFIG.loopNKvm)]);
    kvmLoopNs.push(parseLoop(big.stdout));
    kvmWallN.push(big.ms);
    await settle();
    kvmWall1.push(runKvm(getpidLoop, ['1']).ms);
  }
}

console.log(`(b) native getpid_loop ×${CONFIG.loopReps} (N=${CONFIG.loopNNative}) ...`);
runNative(getpidLoop, ['1000']);
const nativeLoopNs = [];
for (let i = 0; i < CONFIG.loopReps; i++) {
  await settle();
  nativeLoopNs.push(parseLoop(runNative(getpidLoop, [String(CONFIG.loopNNative)]).stdout));
}

// ---------------------------------------------------------------------------------------------
// (c) hello world end to end, kvmbox vs spawnSync, interleaved (alternating which goes first)

const helloResults = {};
for (const { name, bin } of hellos) {
  console.log(`(c) hello-${name}: ${CONFIG.helloWarmup} warmups + ${CONFIG.helloSamples} samples per side ...`);
  for (const [who, out] of [
    ['kvmbox', runKvm(bin, []).stdout],
    ['native', runNative(bin, []).stdout],
  ]) {
    if (out !== HELLO_EXPECTED) throw new Error(`hello-${name} (${who}) printed ${JSON.stringify(out)}`);
  }
  for (let i = 0; i < CONFIG.helloWarmup; i++) {
    await settle();
    runKvm(bin, []);
    await settle();
    runNative(bin, []);
  }
  const kvm = [];
  const kvmCreate = [];
  const kvmRun = [];
  const native = [];
  for (let i = 0; i < CONFIG.helloSamples; i++) {
    for (const side of i % 2 === 0 ? ['kvm', 'native'] : ['native', 'kvm']) {
      await settle();
      if (side === 'kvm') {
        const r = runKvm(bin, []);
        kvm.push(r.ms);
        kvmCreate.push(r.createMs);
        kvmRun.push(r.runMs);
      } else native.push(runNative(bin, []).ms);
    }
  }
  helloResults[name] = {
    binary: path.relative(ROOT, bin),
    binaryBytes: fs.statSync(bin).size,
    kvmbox: stats(kvm),
    kvmboxFromFile: stats(kvmCreate),
    kvmboxRun: stats(kvmRun),
    spawnSync: stats(native),
  };
}

// ---------------------------------------------------------------------------------------------
// Results

const floor = stats(floorNs);
const kvmLoop = stats(kvmLoopNs);
const nativeLoop = stats(nativeLoopNs);
const wallN = stats(kvmWallN);
const wall1 = stats(kvmWall1);
// (a) and (b) samples were taken in adjacent pairs; the median of the per-pair differences is
// less sensitive to slow drifts in background load than the difference of the medians.
const pairedDiffNs = quantile(
  kvmLoopNs.slice(0, floorNs.length).map((x, i) => x - floorNs[i]),
  0.5,
);
const hostSideNs = ((wallN.median - wall1.median) * 1e6) / (CONFIG.loopNKvm - 1);
const elapsedMs = msSince(tStart);
const fdsAtEnd = openFds();

const results = {
  env,
  config: CONFIG,
  floorNs: floor,
  getpid: {
    kvmboxNsPerCall: kvmLoop,
    nativeNsPerCall: nativeLoop,
    kvmboxOverFloor: kvmLoop.median / floor.median,
    kvmboxMinusFloorNs: kvmLoop.median - floor.median,
    kvmboxMinusFloorPairedMedianNs: pairedDiffNs,
    kvmboxOverNative: kvmLoop.median / nativeLoop.median,
    hostSideCheck: {
      note: '(median wall of a whole run with N calls - median wall with N=1) / (N-1); does not rely on the guest clock',
      wallMsN: wallN,
      wallMs1: wall1,
      nsPerCall: hostSideNs,
    },
  },
  hello: Object.fromEntries(
    Object.entries(helloResults).map(([k, v]) => [k, { ...v, ratioMedian: v.kvmbox.median / v.spawnSync.median, ratioP90: v.kvmbox.p90 / v.spawnSync.p90 }]),
  ),
  openFds: { atStart: fdsAtStart, atEnd: fdsAtEnd },
  elapsedMs: Math.round(elapsedMs),
};

const rows = [
  ['measurement', 'samples', 'median', 'p90', 'min', 'max'],
  ['(a) syscall floor, raw VM (per round trip)', `${floor.n} × ${CONFIG.floorIterations}`, ...['median', 'p90', 'min', 'max'].map((k) => fmtNs(floor[k]))],
  ['(b) getpid in kvmbox (per call, guest clock)', `${kvmLoop.n} × ${CONFIG.loopNKvm}`, ...['median', 'p90', 'min', 'max'].map((k) => fmtNs(kvmLoop[k]))],
  [`    kvmbox run wall, N=${CONFIG.loopNKvm}`, `${wallN.n}`, ...['median', 'p90', 'min', 'max'].map((k) => fmtMs(wallN[k]))],
  ['    kvmbox run wall, N=1', `${wall1.n}`, ...['median', 'p90', 'min', 'max'].map((k) => fmtMs(wall1[k]))],
  ['(b) getpid native (per call)', `${nativeLoop.n} × ${CONFIG.loopNNative}`, ...['median', 'p90', 'min', 'max'].map((k) => fmtNs(nativeLoop[k]))],
];
for (const [name, h] of Object.entries(helloResults)) {
  rows.push([`(c) hello-${name}, kvmbox fromFile().run()`, `${h.kvmbox.n}`, ...['median', 'p90', 'min', 'max'].map((k) => fmtMs(h.kvmbox[k]))]);
  rows.push([`      of which Machine.fromFile()`, `${h.kvmboxFromFile.n}`, ...['median', 'p90', 'min', 'max'].map((k) => fmtMs(h.kvmboxFromFile[k]))]);
  rows.push([`      of which run()`, `${h.kvmboxRun.n}`, ...['median', 'p90', 'min', 'max'].map((k) => fmtMs(h.kvmboxRun[k]))]);
  rows.push([`(c) hello-${name}, spawnSync`, `${h.spawnSync.n}`, ...['median', 'p90', 'min', 'max'].map((k) => fmtMs(h.spawnSync[k]))]);
}
const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
const line = (r) => r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  ');
console.log(`\n${line(rows[0])}\n${widths.map((w) => '-'.repeat(w)).join('  ')}`);
for (const r of rows.slice(1)) console.log(line(r));

console.log('\nderived (from medians):');
console.log(
  `  getpid kvmbox / floor        ${fmtX(results.getpid.kvmboxOverFloor)}  (dispatch + emulation ≈ ${fmtNs(results.getpid.kvmboxMinusFloorNs)} per call;` +
    ` paired median ${fmtNs(pairedDiffNs)}; compare the spread of (a) and (b) before reading much into it)`,
);
console.log(`  getpid host-side check       ${fmtNs(hostSideNs)} per call  ((wall N=${CONFIG.loopNKvm} − wall N=1) / ${CONFIG.loopNKvm - 1})`);
console.log(`  getpid kvmbox / native       ${fmtX(results.getpid.kvmboxOverNative)}`);
for (const [name, h] of Object.entries(results.hello)) {
  console.log(`  hello-${name} kvmbox / spawnSync  ${fmtX(h.ratioMedian)} median, ${fmtX(h.ratioP90)} p90`);
}
console.log(`  open fds at start / end      ${fdsAtStart} / ${fdsAtEnd}`);
console.log(`  total bench time             ${(elapsedMs / 1000).toFixed(1)} s${elapsedMs > TIME_BUDGET_MS ? '  (over the 2-minute budget!)' : ''}`);

const md = [
  `Measured ${env.date.slice(0, 10)} · backend \`${env.backend}\` · Node ${env.node} · ${env.cpu} (${env.cpus} cores) · Linux ${env.kernel}. Medians; \`npm run bench\`.`,
  '',
  '| Measurement | kvmbox | native | kvmbox / ref |',
  '|---|---:|---:|---:|',
  `| Syscall floor: bare round trip in a raw VM, no dispatch (${floor.n} × ${CONFIG.floorIterations}) | ${fmtNs(floor.median)} | — | — |`,
  `| \`getpid()\` round trip (${kvmLoop.n} × ${CONFIG.loopNKvm} in kvmbox, ${nativeLoop.n} × ${CONFIG.loopNNative} native) | ${fmtNs(kvmLoop.median)} | ${fmtNs(nativeLoop.median)} | ${fmtX(results.getpid.kvmboxOverFloor)} floor, ${fmtX(results.getpid.kvmboxOverNative)} native |`,
  ...Object.entries(results.hello).map(
    ([name, h]) =>
      `| Hello world, static ${name}, end to end: median / p90 (${h.kvmbox.n} each; native = \`spawnSync\`) | ${fmtMs(h.kvmbox.median)} / ${fmtMs(h.kvmbox.p90)} | ${fmtMs(h.spawnSync.median)} / ${fmtMs(h.spawnSync.p90)} | ${fmtX(h.ratioMedian)} / ${fmtX(h.ratioP90)} |`,
  ),
].join('\n');
console.log(`\n----- markdown for README -----\n${md}\n----- end markdown -----`);

results.markdown = md;
fs.writeFileSync(RESULTS_FILE, `${JSON.stringify(results, null, 2)}\n`);
console.log(`\nwrote ${path.relative(process.cwd(), RESULTS_FILE) || RESULTS_FILE}`);

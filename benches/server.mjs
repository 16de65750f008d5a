#!/usr/bin/env node
// Load test of the example server (`npm run bench:server`): autocannon against 127.0.0.1 only,
// bounded duration, for three servers doing the same job per request — the kvmbox pool
// (examples/http-server.ts: a fork per request, reset after), spawnSync of the same static
// program per request, and node:vm with a fresh context per request. Each server runs in its
// own process; autocannon runs here.
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';

import { buildExample } from '../scripts/build-example.mjs';
import { ROOT, requireKvm } from './common.mjs';

requireKvm();
const require = createRequire(import.meta.url);
const autocannon = require('autocannon');
const DURATION = Number(process.env.DURATION ?? 5);
/** Each configuration runs this many times; the table shows the run with the median requests/s. */
const REPEAT = Number(process.env.REPEAT ?? 3);
const CONNECTIONS = 16;

buildExample();

async function measure(kind, port, route, env = {}) {
  const child = spawn(process.execPath, [path.join(ROOT, 'benches', 'server-target.mjs'), kind, String(port)], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, ...env },
  });
  await new Promise((resolve) => child.stdout.once('data', resolve));
  const body = 'the quick brown fox jumps over the <lazy> dog & friends';
  const url = `http://127.0.0.1:${port}${route}`;
  await autocannon({ url, method: 'POST', body, connections: CONNECTIONS, duration: 1 }); // warm-up
  const r = await autocannon({ url, method: 'POST', body, connections: CONNECTIONS, duration: DURATION });
  child.kill();
  return { kind: env.WORKERS ? `${kind}-w${env.WORKERS}` : kind, rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, errors: r.errors + r.non2xx };
}

const cpus = os.cpus().length;
const names = {
  kvmbox: 'kvmbox pool (forks on the main thread, each call on its vCPU thread)',
  spawn: '`spawnSync` of the same program per request',
  nodevm: '`node:vm`, fresh context per request',
  'kvmbox-w1': 'kvmbox pool in 1 worker thread',
  [`kvmbox-w${cpus}`]: `kvmbox pool in ${cpus} worker threads`,
};
// Two workloads: `/` renders the body into a page (a few microseconds of guest work, so HTTP
// handling dominates), `/stretch` does ~1 ms of key stretching (guest work dominates).
const scenarios = [
  ['/', ['kvmbox', 'spawn', 'nodevm', 'kvmbox-w1', `kvmbox-w${cpus}`]],
  ['/stretch', ['kvmbox', 'spawn', 'kvmbox-w1', `kvmbox-w${cpus}`]],
];
const only = process.env.KINDS?.split(',');
let port = 18180;
const tables = [];
for (const [route, kinds] of scenarios) {
  const results = [];
  for (const name of kinds) {
    if (only && !only.includes(name) && !only.includes(`${route}:${name}`)) continue;
    const [kind, w] = name.split('-w');
    const runs = [];
    for (let i = 0; i < REPEAT; i++) runs.push(await measure(kind, port++, route, w ? { WORKERS: w } : {}));
    runs.sort((a, b) => a.rps - b.rps);
    results.push({ ...runs[(runs.length - 1) >> 1], all: runs.map((r) => r.rps.toFixed(0)) });
  }
  if (results.length === 0) continue;
  const base = results.find((r) => r.kind === 'kvmbox-w1');
  tables.push(
    [
      `\`POST ${route}\`${route === '/' ? ' (render a page: light guest work)' : ' (key stretching: ~1 ms of guest work)'}:`,
      '',
      '| server | requests/s | p50 | p99 | errors | vs spawnSync | vs 1 worker | runs |',
      '|---|---:|---:|---:|---:|---:|---:|---:|',
      ...results.map((r) => {
        const spawnRps = results.find((x) => x.kind === 'spawn')?.rps;
        return `| ${names[r.kind]} | ${r.rps.toFixed(0)} | ${r.p50} ms | ${r.p99} ms | ${r.errors} | ${spawnRps ? `${(r.rps / spawnRps).toFixed(1)}×` : '–'} | ${base ? `${(r.rps / base.rps).toFixed(2)}×` : '–'} | ${r.all.join(', ')} |`;
      }),
    ].join('\n'),
  );
}
const md = [
  `Measured ${new Date().toISOString().slice(0, 10)} · ${cpus} cores (autocannon shares them) · ${CONNECTIONS} connections, 127.0.0.1 · each row the median of ${REPEAT} runs of ${DURATION} s (all runs' requests/s in the last column); \`npm run bench:server\`.`,
  '',
  tables.join('\n\n'),
].join('\n');
console.log(`\n----- markdown for README (server) -----\n${md}\n----- end markdown -----`);

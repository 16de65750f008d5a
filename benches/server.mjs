#!/usr/bin/env node
// Load test of the example server (`npm run bench:server`): autocannon against 127.0.0.1 only,
// bounded duration, for three servers doing the same job per request — the kvmbox pool
// (examples/http-server.ts: a fork per request, reset after), spawnSync of the same static
// program per request, and node:vm with a fresh context per request. Each server runs in its
// own process; autocannon runs here.
import { spawn, spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const autocannon = require('autocannon');
const DURATION = Number(process.env.DURATION ?? 8);
const CONNECTIONS = 16;

for (const [cmd, args] of [
  ['gcc', ['-O2', '-static', '-o', 'examples/render', 'examples/render.c']],
  ['npx', ['tsc', '-p', 'examples']],
]) {
  const r = spawnSync(cmd, args, { cwd: ROOT, stdio: 'inherit' });
  if (r.status !== 0) process.exit(1);
}

async function measure(kind, port, env = {}) {
  const child = spawn(process.execPath, [path.join(ROOT, 'benches', 'server-target.mjs'), kind, String(port)], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, ...env },
  });
  await new Promise((resolve) => child.stdout.once('data', resolve));
  const body = 'the quick brown fox jumps over the <lazy> dog & friends';
  await autocannon({ url: `http://127.0.0.1:${port}`, method: 'POST', body, connections: CONNECTIONS, duration: 1 }); // warm-up
  const r = await autocannon({ url: `http://127.0.0.1:${port}`, method: 'POST', body, connections: CONNECTIONS, duration: DURATION });
  child.kill();
  return { kind: env.WORKERS ? `${kind}-w${env.WORKERS}` : kind, rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, errors: r.errors + r.non2xx };
}

const results = [];
let port = 18180;
for (const kind of ['kvmbox', 'spawn', 'nodevm']) results.push(await measure(kind, port++));
const cpus = os.cpus().length;
results.push(await measure('kvmbox', port++, { WORKERS: '1' }));
results.push(await measure('kvmbox', port++, { WORKERS: String(cpus) }));
const k = results[0];
const names = {
  kvmbox: 'kvmbox pool (fork per request, reset after; forks on the main thread, each call on its vCPU thread)',
  spawn: '`spawnSync` of the same program per request',
  nodevm: '`node:vm`, fresh context per request',
  'kvmbox-w1': 'kvmbox pool in 1 worker thread',
  [`kvmbox-w${cpus}`]: `kvmbox pool in ${cpus} worker threads`,
};
const md = [
  `Measured ${new Date().toISOString().slice(0, 10)} · ${os.cpus().length} cores · autocannon, ${CONNECTIONS} connections, ${DURATION} s, 127.0.0.1; \`npm run bench:server\`.`,
  '',
  '| server | requests/s | p50 | p99 | errors | requests/s vs kvmbox |',
  '|---|---:|---:|---:|---:|---:|',
  ...results.map((r) => `| ${names[r.kind]} | ${r.rps.toFixed(0)} | ${r.p50} ms | ${r.p99} ms | ${r.errors} | ${(r.rps / k.rps).toFixed(2)}× |`),
].join('\n');
console.log(`\n----- markdown for README (server) -----\n${md}\n----- end markdown -----`);

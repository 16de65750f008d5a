#!/usr/bin/env node
// A JavaScript runtime per request (`npm run bench:js`): the request handler of
// examples/js-per-request/app.js served three ways, in one run —
//   kvmbox: node initialized once in kvmbox and snapshotted; each request resumes a fork that
//           is reset afterwards (the example's worker, without HTTP);
//   node:vm: a fresh vm context per request running the same handler (no OS isolation);
//   spawnSync: a fresh node process per request running the same handler.
// Reports requests/s and the median and p99 latency of each.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import vm from 'node:vm';

import { ROOT, requireKvm } from './common.mjs';

const pr = requireKvm();
const { buildAddon, snapshotNode, worker } = await import('../examples/js-per-request/server.mjs');
const REQUESTS = { kvmbox: 300, 'node:vm': 300, spawnSync: 30 };

const app = fs.readFileSync(path.join(ROOT, 'examples', 'js-per-request', 'app.js'), 'utf8');
// The handler alone (what follows the snapshot point), for the baselines: request in, answer out.
const handler = `
const render = (title, items) => \`<h1>\${title}</h1><ul>\${items.map((i) => \`<li>\${i}</li>\`).join('')}</ul>\`;
const squares = Array.from({ length: 1000 }, (_, i) => i * i);
const req = JSON.parse(REQUEST);
globalThis.requestsSeen = (globalThis.requestsSeen ?? 0) + 1;
const body = { html: render(req.title ?? 'kvmbox', (req.items ?? []).map((n) => squares[n] ?? 'n/a')), requestsSeen: globalThis.requestsSeen, random: Math.random() };
ANSWER(JSON.stringify(body));
`;
if (!app.includes('kvmbox.pause()')) throw new Error('app.js changed: update the bench handler');
const body = JSON.stringify({ title: 'bench', items: [1, 2, 3, 4, 5] });

function measure(n, serve) {
  const lat = [];
  const start = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    const s = process.hrtime.bigint();
    const out = serve();
    lat.push(Number(process.hrtime.bigint() - s) / 1e6);
    if (!out.includes('"requestsSeen":1')) throw new Error(`bad answer: ${out}`);
  }
  const total = Number(process.hrtime.bigint() - start) / 1e9;
  lat.sort((a, b) => a - b);
  return { rps: n / total, p50: lat[Math.floor(n / 2)], p99: lat[Math.min(n - 1, Math.floor(n * 0.99))] };
}

buildAddon();
const snap = snapshotNode();
const w = worker(snap, 5000);
const sides = {
  kvmbox: () => {
    const r = w.serve(body);
    if (r.status !== 200) throw new Error(r.body);
    return r.body;
  },
  'node:vm': () => {
    let out = '';
    vm.runInNewContext(handler, { REQUEST: body, ANSWER: (s) => (out = s) });
    return out;
  },
  spawnSync: () => {
    const script = `const REQUEST = process.argv[1]; const ANSWER = (s) => process.stdout.write(s);\n${handler}`;
    const r = spawnSync(process.execPath, ['-e', script, body], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(r.stderr);
    return r.stdout;
  },
};
for (const serve of Object.values(sides)) for (let i = 0; i < 5; i++) serve(); // warm-up
console.log(`a JavaScript runtime per request, backend ${pr.backend}\n`);
console.log('| per request | requests/s | median | p99 |');
console.log('|---|---|---|---|');
for (const [name, serve] of Object.entries(sides)) {
  const m = measure(REQUESTS[name], serve);
  console.log(`| ${name} | ${m.rps.toFixed(0)} | ${m.p50.toFixed(2)} ms | ${m.p99.toFixed(2)} ms |`);
}
w.close();
snap.close();

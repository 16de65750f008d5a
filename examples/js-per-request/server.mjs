#!/usr/bin/env node
// A JavaScript runtime per request: node itself, initialized once inside kvmbox and
// snapshotted; each HTTP request is served by a fork of the snapshot that is reset afterwards
// (a small pool of forks, reused), the request body passed in and the answer passed out through
// host calls. A request that throws or runs away is stopped (timeout) and its fork reset.
//   npm run build && node examples/js-per-request/server.mjs   (then: curl -d '{"items":[1,2,3]}' localhost:8090)
import http from 'node:http';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { Machine, systemLibraries } from '../../dist/index.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..', '..');
const HC_REQUEST = 0x10200;
const HC_RESPOND = 0x10201;
const NODE = process.execPath; // the node running this: a dynamic executable like any other

/** Compile the addon the guest's node loads (Node-API headers from node-api-headers). */
export function buildAddon() {
  const include = path.join(ROOT, 'node_modules', 'node-api-headers', 'include');
  const r = spawnSync('gcc', ['-O2', '-shared', '-fPIC', '-I', include, '-o', path.join(HERE, 'kvmbox.node'), path.join(HERE, 'addon.c')], {
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`building the addon: ${r.stderr}`);
}

/**
 * Start node in kvmbox, let it initialize, and snapshot it. V8 reserves large address ranges,
 * and guest memory is also the guest's address space: 4 GiB (only touched pages cost memory).
 */
export function snapshotNode(node = NODE) {
  const vm = Machine.fromFile(node, {
    args: ['node', path.join(HERE, 'app.js')],
    allowRead: [...systemLibraries(), HERE],
    memory: 4 * 1024 ** 3,
    timeout: 30_000,
  });
  const r = vm.run();
  if (r.status !== 'paused') throw new Error(`node did not reach its pause: ${r.status} ${r.stderr}`);
  const snap = vm.snapshot();
  vm.close();
  return snap;
}

/** A worker: one fork of `snap`, serving one request at a time and reset after each. */
export function worker(snap, timeoutMs) {
  const vm = snap.fork();
  let request = Buffer.alloc(0);
  let answer = null;
  vm.onSyscall(HC_REQUEST, (call) => {
    const n = Math.min(request.length, Number(call.args[1]));
    call.write(call.args[0], request.subarray(0, n));
    return n;
  });
  vm.onSyscall(HC_RESPOND, (call) => {
    answer = call.read(call.args[0], Math.min(Number(call.args[1]), 1 << 20)).toString();
    return 0;
  });
  return {
    /** Serve one request body; returns { status, body }. */
    serve(body) {
      request = Buffer.from(body);
      answer = null;
      try {
        const r = vm.run({ timeout: timeoutMs });
        if (answer === null) return { status: 500, body: `the request failed: ${r.status} ${r.stderr.toString().trim().split('\n').pop()}\n` };
        return { status: 200, body: answer };
      } catch (e) {
        return { status: 500, body: `the request was stopped: ${e.code}\n` };
      } finally {
        vm.reset();
      }
    },
    close: () => vm.close(),
  };
}

/** An HTTP server over `workers` forks of `snap`. */
export function createServer(snap, { workers = 2, timeoutMs = 1000 } = {}) {
  const idle = Array.from({ length: workers }, () => worker(snap, timeoutMs));
  const waiting = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const run = (w) => {
        const { status, body } = w.serve(Buffer.concat(chunks).toString() || '{}');
        res.writeHead(status, { 'content-type': status === 200 ? 'application/json' : 'text/plain' }).end(body);
        const next = waiting.shift();
        if (next) setImmediate(() => next(w));
        else idle.push(w);
      };
      const w = idle.pop();
      if (w) run(w);
      else waiting.push(run);
    });
  });
  server.on('close', () => {
    for (const w of idle) w.close();
  });
  return server;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  buildAddon();
  const snap = snapshotNode();
  const server = createServer(snap);
  server.listen(8090, () => console.log('serving node per request on http://localhost:8090 (POST a JSON body)'));
}

// One server for benches/server.mjs: `node benches/server-target.mjs kvmbox|spawn|nodevm PORT`.
// All three do the same job per request: render the request body into an HTML page.

import { spawnSync } from 'node:child_process';
import http from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';
import vm from 'node:vm';

import { ROOT } from './common.mjs';

const RENDER = path.join(ROOT, 'examples', 'render');
const require = createRequire(import.meta.url);
const [kind, port] = [process.argv[2], Number(process.argv[3])];

// The guest's logic in JavaScript, for the node:vm server.
const RENDER_JS = `
  const esc = (s) => s.replace(/[<>&"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c]);
  const words = body.split(' ').filter((w) => w.length > 0).length;
  out = '<!doctype html><html><head><title>kvmbox</title></head><body><h1>Hello from a KVM sandbox</h1><p>You sent ' +
    words + ' words: <blockquote>' + esc(body) + '</blockquote></body></html>\\n';
`;
const script = new vm.Script(RENDER_JS);

const { createServer, STRETCH_ROUNDS } = require(path.join(ROOT, 'examples', 'http-server.js'));
let server;
if (kind === 'kvmbox') {
  ({ server } = createServer(RENDER, Number(process.env.POOL_SIZE ?? 8), Number(process.env.WORKERS ?? 0)));
} else {
  server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      if (kind === 'spawn') {
        const r = spawnSync(RENDER, req.url === '/stretch' ? ['stretch', String(STRETCH_ROUNDS)] : [], { input: body });
        res.writeHead(r.status === 0 ? 200 : 500);
        res.end(r.stdout);
      } else if (req.url === '/stretch') {
        res.writeHead(501);
        res.end('not implemented in JavaScript (no native 64-bit multiply)\n');
      } else {
        const ctx = vm.createContext({ body: body.toString(), out: '' });
        script.runInContext(ctx, { timeout: 200 });
        res.writeHead(200);
        res.end(ctx.out);
      }
    });
  });
}
server.listen(port, '127.0.0.1', () => console.log('listening'));

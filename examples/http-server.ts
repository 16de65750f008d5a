/**
 * Example: a web server that runs native code per request in a fresh sandbox.
 *
 *   npm run example:server            # listens on 127.0.0.1:8080 (PORT=… to change)
 *   curl -d 'hello <world>' 127.0.0.1:8080
 *   curl -d 'secret' 127.0.0.1:8080/stretch   # CPU-bound: ~1 ms of key stretching in the guest
 *
 * The guest (examples/render.c) initializes once; every request is served by a fork of that
 * snapshot from a pool and the fork is reset afterwards, so no request sees another's data.
 * A request that crashes the guest gets a 500, one that loops gets a 504 after the timeout;
 * both leave the other requests (and the pool) unaffected.
 */
import * as http from 'node:http';
import * as path from 'node:path';
import type { PoolMachine } from '../dist/index.js';
import { GuestFaultError, Machine, Pool, TimeoutError } from '../dist/index.js';

const GUEST = process.env.GUEST ?? path.join(__dirname, 'render');
const PORT = Number(process.env.PORT ?? 8080);
const POOL_SIZE = Number(process.env.POOL_SIZE ?? 8);
const TIMEOUT_MS = Number(process.env.TIMEOUT_MS ?? 200);
/** 0: forks on the main thread (each async call still runs on the fork's own vCPU thread). */
const WORKERS = Number(process.env.WORKERS ?? 0);
/** Rounds of the /stretch route (about 1 ms of guest work). */
export const STRETCH_ROUNDS = 300_000;

export function createServer(guest = GUEST, poolSize = POOL_SIZE, workers = WORKERS): { server: http.Server; pool: Pool<PoolMachine> } {
  const vm = Machine.fromFile(guest, { memory: 64 << 20, timeout: TIMEOUT_MS });
  if (vm.run().status !== 'paused') throw new Error('the guest did not pause after initializing');
  const pool = new Pool<PoolMachine>(vm.snapshot(), { size: poolSize, workers });
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      const body = Buffer.concat(chunks);
      const stretch = req.url === '/stretch';
      // Room for the page (the template plus the body, escaped), or for a 16-digit hex hash.
      const out = Buffer.alloc(stretch ? 64 : 64 * 1024 + body.length * 6);
      try {
        const n = await pool.with((m) =>
          stretch ? m.callAsync('stretch', body, body.length, STRETCH_ROUNDS, out, out.length) : m.callAsync('render', body, body.length, out, out.length),
        );
        if (n < 0) throw new Error('render failed');
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
        res.end(out.subarray(0, n));
      } catch (e) {
        const status = e instanceof TimeoutError ? 504 : 500;
        res.writeHead(status, { 'content-type': 'text/plain' });
        res.end(e instanceof GuestFaultError || e instanceof TimeoutError ? `${e.name}: ${e.message}\n` : 'internal error\n');
      }
    });
  });
  return { server, pool };
}

if (require.main === module) {
  const { server } = createServer();
  server.listen(PORT, '127.0.0.1', () => console.log(`listening on http://127.0.0.1:${PORT} (pool of ${POOL_SIZE} forks)`));
}

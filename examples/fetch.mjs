#!/usr/bin/env node
// Networking for a guest, on the embedder's terms: the guest's HC_FETCH host call is answered
// by an async handler that fetches only URLs the embedder allows (here: one origin), with the
// call's abort signal so a timeout or interrupt stops the download too.
//   gcc -O2 -static -o examples/fetch examples/fetch.c && node examples/fetch.mjs http://127.0.0.1:8080/
import { fileURLToPath } from 'node:url';

import { Machine } from '../dist/index.mjs';

const HC_FETCH = 0x10100;
const EACCES = 13;
const EIO = 5;

/** Run the fetch guest at `guestPath` for `url`, letting it reach only `allowedOrigin`. */
export async function fetchThroughHost(guestPath, url, allowedOrigin) {
  const vm = Machine.fromFile(guestPath, { args: ['fetch', url], timeout: 10_000 });
  vm.onSyscall(HC_FETCH, async (call) => {
    const [url, buf, cap] = call.args;
    const target = call.readString(url, 4096);
    if (new URL(target).origin !== allowedOrigin) return -EACCES;
    try {
      const body = Buffer.from(await (await fetch(target, { signal: call.signal })).arrayBuffer());
      const n = Math.min(body.length, Number(cap));
      call.write(buf, body.subarray(0, n));
      return n;
    } catch {
      return -EIO;
    }
  });
  try {
    return await vm.runAsync();
  } finally {
    vm.close();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const url = process.argv[2] ?? 'http://127.0.0.1:8080/';
  const r = await fetchThroughHost(fileURLToPath(new URL('./fetch', import.meta.url)), url, new URL(url).origin);
  process.stdout.write(r.stdout);
  process.stderr.write(r.stderr);
  process.exitCode = r.exitCode;
}

// In-machine sockets and event loops: AF_UNIX socket pairs (stream, datagram, seqpacket) with
// select/pselect/poll/epoll, timerfd and signalfd in one epoll loop, differential against
// native; and the event loops that need them —
// Python's asyncio (its self-pipe is a socket pair) and node's libuv — identical to native.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import test from 'ava';

import { GUEST_DIR, guest, requireKvm, runKvm, runNative, summarize, systemLibraries, tempDir, VARIANTS } from './helpers.mjs';

requireKvm(test);

for (const variant of VARIANTS) {
  test(`sockets-${variant}: socket pairs, select and friends as natively`, (t) => {
    const file = guest(`sockets-${variant}`);
    const native = summarize(runNative(file));
    t.is(native.exitCode, 0, native.stderr);
    t.true(native.stdout.includes('recv blocking until a thread sends       4'), native.stdout);
    t.deepEqual(summarize(runKvm(file)), native);
  });
}

for (const variant of VARIANTS) {
  test(`notify-${variant}: one epoll over an eventfd, a timerfd, a socket pair and a signalfd, as natively`, (t) => {
    const file = guest(`notify-${variant}`);
    const native = summarize(runNative(file));
    t.is(native.exitCode, 0, native.stderr);
    t.true(native.stdout.includes('all sources seen 1, at least 3 timer ticks 1'), native.stdout);
    t.deepEqual(summarize(runKvm(file)), native);
  });
}

const dir = tempDir('kvmbox-loops-');

test('python3 asyncio: gather of sleeping coroutines, as natively', (t) => {
  const python = '/usr/bin/python3';
  const stdlib = spawnSync(python, ['-c', 'import sysconfig; print(sysconfig.get_path("stdlib"))'], { encoding: 'utf8' }).stdout.trim();
  const script = path.join(dir, 'aio.py');
  fs.writeFileSync(
    script,
    [
      'import asyncio',
      'async def work(i):',
      '    await asyncio.sleep(0.005 * i)',
      '    return i * i',
      'async def main():',
      '    print(await asyncio.gather(*(work(i) for i in range(6))))',
      '    q = asyncio.Queue()',
      '    async def produce():',
      '        for i in range(3):',
      '            await q.put(i)',
      '            await asyncio.sleep(0)',
      '    asyncio.create_task(produce())',
      '    print([await q.get() for _ in range(3)])',
      'asyncio.run(main())',
    ].join('\n'),
  );
  const opts = { args: [python, script], env: { LANG: 'C' } };
  const native = summarize(runNative(python, opts));
  t.is(native.stdout, '[0, 1, 4, 9, 16, 25]\n[0, 1, 2]\n');
  const kvm = summarize(runKvm(python, { ...opts, allowRead: [...systemLibraries(), stdlib, script], memory: 512 * 1024 * 1024 }));
  t.deepEqual(kvm, native);
});

test('node -e with a timer, and a node script transforming an allowed JSON file, as natively', (t) => {
  const node = process.execPath; // the node running the tests: a dynamic executable
  const data = path.join(dir, 'data.json');
  fs.writeFileSync(data, JSON.stringify({ items: [3, 1, 2], name: 'kvmbox' }));
  const script = path.join(dir, 'transform.js');
  fs.writeFileSync(
    script,
    `const fs = require('fs');
const d = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
d.items.sort((a, b) => a - b);
d.total = d.items.reduce((a, b) => a + b, 0);
setTimeout(() => console.log(JSON.stringify(d)), 5);
`,
  );
  // V8 reserves large address ranges; guest memory is also the address space (see README).
  const opts = { allowRead: [...systemLibraries(), script, data], memory: 4 * 1024 ** 3, timeout: 60_000 };
  const timer = summarize(runNative(node, { args: [node, '-e', 'setTimeout(() => console.log(1 + 1), 10)'] }));
  t.deepEqual(summarize(runKvm(node, { args: [node, '-e', 'setTimeout(() => console.log(1 + 1), 10)'], ...opts })), timer);
  const native = summarize(runNative(node, { args: [node, script, data] }));
  t.is(native.stdout, '{"items":[1,2,3],"name":"kvmbox","total":6}\n');
  t.deepEqual(summarize(runKvm(node, { args: [node, script, data], ...opts })), native);
});

test('examples/fetch: networking through a host call, on the embedder’s terms', async (t) => {
  const { spawnSync: spawn } = await import('node:child_process');
  const http = await import('node:http');
  const exe = path.join(dir, 'fetch');
  const built = spawn('gcc', ['-O2', '-static', '-o', exe, path.join(GUEST_DIR, '..', '..', 'examples', 'fetch.c')], { encoding: 'utf8' });
  t.is(built.status, 0, built.stderr);
  const { fetchThroughHost } = await import('../examples/fetch.mjs');
  const server = http.createServer((req, res) => res.end(`hello from ${req.url} over the host\n`));
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  const origin = `http://127.0.0.1:${server.address().port}`;
  const ok = await fetchThroughHost(exe, `${origin}/page`, origin);
  t.is(ok.exitCode, 0, ok.stderr.toString());
  t.is(ok.stdout.toString(), '31 bytes, 6 words: hello from /page over the host\n\n');
  const denied = await fetchThroughHost(exe, 'http://example.invalid/', origin);
  t.is(denied.exitCode, 1);
  t.is(denied.stderr.toString(), 'fetch http://example.invalid/: error 13\n');
});

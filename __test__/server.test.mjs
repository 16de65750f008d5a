// The example server: each request in a pooled fork; a crash gives 500, a loop 504, and
// neither affects other requests or later ones.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';

import test from 'ava';

import { buildExample } from '../scripts/build-example.mjs';

import { REPO_DIR, requireKvm, tempDir } from './helpers.mjs';

requireKvm(test);

const require = createRequire(import.meta.url);
const dir = tempDir('kvmbox-server-');
const render = buildExample(path.join(dir, 'render'));
const { createServer, STRETCH_ROUNDS } = require(path.join(REPO_DIR, 'examples', 'http-server.js'));

test('the example server renders, isolates failures and keeps serving', async (t) => {
  const { server, pool } = createServer(render, 2);
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${server.address().port}`;
  const post = async (body) => {
    const r = await fetch(url, { method: 'POST', body });
    return { status: r.status, text: await r.text() };
  };
  try {
    const ok = await post('hello <world>');
    t.is(ok.status, 200);
    t.regex(ok.text, /You sent 2 words: <blockquote>hello &lt;world&gt;<\/blockquote>/);
    const [crash, loop, ...others] = await Promise.all([post('crash'), post('loop'), ...Array.from({ length: 10 }, (_, i) => post(`request ${i}`))]);
    t.is(crash.status, 500);
    t.regex(crash.text, /GuestFaultError/);
    t.is(loop.status, 504);
    t.regex(loop.text, /TimeoutError/);
    others.forEach((o, i) => {
      t.is(o.status, 200);
      t.true(o.text.includes(`<blockquote>request ${i}</blockquote>`), 'each response has its own request and nothing else');
    });
    const after = await post('after the failures');
    t.is(after.status, 200);
    t.regex(after.text, /You sent 3 words/);
    // The CPU-bound route gives what the same program computes natively.
    const r = await fetch(`${url}/stretch`, { method: 'POST', body: 'secret' });
    t.is(r.status, 200);
    const native = spawnSync(render, ['stretch', String(STRETCH_ROUNDS)], { input: 'secret', encoding: 'utf8' });
    t.regex(native.stdout, /^[0-9a-f]{16}\n$/);
    t.is(await r.text(), native.stdout);
  } finally {
    server.close();
    pool.close();
  }
});

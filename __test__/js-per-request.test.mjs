// examples/js-per-request: node itself, initialized once in kvmbox and snapshotted, serving
// every HTTP request from a fork that is reset afterwards — answers come back, one request's
// globals never reach the next, each request gets fresh randomness, and a request that throws
// or runs away is stopped without harming the next.
import test from 'ava';

import { requireKvm } from './helpers.mjs';

requireKvm(test);

test('node per request: answers, isolation between requests, failures contained', async (t) => {
  const { buildAddon, snapshotNode, createServer } = await import('../examples/js-per-request/server.mjs');
  buildAddon();
  const snap = snapshotNode();
  const server = createServer(snap, { workers: 2, timeoutMs: 2000 });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    server.close();
    snap.close();
  });
  const url = `http://127.0.0.1:${server.address().port}/`;
  const post = async (body) => {
    const r = await fetch(url, { method: 'POST', body: JSON.stringify(body) });
    return { status: r.status, text: await r.text() };
  };

  const first = await post({ title: 'squares', items: [1, 2, 3] });
  t.is(first.status, 200, first.text);
  const a = JSON.parse(first.text);
  t.is(a.html, '<h1>squares</h1><ul><li>1</li><li>4</li><li>9</li></ul>');
  t.is(a.requestsSeen, 1);
  // A request leaves a global behind; no later request sees it, or any other state.
  t.is((await post({ leak: 'secret-of-request-2' })).status, 200);
  const randoms = new Set([a.random]);
  for (let i = 0; i < 6; i++) {
    const r = JSON.parse((await post({ items: [i] })).text);
    t.is(r.requestsSeen, 1, `request ${i}: a fresh machine state`);
    t.is(r.leakedFromEarlier, null, `request ${i}: nothing leaked`);
    randoms.add(r.random);
  }
  t.is(randoms.size, 7, 'every request got its own Math.random sequence');
  // Failures: an exception, a runaway loop (stopped by the timeout); the next request is fine.
  const thrown = await post({ throw: 'boom' });
  t.is(thrown.status, 500);
  t.regex(thrown.text, /failed: exited/);
  const spun = await post({ spin: true });
  t.is(spun.status, 500);
  t.regex(spun.text, /TIMEOUT/);
  // Concurrent requests share the two workers.
  const many = await Promise.all(Array.from({ length: 6 }, (_, i) => post({ items: [i] })));
  for (const [i, r] of many.entries()) {
    t.is(r.status, 200);
    t.is(JSON.parse(r.text).html, `<h1>kvmbox</h1><ul><li>${i * i}</li></ul>`);
  }
});

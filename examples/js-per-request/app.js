// The JavaScript that serves each request inside kvmbox: node starts, does its expensive
// initialization once, and pauses (the host snapshots it there). Every request is a fork of
// that snapshot (or a reset one) resumed after the pause: it gets the request body, answers,
// and pauses again; the host then resets it, so nothing of this request — globals, caches,
// timers — reaches the next.
const path = require('node:path');
const kvmbox = require(path.join(__dirname, 'kvmbox.node'));

// Initialization worth doing once: here, a precompiled template and a lookup table.
const render = (title, items) => `<h1>${title}</h1><ul>${items.map((i) => `<li>${i}</li>`).join('')}</ul>`;
const squares = Array.from({ length: 1000 }, (_, i) => i * i);

kvmbox.pause(); // ← the snapshot

// Every fork resumes with the snapshot's PRNG state: give Math.random fresh seeds (sfc32).
{
  const s = new Uint32Array(kvmbox.entropy().buffer, 0, 4);
  let [a, b, c, d] = s;
  Math.random = () => {
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return (t >>> 0) / 4294967296;
  };
}

const req = JSON.parse(kvmbox.request());
// State a request may leave behind: with a reset per request, every request sees 1 here.
globalThis.requestsSeen = (globalThis.requestsSeen ?? 0) + 1;
if (req.leak) globalThis.leaked = req.leak;
if (req.spin) for (;;);
if (req.throw) throw new Error(req.throw);
const body = {
  html: render(req.title ?? 'kvmbox', (req.items ?? []).map((n) => squares[n] ?? 'n/a')),
  requestsSeen: globalThis.requestsSeen,
  leakedFromEarlier: globalThis.leaked === undefined || req.leak ? null : globalThis.leaked,
  random: Math.random(),
};
kvmbox.respond(JSON.stringify(body));
kvmbox.pause(); // done: the host resets this machine for the next request

// Property test of the SDK's surface: random option objects and arguments — wrong types,
// NaN, ±Infinity, huge and negative numbers, 2^64, unknown keys, nested junk — thrown at every
// public method. Whatever happens, only kvmbox's typed errors may come out (never a TypeError
// from deep inside, never an abort of Node), and the process stays healthy. Seeded, so a
// failure reproduces: the message names the seed and the call.
import test from 'ava';

import { assertHealthy, guest, KvmboxError, Machine, measureCallFloor, Pool, probe, requireKvm, Snapshot, setVmPoolSize, tempDir } from './helpers.mjs';

requireKvm(test);

const calls = guest('calls-musl');
const hello = guest('hello-musl');

/** mulberry32: a small seeded PRNG. */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const NUMBERS = [
  0,
  -0,
  1,
  -1,
  0.5,
  7,
  255,
  4096,
  2 ** 31,
  2 ** 32,
  2 ** 53,
  2 ** 53 + 2,
  2 ** 63,
  2 ** 64,
  1e22,
  1e300,
  Number.MAX_VALUE,
  -1e300,
  NaN,
  Infinity,
  -Infinity,
];
const BIGINTS = [0n, 1n, -1n, 2n ** 63n, -(2n ** 63n), 2n ** 64n - 1n, 2n ** 64n, -(2n ** 64n), 10n ** 30n];
const STRINGS = ['', 'add', 'negate', 'str_len', 'nonexistent_symbol', 'inherit', 'pipe', 'a\0b', '/', '/etc/passwd', 'x'.repeat(5000), '../..', 'timeout'];
const KEYS = [
  'timeout',
  'signal',
  'timeoutMs',
  'memory',
  'args',
  'env',
  'stdin',
  'stdout',
  'stderr',
  'allowRead',
  'trace',
  'exePath',
  'outputLimit',
  'hugepages',
  'seccomp',
  'size',
  'workers',
  'resetAfterUse',
  'workerSetup',
  'port',
  'host',
  '__proto__',
  'constructor',
  'toString',
];

function gen(r, depth = 0) {
  const pick = (xs) => xs[Math.floor(r() * xs.length)];
  switch (Math.floor(r() * (depth > 1 ? 7 : 10))) {
    case 0:
      return undefined;
    case 1:
      return null;
    case 2:
      return pick(NUMBERS);
    case 3:
      return pick(BIGINTS);
    case 4:
      return pick(STRINGS);
    case 5:
      return r() < 0.5;
    case 6:
      return pick([Symbol('s'), () => 1, new Uint8Array(3), Buffer.from('abc'), new Date(0), /re/, new AbortController().signal]);
    case 7:
      return Array.from({ length: Math.floor(r() * 4) }, () => gen(r, depth + 1));
    default: {
      const o = {};
      for (let i = Math.floor(r() * 4); i > 0; i--) o[pick(KEYS)] = gen(r, depth + 1);
      return o;
    }
  }
}

/** Options that keep a run short whatever else they say: a valid timeout on top of junk. */
function boundedOptions(r) {
  const o = gen(r);
  if (o && typeof o === 'object' && !Array.isArray(o) && r() < 0.7) o.timeout = 2000;
  return o;
}

/** Only typed errors may escape; anything else is recorded with the seed and call. */
async function attempt(failures, label, f) {
  try {
    const v = f();
    if (v && typeof v.then === 'function') await v;
  } catch (e) {
    if (!(e instanceof KvmboxError)) failures.push(`${label}: ${e?.constructor?.name}: ${e?.message ?? String(e)}`);
  }
}

function paused(closeLater) {
  const vm = Machine.fromFile(calls, { timeout: 5000 });
  closeLater.push(vm);
  vm.run();
  return vm;
}

for (const seed of [0x5eed, 0xb0a7, 0xfeed])
  test(`random options and arguments at every public method give only typed errors (seed ${seed})`, async (t) => {
    const r = rng(seed);
    const dir = tempDir();
    const closeLater = [];
    t.teardown(() => {
      for (const m of closeLater) m.close();
    });
    const base = paused(closeLater);
    const snap = base.snapshot();
    const snapFile = `${dir}/snap.kvmsnap`;
    snap.save(snapFile);
    // Call targets: safe functions, junk, and addresses that are not executable.
    const target = () =>
      r() < 0.5
        ? ['add', 'negate', 'str_len', 'empty', 'count_byte'][Math.floor(r() * 5)]
        : r() < 0.5
          ? gen(r)
          : [0, 0x1000, 2 ** 64, -1, 2n ** 64n][Math.floor(r() * 5)];
    const args = () => Array.from({ length: Math.floor(r() * 8) }, () => gen(r));
    const methods = [
      [
        'Machine.fromFile',
        () => {
          const m = Machine.fromFile(r() < 0.8 ? hello : gen(r), boundedOptions(r));
          closeLater.push(m);
          return m.run();
        },
      ],
      [
        'Machine.fromBuffer',
        () => {
          const m = Machine.fromBuffer(r() < 0.5 ? gen(r) : Buffer.from('\x7fELF junk'), boundedOptions(r));
          closeLater.push(m);
        },
      ],
      ['run', () => snap.fork().run(boundedOptions(r))],
      [
        'runAsync',
        () => {
          const f = snap.fork();
          closeLater.push(f);
          return f.runAsync(boundedOptions(r));
        },
      ],
      [
        'call',
        () => {
          const f = snap.fork();
          closeLater.push(f);
          return f.call(target(), ...args());
        },
      ],
      [
        'callBigInt',
        () => {
          const f = snap.fork();
          closeLater.push(f);
          return f.callBigInt(target(), ...args());
        },
      ],
      [
        'callAsync',
        () => {
          const f = snap.fork();
          closeLater.push(f);
          return f.callAsync(target(), ...args());
        },
      ],
      [
        'callBigIntAsync',
        () => {
          const f = snap.fork();
          closeLater.push(f);
          return f.callBigIntAsync(target(), ...args());
        },
      ],
      ['fn', () => base.fn(gen(r))],
      ['onSyscall', () => base.onSyscall(gen(r), r() < 0.5 ? gen(r) : null)],
      ['memory.read', () => base.memory.read(gen(r), gen(r))],
      ['memory.write', () => base.memory.write(gen(r), gen(r))],
      ['memory.readCString', () => base.memory.readCString(gen(r), gen(r))],
      ['symbol', () => base.symbol(gen(r))],
      ['interrupt', () => snap.fork().interrupt()],
      [
        'reset',
        () => {
          const f = snap.fork();
          closeLater.push(f);
          return f.reset(gen(r));
        },
      ],
      [
        'debug',
        () => {
          const f = snap.fork();
          closeLater.push(f);
          const o = gen(r);
          if (o && typeof o === 'object') o.port = -1;
          return f.debug(o);
        },
      ],
      ['Snapshot.load', () => Snapshot.load(r() < 0.5 ? snapFile : gen(r), gen(r))],
      [
        'fork',
        () => {
          const f = snap.fork(gen(r));
          closeLater.push(f);
        },
      ],
      ['setVmPoolSize', () => setVmPoolSize(gen(r))],
      ['measureCallFloor', () => measureCallFloor(r() < 0.5 ? gen(r) : 10)],
      [
        'Pool',
        () => {
          const o = gen(r);
          if (o && typeof o === 'object' && 'workers' in o) delete o.workers; // threads are slow to start; covered elsewhere
          const p = new Pool(snap, o);
          return p.with((m) => m.callAsync('add', 1, 2), gen(r)).finally(() => p.close());
        },
      ],
      [
        'pool.acquire',
        () => {
          const p = new Pool(snap, { size: 1 });
          return p.acquire(gen(r)).finally(() => p.close());
        },
      ],
      ['probe', () => probe(gen(r))],
    ];
    const failures = [];
    for (let i = 0; i < 800; i++) {
      const [name, f] = methods[Math.floor(r() * methods.length)];
      await attempt(failures, `seed ${seed}, iteration ${i}, ${name}`, f);
    }
    setVmPoolSize(0);
    t.deepEqual(failures, []);
  });

test('after all of that the host is fine', (t) => {
  assertHealthy(t);
});

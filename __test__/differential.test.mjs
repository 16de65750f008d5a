// Differential tests: every guest program runs natively (spawnSync, pipes) and in
// kvmbox with the same argv, environment and stdin; stdout, stderr and the exit
// status (or the signal) must be identical.
import test from 'ava';

import { guest, requireKvm, runKvm, runNative, summarize, VARIANTS } from './helpers.mjs';

requireKvm(test);

// A few KB of deterministic stdin with mixed case, digits and punctuation.
function makeInput(n) {
  let s = '';
  let x = 12345;
  const words = ['alpha', 'Bravo', 'charlie', 'DELTA', 'echo', 'fox-trot', 'golf!', '42', 'hotel.', 'India?'];
  for (let line = 0; s.length < n; line++) {
    const parts = [];
    for (let k = 0; k < 8; k++) {
      x = (x * 1103515245 + 12345) >>> 0;
      parts.push(words[(x >>> 16) % words.length]);
    }
    s += `${line}: ${parts.join(' ')}\n`;
  }
  return s;
}
const INPUT = makeInput(6000);

/** [program base, label, options] */
const C_CASES = [
  ['hello', 'no args', {}],
  [
    'args',
    'several args and env vars',
    {
      argv: ['one', 'two words', '', '--flag=x', 'ünïcødé', '$HOME'],
      env: { FOO: 'bar', EMPTY: '', PATH: '/usr/bin:/bin', LANG: 'C', WITH_EQ: 'a=b=c', LONG: 'x'.repeat(500) },
    },
  ],
  ['args', 'no extra args, empty env', {}],
  [
    'args',
    '3000 args and a 100 KB env var (large initial stack)',
    {
      argv: Array.from({ length: 3000 }, (_, i) => `arg${i}-${'y'.repeat(i % 50)}`),
      env: Object.fromEntries([['BIG', 'z'.repeat(100_000)], ...Array.from({ length: 500 }, (_, i) => [`V${i}`, `val${i}`])]),
    },
  ],
  ['malloc', 'default', {}],
  ['floats', 'default', {}],
  ['qsort', 'default', {}],
  ['stdin', 'input of a few KB', { input: INPUT }],
  ['stdin', 'empty input', { input: '' }],
  ['clock_random', 'default', {}],
  ['exit', 'code 0', { argv: ['0'] }],
  ['exit', 'code 3 (default)', {}],
  ['exit', 'code 255', { argv: ['255'] }],
  ['exit', 'code 256 wraps to 0', { argv: ['256'] }],
  ['faults', 'no mode (usage, exit 2)', {}],
  ['faults', 'abort', { argv: ['abort'] }],
];

const CASES = [];
for (const [base, label, opts] of C_CASES) {
  for (const v of VARIANTS) CASES.push({ name: `${base}-${v}`, label, ...opts });
}
CASES.push({ name: 'cpp_exceptions', label: 'normal' });
CASES.push({ name: 'cpp_exceptions', label: 'uncaught (SIGABRT)', argv: ['uncaught'], expectSignal: 'SIGABRT' });
CASES.push({ name: 'rust_std', label: 'normal' });
CASES.push({ name: 'rust_std', label: 'panic (exit 101)', argv: ['panic'], expectExit: 101 });
CASES.push({ name: 'rust_std', label: 'with env and args', argv: ['x', 'y'], env: { RUST_BACKTRACE: '0', A: 'b' } });

for (const c of CASES) {
  test(`${c.name}: ${c.label}`, (t) => {
    const file = guest(c.name);
    const opts = { args: [file, ...(c.argv ?? [])], env: c.env ?? {}, input: c.input ?? '' };
    const native = summarize(runNative(file, opts));
    const kvm = runKvm(file, opts);
    const k = summarize(kvm);

    // Sanity of the native run itself, so the comparison means something.
    if (c.expectSignal) t.deepEqual({ status: native.status, signal: native.signal }, { status: 'signaled', signal: c.expectSignal }, 'native run');
    if (c.expectExit !== undefined)
      t.deepEqual({ status: native.status, exitCode: native.exitCode }, { status: 'exited', exitCode: c.expectExit }, 'native run');

    t.is(k.status, native.status, 'status');
    if (native.status === 'signaled') {
      t.is(k.signal, native.signal, 'signal');
      t.is(kvm.exitCode, 128 + kvm.signalNumber, 'exitCode of a signaled run is 128+signal');
    } else {
      t.is(k.exitCode, native.exitCode, 'exit code');
    }
    t.deepEqual(k.stdout, native.stdout, 'stdout');
    t.deepEqual(k.stderr, native.stderr, 'stderr');
    t.false(kvm.stdoutTruncated);
    t.false(kvm.stderrTruncated);
  });
}

test('stdin guest echoes the input checksum and length', (t) => {
  // Guards against both sides silently getting no input.
  const file = guest('stdin-glibc');
  const r = runKvm(file, { input: INPUT });
  t.true(r.stdout.toString().startsWith(`length: ${Buffer.byteLength(INPUT)}\n`));
  t.true(r.stdout.toString().includes(INPUT.toUpperCase()));
});

test('args guest sees exactly the given argv and env (not the host env)', (t) => {
  const file = guest('args-musl');
  const r = runKvm(file, { args: ['custom-argv0', 'a b'], env: ['K=V'] });
  const out = r.stdout.toString();
  t.true(out.includes('argc=2\nargv[0]=custom-argv0\nargv[1]=a b\n'), out);
  t.true(out.includes('env[0]=K=V\nenvc=1\n'), out);
  t.true(out.includes('AT_RANDOM: random ok'));
  t.true(out.includes('AT_PHDR: consistent'));
  t.true(out.includes('AT_ENTRY == &_start: yes'));
});

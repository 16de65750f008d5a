// SDK surface: output modes and callbacks, env/stdin forms, outputLimit, probe(),
// symbol(), option validation.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';

import test from 'ava';

import { guest, InvalidArgumentError, KvmboxError, kvmbox, Machine, probe, REPO_DIR, requireKvm, runNative, summarize, waitFor } from './helpers.mjs';

requireKvm(test);

const BIG_INPUT = 'The quick brown fox jumps over the lazy dog.\n'.repeat(5000); // ~225 KB

test('named ESM imports and the default export expose the same API', async (t) => {
  const named = await import('../dist/index.js');
  for (const k of [
    'Machine',
    'probe',
    'KvmboxError',
    'ElfError',
    'GuestFaultError',
    'TimeoutError',
    'OutOfMemoryError',
    'KvmUnavailableError',
    'InvalidArgumentError',
    'InvalidStateError',
  ]) {
    t.is(typeof kvmbox[k], 'function', `default export has ${k}`);
    t.is(named[k], kvmbox[k], `named export ${k}`);
  }
});

test("stdout and stderr default to 'pipe' (captured in the result)", (t) => {
  const file = guest('exit-glibc');
  const r = Machine.fromFile(file, { args: [file, '7'] }).run();
  t.is(r.status, 'exited');
  t.is(r.exitCode, 7);
  t.true(Buffer.isBuffer(r.stdout));
  t.true(Buffer.isBuffer(r.stderr));
  t.is(r.stdout.toString(), 'exit guest: stdout line, exiting with 7\n');
  t.is(r.stderr.toString(), 'exit guest: stderr line, exiting with 7\n');
  t.false(r.stdoutTruncated);
  t.false(r.stderrTruncated);
});

test('stdout callback receives Buffer chunks whose concatenation equals the native output', (t) => {
  const file = guest('stdin-glibc');
  const chunks = [];
  const r = Machine.fromFile(file, { stdin: BIG_INPUT, stdout: (c) => chunks.push(c) }).run();
  t.is(r.exitCode, 0);
  t.true(chunks.length >= 1);
  t.true(chunks.every((c) => Buffer.isBuffer(c)));
  t.is(r.stdout.length, 0, 'nothing captured in callback mode');
  const native = runNative(file, { input: BIG_INPUT });
  t.deepEqual(Buffer.concat(chunks).toString(), native.stdout.toString());
});

test('stdout and stderr callbacks both receive their stream (rust_std)', (t) => {
  const file = guest('rust_std');
  const out = [];
  const err = [];
  const r = Machine.fromFile(file, { stdout: (c) => out.push(c), stderr: (c) => err.push(c) }).run();
  const native = runNative(file);
  t.is(r.exitCode, native.exitCode);
  t.deepEqual(Buffer.concat(out).toString(), native.stdout.toString());
  t.deepEqual(Buffer.concat(err).toString(), native.stderr.toString());
  t.is(r.stdout.length, 0);
  t.is(r.stderr.length, 0);
});

test('a callback on one stream, pipe on the other', (t) => {
  const file = guest('exit-musl');
  const err = [];
  const r = Machine.fromFile(file, { args: [file, '0'], stderr: (c) => err.push(c) }).run();
  t.is(r.stdout.toString(), 'exit guest: stdout line, exiting with 0\n');
  t.is(Buffer.concat(err).toString(), 'exit guest: stderr line, exiting with 0\n');
  t.is(r.stderr.length, 0);
});

test('a stdout callback that throws makes run() throw that same error (and stops the guest)', (t) => {
  const file = guest('faults-glibc');
  const boom = new Error('boom from callback');
  let calls = 0;
  const vm = Machine.fromFile(file, {
    args: [file, 'loop'], // prints one line, then loops forever
    timeout: 10_000,
    stdout: () => {
      calls++;
      throw boom;
    },
  });
  const t0 = performance.now();
  const err = t.throws(() => vm.run());
  t.is(err, boom);
  t.is(calls, 1);
  t.true(performance.now() - t0 < 5000, 'guest stopped without waiting for the timeout');
});

test('a stderr callback that throws makes run() throw that same error', (t) => {
  const file = guest('exit-glibc');
  const boom = new TypeError('stderr sink failed');
  const err = t.throws(() =>
    Machine.fromFile(file, {
      args: [file, '0'],
      stderr: () => {
        throw boom;
      },
    }).run(),
  );
  t.is(err, boom);
});

test('a callback that throws a non-Error value: run() throws that same value', (t) => {
  const file = guest('exit-glibc');
  for (const value of [{ custom: 'object' }, 'a string']) {
    const err = t.throws(
      () =>
        Machine.fromFile(file, {
          args: [file, '0'],
          stdout: () => {
            throw value;
          },
        }).run(),
      { any: true },
    );
    t.is(err, value);
  }
});

test('env as an object and as a K=V array give the same environment', (t) => {
  const file = guest('args-glibc');
  const obj = Machine.fromFile(file, { args: [file], env: { A: '1', B: 'two words', C: 'x=y' } }).run();
  const arr = Machine.fromFile(file, { args: [file], env: ['A=1', 'B=two words', 'C=x=y'] }).run();
  t.deepEqual(obj.stdout.toString(), arr.stdout.toString());
  t.true(obj.stdout.toString().includes('env[0]=A=1\nenv[1]=B=two words\nenv[2]=C=x=y\nenvc=3\n'), obj.stdout.toString());
});

test('default env is empty, and the host env never leaks', (t) => {
  const file = guest('args-musl');
  process.env.KVMBOX_TEST_LEAK = 'leaked';
  const r = Machine.fromFile(file).run();
  t.true(r.stdout.toString().includes('envc=0\n'));
  t.false(r.stdout.toString().includes('KVMBOX_TEST_LEAK'));
});

test('default args is [path]', (t) => {
  const file = guest('args-glibc');
  const r = Machine.fromFile(file).run();
  t.true(r.stdout.toString().startsWith(`argc=1\nargv[0]=${file}\n`));
});

test('fromBuffer: default argv[0] is /guest, exePath sets it', (t) => {
  const bytes = fs.readFileSync(guest('args-glibc'));
  t.true(Machine.fromBuffer(bytes).run().stdout.toString().includes('argv[0]=/guest\n'));
  t.true(Machine.fromBuffer(bytes, { exePath: '/opt/x/prog' }).run().stdout.toString().includes('argv[0]=/opt/x/prog\n'));
});

test('stdin as a string, a Buffer and a Uint8Array give the same result', (t) => {
  const file = guest('stdin-pie');
  const input = 'héllo wörld\nsecond line\n';
  const s = Machine.fromFile(file, { stdin: input }).run();
  const b = Machine.fromFile(file, { stdin: Buffer.from(input) }).run();
  const u = Machine.fromFile(file, { stdin: new Uint8Array(Buffer.from(input)) }).run();
  t.deepEqual(s.stdout.toString(), b.stdout.toString());
  t.deepEqual(s.stdout.toString(), u.stdout.toString());
  t.true(s.stdout.toString().startsWith(`length: ${Buffer.byteLength(input)}\n`));
  t.deepEqual(s.stdout.toString(), runNative(file, { input }).stdout.toString());
});

test('stdin binary bytes (including NUL) pass through unchanged', (t) => {
  const file = guest('stdin-glibc');
  const input = Buffer.from([0, 1, 2, 255, 10, 0, 97, 98, 99]);
  t.deepEqual(Machine.fromFile(file, { stdin: input }).run().stdout, runNative(file, { input }).stdout);
});

test('default stdin is empty', (t) => {
  const r = Machine.fromFile(guest('stdin-musl')).run();
  t.true(r.stdout.toString().startsWith('length: 0\n'));
});

test('outputLimit: stdout is cut at the limit and flagged truncated', (t) => {
  const file = guest('stdin-glibc');
  const r = Machine.fromFile(file, { stdin: BIG_INPUT, outputLimit: 100 }).run();
  t.is(r.status, 'exited');
  t.is(r.exitCode, 0);
  t.true(r.stdoutTruncated);
  t.false(r.stderrTruncated);
  t.is(r.stdout.length, 100);
  t.deepEqual(r.stdout.toString(), runNative(file, { input: BIG_INPUT }).stdout.subarray(0, 100).toString());
});

test('outputLimit applies to stderr separately', (t) => {
  const file = guest('rust_std');
  const native = runNative(file);
  const r = Machine.fromFile(file, { outputLimit: 10 }).run();
  t.true(r.stderrTruncated);
  t.is(r.stderr.length, 10);
  t.deepEqual(r.stderr.toString(), native.stderr.subarray(0, 10).toString());
  t.true(r.stdoutTruncated);
});

test('outputLimit exactly the output size is not truncated', (t) => {
  const file = guest('hello-glibc');
  const r = Machine.fromFile(file, { outputLimit: 24 }).run();
  t.is(r.stdout.toString(), 'hello from kvmbox guest\n');
  t.false(r.stdoutTruncated);
});

test("'inherit' writes to the host process's own stdout/stderr", (t) => {
  const file = guest('exit-glibc');
  const script = `
    const { Machine } = require(${JSON.stringify(`${REPO_DIR}/dist/index.js`)});
    const r = Machine.fromFile(${JSON.stringify(file)}, { args: [${JSON.stringify(file)}, '4'], stdout: 'inherit', stderr: 'inherit' }).run();
    process.stdout.write('captured:' + r.stdout.length + ',' + r.stderr.length + ',code:' + r.exitCode + '\\n');
  `;
  const c = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
  t.is(c.status, 0, c.stderr);
  t.is(c.stdout, 'exit guest: stdout line, exiting with 4\ncaptured:0,0,code:4\n');
  t.is(c.stderr, 'exit guest: stderr line, exiting with 4\n');
});

test('probe() reports an available, known backend (pvm here)', (t) => {
  const p = probe();
  t.true(p.available);
  t.true(['pvm', 'vmx', 'svm', 'unknown'].includes(p.backend), p.backend);
  t.is(p.backend, 'pvm');
  t.is(p.error, undefined);
  if (p.syscallInRing3 !== undefined) t.is(typeof p.syscallInRing3, 'boolean');
});

test('symbol(): main is a bigint in the program text; unknown names are undefined', (t) => {
  const vm = Machine.fromFile(guest('hello-glibc'));
  const main = vm.symbol('main');
  t.is(typeof main, 'bigint');
  t.true(main >= 0x400000n && main < 0x800000n, `main at 0x${main.toString(16)}`);
  t.is(vm.symbol('definitely_not_a_symbol_xyz'), undefined);
});

test('symbol() keeps working after run() (e.g. to map a fault rip to a function)', (t) => {
  const file = guest('faults-glibc');
  const vm = Machine.fromFile(file, { args: [file, 'write_text'] });
  const victim = vm.symbol('text_victim');
  t.is(typeof victim, 'bigint');
  const err = t.throws(() => vm.run());
  t.is(err.address, victim);
  t.is(vm.symbol('text_victim'), victim, 'after a fault');
  const vm2 = Machine.fromFile(guest('hello-glibc'));
  const main = vm2.symbol('main');
  t.is(vm2.run().exitCode, 0);
  t.is(vm2.symbol('main'), main, 'after a normal exit');
});

test('symbol() for a PIE gives the relocated address of main', (t) => {
  const vm = Machine.fromFile(guest('hello-pie'));
  const main = vm.symbol('main');
  t.is(typeof main, 'bigint');
  t.true(main > 0x1000n);
});

test('symbol() finds main in a musl guest', (t) => {
  t.is(typeof Machine.fromFile(guest('hello-musl')).symbol('main'), 'bigint');
});

test('invalid options throw InvalidArgumentError', (t) => {
  const file = guest('hello-glibc');
  const bad = [
    { env: ['A\0B=1'] },
    { args: [file, 'a\0b'] },
    { stdout: 'bogus' },
    { stderr: 42 },
    { timeout: -1 },
    { memory: 0 },
    { allowRead: ['/nonexistent/kvmbox/path'] },
  ];
  for (const opts of bad) {
    const err = t.throws(() => Machine.fromFile(file, opts).run(), { instanceOf: InvalidArgumentError }, JSON.stringify(opts));
    if (err) {
      t.is(err.code, 'INVALID_ARGUMENT');
      t.true(err instanceof KvmboxError);
    }
  }
});

test('a negative outputLimit is rejected with InvalidArgumentError', (t) => {
  const file = guest('hello-glibc');
  t.throws(() => Machine.fromFile(file, { outputLimit: -1 }).run(), { instanceOf: InvalidArgumentError });
});

test('many machines in sequence (no resource leak)', async (t) => {
  const file = guest('hello-musl');
  // KVM-related descriptors only (/dev/kvm, anon_inode:kvm-vm / kvm-vcpu, guest memfds):
  // other fds of this process come and go with ava's own work.
  const fds = () =>
    fs.readdirSync('/proc/self/fd').filter((fd) => {
      try {
        return /kvm/i.test(fs.readlinkSync(`/proc/self/fd/${fd}`));
      } catch {
        return false;
      }
    }).length;
  const before = fds();
  // Every machine stays referenced, so no garbage collection can be what releases them.
  const machines = [];
  for (let i = 0; i < 200; i++) {
    const m = Machine.fromFile(file);
    machines.push(m);
    const r = m.run();
    if (r.exitCode !== 0 || r.stdout.toString() !== 'hello from kvmbox guest\n') {
      t.fail(`run ${i}: ${JSON.stringify(summarize(r))}`);
      return;
    }
  }
  // Finished machines must not hold their KVM file descriptors until GC. Teardown runs on a
  // background thread (up to 64 VMs queued), which on a busy host takes a moment to catch up.
  await waitFor(() => fds() - before < 20);
  t.true(fds() - before < 20, `open KVM fds: ${before} before, ${fds()} after 200 runs`);
  t.is(machines.length, 200);
});

test('result of a normal run has exactly the documented shape', (t) => {
  const r = Machine.fromFile(guest('hello-glibc')).run();
  t.deepEqual(Object.keys(r).sort(), ['exitCode', 'status', 'stderr', 'stderrTruncated', 'stdout', 'stdoutTruncated']);
});

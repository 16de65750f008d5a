// Guest function calls and host calls: kvmbox_pause() / resume, vm.call / callBigInt / fn,
// argument marshalling (numbers, bigints, booleans, strings, in/out buffers), vm.onSyscall
// (host calls and Linux syscall overrides), vm.memory, failures inside calls, bad input,
// and the async API (runAsync / callAsync / async handlers) on the `calls` guest.
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import v8 from 'node:v8';
import nodeVm from 'node:vm';

import test from 'ava';

import {
  GuestExitedError,
  GuestFaultError,
  guest,
  HOSTCALL_FIRST,
  HOSTCALL_LAST,
  HostCallError,
  InvalidArgumentError,
  InvalidStateError,
  KvmboxError,
  Machine,
  requireKvm,
  TimeoutError,
} from './helpers.mjs';

requireKvm(test);

const HC_ECHO = 0x10000;
const HC_LOOKUP = 0x10001;
const HC_UNHANDLED = 0x10abc;
const ENOSYS = -38;
const EBUSY = -16;
const SYS_WRITE = 1;
const SYS_GETPID = 39;

/** A fresh `calls` machine (closed when the test ends). */
function machine(t, variant = 'glibc', opts = {}) {
  const file = guest(`calls-${variant}`);
  const vm = Machine.fromFile(file, { args: [file], ...opts });
  t.teardown(() => vm.close());
  return vm;
}

/** A `calls` machine run up to its kvmbox_pause(). */
function paused(t, variant = 'glibc', opts = {}) {
  const vm = machine(t, variant, opts);
  t.is(vm.state, 'ready');
  const r = vm.run();
  t.is(r.status, 'paused', 'run() stops at kvmbox_pause()');
  if (typeof opts.stdout !== 'function') t.is(r.stdout.toString(), 'initialized\n');
  t.is(vm.state, 'paused');
  return vm;
}

async function pausedAsync(t, variant = 'glibc', opts = {}) {
  const vm = machine(t, variant, opts);
  const r = await vm.runAsync();
  t.is(r.status, 'paused');
  t.is(vm.state, 'paused');
  return vm;
}

/** spin(n) returns 0 + 1 + … + (n-1). */
const spinResult = (n) => Number((BigInt(n) * BigInt(n - 1)) / 2n); // exact, then rounded like the returned i64

/** Checks that a fresh machine on this variant pauses and serves a call. */
function assertFreshMachineWorks(t, variant = 'glibc') {
  const vm = paused(t, variant);
  t.is(vm.call('add', 20, 22), 42, 'a fresh machine works after the failure');
  vm.close();
}

// ---------------------------------------------------------------------------------------------
// 1. pause → calls → resume

function pauseCallResume(t, variant) {
  const vm = paused(t, variant);
  t.is(vm.call('was_initialized'), 1, 'main() ran before the pause');
  let counter = 0;

  t.is(vm.call('add', 2, 3), 5);
  t.is(vm.call('add', -10, 3), -7, 'negative numbers');
  t.is(vm.call('negate', 7), -7, 'rax is returned signed');
  t.is(vm.call('sum6', 1, 2, 3, 4, 5, 6), 1 + 4 + 9 + 16 + 25 + 36, 'six arguments land in the right registers');
  t.is(vm.call('sum6', 1, 0, 0, 0, 0, 0), 1);
  t.is(vm.call('sum6', 0, 0, 0, 0, 0, 1), 6);
  t.is(vm.call('empty'), 0, 'no arguments');

  t.is(vm.call('str_len', 'hello kvmbox'), 12, 'a string is copied in NUL-terminated');
  t.is(vm.call('str_len', ''), 0, 'an empty string');
  t.is(vm.call('str_len', 'héllo ✓'), Buffer.byteLength('héllo ✓'), 'strings are passed as UTF-8');

  const data = Buffer.alloc(1000);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7) % 13;
  const expected = [...data].filter((b) => b === 5).length;
  t.is(vm.call('count_byte', data, data.length, 5), expected, 'a Buffer is copied in');

  const buf = Buffer.from('make me loud');
  t.is(vm.call('upcase', buf, buf.length), 12);
  t.is(buf.toString(), 'MAKE ME LOUD', 'a Buffer is copied back out after the call');

  counter++;
  t.is(vm.call('counter_next'), counter);

  const big = 1n << 60n;
  t.is(vm.callBigInt('add', big, big + 1n), (1n << 61n) + 1n, 'callBigInt returns values > 2^53 exactly');
  t.is(vm.callBigInt('negate', 5n), -5n, 'callBigInt is signed');
  t.is(vm.callBigInt('add', (1n << 64n) - 1n, 0n), -1n, 'an unsigned 64-bit bigint argument is the same register value');
  t.is(vm.callBigInt('add', 2, 3), 5n);

  t.is(vm.call('add', true, true), 2, 'booleans are 1 and 0');
  t.is(vm.call('add', false, 5), 5);
  t.is(vm.call('add', null, 9), 9, 'null passes 0');
  t.is(vm.call('add', undefined, 4), 4, 'undefined passes 0');

  const add = vm.fn('add');
  t.is(typeof add, 'function');
  t.is(add(40, 2), 42, 'vm.fn binds a symbol');

  counter++;
  t.is(vm.call('counter_next'), counter);
  t.is(vm.call('getpid_twice'), 2, 'emulated syscalls work inside calls (getpid = 1)');

  const r = vm.run();
  t.is(r.status, 'exited', 'run() after calls resumes the program');
  t.is(r.exitCode, 7);
  t.is(r.stdout.toString(), `resumed: 0, counter ${counter}\n`, 'kvmbox_pause() returned 0 and state survived');
  t.is(vm.state, 'closed');
  t.throws(() => vm.call('add', 1, 1), { instanceOf: InvalidStateError }, 'no calls after exit');
}

test('glibc: pause, call functions with every argument kind, resume to exit 7', (t) => pauseCallResume(t, 'glibc'));
test('musl: pause, call functions with every argument kind, resume to exit 7', (t) => pauseCallResume(t, 'musl'));
test('pie: pause, call functions with every argument kind, resume to exit 7', (t) => pauseCallResume(t, 'pie'));

test('the host-call range constants are exported', (t) => {
  t.is(HOSTCALL_FIRST, 0x10000);
  t.is(HOSTCALL_LAST, 0xfffff);
});

test('call targets: symbol name, number address and bigint address', (t) => {
  const vm = paused(t);
  const addr = vm.symbol('add');
  t.is(typeof addr, 'bigint');
  t.is(vm.memory.symbol('add'), addr, 'memory.symbol and vm.symbol agree');
  t.is(vm.call(addr, 1, 2), 3, 'bigint address');
  t.is(vm.call(Number(addr), 3, 4), 7, 'number address');
  t.is(vm.callBigInt(addr, 5, 6), 11n);
  t.is(vm.call('add', 1, 1, { timeout: 5000 }), 2, 'a trailing options object is not an argument');
});

test('negative bigint arguments are signed 64-bit values (down to -2^63)', (t) => {
  const vm = paused(t);
  const cases = [-1n, -5n, -(1n << 62n), -(1n << 63n) + 1n, -(1n << 63n)];
  for (const v of cases) {
    let got;
    t.notThrows(() => {
      got = vm.callBigInt('add', v, 0n);
    }, `callBigInt('add', ${v}n, 0n) is accepted`);
    t.is(got, v, `add(${v}n, 0n)`);
  }
  t.is(vm.state, 'paused');
});

test('negative bigint arguments work under callAsync too', async (t) => {
  const vm = await pausedAsync(t);
  t.is(await vm.callBigIntAsync('negate', -7n).catch((e) => e), 7n, 'negate(-7n)');
  t.is(await vm.callAsync('add', -(1n << 63n), 1n << 62n).catch((e) => e), -(2 ** 62), 'add(-2^63, 2^62)');
});

test('Uint8Array arguments and sub-Buffers are copied in and out exactly', (t) => {
  const vm = paused(t);
  const u8 = new Uint8Array([...'abc def'].map((c) => c.charCodeAt(0)));
  t.is(vm.call('upcase', u8, u8.length), 7);
  t.is(Buffer.from(u8).toString(), 'ABC DEF', 'a plain Uint8Array receives the output');

  const whole = Buffer.from('xxhello worldxx');
  const sub = whole.subarray(2, 13);
  t.is(vm.call('upcase', sub, sub.length), 11);
  t.is(whole.toString(), 'xxHELLO WORLDxx', 'only the view is written back, at its offset');

  // Two buffers in one call are separate copies.
  const a = Buffer.from('aaaa');
  const b = Buffer.from('bbbb');
  t.is(vm.call('count_byte', a, 4, 'a'.charCodeAt(0)), 4);
  t.is(vm.call('count_byte', b, 4, 'a'.charCodeAt(0)), 0);
  t.is(vm.call('upcase', Buffer.alloc(0), 0), 0, 'an empty buffer');
});

// ---------------------------------------------------------------------------------------------
// 2. state and malloc across calls

test('state is kept between calls (counter_next) and memory.read sees it', (t) => {
  const vm = paused(t);
  const counterAddr = vm.symbol('counter');
  t.is(typeof counterAddr, 'bigint', 'the static counter is in the symbol table');
  t.is(vm.memory.read(counterAddr, 8).readBigInt64LE(), 0n);
  for (let i = 1; i <= 500; i++) {
    const v = vm.call('counter_next');
    if (v !== i) return t.fail(`counter_next call ${i} returned ${v}`);
  }
  t.is(vm.memory.read(counterAddr, 8).readBigInt64LE(), 500n, 'the guest variable holds the count');
  const r = vm.run();
  t.is(r.exitCode, 7);
  t.is(r.stdout.toString(), 'resumed: 0, counter 500\n');
});

function allocCycle(t, variant) {
  const vm = paused(t, variant);
  const allocCycle = vm.fn('alloc_cycle');
  const slots = new Array(64).fill(-1); // the i last stored in each slot, -1 = empty
  let mismatches = 0;
  let firstMismatch;
  for (let i = 0; i < 2000; i++) {
    const size = 1 + ((i * 7919 + 12345) % 200_000);
    slots[i % 64] = i;
    const expected = slots.reduce((s, v) => (v < 0 ? s : s + (v & 0xff)), 0);
    const got = allocCycle(i, size);
    if (got !== expected) {
      mismatches++;
      firstMismatch ??= `i=${i} size=${size}: got ${got}, expected ${expected}`;
    }
  }
  t.is(mismatches, 0, firstMismatch);
  t.is(vm.call('add', 1, 2), 3, 'still fine after 2000 malloc/free cycles');
  const r = vm.run();
  t.is(r.exitCode, 7);
}

test('glibc: malloc and free between calls (alloc_cycle x2000, up to 200 KB)', (t) => allocCycle(t, 'glibc'));
test('musl: malloc and free between calls (alloc_cycle x2000, up to 200 KB)', (t) => allocCycle(t, 'musl'));

// ---------------------------------------------------------------------------------------------
// 3. host calls and syscall overrides

function hostCalls(t, variant) {
  const vm = paused(t, variant);
  const seen = [];
  vm.onSyscall(HC_ECHO, (c) => {
    seen.push(c);
    return BigInt.asIntN(64, c.args[0]) * 10n;
  });
  t.is(vm.call('echo_plus_one', 4), 41, 'host call from inside a call');
  t.is(seen.length, 1);
  t.is(seen[0].nr, HC_ECHO, 'c.nr');
  t.is(seen[0].vm, vm, 'c.vm');
  t.is(seen[0].args.length, 6);
  t.true(
    seen[0].args.every((a) => typeof a === 'bigint'),
    'c.args are bigints',
  );
  t.is(seen[0].args[0], 4n);
  t.is(seen[0].args[1], 0n);
  t.is(vm.call('echo_plus_one', -3), -29, 'negative values arrive as unsigned 64-bit and return signed');
  t.is(seen[1].args[0], (1n << 64n) - 3n);

  vm.onSyscall(HC_LOOKUP, (c) => {
    const key = c.readString(c.args[0]);
    const value = `value-of-${key}`;
    t.true(Number(c.args[2]) > value.length);
    c.write(c.args[1], value);
    return value.length;
  });
  const out = Buffer.alloc(32);
  const n = vm.call('lookup', 'k1', out, out.length);
  t.is(n, 'value-of-k1'.length);
  t.is(out.subarray(0, n).toString(), 'value-of-k1', 'the handler wrote into the Buffer the host passed');
  t.true(
    out.subarray(n).every((b) => b === 0),
    'nothing past what the handler wrote',
  );

  t.is(vm.call('unhandled_hostcall'), ENOSYS, 'an unregistered host call returns -ENOSYS');
  vm.onSyscall(HC_UNHANDLED, () => true);
  t.is(vm.call('unhandled_hostcall'), 1, 'a handler returning true gives 1');
  vm.onSyscall(HC_UNHANDLED, () => undefined);
  t.is(vm.call('unhandled_hostcall'), 0, 'a handler returning nothing gives 0');
  vm.onSyscall(HC_UNHANDLED, () => -5n);
  t.is(vm.call('unhandled_hostcall'), -5, 'a negative bigint');
  vm.onSyscall(HC_UNHANDLED, null);
  t.is(vm.call('unhandled_hostcall'), ENOSYS, 'onSyscall(nr, null) removes the handler');

  const r = vm.run();
  t.is(r.exitCode, 7);
}

test('glibc: host calls from inside calls (echo, lookup, unhandled)', (t) => hostCalls(t, 'glibc'));
test('musl: host calls from inside calls (echo, lookup, unhandled)', (t) => hostCalls(t, 'musl'));
test('pie: host calls from inside calls (echo, lookup, unhandled)', (t) => hostCalls(t, 'pie'));

test('onSyscall overrides a Linux syscall (getpid) and removing it restores emulation', (t) => {
  const vm = paused(t);
  t.is(vm.call('getpid_twice'), 2, 'emulated getpid');
  let calls = 0;
  vm.onSyscall(SYS_GETPID, (c) => {
    calls++;
    t.is(c.nr, SYS_GETPID);
    return 1234;
  });
  t.is(vm.call('getpid_twice'), 2468, 'both getpid() calls went to the handler');
  t.is(calls, 2);
  vm.onSyscall(SYS_GETPID, null);
  t.is(vm.call('getpid_twice'), 2, 'emulation restored');
  t.is(calls, 2);
});

test('onSyscall overrides write (nr 1): say() output goes to the handler instead of stdout', (t) => {
  const vm = paused(t);
  const captured = [];
  vm.onSyscall(SYS_WRITE, (c) => {
    t.is(c.args[0], 1n, 'fd 1');
    captured.push(c.read(c.args[1], Number(c.args[2])).toString());
    return c.args[2];
  });
  t.is(vm.call('say', 'captured line'), 0);
  t.deepEqual(captured, ['captured line\n']);
  const o = vm.takeOutput();
  t.is(o.stdout.length, 0, 'nothing reached the emulated stdout');
  vm.onSyscall(SYS_WRITE, null);
  t.is(vm.call('say', 'real line'), 0);
  t.is(vm.takeOutput().stdout.toString(), 'real line\n', "with 'pipe', output during calls is in takeOutput()");
  t.is(vm.takeOutput().stdout.length, 0, 'takeOutput() empties it');
});

test('a stdout callback receives output written during sync calls', (t) => {
  const chunks = [];
  const vm = paused(t, 'glibc', { stdout: (c) => chunks.push(Buffer.from(c)) });
  t.is(Buffer.concat(chunks).toString(), 'initialized\n');
  t.is(vm.call('say', 'during a call'), 0);
  t.is(Buffer.concat(chunks).toString(), 'initialized\nduring a call\n', 'delivered before call() returned');
  const r = vm.run();
  t.is(r.exitCode, 7);
  t.is(Buffer.concat(chunks).toString(), 'initialized\nduring a call\nresumed: 0, counter 0\n');
});

// ---------------------------------------------------------------------------------------------
// 8. memory helpers

test('vm.memory: a handler reads and writes guest memory through c.vm.memory', (t) => {
  const vm = paused(t);
  let keyBytes;
  vm.onSyscall(HC_LOOKUP, (c) => {
    const mem = c.vm.memory;
    keyBytes = mem.read(c.args[0], 6);
    t.is(mem.readCString(c.args[0]), 'alpha');
    mem.write(c.args[1], Buffer.from('from memory.write\0'));
    t.is(mem.readCString(c.args[1]), 'from memory.write', 'readCString sees what write put there');
    mem.write(c.args[1] + 5n, 'XY');
    t.is(mem.readCString(c.args[1]), 'from XYmory.write', 'write at an offset, string form');
    return 17;
  });
  const out = Buffer.alloc(24, 0xee);
  t.is(vm.call('lookup', 'alpha', out, out.length), 17);
  t.deepEqual(keyBytes, Buffer.from('alpha\0'), 'the string argument was copied NUL-terminated');
  t.is(out.subarray(0, 18).toString('latin1'), 'from XYmory.write\0');
  t.true(
    out.subarray(18).every((b) => b === 0xee),
    'bytes the handler did not write are unchanged',
  );
});

test('vm.memory: write to a guest variable between calls is seen by the guest', (t) => {
  const vm = paused(t);
  const addr = vm.symbol('counter');
  const b = Buffer.alloc(8);
  b.writeBigInt64LE(1000n);
  vm.memory.write(addr, b);
  t.is(vm.call('counter_next'), 1001);
  t.is(vm.memory.read(addr, 8).readBigInt64LE(), 1001n);
  t.is(vm.memory.size, 128 << 20, 'default memory size');
  const r = vm.run();
  t.is(r.stdout.toString(), 'resumed: 0, counter 1001\n');
});

/** File bytes backing virtual address `va` of a non-PIE ELF64 (from its PT_LOAD headers). */
function elfBytesAt(file, va, len) {
  const f = fs.readFileSync(file);
  const phoff = Number(f.readBigUInt64LE(0x20));
  const phentsize = f.readUInt16LE(0x36);
  const phnum = f.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const p = phoff + i * phentsize;
    if (f.readUInt32LE(p) !== 1) continue; // PT_LOAD
    const offset = f.readBigUInt64LE(p + 8);
    const vaddr = f.readBigUInt64LE(p + 16);
    const filesz = f.readBigUInt64LE(p + 32);
    if (va >= vaddr && va + BigInt(len) <= vaddr + filesz) {
      const o = Number(offset + (va - vaddr));
      return f.subarray(o, o + len);
    }
  }
  throw new Error(`0x${va.toString(16)} is not in a PT_LOAD segment of ${file}`);
}

test('vm.memory: text is readable (same bytes as the ELF file) but not writable', (t) => {
  const vm = paused(t);
  const add = vm.symbol('add');
  const code = vm.memory.read(add, 16);
  t.is(code.length, 16);
  t.deepEqual(code, elfBytesAt(guest('calls-glibc'), add, 16), "add's machine code as loaded");
  const err = t.throws(() => vm.memory.write(add, Buffer.from([0xcc])), { instanceOf: InvalidArgumentError });
  t.is(err.code, 'INVALID_ARGUMENT');
  t.deepEqual(vm.memory.read(add, 16), code, 'the failed write changed nothing');
  t.is(vm.call('add', 2, 2), 4, 'add still works');
});

test('vm.memory: addresses the guest cannot access throw InvalidArgumentError', (t) => {
  const vm = paused(t);
  const size = vm.memory.size;
  const bad = [
    ['read(0, 8)', () => vm.memory.read(0, 8)],
    ['read(8, 8)', () => vm.memory.read(8, 8)],
    ['write(0, …)', () => vm.memory.write(0, Buffer.from('x'))],
    ['readCString(0)', () => vm.memory.readCString(0)],
    ['read(size - 8, 8) (system area)', () => vm.memory.read(size - 8, 8)],
    ['write(size - 8, …) (system area)', () => vm.memory.write(size - 8, Buffer.alloc(8))],
    ['read(size, 8) (past memory)', () => vm.memory.read(size, 8)],
    ['read(0xffff800000000000n, 8) (kernel half)', () => vm.memory.read(0xffff800000000000n, 8)],
    ['write(0xffffffff80000000n, …) (kernel half)', () => vm.memory.write(0xffffffff80000000n, Buffer.alloc(4))],
    ['read(-1, 8)', () => vm.memory.read(-1, 8)],
    ['read(add, -1)', () => vm.memory.read(vm.symbol('add'), -1)],
  ];
  for (const [what, f] of bad) t.throws(f, { instanceOf: InvalidArgumentError }, what);
  t.is(vm.state, 'paused', 'bad memory accesses do not hurt the machine');
  t.is(vm.call('add', 1, 2), 3);
});

test('a handler reading a bad guest pointer throws: the call fails with HostCallError', (t) => {
  const vm = paused(t);
  vm.onSyscall(HC_ECHO, (c) => c.read(16n, 8));
  const err = t.throws(() => vm.call('echo_plus_one', 1), { instanceOf: HostCallError });
  t.true(err.cause instanceof InvalidArgumentError, 'cause is the InvalidArgumentError of the bad read');
  t.is(vm.state, 'closed');
});

// ---------------------------------------------------------------------------------------------
// 4. failures inside calls

test('timeout inside a call: TimeoutError after ~200 ms, machine closed', (t) => {
  const vm = paused(t);
  const start = performance.now();
  const err = t.throws(() => vm.call('spin', -1, { timeout: 200 }), { instanceOf: TimeoutError });
  const elapsed = performance.now() - start;
  t.is(err.code, 'TIMEOUT');
  t.is(err.timeoutMs, 200);
  t.true(elapsed >= 200 && elapsed < 3000, `elapsed ${elapsed} ms`);
  t.is(vm.state, 'closed');
  t.throws(() => vm.call('add', 1, 1), { instanceOf: InvalidStateError });
  t.throws(() => vm.run(), { instanceOf: InvalidStateError });
  assertFreshMachineWorks(t);
});

test("the machine's timeout option applies to calls too", (t) => {
  const vm = paused(t, 'glibc', { timeout: 150 });
  t.is(vm.call('add', 1, 2), 3);
  const start = performance.now();
  t.throws(() => vm.call('spin', -1), { instanceOf: TimeoutError });
  const elapsed = performance.now() - start;
  t.true(elapsed >= 150 && elapsed < 3000, `elapsed ${elapsed} ms`);
  t.is(vm.state, 'closed');
});

test('timeout 0 means no timeout for calls too (sync and async), overriding the machine timeout', async (t) => {
  // 10^8 loop iterations take far longer than the machine's 1 ms timeout. The start-up runs
  // without a timeout (glibc's start-up alone can take longer than 1 ms).
  const vm = machine(t, 'glibc', { timeout: 1 });
  t.is(vm.run({ timeout: 0 }).status, 'paused');
  t.is(vm.call('spin', 1e8, { timeout: 0 }), spinResult(1e8));
  t.is(await vm.callAsync('spin', 1e8, { timeout: 0 }), spinResult(1e8));
  t.throws(() => vm.call('spin', 1e8), { instanceOf: TimeoutError }, 'without the option the machine timeout applies');
});

function faultInCall(t, variant) {
  const vm = paused(t, variant);
  t.is(vm.call('say', 'before the crash'), 0);
  const err = t.throws(() => vm.call('crash'), { instanceOf: GuestFaultError });
  t.true(err instanceof KvmboxError);
  t.is(err.code, 'GUEST_FAULT');
  t.is(err.vector, 14, '#PF');
  t.is(err.address, 16n, 'crash() reads address 16');
  t.is(vm.state, 'closed');
  t.throws(() => vm.call('add', 1, 1), { instanceOf: InvalidStateError });
  t.throws(() => vm.callBigInt('add', 1, 1), { instanceOf: InvalidStateError });
  t.throws(() => vm.run(), { instanceOf: InvalidStateError });
  assertFreshMachineWorks(t, variant);
}

test('a call that finishes the machine puts what the guest printed on the error, sync and async', async (t) => {
  const s = paused(t);
  t.is(s.call('say', 'before the crash'), 0);
  t.is(t.throws(() => s.call('crash'), { instanceOf: GuestFaultError }).stdout.toString(), 'before the crash\n');
  const a = await pausedAsync(t);
  t.is(await a.callAsync('say', 'before the async crash'), 0);
  const err = await t.throwsAsync(() => a.callAsync('crash'), { instanceOf: GuestFaultError });
  t.is(err.stdout.toString(), 'before the async crash\n');
  t.is(a.state, 'closed');
});

test('glibc: a fault inside a call throws GuestFaultError and closes the machine', (t) => faultInCall(t, 'glibc'));
test('musl: a fault inside a call throws GuestFaultError and closes the machine', (t) => faultInCall(t, 'musl'));
test('pie: a fault inside a call throws GuestFaultError and closes the machine', (t) => faultInCall(t, 'pie'));

test('exit inside a call (quit(3)) throws GuestExitedError with exitCode 3', (t) => {
  const vm = paused(t);
  const err = t.throws(() => vm.call('quit', 3), { instanceOf: GuestExitedError });
  t.is(err.code, 'GUEST_EXITED');
  t.is(err.exitCode, 3);
  t.is(vm.state, 'closed');
  t.throws(() => vm.call('add', 1, 1), { instanceOf: InvalidStateError });
  t.throws(() => vm.run(), { instanceOf: InvalidStateError });
  assertFreshMachineWorks(t);
});

test('a sync handler that throws: HostCallError whose cause is the exact thrown value', (t) => {
  const vm = paused(t);
  const boom = new Error('handler failed');
  vm.onSyscall(HC_ECHO, () => {
    throw boom;
  });
  const err = t.throws(() => vm.call('echo_plus_one', 1), { instanceOf: HostCallError });
  t.is(err.code, 'HOST_CALLBACK_ERROR');
  t.is(err.cause, boom, 'cause is the same object');
  t.is(vm.state, 'closed');
  t.throws(() => vm.call('add', 1, 1), { instanceOf: InvalidStateError });

  // A non-Error thrown value is kept as is, too.
  const vm2 = paused(t);
  const value = { tag: 'not an error' };
  vm2.onSyscall(HC_ECHO, () => {
    throw value;
  });
  const err2 = t.throws(() => vm2.call('echo_plus_one', 1), { instanceOf: HostCallError });
  t.is(err2.cause, value);
  t.is(vm2.state, 'closed');
  assertFreshMachineWorks(t);
});

test('a handler that throws during run() (overridden write) fails the run with HostCallError', (t) => {
  const vm = paused(t);
  const boom = new Error('no writes');
  vm.onSyscall(SYS_WRITE, () => {
    throw boom;
  });
  const err = t.throws(() => vm.run(), { instanceOf: HostCallError });
  t.is(err.cause, boom);
  t.is(vm.state, 'closed');
});

test('an async handler that throws under callAsync: HostCallError with the exact cause', async (t) => {
  const vm = await pausedAsync(t);
  const boom = new Error('async handler failed');
  vm.onSyscall(HC_ECHO, async () => {
    await sleep(5);
    throw boom;
  });
  const err = await t.throwsAsync(() => vm.callAsync('echo_plus_one', 1), { instanceOf: HostCallError });
  t.is(err.code, 'HOST_CALLBACK_ERROR');
  t.is(err.cause, boom);
  t.is(vm.state, 'closed');
  await t.throwsAsync(() => vm.callAsync('add', 1, 1), { instanceOf: InvalidStateError });
  t.throws(() => vm.call('add', 1, 1), { instanceOf: InvalidStateError });

  // A handler that throws synchronously under callAsync behaves the same.
  const vm2 = await pausedAsync(t);
  const boom2 = new RangeError('sync throw in async mode');
  vm2.onSyscall(HC_ECHO, () => {
    throw boom2;
  });
  const err2 = await t.throwsAsync(() => vm2.callAsync('echo_plus_one', 1), { instanceOf: HostCallError });
  t.is(err2.cause, boom2);
  t.is(vm2.state, 'closed');
  t.is(await (await pausedAsync(t)).callAsync('add', 20, 22), 42, 'a fresh machine works');
});

test('failures under callAsync: timeout, fault and exit reject with typed errors', async (t) => {
  const a = await pausedAsync(t);
  const start = performance.now();
  const e1 = await t.throwsAsync(() => a.callAsync('spin', -1, { timeout: 200 }), { instanceOf: TimeoutError });
  const elapsed = performance.now() - start;
  t.is(e1.timeoutMs, 200);
  t.true(elapsed >= 200 && elapsed < 3000, `elapsed ${elapsed} ms`);
  t.is(a.state, 'closed');

  const b = await pausedAsync(t);
  const e2 = await t.throwsAsync(() => b.callAsync('crash'), { instanceOf: GuestFaultError });
  t.is(e2.vector, 14);
  t.is(e2.address, 16n);
  t.is(b.state, 'closed');

  const c = await pausedAsync(t);
  const e3 = await t.throwsAsync(() => c.callBigIntAsync('quit', 3), { instanceOf: GuestExitedError });
  t.is(e3.exitCode, 3);
  t.is(c.state, 'closed');
  await t.throwsAsync(() => c.runAsync(), { instanceOf: InvalidStateError });
});

// ---------------------------------------------------------------------------------------------
// 5. bad input

test('bad calls are rejected with InvalidArgumentError and leave the machine usable', (t) => {
  const vm = paused(t);
  const bad = [
    ['unknown symbol', () => vm.call('no_such_function')],
    ['vm.fn of an unknown symbol', () => vm.fn('no_such_function')],
    ['a data symbol', () => vm.call('counter')],
    ['address 0x1000 (not code)', () => vm.call(0x1000)],
    ['address 0', () => vm.call(0)],
    ['a kernel-half address', () => vm.call(0xffffffff80000000n)],
    ['7 arguments', () => vm.call('add', 1, 2, 3, 4, 5, 6, 7)],
    ['7 arguments (callBigInt)', () => vm.callBigInt('add', 1, 2, 3, 4, 5, 6, 7)],
    ['7 arguments via vm.fn', () => vm.fn('add')(1, 2, 3, 4, 5, 6, 7)],
    ['a 64 MiB Buffer', () => vm.call('count_byte', Buffer.alloc(64 << 20), 1, 0)],
    ['a string containing NUL', () => vm.call('str_len', 'a\0b')],
    ['an unsafe integer', () => vm.call('add', 2 ** 53, 0)],
    ['a fractional number', () => vm.call('add', 1.5, 0)],
    ['a bigint wider than 64 bits', () => vm.call('add', 1n << 64n, 0)],
    ['a bigint below -2^63', () => vm.call('add', -(1n << 63n) - 1n, 0)],
    ['an object argument', () => vm.call('add', [1], 0)],
    ['a negative timeout', () => vm.call('add', 1, 2, { timeout: -1 })],
    ['a negative number address', () => vm.call(-4096)],
  ];
  for (const [what, f] of bad) {
    const err = t.throws(f, { instanceOf: InvalidArgumentError }, what);
    t.is(err?.code, 'INVALID_ARGUMENT', what);
    t.is(vm.state, 'paused', `still paused after: ${what}`);
  }
  t.is(vm.call('add', 20, 22), 42, 'still usable');
  t.is(vm.call('counter_next'), 1, 'no bad call ran guest code');
  t.is(vm.run().stdout.toString(), 'resumed: 0, counter 1\n');
});

test('onSyscall rejects bad numbers and handlers', (t) => {
  const vm = paused(t);
  t.throws(() => vm.onSyscall(-1, () => 0), { instanceOf: InvalidArgumentError });
  t.throws(() => vm.onSyscall(1.5, () => 0), { instanceOf: InvalidArgumentError });
  t.throws(() => vm.onSyscall(HC_ECHO, 'not a function'), { instanceOf: InvalidArgumentError });
  t.is(
    vm.onSyscall(HC_ECHO, () => 1),
    vm,
    'onSyscall is chainable',
  );
  t.is(vm.call('echo_plus_one', 0), 2);
});

test('a handler returning an unsupported value fails the call with HostCallError', (t) => {
  const vm = paused(t);
  vm.onSyscall(HC_ECHO, () => 'a string');
  const err = t.throws(() => vm.call('echo_plus_one', 1), { instanceOf: HostCallError });
  t.true(err.cause instanceof InvalidArgumentError);
  t.is(vm.state, 'closed');
});

test('call before the guest paused (state ready) throws InvalidStateError', (t) => {
  const vm = machine(t);
  t.is(vm.state, 'ready');
  t.throws(() => vm.call('add', 1, 2), { instanceOf: InvalidStateError });
  t.throws(() => vm.callBigInt('add', 1, 2), { instanceOf: InvalidStateError });
  t.is(vm.state, 'ready', 'the failed call changed nothing');
  t.is(vm.run().status, 'paused', 'the machine still runs');
  t.is(vm.call('add', 1, 2), 3);
});

test('callAsync before the guest paused rejects with InvalidStateError', async (t) => {
  const vm = machine(t);
  await t.throwsAsync(() => vm.callAsync('add', 1, 2), { instanceOf: InvalidStateError });
  t.is(vm.state, 'ready');
});

test('call on a closed machine throws InvalidStateError', (t) => {
  const vm = paused(t);
  vm.close();
  t.is(vm.state, 'closed');
  t.true(vm.closed);
  t.throws(() => vm.call('add', 1, 2), { instanceOf: InvalidStateError });
  t.throws(() => vm.run(), { instanceOf: InvalidStateError });
  vm.close(); // idempotent
  t.is(vm.state, 'closed');
  t.throws(() => vm.symbol('add'), { instanceOf: InvalidStateError, message: /closed/ }, 'not a silent undefined');
});

test('vm.call from inside its own handler: HostCallError caused by InvalidStateError', (t) => {
  const vm = paused(t);
  vm.onSyscall(HC_ECHO, (c) => c.vm.call('add', 1, 2));
  const err = t.throws(() => vm.call('echo_plus_one', 1), { instanceOf: HostCallError });
  t.true(err.cause instanceof InvalidStateError, `cause: ${err.cause}`);
  t.is(vm.state, 'closed');
});

test('vm.close from inside its own handler: HostCallError caused by InvalidStateError; the host is fine', (t) => {
  const vm = paused(t);
  vm.onSyscall(HC_ECHO, (c) => c.vm.close());
  const err = t.throws(() => vm.call('echo_plus_one', 1), { instanceOf: HostCallError });
  t.true(err.cause instanceof InvalidStateError, `cause: ${err.cause}`);
  t.regex(err.cause.message, /cannot close a machine from inside/);
  vm.close();
  t.is(vm.state, 'closed');
});

test('vm.run from inside its own handler: HostCallError caused by InvalidStateError', (t) => {
  const vm = paused(t);
  vm.onSyscall(HC_ECHO, (c) => c.vm.run());
  const err = t.throws(() => vm.call('echo_plus_one', 1), { instanceOf: HostCallError });
  t.true(err.cause instanceof InvalidStateError, `cause: ${err.cause}`);
});

test('re-entering the machine from an async handler under callAsync: HostCallError caused by InvalidStateError', async (t) => {
  const vm = await pausedAsync(t);
  vm.onSyscall(HC_ECHO, async (c) => {
    await sleep(1);
    return c.vm.callAsync('add', 1, 2);
  });
  const err = await t.throwsAsync(() => vm.callAsync('echo_plus_one', 1), { instanceOf: HostCallError });
  t.true(err.cause instanceof InvalidStateError, `cause: ${err.cause}`);
  t.is(vm.state, 'closed');

  const vm2 = await pausedAsync(t);
  vm2.onSyscall(HC_ECHO, (c) => c.vm.call('add', 1, 2));
  const err2 = await t.throwsAsync(() => vm2.callAsync('echo_plus_one', 1), { instanceOf: HostCallError });
  t.true(err2.cause instanceof InvalidStateError, `cause: ${err2.cause}`);
  t.is(vm2.state, 'closed');
});

test('kvmbox_pause() inside a call returns -EBUSY and the machine stays usable', (t) => {
  const vm = paused(t);
  t.is(vm.call('pause_inside'), EBUSY);
  t.is(vm.state, 'paused');
  t.is(vm.call('add', 20, 22), 42);
  const r = vm.run();
  t.is(r.status, 'exited');
  t.is(r.exitCode, 7);
});

test('a sync handler returning a Promise: HostCallError caused by InvalidStateError', (t) => {
  const vm = paused(t);
  vm.onSyscall(HC_ECHO, async () => 1);
  const err = t.throws(() => vm.call('echo_plus_one', 1), { instanceOf: HostCallError });
  t.true(err.cause instanceof InvalidStateError, `cause: ${err.cause}`);
  t.is(vm.state, 'closed');
});

// ---------------------------------------------------------------------------------------------
// 6. async

test('runAsync and callAsync give the same results as run and call', async (t) => {
  const sync = paused(t);
  const asyncVm = machine(t);
  const p = asyncVm.runAsync();
  t.is(asyncVm.state, 'busy', 'busy while runAsync is in flight');
  const r = await p;
  t.is(r.status, 'paused');
  t.is(r.stdout.toString(), 'initialized\n');
  t.is(asyncVm.state, 'paused');

  const cases = [
    ['add', 2, 3],
    ['negate', 7],
    ['sum6', 1, 2, 3, 4, 5, 6],
    ['str_len', 'hello kvmbox'],
    ['count_byte', Buffer.from('banana'), 6, 'a'.charCodeAt(0)],
    ['add', true, null],
    ['counter_next'],
    ['getpid_twice'],
  ];
  for (const [name, ...args] of cases) {
    t.is(await asyncVm.callAsync(name, ...args), sync.call(name, ...args), name);
  }
  t.is(await asyncVm.callBigIntAsync('add', 1n << 60n, 1n), sync.callBigInt('add', 1n << 60n, 1n));
  t.is(await asyncVm.callBigIntAsync('add', 1n << 60n, 1n), (1n << 60n) + 1n);
  const buf = Buffer.from('async buffer');
  t.is(await asyncVm.callAsync('upcase', buf, buf.length), 12);
  t.is(buf.toString(), 'ASYNC BUFFER', 'buffers are copied back under callAsync');

  const a = await asyncVm.runAsync();
  const s = sync.run();
  t.is(a.status, 'exited');
  t.is(a.exitCode, 7);
  t.is(a.stdout.toString(), 'resumed: 0, counter 1\n');
  t.deepEqual({ ...a, stdout: a.stdout.toString() }, { ...s, stdout: s.stdout.toString() });
  t.is(asyncVm.state, 'closed');
});

test('async handlers (await setTimeout) work under callAsync and runAsync', async (t) => {
  const vm = await pausedAsync(t);
  vm.onSyscall(HC_ECHO, async (c) => {
    await sleep(20);
    return c.args[0] * 10n;
  });
  const start = performance.now();
  t.is(await vm.callAsync('echo_plus_one', 4), 41);
  t.true(performance.now() - start >= 15, 'the guest waited for the handler');

  vm.onSyscall(HC_LOOKUP, async (c) => {
    await sleep(1);
    const key = c.readString(c.args[0]);
    c.write(c.args[1], `async-${key}`);
    return `async-${key}`.length;
  });
  const out = Buffer.alloc(16);
  const n = await vm.callAsync('lookup', 'key', out, 16);
  t.is(out.subarray(0, n).toString(), 'async-key');

  // A sync handler works under callAsync too.
  vm.onSyscall(SYS_GETPID, () => 50);
  t.is(await vm.callAsync('getpid_twice'), 100);

  // Async override of write during runAsync (the resume path).
  const lines = [];
  vm.onSyscall(SYS_WRITE, async (c) => {
    await sleep(1);
    lines.push(c.read(c.args[1], Number(c.args[2])).toString());
    return c.args[2];
  });
  const r = await vm.runAsync();
  t.is(r.exitCode, 7);
  t.deepEqual(lines, ['resumed: 0, counter 0\n']);
  t.is(r.stdout.length, 0);
});

test('the event loop keeps running during a long callAsync', async (t) => {
  const vm = await pausedAsync(t);
  // Longer calls until one takes >= 50 ms, so the check means something on a fast CPU too.
  for (let n = 300_000_000; ; n *= 2) {
    let ticks = 0;
    const iv = setInterval(() => ticks++, 5);
    const start = performance.now();
    let v;
    try {
      v = await vm.callAsync('spin', n);
    } finally {
      clearInterval(iv);
    }
    const elapsed = performance.now() - start;
    t.is(v, spinResult(n));
    if (elapsed < 50 && n < 300_000_000 * 16) continue;
    t.true(elapsed >= 50, `the call took ${elapsed} ms (needs >= 50 ms to be meaningful)`);
    t.true(ticks >= 3, `setInterval(5 ms) ticked ${ticks} times during a ${elapsed.toFixed(0)} ms call`);
    break;
  }
});

test('8 machines run callAsync concurrently with correct results', async (t) => {
  const vms = await Promise.all(Array.from({ length: 8 }, () => pausedAsync(t)));
  const results = await Promise.all(
    vms.map(async (vm, i) => {
      vm.onSyscall(HC_ECHO, async (c) => {
        await sleep(1);
        return c.args[0] * 10n + BigInt(i);
      });
      const n = 1_000_000 + i * 1000;
      const s = await vm.callAsync('spin', n);
      const e = await vm.callAsync('echo_plus_one', i);
      const a = await vm.callBigIntAsync('add', BigInt(i) << 55n, 1n);
      const c = [await vm.callAsync('counter_next'), await vm.callAsync('counter_next')];
      return { s, n, e, a, c };
    }),
  );
  results.forEach(({ s, n, e, a, c }, i) => {
    t.is(s, spinResult(n), `machine ${i}: spin`);
    t.is(e, i * 10 + i + 1, `machine ${i}: host call`);
    t.is(a, (BigInt(i) << 55n) + 1n, `machine ${i}: bigint`);
    t.deepEqual(c, [1, 2], `machine ${i}: own state`);
  });
  const exits = await Promise.all(vms.map((vm) => vm.runAsync()));
  for (const r of exits) {
    t.is(r.exitCode, 7);
    t.is(r.stdout.toString(), 'resumed: 0, counter 2\n');
  }
});

test('while an async op is in flight the machine is busy and rejects other ops', async (t) => {
  const vm = await pausedAsync(t);
  const p = vm.callAsync('spin', 50_000_000);
  t.is(vm.state, 'busy');
  t.throws(() => vm.call('add', 1, 2), { instanceOf: InvalidStateError });
  t.throws(() => vm.callBigInt('add', 1, 2), { instanceOf: InvalidStateError });
  t.throws(() => vm.run(), { instanceOf: InvalidStateError });
  await t.throwsAsync(() => vm.callAsync('add', 1, 2), { instanceOf: InvalidStateError });
  await t.throwsAsync(() => vm.runAsync(), { instanceOf: InvalidStateError });
  t.is(await p, spinResult(50_000_000), 'the in-flight call was not disturbed');
  t.is(vm.state, 'paused');
  t.is(vm.call('add', 1, 2), 3, 'sync calls work again once it settled');
});

test('a stdout callback receives output from callAsync before the promise resolves', async (t) => {
  const chunks = [];
  const text = () => Buffer.concat(chunks).toString();
  const vm = machine(t, 'glibc', { stdout: (c) => chunks.push(Buffer.from(c)) });
  const r = await vm.runAsync();
  t.is(r.status, 'paused');
  t.is(r.stdout.length, 0, 'nothing captured in callback mode');
  t.is(text(), 'initialized\n');
  const seenAtResolve = await vm.callAsync('say', 'async hello').then(() => text());
  t.is(seenAtResolve, 'initialized\nasync hello\n');
  const seen2 = await vm.callAsync('say', 'second').then(() => text());
  t.is(seen2, 'initialized\nasync hello\nsecond\n');
  const end = await vm.runAsync().then((res) => ({ res, seen: text() }));
  t.is(end.res.exitCode, 7);
  t.is(end.seen, 'initialized\nasync hello\nsecond\nresumed: 0, counter 0\n');
});

test("with 'pipe', output written during callAsync is available from takeOutput()", async (t) => {
  const vm = await pausedAsync(t);
  t.is(await vm.callAsync('say', 'piped async'), 0);
  t.is(vm.takeOutput().stdout.toString(), 'piped async\n');
  t.is(vm.takeOutput().stdout.length, 0);
});

// ---------------------------------------------------------------------------------------------
// 7. many calls: results and memory

test.serial('10^5 sequential sync calls: correct results, RSS growth under 50 MB', (t) => {
  v8.setFlagsFromString('--expose-gc');
  const gc = nodeVm.runInNewContext('gc');
  const vm = paused(t);
  const add = vm.fn('add');
  for (let i = 0; i < 10_000; i++) add(i, i);
  gc();
  const before = process.memoryUsage().rss;
  let wrong = 0;
  let firstWrong;
  const start = performance.now();
  for (let i = 0; i < 100_000; i++) {
    const v = vm.call('add', i, i);
    if (v !== 2 * i) {
      wrong++;
      firstWrong ??= `add(${i}, ${i}) = ${v}`;
    }
  }
  const elapsed = performance.now() - start;
  gc();
  const after = process.memoryUsage().rss;
  t.is(wrong, 0, firstWrong);
  const growth = after - before;
  t.true(growth < 50 << 20, `RSS grew by ${(growth / 2 ** 20).toFixed(1)} MB over 10^5 calls`);
  t.log(`10^5 calls: ${elapsed.toFixed(0)} ms (${((elapsed * 1000) / 100_000).toFixed(1)} µs/call), RSS growth ${(growth / 2 ** 20).toFixed(1)} MB`);
  t.is(vm.call('counter_next'), 1);
});

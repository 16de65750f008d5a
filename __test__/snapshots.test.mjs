// Snapshots, forks and resets on the `state` guest: fork isolation, reset of every piece of
// state (memory written by the guest or by kvmbox, registers, MXCSR/x87/AVX state, FS base,
// heap and mmap allocator, descriptors and their positions, captured output), no leak of a
// secret across a reset anywhere in guest memory, reset to other snapshots (of forks, of another
// program and memory size), reuse after faults/timeouts/exits, a long reset loop with flat
// resources, Pool, and memoryUsage().
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

import test from 'ava';

import {
  GuestExitedError,
  GuestFaultError,
  guest,
  InvalidArgumentError,
  InvalidStateError,
  Machine,
  Pool,
  requireKvm,
  Snapshot,
  setVmPoolSize,
  TimeoutError,
  tempDir,
  VARIANTS,
  waitFor,
} from './helpers.mjs';

requireKvm(test);

const HC_ASK = 0x10000;
const EBADF = 9;
const SIGUSR1 = 10;
const SIGUSR2 = 12;
const STDIN = 'STDIN-0123456789';
const MiB = 1 << 20;

// The file the guest opens in main() (argv[1]) and reads 5 bytes of before pausing.
const dir = tempDir('kvmbox-snapshots-');
const DATA_FILE = path.join(dir, 'data.txt');
const DATA = Buffer.from('abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ'.repeat(8));
fs.writeFileSync(DATA_FILE, DATA);

// What main() leaves behind (see __test__/guests/state.c).
const SNAP_GLOBAL = 111;
const SNAP_COUNTER = 41;
const YMM15_INIT = Buffer.from(
  [0x1111222233334444n, 0x5555666677778888n, 0x99990000aaaabbbbn, 0xccccddddeeeeffffn].flatMap((v) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(v);
    return [...b];
  }),
);

/** A `state` machine run up to its kvmbox_pause() (closed when the test ends). */
function paused(t, variant = 'glibc', opts = {}) {
  const file = guest(`state-${variant}`);
  const vm = Machine.fromFile(file, { args: [file, DATA_FILE], allowRead: [DATA_FILE], ...opts });
  t.teardown(() => vm.close());
  const r = vm.run();
  t.is(r.status, 'paused', 'run() stops at kvmbox_pause()');
  if (typeof opts.stdout !== 'function') t.is(r.stdout.toString(), 'ready\n');
  t.is(vm.state, 'paused');
  return vm;
}

/** f()'s value, or what it threw. */
function attempt(f) {
  try {
    return f();
  } catch (e) {
    return e;
  }
}

/** A fork of `snap` (closed when the test ends). */
function fork(t, snap, opts) {
  const m = snap.fork(opts);
  t.teardown(() => m.close());
  t.is(m.state, 'paused', 'a fork starts paused');
  return m;
}

const cstr = (buf) => {
  const i = buf.indexOf(0);
  return buf.subarray(0, i < 0 ? buf.length : i).toString();
};

/** The first `n` bytes of secret_area / the malloc'd block, copied out by the guest. */
function area(m, n = 64 << 10) {
  const b = Buffer.alloc(n);
  checkCopied(m.call('copy_area', b, n), n);
  return b;
}
function heapBlock(m, n = 4096) {
  const b = Buffer.alloc(n);
  checkCopied(m.call('copy_heap', b, n), n);
  return b;
}
function checkCopied(got, want) {
  if (got !== want) throw new Error(`guest copied ${got} bytes, expected ${want}`);
}

/** Snapshot-area content: "snapshot-area" then zeros. */
function isSnapshotArea(buf) {
  const want = Buffer.alloc(buf.length);
  want.write('snapshot-area');
  return buf.equals(want);
}

function vregs(m) {
  const b = Buffer.alloc(1024);
  const n = m.call('dump_vregs', b);
  return b.subarray(0, n * 32);
}

function ymm15(m) {
  const b = Buffer.alloc(32);
  m.call('get_ymm15', b);
  return b;
}

/**
 * Everything a fresh fork reports about its state, in a fixed order that starts with the
 * registers (so no earlier call has touched them). Running it on a fresh fork and on a reset
 * machine must give identical results.
 */
function observe(m) {
  const o = {};
  o.vregs = vregs(m).toString('hex');
  o.mxcsr = m.call('get_mxcsr');
  o.fpucw = m.call('get_fpucw');
  o.ymm15 = ymm15(m).toString('hex');
  o.fsBase = m.callBigInt('get_fs_base');
  o.tlsSelf = m.callBigInt('tls_self');
  o.third = m.callBigInt('third_bits', 1);
  o.global = m.call('get_global');
  o.brk = m.call('raw_brk', 0);
  o.fd = m.call('get_file_fd');
  o.filePos = m.call('file_pos');
  o.area = cstr(area(m, 64));
  o.heap = cstr(heapBlock(m, 64));
  o.counter = m.call('counter_next');
  const sb = Buffer.alloc(6);
  o.stdin = `${m.call('read_stdin', sb, 6)}:${sb}`;
  o.sigusr1 = m.call('disposition', SIGUSR1);
  o.sigusr2 = m.call('disposition', SIGUSR2);
  o.libc = m.call('libc_works');
  o.memGlobal = m.memory.read(m.symbol('global_value'), 8).readBigInt64LE();
  return o;
}

/** The allocation sequence whose addresses must repeat after a reset. */
function allocations(m) {
  return {
    small: m.call('heap_alloc', 24),
    medium: m.call('heap_alloc', 5000),
    grow: m.call('heap_alloc', 300000), // above the mmap threshold
    big: m.call('heap_alloc', 4 * MiB),
    mmap: m.call('raw_mmap', MiB),
    brk0: m.call('raw_brk', 0),
  };
}

// ---------------------------------------------------------------------------------------------
// 1. fork isolation

test('forks are isolated from each other and from the snapshot-taker; new forks see the snapshot', (t) => {
  const vm = paused(t);
  vm.onSyscall(HC_ASK, (c) => Number(c.args[0]) * 2);
  const snap = vm.snapshot();
  t.true(snap instanceof Snapshot);
  t.is(snap.memorySize, 128 * MiB);
  t.is(snap.symbol('global_value'), vm.symbol('global_value'));
  t.is(typeof snap.symbol('put_secret'), 'bigint');
  t.is(snap.symbol('no_such_symbol'), undefined);
  // Handlers registered after the snapshot are not the forks' business.
  vm.onSyscall(HC_ASK, (c) => Number(c.args[0]) * 3);

  const a = fork(t, snap);
  const b = fork(t, snap);
  const gAddr = snap.symbol('global_value');
  t.is(vm.call('set_global', 1000), SNAP_GLOBAL);
  t.is(a.call('set_global', 2000), SNAP_GLOBAL, 'fork a still sees the snapshot value after the master wrote');
  t.is(b.call('set_global', 3000), SNAP_GLOBAL, 'fork b still sees the snapshot value after a wrote');
  t.is(vm.call('get_global'), 1000);
  t.is(a.call('get_global'), 2000);
  t.is(b.call('get_global'), 3000);
  t.is(a.memory.read(gAddr, 8).readBigInt64LE(), 2000n, 'memory.read of the fork sees its own value');
  t.is(b.memory.read(gAddr, 8).readBigInt64LE(), 3000n);

  // Many pages, written by the guest in one fork and by the host in another.
  a.call('put_secret', 'TOPSECRET-fork-a');
  b.memory.write(a.call('area_addr') + 10000, 'host-wrote-b');
  t.is(a.call('count_marker'), 18, 'a sees its own secret (16 in the area, 1 heap, 1 mmap)');
  t.is(b.call('count_marker'), 0, "b does not see a's secret");
  t.is(vm.call('count_marker'), 0, "the master does not see a's secret");
  t.true(isSnapshotArea(area(b).fill(0, 10000, 10012)), "b's area: the snapshot's plus its own host write");
  t.is(area(b).subarray(10000, 10012).toString(), 'host-wrote-b');
  t.true(isSnapshotArea(area(vm)), "the master's area is untouched");
  t.is(a.call('counter_next'), SNAP_COUNTER + 1);
  t.is(a.call('counter_next'), SNAP_COUNTER + 2);
  t.is(b.call('counter_next'), SNAP_COUNTER + 1);

  // Host-call handlers: forks get the snapshot-taker's, as they were at snapshot time.
  t.is(a.call('ask_host', 21), 42, 'the fork inherited the handler of the snapshot time');
  t.is(vm.call('ask_host', 21), 63, 'the master uses its newer handler');
  b.onSyscall(HC_ASK, () => 7);
  t.is(b.call('ask_host', 21), 7, 'a fork can replace a handler');
  t.is(a.call('ask_host', 21), 42, '... without affecting its siblings');
  t.is(vm.call('ask_host', 21), 63, '... or the master');

  // A new fork, taken after all of that, sees the snapshot.
  const c = fork(t, snap);
  t.is(c.call('get_global'), SNAP_GLOBAL, 'a new fork sees the snapshot value');
  t.is(c.memory.read(gAddr, 8).readBigInt64LE(), BigInt(SNAP_GLOBAL));
  t.is(c.call('count_marker'), 0);
  t.true(isSnapshotArea(area(c)));
  t.is(c.call('counter_next'), SNAP_COUNTER + 1);
  t.is(c.call('ask_host', 5), 10);

  // Closing forks does not disturb the others; the master's reset returns it to the snapshot.
  a.close();
  t.is(a.state, 'closed');
  t.is(b.call('get_global'), 3000);
  t.true(vm.reset() > 0);
  t.is(vm.call('get_global'), SNAP_GLOBAL, 'the snapshot-taker resets to its snapshot');
  t.is(vm.call('ask_host', 1), 3, 'reset keeps the handlers as registered');
  t.is(c.call('get_global'), SNAP_GLOBAL);
});

test('forks inherit output callbacks (unless given their own) and the machine timeout', (t) => {
  const chunks = [];
  const vm = paused(t, 'glibc', { stdout: (c) => chunks.push(`taker:${c}`), timeout: 150 });
  t.deepEqual(chunks, ['taker:ready\n']);
  const snap = vm.snapshot();
  const a = fork(t, snap);
  a.call('say', 'from a');
  t.deepEqual(chunks, ['taker:ready\n', 'taker:from a\n'], "a fork's output goes to the snapshot-taker's callback");
  const mine = [];
  const b = fork(t, snap, { stdout: (c) => mine.push(String(c)) });
  b.call('say', 'from b');
  t.deepEqual(mine, ['from b\n'], 'a fork can have its own callback');
  t.is(chunks.length, 2);
  t.throws(() => snap.fork({ stdout: 'pipe' }), { instanceOf: InvalidArgumentError }, 'but cannot switch to pipe mode');
  b.reset();
  b.call('say', 'again');
  t.deepEqual(mine, ['from b\n', 'again\n'], 'the callback stays after reset');
  // The machine's default timeout (150 ms) comes with the snapshot.
  const t0 = Date.now();
  t.throws(() => a.call('spin_forever'), { instanceOf: TimeoutError }, 'a fork has the default timeout of the snapshot-taker');
  t.true(Date.now() - t0 < 5000);
  a.reset();
  t.is(a.call('get_global'), SNAP_GLOBAL);
});

test('the snapshot-taker can take a second snapshot; reset() then returns to the newer one', (t) => {
  const vm = paused(t);
  const s1 = vm.snapshot();
  vm.call('set_global', 500);
  const s2 = vm.snapshot();
  vm.call('set_global', 600);
  vm.reset();
  t.is(vm.call('get_global'), 500, 'reset() returns to the latest snapshot');
  t.is(fork(t, s1).call('get_global'), SNAP_GLOBAL, 'the first snapshot is unchanged');
  t.is(fork(t, s2).call('get_global'), 500);
  vm.reset(s1);
  t.is(vm.call('get_global'), SNAP_GLOBAL);
});

test('snapshot() needs a paused guest; reset() needs a snapshot', (t) => {
  const file = guest('state-glibc');
  const vm = Machine.fromFile(file, { args: [file] });
  t.teardown(() => vm.close());
  t.is(vm.state, 'ready');
  t.throws(() => vm.snapshot(), { instanceOf: InvalidStateError }, 'no snapshot before run()');
  t.throws(() => vm.reset(), { instanceOf: InvalidStateError }, 'nothing to reset to yet');
  t.is(vm.run().status, 'paused');
  const snap = vm.snapshot();
  vm.close();
  t.throws(() => vm.reset(), { instanceOf: InvalidStateError }, 'a closed machine cannot be reset');
  // The snapshot outlives the machine that took it.
  const m = fork(t, snap);
  t.is(m.call('get_global'), SNAP_GLOBAL);
  t.is(m.call('get_file_fd'), -1, 'no argv[1]: no file was opened');
});

// ---------------------------------------------------------------------------------------------
// 2. reset restores every piece of state

for (const v of VARIANTS) {
  test(`${v}: reset restores memory, registers, MXCSR/x87/AVX state, FS base, heap, descriptors; clears output`, (t) => {
    const vm = paused(t, v, { stdin: STDIN });
    const snap = vm.snapshot();
    const fresh = observe(fork(t, snap));
    const handler = vm.call('signal_handler_addr');
    // What main() set up.
    t.is(fresh.mxcsr & 0x6000, 0x4000, 'MXCSR rounding control: round up (fesetround(FE_UPWARD))');
    t.is(fresh.fpucw & 0xc00, 0x800, 'x87 rounding control: round up');
    t.is(fresh.ymm15, YMM15_INIT.toString('hex'), 'ymm15 as main() left it');
    t.is(fresh.vregs.slice(15 * 64, 16 * 64), YMM15_INIT.toString('hex'));
    t.is(fresh.fsBase, fresh.tlsSelf, 'FS base is the TCB (its self pointer)');
    t.not(fresh.fsBase, 0n);
    t.is(fresh.global, SNAP_GLOBAL);
    t.is(fresh.filePos, 5, 'main() read 5 bytes of the file');
    t.true(fresh.fd >= 3);
    t.is(fresh.area, 'snapshot-area');
    t.is(fresh.heap, 'snapshot-heap');
    t.is(fresh.counter, SNAP_COUNTER + 1);
    t.is(fresh.libc, 505);
    t.is(fresh.memGlobal, BigInt(SNAP_GLOBAL));
    t.is(fresh.stdin, '6:STDIN-', 'stdin is unread at the snapshot');
    t.is(fresh.sigusr1, 0, 'SIGUSR1: default');
    t.is(fresh.sigusr2, handler, 'SIGUSR2: the handler main() installed');

    const m = fork(t, snap);
    // The fork's first allocation sequence, and its first read.
    const allocs = allocations(m);
    t.true(allocs.big > 0 && allocs.mmap > 0 && allocs.brk0 > 0, JSON.stringify(allocs));
    const read1 = Buffer.alloc(10);
    t.is(m.call('read_some', read1, 10), 10);
    t.deepEqual(read1, DATA.subarray(5, 15), 'reads continue where main() stopped');
    const fd2 = m.call('open_path', DATA_FILE);
    t.true(fd2 > fresh.fd, `a second descriptor: ${fd2}`);
    t.is(m.call('close_fd', fresh.fd), 0);
    t.is(m.call('fd_valid', fresh.fd), -EBADF);

    // Change everything else.
    t.is(m.call('set_global', 999), SNAP_GLOBAL);
    t.is(m.call('counter_next'), SNAP_COUNTER + 1);
    t.is(m.call('counter_next'), SNAP_COUNTER + 2);
    t.is(m.call('put_secret', 'TOPSECRET-reset'), 15);
    t.is(m.call('say', 'some output'), 0);
    const sb = Buffer.alloc(10);
    t.is(m.call('read_stdin', sb, 10), 10);
    t.is(sb.toString(), STDIN.slice(0, 10));
    t.is(m.call('set_disposition', SIGUSR1, 2), 0);
    t.is(m.call('set_disposition', SIGUSR2, 1), 0);
    t.is(m.call('disposition', SIGUSR1), handler);
    t.is(m.call('disposition', SIGUSR2), 1, 'SIGUSR2 ignored');
    m.memory.write(m.call('area_addr') + 30000, 'HOST-WRITE');
    t.is(m.call('set_mxcsr', 0x7f80), 0x7f80, 'MXCSR: round toward zero');
    t.is(m.call('set_fpucw', 0x37f), 0x37f, 'x87: round to nearest');
    t.not(m.callBigInt('third_bits', 1), fresh.third, 'the rounding mode changed the result of 1/3');
    const junk = randomBytes(32);
    m.call('set_ymm15', junk);
    t.deepEqual(ymm15(m), junk, 'ymm15 keeps its value between calls');
    t.not(vregs(m).toString('hex'), fresh.vregs, 'the vector registers changed');
    t.is(m.call('get_mxcsr') & 0x6000, 0x6000, 'MXCSR keeps its value between calls');
    t.is(m.call('raw_brk', allocs.brk0 + MiB), allocs.brk0 + MiB, 'brk grows by 1 MiB');
    // Last: breaking the FS base breaks TLS (and the stack protector) until the reset.
    t.is(m.callBigInt('clobber_fs_base', 0x12345000n), 0x12345000n);
    t.is(m.callBigInt('get_fs_base'), 0x12345000n, 'the FS base stays changed between calls');

    const pages = m.reset();
    t.is(typeof pages, 'number');
    t.true(pages > 10, `reset restored ${pages} pages`);
    t.is(m.state, 'paused');
    const out = m.takeOutput();
    t.is(out.stdout.length, 0, 'captured stdout is cleared by reset');
    t.is(out.stderr.length, 0, 'captured stderr is cleared by reset');

    t.deepEqual(observe(m), fresh, 'after reset the machine reports exactly what a fresh fork reports');

    // Heap and mmap allocator: the same sequence gives the same addresses.
    m.reset();
    t.deepEqual(allocations(m), allocs, 'malloc/mmap/brk return the same addresses after a reset');
    // Descriptors: the closed one is open again at its snapshot position, the opened one is gone.
    t.is(m.call('fd_valid', fresh.fd), 1, 'the descriptor closed by the request is open again');
    t.is(m.call('fd_valid', fd2), -EBADF, 'the descriptor opened by the request is gone');
    t.is(m.call('file_pos'), 5);
    const read2 = Buffer.alloc(10);
    t.is(m.call('read_some', read2, 10), 10);
    t.deepEqual(read2, read1, 'the same bytes as the first request read');
    t.is(m.call('open_path', DATA_FILE), fd2, 'the descriptor table is as it was: the same number is handed out');
    t.is(m.memory.read(m.call('area_addr') + 30000, 10).toString('hex'), '00'.repeat(10), 'the host write is undone');

    // The paused main() itself (its registers and stack) resumes as if nothing had happened.
    m.reset();
    const r = m.run();
    t.is(r.status, 'exited');
    t.is(r.exitCode, 9);
    t.is(r.stdout.toString(), `resumed: 0, global ${SNAP_GLOBAL}\n`);
  });
}

test('a request that breaks the FS base (TLS) faults in libc; reset repairs it', (t) => {
  const vm = paused(t);
  const m = fork(t, vm.snapshot());
  const fs0 = m.callBigInt('get_fs_base');
  t.is(m.call('libc_works'), 505);
  t.is(m.callBigInt('clobber_fs_base', 0x20000000n), 0x20000000n);
  t.throws(() => m.call('libc_works'), { instanceOf: GuestFaultError }, 'TLS access through the bad FS base faults');
  t.is(m.state, 'finished');
  m.reset();
  t.is(m.state, 'paused');
  t.is(m.callBigInt('get_fs_base'), fs0, 'FS base restored');
  t.is(m.call('libc_works'), 505, 'libc works again');
});

test('the snapshot-taker resets too, and reset restores pages written by the host API', (t) => {
  const vm = paused(t);
  vm.call('set_global', 5); // before the snapshot: part of it
  const snap = vm.snapshot();
  const gAddr = snap.symbol('global_value');
  vm.memory.write(gAddr, Buffer.from([77, 0, 0, 0, 0, 0, 0, 0]));
  t.is(vm.call('get_global'), 77, 'the guest sees the host write');
  t.true(vm.reset() >= 1);
  t.is(vm.call('get_global'), 5, 'the host write is undone');
  const m = fork(t, snap);
  t.is(m.call('get_global'), 5, 'the fork sees the value at snapshot time');
});

// ---------------------------------------------------------------------------------------------
// 3. secrets do not survive a reset anywhere in guest memory

/**
 * Every occurrence of `needle` in all of guest memory readable through m.memory (1 MiB chunks;
 * a chunk that cannot be read is read page by page). Returns { hits, readable }.
 */
function scanMemory(m, needle) {
  const size = m.memory.size;
  const nb = Buffer.from(needle);
  const hits = [];
  let readable = 0;
  let tail = null; // { addr, buf } the end of the previous readable piece, for matches across pieces
  const search = (addr, buf) => {
    let base = addr;
    let hay = buf;
    if (tail && tail.addr + tail.buf.length === addr) {
      hay = Buffer.concat([tail.buf, buf]);
      base = tail.addr;
    }
    for (let i = hay.indexOf(nb); i >= 0; i = hay.indexOf(nb, i + 1)) hits.push(base + i);
    const keep = Math.min(hay.length, nb.length - 1);
    tail = { addr: base + hay.length - keep, buf: Buffer.from(hay.subarray(hay.length - keep)) };
    readable += buf.length;
  };
  for (let a = 0x1000; a < size; a = a - (a % MiB) + MiB) {
    const len = Math.min(MiB - (a % MiB), size - a);
    let chunk = null;
    try {
      chunk = m.memory.read(a, len);
    } catch {
      for (let p = a; p < a + len; p += 4096) {
        let page = null;
        try {
          page = m.memory.read(p, 4096);
        } catch {
          continue;
        }
        search(p, page);
      }
      continue;
    }
    search(a, chunk);
  }
  return { hits, readable };
}

test('a secret written during request N is nowhere in guest memory after reset; request N+1 cannot read it', (t) => {
  const vm = paused(t);
  const snap = vm.snapshot();
  const m = fork(t, snap);
  const freshRegs = vregs(fork(t, snap));
  const secret = `TOPSECRET-${randomBytes(12).toString('hex')}`;

  // Request N: the secret goes into globals, the heap, new brk and mmap memory, an mremap'd
  // block, the stack, stdout, and the call-argument area (it is passed as a string).
  t.is(m.call('put_secret', secret), secret.length);
  // Everything not mapped is mapped readable first, so the scan sees all of guest memory.
  t.true(m.call('map_all_free') > 0);
  const before = scanMemory(m, secret);
  t.true(before.readable > 0.9 * m.memory.size, `the scan covers guest memory (${before.readable} bytes)`);
  const areaAddr = m.call('area_addr');
  const heapAddr = m.call('heap_addr');
  t.true(before.hits.length >= 20, `positive control: the scan finds the secret before the reset (${before.hits.length} copies)`);
  t.true(before.hits.includes(areaAddr), 'found in secret_area');
  t.true(before.hits.includes(heapAddr), 'found in the malloc block');
  t.true(
    before.hits.some((a) => a > heapAddr + 8 * MiB),
    'found in mmap memory',
  );

  t.true(m.reset() > 0);
  t.is(m.takeOutput().stdout.length, 0, 'the printed secret is gone from captured output');
  t.throws(() => m.memory.read(0x10000, 1), undefined, 'what map_all_free mapped is gone after the reset');
  t.true(m.call('map_all_free') > 0);
  const after = scanMemory(m, secret);
  t.is(after.readable, before.readable, 'the same memory was scanned');
  t.deepEqual(
    after.hits.map((a) => `0x${a.toString(16)}`),
    [],
    'the secret is nowhere in guest memory after reset',
  );
  t.is(scanMemory(m, 'TOPSECRET-').hits.length, 0, 'not even its prefix');
  t.deepEqual(vregs(m), freshRegs, "the vector registers are the snapshot's");

  // Request N+1 gets the snapshot content.
  t.is(m.call('count_marker'), 0, 'request N+1 finds no trace in the area, heap block or mmap block');
  t.true(isSnapshotArea(area(m)), 'secret_area holds the snapshot content');
  const h = heapBlock(m);
  const wantHeap = Buffer.alloc(4096);
  wantHeap.write('snapshot-heap');
  t.deepEqual(h, wantHeap, 'the malloc block holds the snapshot content');
  t.is(m.memory.readCString(heapAddr), 'snapshot-heap');
  t.is(m.call('heap_addr'), heapAddr);
});

test('new machines and forks never show memory that held other data (host heap, closed tenants)', (t) => {
  // Host memory full of a marker, freed again, and two tenants that wrote a secret and closed.
  const hostMarker = `HOSTHEAP-${randomBytes(8).toString('hex')}`;
  let junk = Array.from({ length: 64 }, () => Buffer.alloc(MiB, hostMarker));
  t.true(junk[63].includes(hostMarker));
  junk = null;
  const secret = `TOPSECRET-${randomBytes(12).toString('hex')}`;
  const vm = paused(t);
  const snap = vm.snapshot();
  for (const tenant of [snap.fork(), paused(t)]) {
    t.is(tenant.call('put_secret', secret), secret.length);
    tenant.call('map_all_free');
    t.true(scanMemory(tenant, secret).hits.length > 0, 'positive control');
    tenant.close();
  }
  // New machines of both kinds, and the memory the guest maps fresh, show none of it.
  const fresh = [snap.fork(), paused(t)];
  for (const m of fresh) {
    t.true(m.call('map_all_free') > 0);
    const scan = scanMemory(m, secret);
    t.true(scan.readable > 0.9 * m.memory.size);
    t.deepEqual(scan.hits, [], 'no trace of a closed tenant');
    t.deepEqual(scanMemory(m, hostMarker).hits, [], 'no trace of freed host memory');
    t.deepEqual(scanMemory(m, 'HOSTHEAP-').hits, []);
  }
  for (const m of fresh) m.close();
});

// ---------------------------------------------------------------------------------------------
// 4. pages written by kvmbox (read() into guest memory) are restored

const pagesSpanned = (addr, len) => Math.floor((addr + len - 1) / 4096) - Math.floor(addr / 4096) + 1;

test('pages written by the host (read() into static buffers) are restored by reset', (t) => {
  const vm = paused(t);
  const snap = vm.snapshot();
  const m = fork(t, snap);
  const sAddr = m.call('static_buf_addr');
  const hAddr = m.call('host_only_addr');
  const snapStatic = m.memory.read(sAddr, 8192);
  const snapHostOnly = m.memory.read(hAddr, 16384);
  t.deepEqual(snapStatic, Buffer.alloc(8192, 'S'), 'static_buf as main() filled it');
  t.deepEqual(snapHostOnly, Buffer.alloc(16384), 'host_only_buf was never written');

  for (let round = 0; round < 3; round++) {
    // The guest only calls read(): the bytes land in its memory by kvmbox's hand.
    t.is(m.call('read_into_static', 4090, 20), 20, 'read across a page boundary of static_buf');
    t.is(m.call('read_into_host_only', 8190, 30), 30, 'read into never-written pages');
    t.deepEqual(m.memory.read(sAddr + 4090, 20), DATA.subarray(5, 25));
    t.deepEqual(m.memory.read(hAddr + 8190, 30), DATA.subarray(25, 55));
    t.is(m.call('file_pos'), 55);
    const want = pagesSpanned(sAddr + 4090, 20) + pagesSpanned(hAddr + 8190, 30);
    const pages = m.reset();
    t.true(pages >= want, `round ${round}: ${pages} pages restored (the reads wrote ${want})`);
    t.deepEqual(m.memory.read(sAddr, 8192), snapStatic, `round ${round}: static_buf is back to the snapshot`);
    t.deepEqual(m.memory.read(hAddr, 16384), snapHostOnly, `round ${round}: host_only_buf is zero again`);
    t.is(m.call('file_pos'), 5);
  }
  // Pages written by both the guest (earlier) and the host (later) between resets.
  m.call('touch_pages', 0, 4);
  t.is(m.call('read_into_host_only', 0, 10), 10);
  m.reset();
  t.deepEqual(m.memory.read(hAddr, 16384), snapHostOnly);
  t.is(m.call('file_pos'), 5);
});

test('open files belong to the snapshot: replacing or removing the host file does not change what forks and resets read', (t) => {
  const own = path.join(dir, 'replaced.txt');
  fs.writeFileSync(own, 'abcdefghijklmnopqrstuvwxyz');
  const file = guest('state-glibc');
  const vm = Machine.fromFile(file, { args: [file, own], allowRead: [own] });
  t.teardown(() => vm.close());
  t.is(vm.run().status, 'paused'); // main() read "abcde"
  const snap = vm.snapshot();
  const m = fork(t, snap);
  const read5 = (x) => {
    const b = Buffer.alloc(5);
    const n = x.call('read_some', b, 5);
    return n === 5 ? b.toString() : n;
  };
  t.is(read5(m), 'fghij');
  // The host replaces the file (write + rename, as editors and deploys do).
  fs.writeFileSync(`${own}.new`, 'ZYXWVUTSRQPONMLKJIHGFEDCBA');
  fs.renameSync(`${own}.new`, own);
  m.reset();
  t.is(read5(m), 'fghij', 'after reset the descriptor reads the file that was open at the snapshot');
  t.is(read5(fork(t, snap)), 'fghij', 'so does a new fork');
  // The host removes it.
  fs.unlinkSync(own);
  const r = attempt(() => m.reset());
  t.is(typeof r, 'number', `reset() still works (got ${r})`);
  const f2 = attempt(() => snap.fork());
  t.true(f2 instanceof Machine, `fork() still works (got ${f2})`);
  if (f2 instanceof Machine) {
    t.teardown(() => f2.close());
    t.is(read5(f2), 'fghij');
  }
});

// ---------------------------------------------------------------------------------------------
// 5. reset to another snapshot

test('reset(to) moves back and forth between a snapshot and snapshots of forks (and of forks of forks)', (t) => {
  const vm = paused(t);
  const s1 = vm.snapshot();

  // S2: a fork of S1 that changed things.
  const f1 = fork(t, s1);
  f1.call('set_global', 222);
  f1.call('put_secret', 'TOPSECRET-s2');
  t.is(f1.call('raw_brk', f1.call('raw_brk', 0) + MiB) > 0, true);
  const brk2 = f1.call('raw_brk', 0);
  const rb = Buffer.alloc(7);
  f1.call('read_some', rb, 7); // file position 12 in S2
  const s2 = f1.snapshot();
  t.is(f1.call('get_global'), 222, 'the fork goes on after its snapshot');
  f1.call('set_global', 223);
  f1.reset();
  t.is(f1.call('get_global'), 222, 'a fork that took a snapshot resets to its own snapshot');

  // S3: a snapshot of a fork of S2 (fork of fork).
  const f2 = fork(t, s2);
  t.is(f2.call('get_global'), 222);
  f2.call('set_global', 333);
  const s3 = f2.snapshot();
  t.is(fork(t, s3).call('get_global'), 333, 'fork of a snapshot of a fork of a snapshot');
  t.is(fork(t, s2).call('get_global'), 222);
  t.is(fork(t, s1).call('get_global'), SNAP_GLOBAL);

  const check = (m, which, msg) => {
    const want = {
      s1: { global: SNAP_GLOBAL, markers: 0, pos: 5, brk: null },
      s2: { global: 222, markers: 18, pos: 12, brk: brk2 },
      s3: { global: 333, markers: 18, pos: 12, brk: brk2 },
    }[which];
    t.is(m.state, 'paused', `${msg}: paused`);
    t.is(m.call('get_global'), want.global, `${msg}: global`);
    t.is(m.call('count_marker'), want.markers, `${msg}: secret markers`);
    t.is(m.call('file_pos'), want.pos, `${msg}: file position`);
    if (want.brk !== null) t.is(m.call('raw_brk', 0), want.brk, `${msg}: brk`);
    t.is(m.call('counter_next'), SNAP_COUNTER + 1, `${msg}: counter`);
  };

  const g = fork(t, s1);
  check(g, 's1', 'fork of S1');
  g.call('set_global', 5);
  g.reset(s2);
  check(g, 's2', 'reset(S2)');
  g.call('set_global', 6);
  g.reset();
  check(g, 's2', 'reset() after reset(S2) returns to S2');
  g.reset(s1);
  check(g, 's1', 'reset(S1)');
  g.reset(s3);
  check(g, 's3', 'reset(S3)');
  g.reset(s1);
  g.reset(s1); // the same snapshot again
  check(g, 's1', 'reset(S1) twice');
  for (let i = 0; i < 5; i++) {
    g.reset(i % 2 ? s1 : s2);
    check(g, i % 2 ? 's1' : 's2', `back and forth ${i}`);
  }

  g.reset(s1);
  check(g, 's1', 'finally S1');
  t.is(g.call('libc_works'), 505);
});

test('reset(to) a snapshot of another program with another memory size, and back', (t) => {
  const vm = paused(t);
  const s1 = vm.snapshot();
  const f1 = fork(t, s1);
  f1.call('set_global', 222);
  f1.call('put_secret', 'TOPSECRET-s2');
  const s2 = f1.snapshot();

  // The `calls` guest with 64 MiB of memory instead of the default 128 MiB.
  const callsFile = guest('calls-glibc');
  const other = Machine.fromFile(callsFile, { args: [callsFile], memory: 64 * MiB });
  t.teardown(() => other.close());
  t.is(other.run().status, 'paused');
  const c = other.snapshot();
  t.is(c.memorySize, 64 * MiB);

  const g = fork(t, s1);
  // Use some names of the state program first (both programs export counter_next).
  t.is(g.call('counter_next'), SNAP_COUNTER + 1);
  t.is(g.call('get_global'), SNAP_GLOBAL);

  t.is(g.reset(c), 0, 'a reset to another image copies no pages');
  t.is(g.state, 'paused');
  t.is(g.memoryUsage().memorySize, 64 * MiB, 'memoryUsage reports the new memory size');
  t.is(g.memoryUsage().sharedBytes, c.residentBytes);
  t.is(g.memory.size, 64 * MiB, 'memory.size is the new size');
  t.is(g.symbol('add'), c.symbol('add'), "symbol() is the other program's");
  t.is(g.symbol('put_secret'), undefined);
  t.is(g.call('add', 2, 3), 5, 'a function of the other program');
  t.is(g.call('was_initialized'), 1);
  const buf = Buffer.from('make me loud');
  t.is(g.call('upcase', buf, buf.length), 12);
  t.is(buf.toString(), 'MAKE ME LOUD');
  g.reset();
  t.is(g.call('add', 20, 22), 42, "reset() now returns to the other program's snapshot");
  t.is(g.call('str_len', 'four'), 4);

  t.is(g.reset(s2), 0);
  t.is(g.memory.size, 128 * MiB, 'back to 128 MiB');
  t.is(g.memoryUsage().memorySize, 128 * MiB);
  t.is(g.call('get_global'), 222, 'back in S2');
  t.is(g.call('count_marker'), 18);
  t.is(g.memory.readCString(g.call('heap_addr')), 'TOPSECRET-s2', 'memory view follows the reset');
  g.reset(s1);
  t.is(g.call('get_global'), SNAP_GLOBAL, 'back in S1');
  t.is(g.call('count_marker'), 0);
  t.is(g.call('libc_works'), 505);

  // Names that both programs export, or that only one of them has, must be looked up in the
  // program the machine now runs: after reset(c), counter_next is the calls program's (its
  // counter starts at 0), get_global no longer exists; after going back, add no longer exists.
  g.reset(c);
  t.is(
    attempt(() => g.call('counter_next')),
    1,
    "counter_next resolves to the other program's function",
  );
  g.reset(c);
  const gone = attempt(() => g.call('get_global'));
  t.true(gone instanceof InvalidArgumentError, `get_global is unknown in the other program (got ${gone})`);
  g.reset(s1);
  const stale = attempt(() => g.call('add', 1, 2));
  t.true(stale instanceof InvalidArgumentError, `add is unknown in the state program (got ${stale})`);
});

// ---------------------------------------------------------------------------------------------
// 6. failed forks can be reset and reused

test('a fork that faults, times out or exits is finished; reset makes it paused and correct again', (t) => {
  const vm = paused(t);
  const snap = vm.snapshot();
  const m = fork(t, snap);
  const gAddr = snap.symbol('global_value');

  const recovered = (why) => {
    t.is(m.state, 'finished', `${why}: finished`);
    t.throws(() => m.call('get_global'), { instanceOf: InvalidStateError }, `${why}: no calls while finished`);
    m.reset();
    t.is(m.state, 'paused', `${why}: paused after reset`);
    t.false(m.closed, `${why}: not closed after reset`);
    t.is(m.call('get_global'), SNAP_GLOBAL, `${why}: global restored`);
    t.is(m.memory.read(gAddr, 8).readBigInt64LE(), BigInt(SNAP_GLOBAL), `${why}: memory view works`);
    t.is(m.call('counter_next'), SNAP_COUNTER + 1, `${why}: counter restored`);
    t.is(m.call('file_pos'), 5, `${why}: file position restored`);
    t.is(m.call('libc_works'), 505, `${why}: libc works`);
    t.is(m.takeOutput().stdout.length, 0, `${why}: no output left over`);
    m.reset();
  };

  for (let round = 0; round < 2; round++) {
    m.call('put_secret', 'TOPSECRET-before-crash');
    const e = t.throws(() => m.call('crash'), { instanceOf: GuestFaultError });
    t.is(e.address, 16n);
    recovered(`fault ${round}`);

    const t0 = Date.now();
    t.throws(() => m.call('spin_forever', { timeout: 100 }), { instanceOf: TimeoutError });
    t.true(Date.now() - t0 < 5000);
    recovered(`timeout ${round}`);

    const x = t.throws(() => m.call('quit', 3), { instanceOf: GuestExitedError });
    t.is(x.exitCode, 3);
    recovered(`exit in a call ${round}`);

    const r = m.run();
    t.is(r.status, 'exited', 'run() resumes main(), which returns');
    t.is(r.exitCode, 9);
    t.is(r.stdout.toString(), `resumed: 0, global ${SNAP_GLOBAL}\n`);
    recovered(`exit from main ${round}`);
  }

  t.throws(() => m.call('crash'), { instanceOf: GuestFaultError });
  t.throws(() => m.snapshot(), { instanceOf: InvalidStateError }, 'no snapshot of a finished machine');
  m.reset();
  t.is(m.snapshot() instanceof Snapshot, true, 'after reset it can be snapshotted again');

  // The snapshot-taker recovers the same way.
  t.throws(() => vm.call('crash'), { instanceOf: GuestFaultError });
  t.is(vm.state, 'finished');
  vm.reset();
  t.is(vm.state, 'paused');
  t.is(vm.call('get_global'), SNAP_GLOBAL);
  // Other forks were never affected.
  t.is(fork(t, snap).call('get_global'), SNAP_GLOBAL);
});

test('async calls: a fault or timeout in callAsync, then reset, then callAsync works', async (t) => {
  const vm = paused(t);
  const m = fork(t, vm.snapshot());
  await t.throwsAsync(() => m.callAsync('crash'), { instanceOf: GuestFaultError });
  t.is(m.state, 'finished');
  m.reset();
  t.is(await m.callAsync('get_global'), SNAP_GLOBAL);
  await t.throwsAsync(() => m.callAsync('spin_forever', { timeout: 100 }), { instanceOf: TimeoutError });
  t.is(m.state, 'finished');
  m.reset();
  t.is(await m.callAsync('counter_next'), SNAP_COUNTER + 1);
  const busy = m.callAsync('spin_forever', { timeout: 200 });
  t.throws(() => m.reset(), { instanceOf: InvalidStateError }, 'no reset while an async call runs');
  await t.throwsAsync(busy, { instanceOf: TimeoutError });
  m.reset();
  t.is(await m.callAsync('get_global'), SNAP_GLOBAL);
});

test('resets stay exact while the set of written pages changes (across dirty-log re-learning)', (t) => {
  const vm = paused(t);
  const m = fork(t, vm.snapshot());
  const scratch = m.call('scratch_addr');
  const hostOnly = m.call('host_only_addr');
  t.is(scratch % 4096, 0);
  const zeroPage = Buffer.alloc(4096);
  const bad = [];
  for (let i = 0; i < 300; i++) {
    // Guest writes to pages that change from one request to the next (and some that repeat),
    // plus a host write (read()) at a moving offset.
    const p = (i * 7) % 1000;
    m.call('touch_pages', p, 1 + (i % 3));
    m.call('touch_pages', 1000 + (i % 20), 1);
    m.call('read_into_host_only', (i * 97) % 16000, 10);
    m.reset();
    for (const q of [p, p + 1, p + 2, 1000 + (i % 20), ((((i - 1) * 7) % 1000) + 1000) % 1000]) {
      if (!m.memory.read(scratch + q * 4096, 4096).equals(zeroPage)) bad.push({ i, page: q });
    }
    if (!m.memory.read(hostOnly, 16384).equals(Buffer.alloc(16384))) bad.push({ i, hostOnly: true });
    if (i % 50 === 49 && m.call('file_pos') !== 5) bad.push({ i, pos: true });
  }
  t.deepEqual(bad.slice(0, 5), [], 'every written page is back to the snapshot after every reset');
  // Pages written long ago (before several re-learnings) are still restored when written again.
  m.call('touch_pages', 0, 1000);
  m.reset();
  t.true(m.memory.read(scratch, 4 << 20).equals(Buffer.alloc(4 << 20)), 'all 1000 scratch pages restored');
});

// ---------------------------------------------------------------------------------------------
// 7. a long reset loop keeps resources flat

function fdCount() {
  return fs.readdirSync('/proc/self/fd').length;
}

test.serial('100000 call+reset cycles: same result every time, flat RSS and descriptor count', (t) => {
  const vm = paused(t);
  const snap = vm.snapshot();
  const m = fork(t, snap);
  const cycle = m.fn('cycle');
  // counter 41 → 42; global 111; first unread file byte DATA[5]; scratch[1][0] 0 → 1; malloc ok.
  const expected = (SNAP_COUNTER + 1) * 1000000 + SNAP_GLOBAL * 1000 + DATA[5] + 1 + 1;
  const N = 100000;
  const WARMUP = 10000;
  let rss0 = 0;
  let fds0 = 0;
  let bad = 0;
  let firstBad;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) {
    if (i === WARMUP) {
      rss0 = process.memoryUsage.rss();
      fds0 = fdCount();
    }
    const r = cycle(i);
    if (r !== expected) {
      bad++;
      firstBad ??= { i, r };
    }
    m.reset();
  }
  const ns = Number(process.hrtime.bigint() - t0);
  const rss1 = process.memoryUsage.rss();
  const fds1 = fdCount();
  t.log(
    `${N} cycles in ${(ns / 1e9).toFixed(2)} s (${(ns / N / 1000).toFixed(1)} µs per call+reset); ` +
      `RSS ${(rss0 / MiB).toFixed(1)} → ${(rss1 / MiB).toFixed(1)} MiB; fds ${fds0} → ${fds1}`,
  );
  t.is(bad, 0, `every cycle returns ${expected} (first mismatch: ${JSON.stringify(firstBad)})`);
  t.true(rss1 - rss0 < 50 * MiB, `RSS growth after warm-up: ${((rss1 - rss0) / MiB).toFixed(1)} MiB`);
  t.true(fds1 <= fds0 + 2, `descriptor count stays flat: ${fds0} → ${fds1}`);
  t.is(m.call('cycle', 7), expected);
  t.is(m.call('file_pos'), 9);
});

test.serial('1000 fork+call+close cycles: flat descriptor count', async (t) => {
  // Blank VMs kept ready by earlier pools would be counted as descriptors: stop refilling.
  setVmPoolSize(0);
  const vm = paused(t);
  const snap = vm.snapshot();
  const once = () => {
    const m = snap.fork();
    const r = m.call('cycle', 1);
    m.close();
    return r;
  };
  once();
  const fds0 = fdCount();
  const rss0 = process.memoryUsage.rss();
  const results = new Set();
  for (let i = 0; i < 1000; i++) results.add(once());
  t.is(results.size, 1, 'every fork computes the same result');
  // Teardown runs on a background thread: give it a moment to catch up.
  await waitFor(() => fdCount() <= fds0 + 2);
  t.true(fdCount() <= fds0 + 2, `descriptors: ${fds0} → ${fdCount()}`);
  t.true(process.memoryUsage.rss() - rss0 < 50 * MiB, 'RSS stays flat');
});

test.serial('a fork() refused for its options does not leave a VM behind', (t) => {
  const vm = paused(t, 'glibc', { stdout: () => {} });
  const snap = vm.snapshot();
  const fds0 = fdCount();
  for (let i = 0; i < 100; i++) {
    t.throws(() => snap.fork({ stdout: 'pipe' }), { instanceOf: InvalidArgumentError });
  }
  const fds1 = fdCount();
  t.true(fds1 <= fds0 + 10, `descriptors after 100 refused forks: ${fds0} → ${fds1}`);
});

// ---------------------------------------------------------------------------------------------
// 8. Pool

test('Pool: 30 concurrent uses of 3 forks each see a fresh state; faults do not break it; close closes the forks', async (t) => {
  const vm = paused(t);
  const snap = vm.snapshot();
  const pool = new Pool(snap, { size: 3 });
  t.teardown(() => pool.close());
  t.is(pool.size, 3);
  t.is(pool.available, 3);
  t.is(pool.snapshot, snap);

  const seen = new Set();
  let active = 0;
  let maxActive = 0;
  const use = (i) =>
    pool.with(async (m) => {
      seen.add(m);
      active++;
      maxActive = Math.max(maxActive, active);
      try {
        const g = await m.callAsync('get_global');
        await m.callAsync('set_global', 1000 + i);
        const c = await m.callAsync('counter_next');
        const b = Buffer.alloc(4);
        await m.callAsync('read_some', b, 4);
        await m.callAsync('put_secret', `TOPSECRET-use-${i}`);
        return { g, c, b: b.toString() };
      } finally {
        active--;
      }
    });
  const fresh = { g: SNAP_GLOBAL, c: SNAP_COUNTER + 1, b: DATA.subarray(5, 9).toString() };
  const results = await Promise.all(Array.from({ length: 30 }, (_, i) => use(i)));
  t.deepEqual(results, Array(30).fill(fresh), 'every use starts from the snapshot');
  t.true(maxActive <= 3, `at most 3 uses at once (saw ${maxActive})`);
  t.is(seen.size, 3, 'the 3 forks were all used');
  t.is(pool.available, 3, 'all forks are back');

  // A use that faults, one that times out and one that throws in JS.
  await t.throwsAsync(() => pool.with((m) => m.callAsync('crash')), { instanceOf: GuestFaultError });
  await t.throwsAsync(() => pool.with((m) => m.callAsync('spin_forever', { timeout: 100 })), { instanceOf: TimeoutError });
  await t.throwsAsync(
    () =>
      pool.with(async (m) => {
        await m.callAsync('set_global', -50);
        throw new Error('handler bug');
      }),
    { message: 'handler bug' },
  );
  t.is(pool.available, 3, 'failed uses give their fork back');
  const after = await Promise.all(Array.from({ length: 9 }, (_, i) => use(100 + i)));
  t.deepEqual(after, Array(9).fill(fresh), 'uses after the failures see a fresh state');
  for (const m of seen) t.is(m.state, 'paused');

  // acquire/release by hand.
  const m = await pool.acquire();
  t.is(pool.available, 2);
  t.is(m.call('set_global', 7), SNAP_GLOBAL);
  pool.release(m);
  t.is(pool.available, 3);
  const m2 = await pool.acquire();
  t.is(m2.call('get_global'), SNAP_GLOBAL, 'released forks are reset');
  pool.release(m2);
  t.throws(() => pool.release(fork(t, snap)), { instanceOf: InvalidArgumentError }, 'foreign machines are refused');

  pool.close();
  for (const f of seen) t.is(f.state, 'closed', 'close() closes every fork');
  await t.throwsAsync(() => pool.acquire(), { instanceOf: InvalidStateError });
  await t.throwsAsync(() => pool.with(() => 1), { instanceOf: InvalidStateError });
  t.is(fork(t, snap).call('get_global'), SNAP_GLOBAL, 'the snapshot still works after the pool closed');
});

test('Pool: close() settles the uses still waiting for a fork (they reject)', async (t) => {
  const vm = paused(t);
  const pool = new Pool(vm.snapshot(), { size: 1 });
  t.teardown(() => pool.close());
  const running = pool.with((m) => m.callAsync('spin_forever', { timeout: 300 }));
  const waiting = pool.with((m) => m.callAsync('get_global'));
  const waiting2 = pool.acquire();
  await new Promise((r) => setTimeout(r, 20));
  pool.close();
  const settle = (p) =>
    Promise.race([
      p.then(
        (v) => ({ value: v }),
        (e) => ({ error: e }),
      ),
      new Promise((r) => setTimeout(() => r('still pending 3 s after close()'), 3000)),
    ]);
  const [r0, r1, r2] = await Promise.all([settle(running), settle(waiting), settle(waiting2)]);
  t.truthy(r0.error, 'the running use ends (with its timeout)');
  t.true(r1.error instanceof InvalidStateError, `a queued with() rejects: ${JSON.stringify(r1)}`);
  t.true(r2.error instanceof InvalidStateError, `a queued acquire() rejects: ${JSON.stringify(r2)}`);
});

test('Pool with resetAfterUse: false keeps state between uses', async (t) => {
  const vm = paused(t);
  const pool = new Pool(vm.snapshot(), { size: 1, resetAfterUse: false });
  t.teardown(() => pool.close());
  t.is(await pool.with((m) => m.callAsync('counter_next')), SNAP_COUNTER + 1);
  t.is(await pool.with((m) => m.callAsync('counter_next')), SNAP_COUNTER + 2);
  t.throws(() => new Pool(vm.snapshot(), { size: 0 }), { instanceOf: InvalidArgumentError });
});

// ---------------------------------------------------------------------------------------------
// 9. memoryUsage

test('memoryUsage: a fork pays for the pages it writes; it shares the snapshot image', (t) => {
  const vm = paused(t);
  const snap = vm.snapshot();
  t.true(snap.residentBytes > 0, `the image holds data (${snap.residentBytes} bytes)`);
  const m = fork(t, snap);
  const u0 = m.memoryUsage();
  t.is(u0.memorySize, 128 * MiB);
  t.is(u0.sharedBytes, snap.residentBytes, 'sharedBytes is the snapshot image');
  t.true(u0.privateBytes < 64 * 4096, `a fresh fork owns almost nothing (${u0.privateBytes} bytes)`);

  let written = 0;
  let prev = u0.privateBytes;
  for (const k of [100, 300, 600]) {
    t.is(m.call('touch_pages', written, k), k);
    written += k;
    const u = m.memoryUsage();
    t.true(u.privateBytes - u0.privateBytes >= written * 4096, `after writing ${written} pages: ${u.privateBytes} private bytes`);
    t.true(u.privateBytes - u0.privateBytes <= written * 4096 + 64 * 4096, `privateBytes grows with the pages written, not more (${u.privateBytes})`);
    t.true(u.privateBytes > prev);
    prev = u.privateBytes;
    t.is(u.sharedBytes, snap.residentBytes);
  }
  // Another fork is not charged for them.
  const other = fork(t, snap);
  t.true(other.memoryUsage().privateBytes < 64 * 4096);
  t.is(vm.memoryUsage().sharedBytes, snap.residentBytes, 'the snapshot-taker shares the same image');
});

test('munmap in a fork gives memory back: untouched pages cost nothing, the range reads as zero, reset restores', (t) => {
  const vm = paused(t);
  t.is(vm.call('keep_mapping', MiB), 0);
  const snap = vm.snapshot();
  const m = fork(t, snap);
  const u0 = m.memoryUsage().privateBytes;
  t.is(m.call('map_unmap', 32 * MiB), 0);
  t.is(m.call('map_unmap', 32 * MiB), 0, 'the same range mapped again reads as zero');
  const grown = m.memoryUsage().privateBytes - u0;
  t.true(grown < 2 * MiB, `munmap of a 32 MiB mapping with 2 pages written left ${grown} private bytes`);
  t.is(m.call('kept_ends'), 0xaa, 'the snapshot data is there');
  t.is(m.call('remap_kept'), 0, 'a mapping with data in the snapshot reads as zero after munmap and mmap');
  m.reset();
  t.is(m.call('kept_ends'), 0xaa, 'reset brings the unmapped snapshot data back');
});

test("a fork's writes and reads do not grow the shared snapshot image", (t) => {
  const vm = paused(t);
  const snap = vm.snapshot();
  const m = fork(t, snap);
  const resident = snap.residentBytes;
  t.is(m.call('touch_pages', 0, 500), 500, 'the fork writes 500 pages that were never written before the snapshot');
  m.memory.read(m.call('host_only_addr'), 16384); // and the host reads never-written pages
  t.is(snap.residentBytes, resident, 'the image is immutable: its size does not change after the snapshot');
  t.is(m.memoryUsage().sharedBytes, resident);
});

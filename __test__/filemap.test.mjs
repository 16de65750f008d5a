// File mappings: guest memory of a MAP_PRIVATE file mapping is a private host mapping of the
// file — its unchanged pages stay the host page cache's, shared by every machine — with
// Linux's semantics (differential against native: private writes, offsets, the partial last
// page, MAP_FIXED over anonymous memory and back, munmap, MADV_DONTNEED re-reading the file),
// and snapshots, forks, resets and snapshot files keep what the guest saw.
import fs from 'node:fs';
import path from 'node:path';

import test from 'ava';

import { guest, Machine, requireKvm, runKvm, runNative, Snapshot, summarize, tempDir, VARIANTS } from './helpers.mjs';

requireKvm(test);

const dir = tempDir('kvmbox-filemap-');
const FILE = path.join(dir, 'data.txt');
let x = 7;
const DATA = Buffer.from(Array.from({ length: 10_000 }, () => 97 + (((x = (x * 1103515245 + 12345) >>> 0) >>> 16) % 10)));
fs.writeFileSync(FILE, DATA);

for (const variant of VARIANTS) {
  test(`filemap-${variant}: file mappings behave as natively`, (t) => {
    const file = guest(`filemap-${variant}`);
    const opts = { args: [file, FILE] };
    const native = summarize(runNative(file, opts));
    t.is(native.exitCode, 0, native.stderr);
    t.true(native.stdout.includes(`MADV_DONTNEED: ${String.fromCharCode(DATA[0])}`), native.stdout);
    t.deepEqual(summarize(runKvm(file, { ...opts, allowRead: [FILE] })), native);
  });
}

/** A `filemap FILE serve` machine, paused with the file mapped. */
function serving(t, file = FILE) {
  const exe = guest('filemap-glibc');
  const vm = Machine.fromFile(exe, { args: [exe, file, 'serve'], allowRead: [file] });
  t.teardown(() => vm.close());
  t.is(vm.run().status, 'paused');
  return vm;
}

test('a mapped file survives snapshot, fork, reset and a snapshot file with the private writes', (t) => {
  const vm = serving(t);
  t.is(vm.call('read_byte', 0), DATA[0]);
  t.is(vm.call('write_byte', 1, 90), 0);
  const snap = vm.snapshot();
  t.teardown(() => snap.close());
  const fork = snap.fork();
  t.teardown(() => fork.close());
  for (let round = 0; round < 3; round++) {
    t.is(fork.call('read_byte', 0), DATA[0], `round ${round}`);
    t.is(fork.call('read_byte', 1), 90, 'the write before the snapshot is kept');
    t.is(fork.call('read_byte', 9999), DATA[9999]);
    t.is(fork.call('write_byte', 0, 81), 0);
    // A file mapped after the snapshot, then gone with the reset.
    const page = fork.call('map_new', 4096);
    t.true(page > 0);
    t.is(fork.call('byte_at', page), DATA[4096]);
    t.is(fork.call('file_byte', 0), DATA[0], 'the file itself never changes');
    fork.reset();
  }
  t.is(vm.call('read_byte', 0), DATA[0], 'the snapshot taker is untouched by its fork');
  const file = path.join(dir, 'filemap.snap');
  snap.save(file);
  const loaded = Snapshot.load(file, { allowRead: [FILE] });
  t.teardown(() => loaded.close());
  const again = loaded.fork();
  t.teardown(() => again.close());
  t.is(again.call('read_byte', 0), DATA[0]);
  t.is(again.call('read_byte', 1), 90);
});

test('unchanged file pages are not a private copy per machine', (t) => {
  const big = path.join(dir, 'big.bin');
  fs.writeFileSync(big, Buffer.alloc(32 * 1024 * 1024, 7));
  const vms = [serving(t, big), serving(t, big)];
  for (const vm of vms) {
    t.is(vm.call('sum_all'), 7 * ((32 * 1024 * 1024) / 64), 'the guest read every page');
    const priv = vm.memoryUsage().privateBytes;
    t.true(priv < 16 * 1024 * 1024, `private ${priv} bytes after reading 32 MiB of a mapped file`);
  }
});

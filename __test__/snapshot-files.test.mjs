// Snapshot files: save/load round trip through the TypeScript API, and every kind of bad file
// rejected with a clear InvalidArgumentError (never a crash, never a half-loaded snapshot).
import fs from 'node:fs';
import path from 'node:path';

import test from 'ava';

import { FileError, InvalidArgumentError, pausedMachine, requireKvm, Snapshot, tempDir } from './helpers.mjs';

requireKvm(test);

test('a saved snapshot loads with its memory, registers and process state', (t) => {
  const dir = tempDir();
  const vm = pausedMachine(t);
  for (let i = 0; i < 7; i++) vm.call('counter_next');
  const file = path.join(dir, 'calls.kvmsnap');
  vm.snapshot().save(file);
  t.true(fs.statSync(file).size > 4096);
  const loaded = Snapshot.load(file);
  const a = loaded.fork();
  const b = loaded.fork();
  t.is(a.call('counter_next'), 8);
  t.is(a.call('counter_next'), 9);
  t.is(b.call('counter_next'), 8, 'forks of a loaded snapshot are isolated');
  a.reset();
  t.is(a.call('counter_next'), 8, 'and reset to it');
  t.is(a.call('str_len', 'loaded'), 6);
  const r = b.run();
  t.is(r.status, 'exited');
  t.is(r.exitCode, 7);
  t.is(r.stdout.toString(), 'resumed: 0, counter 8\n');
  t.is(loaded.symbol('add'), vm.symbol('add'));
});

test('bad snapshot files are rejected with a clear error', (t) => {
  const dir = tempDir();
  const vm = pausedMachine(t);
  const file = path.join(dir, 'good.kvmsnap');
  vm.snapshot().save(file);
  const good = fs.readFileSync(file);
  const cases = {
    missing: [null, /cannot read .*missing\.kvmsnap: No such file or directory/],
    empty: [Buffer.alloc(0), /not a kvmbox snapshot/],
    garbage: [Buffer.from('this is not a snapshot, just text'), /not a kvmbox snapshot/],
    truncated: [good.subarray(0, Math.floor(good.length / 2)), /truncated/],
    'one byte short': [good.subarray(0, good.length - 1), /truncated/],
    'flipped byte': [
      (() => {
        const b = Buffer.from(good);
        b[b.length >> 1] ^= 0x10;
        return b;
      })(),
      /checksum/,
    ],
    'other version': [
      (() => {
        const b = Buffer.from(good);
        b.writeUInt32LE(b.readUInt32LE(8) + 1, 8);
        return b;
      })(),
      /version 4/,
    ],
    'trailing data': [Buffer.concat([good, Buffer.from('x')]), /checksum|trailing/],
  };
  for (const [name, [bytes, message]] of Object.entries(cases)) {
    const p = path.join(dir, `${name}.kvmsnap`);
    if (bytes) fs.writeFileSync(p, bytes);
    // A file that is not there is a file error (ENOENT); one that is not a good snapshot, invalid.
    const err = t.throws(() => Snapshot.load(p), { instanceOf: bytes ? InvalidArgumentError : FileError }, name);
    t.regex(err.message, message, name);
  }
  // The host is fine afterwards.
  const again = Snapshot.load(file).fork();
  t.is(again.call('add', 20, 22), 42);
});

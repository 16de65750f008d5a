// Malformed and unsupported executables: each must be rejected with an ElfError
// carrying a helpful message; the host process must never crash.
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import test from 'ava';

import { assertHealthy, ElfError, FileError, GUEST_DIR, guest, InvalidArgumentError, KvmboxError, Machine, requireKvm, Snapshot, tempDir } from './helpers.mjs';

requireKvm(test);

const HELLO = fs.readFileSync(guest('hello-glibc'));
const HELLO_PIE = fs.readFileSync(guest('hello-pie'));
const PT_LOAD = 1;

/** Minimal ELF64 program header access on a copy of `buf`. */
class Elf64 {
  constructor(buf) {
    this.buf = Buffer.from(buf);
  }
  get phoff() {
    return Number(this.buf.readBigUInt64LE(0x20));
  }
  get phentsize() {
    return this.buf.readUInt16LE(0x36);
  }
  get phnum() {
    return this.buf.readUInt16LE(0x38);
  }
  phdr(i) {
    const o = this.phoff + i * this.phentsize;
    const b = this.buf;
    return {
      index: i,
      offset: o,
      p_type: b.readUInt32LE(o),
      p_flags: b.readUInt32LE(o + 4),
      p_offset: b.readBigUInt64LE(o + 8),
      p_vaddr: b.readBigUInt64LE(o + 16),
      p_paddr: b.readBigUInt64LE(o + 24),
      p_filesz: b.readBigUInt64LE(o + 32),
      p_memsz: b.readBigUInt64LE(o + 40),
      p_align: b.readBigUInt64LE(o + 48),
    };
  }
  loads() {
    const r = [];
    for (let i = 0; i < this.phnum; i++) if (this.phdr(i).p_type === PT_LOAD) r.push(this.phdr(i));
    return r;
  }
  /** Sets fields of program header i, e.g. set(2, { p_vaddr: 0x1000n }). */
  set(i, fields) {
    const o = this.phoff + i * this.phentsize;
    const off = { p_type: 0, p_flags: 4, p_offset: 8, p_vaddr: 16, p_paddr: 24, p_filesz: 32, p_memsz: 40, p_align: 48 };
    for (const [k, v] of Object.entries(fields)) {
      if (k === 'p_type' || k === 'p_flags') this.buf.writeUInt32LE(v, o + off[k]);
      else this.buf.writeBigUInt64LE(BigInt(v), o + off[k]);
    }
    return this;
  }
}

/** Asserts that loading (and, if loading succeeds, running) `bytes` throws ElfError. */
function assertElfError(t, bytes, messageRe) {
  let vm;
  const err = t.throws(
    () => {
      vm = Machine.fromBuffer(bytes, { timeout: 5000 });
      vm.run();
    },
    { instanceOf: ElfError },
  );
  if (err) {
    t.true(err instanceof KvmboxError);
    t.is(err.code, 'ELF_ERROR');
    t.is(err.name, 'ElfError');
    t.true(typeof err.message === 'string' && err.message.length >= 10, `message: ${err.message}`);
    t.notRegex(err.message, /panicked|unwrap|RUST_BACKTRACE/, 'no Rust panic text');
    if (messageRe) t.regex(err.message, messageRe);
    t.log(err.message);
  }
  assertHealthy(t);
  return err;
}

test('sanity: the unpatched hello binaries run from a buffer', (t) => {
  for (const bytes of [HELLO, HELLO_PIE]) {
    const r = Machine.fromBuffer(bytes).run();
    t.is(r.exitCode, 0);
    t.is(r.stdout.toString(), 'hello from kvmbox guest\n');
  }
  const e = new Elf64(HELLO);
  t.true(e.loads().length >= 2, 'hello-glibc has at least two PT_LOAD segments');
});

test('empty buffer', (t) => {
  assertElfError(t, Buffer.alloc(0));
});

test('random bytes', (t) => {
  assertElfError(t, crypto.randomBytes(4096));
});

test('bad magic (otherwise valid hello)', (t) => {
  const b = Buffer.from(HELLO);
  b[1] = 0x45 ^ 0x20; // 'E' -> 'e'
  assertElfError(t, b);
});

test('a text file', (t) => {
  assertElfError(t, Buffer.from('#!/bin/sh\necho not an ELF\n'));
});

for (const [label, len] of [
  ['first 4 bytes', 4],
  ['first 63 bytes (partial ELF header)', 63],
  ['first 64 bytes (header only)', 64],
  ['first 1000 bytes', 1000],
  ['half the file', Math.floor(HELLO.length / 2)],
]) {
  test(`truncated hello: ${label}`, (t) => {
    assertElfError(t, HELLO.subarray(0, len));
  });
}

test('truncated hello: all but the last byte (only the section table is cut) -> runs or ElfError, never a crash', (t) => {
  // Every PT_LOAD is intact; only the section header table at the end is cut.
  // Linux runs such a file; rejecting it as corrupt is acceptable too.
  const e = new Elf64(HELLO);
  const end = Math.max(...e.loads().map((p) => Number(p.p_offset + p.p_filesz)));
  t.true(end < HELLO.length - 1);
  try {
    const r = Machine.fromBuffer(HELLO.subarray(0, HELLO.length - 1)).run();
    t.is(r.exitCode, 0);
    t.is(r.stdout.toString(), 'hello from kvmbox guest\n');
  } catch (err) {
    t.true(err instanceof ElfError, String(err));
    t.log(err.message);
  }
  assertHealthy(t);
});

test('no section headers (e_shoff = e_shnum = e_shstrndx = 0) still runs, like on Linux', (t) => {
  // Section headers are optional in an executable (sstrip removes them); the
  // kernel only looks at program headers.
  for (const src of [HELLO, HELLO_PIE]) {
    const b = Buffer.from(src);
    b.writeBigUInt64LE(0n, 0x28); // e_shoff
    b.writeUInt16LE(0, 0x3c); // e_shnum
    b.writeUInt16LE(0, 0x3e); // e_shstrndx
    const vm = Machine.fromBuffer(b);
    const r = vm.run();
    t.is(r.exitCode, 0);
    t.is(r.stdout.toString(), 'hello from kvmbox guest\n');
  }
});

test('ELF32 class byte', (t) => {
  const b = Buffer.from(HELLO);
  b[4] = 1; // ELFCLASS32
  assertElfError(t, b, /32|class|64/i);
});

test('big-endian data byte', (t) => {
  const b = Buffer.from(HELLO);
  b[5] = 2; // ELFDATA2MSB
  assertElfError(t, b, /endian|data|MSB|LSB/i);
});

test('wrong e_machine (EM_AARCH64)', (t) => {
  const b = Buffer.from(HELLO);
  b.writeUInt16LE(183, 0x12);
  assertElfError(t, b, /machine|x86|arch|aarch|183/i);
});

test('relocatable object (ET_REL)', (t) => {
  const b = Buffer.from(HELLO);
  b.writeUInt16LE(1, 0x10);
  assertElfError(t, b, /type|exec|ET_|reloc/i);
});

test('e_phnum = 0 (no program headers)', (t) => {
  const b = Buffer.from(HELLO);
  b.writeUInt16LE(0, 0x38);
  assertElfError(t, b);
});

test('e_phoff beyond the end of the file', (t) => {
  const b = Buffer.from(HELLO);
  b.writeBigUInt64LE(BigInt(HELLO.length + 4096), 0x20);
  assertElfError(t, b);
});

test('e_phentsize wrong', (t) => {
  const b = Buffer.from(HELLO);
  b.writeUInt16LE(32, 0x36);
  assertElfError(t, b);
});

test('first PT_LOAD moved beyond the memory limit (p_vaddr 0x7000000000)', (t) => {
  const e = new Elf64(HELLO);
  const first = e.loads()[0];
  e.set(first.index, { p_vaddr: 0x7000000000n, p_paddr: 0x7000000000n });
  assertElfError(t, e.buf);
});

test('overlapping PT_LOAD segments (second p_vaddr = first p_vaddr)', (t) => {
  const e = new Elf64(HELLO);
  const [first, second] = e.loads();
  e.set(second.index, { p_vaddr: first.p_vaddr, p_paddr: first.p_vaddr });
  assertElfError(t, e.buf, /overlap/i);
});

test('overlapping PT_LOAD segments (first p_memsz grown into the second)', (t) => {
  const e = new Elf64(HELLO);
  const [first, second] = e.loads();
  // Alignment stays valid; the only defect is that the first segment now runs
  // 0x800 bytes into the second one.
  e.set(first.index, { p_memsz: second.p_vaddr - first.p_vaddr + 0x800n });
  assertElfError(t, e.buf, /overlap/i);
});

test('huge p_memsz (0xffffffffffff)', (t) => {
  const e = new Elf64(HELLO);
  const first = e.loads()[0];
  e.set(first.index, { p_memsz: 0xffffffffffffn });
  assertElfError(t, e.buf);
});

test('p_memsz wrapping around the address space', (t) => {
  const e = new Elf64(HELLO);
  const last = e.loads().at(-1);
  e.set(last.index, { p_memsz: 0xfffffffffffff000n });
  assertElfError(t, e.buf);
});

test('p_filesz larger than p_memsz', (t) => {
  const e = new Elf64(HELLO);
  const first = e.loads()[0];
  e.set(first.index, { p_filesz: first.p_memsz + 0x1000n });
  assertElfError(t, e.buf);
});

test('p_offset + p_filesz beyond the end of the file', (t) => {
  const e = new Elf64(HELLO);
  const last = e.loads().at(-1);
  e.set(last.index, { p_offset: BigInt(HELLO.length) + 0x10000n - (BigInt(HELLO.length) % 0x1000n) + (last.p_vaddr % 0x1000n) });
  assertElfError(t, e.buf);
});

test('entry point outside every PT_LOAD', (t) => {
  const b = Buffer.from(HELLO);
  b.writeBigUInt64LE(0x10n, 0x18);
  // Either rejected at load time or it faults when run; never a crash.
  let vm;
  try {
    vm = Machine.fromBuffer(b, { timeout: 5000 });
    vm.run();
    t.fail('a program with a bogus entry point ran to completion');
  } catch (e) {
    t.true(e instanceof KvmboxError, String(e));
    t.true(e.code === 'ELF_ERROR' || e.code === 'GUEST_FAULT', e.code);
  }
  assertHealthy(t);
});

const tmp = tempDir('kvmbox-elf-');
function compile(args) {
  const r = spawnSync('gcc', args, { cwd: tmp, encoding: 'utf8' });
  if (r.error || r.status !== 0) throw new Error(`gcc ${args.join(' ')} failed: ${r.error || r.stderr}`);
}

test('dynamic executable -> message mentions "dynamic"', (t) => {
  const out = path.join(tmp, 'hello-dyn');
  compile(['-O2', '-o', out, path.join(GUEST_DIR, 'hello.c')]);
  const err = assertElfError(t, fs.readFileSync(out), /dynamic/i);
  // Same through fromFile.
  const e2 = t.throws(() => Machine.fromFile(out).run(), { instanceOf: ElfError });
  t.regex(e2.message, /dynamic/i);
  t.truthy(err);
});

test('dynamic PIE executable -> message mentions "dynamic"', (t) => {
  const out = path.join(tmp, 'hello-dyn-pie');
  compile(['-O2', '-fPIE', '-pie', '-o', out, path.join(GUEST_DIR, 'hello.c')]);
  assertElfError(t, fs.readFileSync(out), /dynamic/i);
});

test('object file (gcc -c)', (t) => {
  const out = path.join(tmp, 'hello.o');
  compile(['-O2', '-c', '-o', out, path.join(GUEST_DIR, 'hello.c')]);
  assertElfError(t, fs.readFileSync(out));
});

test('fromFile on a missing file throws a FileError (ENOENT), not an ElfError', (t) => {
  const missing = path.join(tmp, 'does-not-exist');
  const err = t.throws(() => Machine.fromFile(missing), { instanceOf: FileError });
  t.is(err.code, 'FILE_ERROR');
  t.is(err.errno, os.constants.errno.ENOENT);
  t.is(err.syscallCode, 'ENOENT');
  t.is(err.path, missing);
  t.regex(err.message, /cannot read .*does-not-exist: No such file or directory/);
  const snapErr = t.throws(() => Snapshot.load(missing), { instanceOf: FileError });
  t.is(snapErr.syscallCode, 'ENOENT');
});

test('fromFile on a directory throws a KvmboxError', (t) => {
  const err = t.throws(() => Machine.fromFile(tmp).run());
  t.true(err instanceof KvmboxError, String(err));
});

test('valid program with memory: 1 -> InvalidArgumentError', (t) => {
  const err = t.throws(() => Machine.fromFile(guest('hello-glibc'), { memory: 1 }).run(), {
    instanceOf: InvalidArgumentError,
  });
  t.is(err.code, 'INVALID_ARGUMENT');
  t.true(err instanceof KvmboxError);
  t.log(err.message);
});

test('memory just below the 8 MiB minimum -> InvalidArgumentError; 8 MiB works', (t) => {
  t.throws(() => Machine.fromFile(guest('hello-musl'), { memory: 8 * 1024 * 1024 - 4096 }).run(), {
    instanceOf: InvalidArgumentError,
  });
  const r = Machine.fromFile(guest('hello-musl'), { memory: 8 * 1024 * 1024 }).run();
  t.is(r.exitCode, 0);
});

test('non-integer / negative memory -> InvalidArgumentError', (t) => {
  for (const memory of [-1, 1.5, Number.NaN]) {
    t.throws(() => Machine.fromFile(guest('hello-glibc'), { memory }).run(), { instanceOf: InvalidArgumentError });
  }
});

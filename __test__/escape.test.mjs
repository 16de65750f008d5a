// Escape attempts (issue "security hardening", first part): every privileged or forbidden
// action of a ring-3 guest is stopped with a typed fault — or an errno for syscall arguments —
// and the host keeps working.
import test from 'ava';

import { assertHealthy, GuestFaultError, guest, Machine, requireKvm } from './helpers.mjs';

requireKvm(test);

const bin = guest('escape-glibc');
const GP = 13;
const PF = 14;
const UD = 6;

const cases = {
  lgdt: [GP],
  lidt: [GP],
  sgdt_then_write: [PF], // sgdt works without UMIP, but the GDT page is supervisor-only
  mov_cr3: [GP],
  mov_cr0: [GP],
  wrmsr: [GP],
  rdmsr: [GP],
  hlt: [GP],
  cli: [GP],
  sti: [GP],
  iretq_forged: [GP],
  far_call_kernel: [GP],
  sysret: [GP],
  exec_heap: [PF], // heap is NX even when mapped PROT_EXEC
  write_text: [PF], // no self-modifying code: text is read-only
  jump_noncanonical: [GP],
  stack_pivot: [PF],
};

for (const [mode, vectors] of Object.entries(cases)) {
  test(`${mode} is stopped with a fault`, (t) => {
    const vm = Machine.fromFile(bin, { args: [bin, mode], timeout: 5000 });
    const err = t.throws(() => vm.run(), { instanceOf: GuestFaultError });
    t.true(vectors.includes(err.vector), `vector ${err.vector} (${err.vectorName})`);
    t.is(err.stdout.toString(), `escape: ${mode}\n`, 'stopped before "NOT STOPPED"');
  });
}

test('in/out to every interesting port, including the stub ports, is a #GP', (t) => {
  for (const port of ['0x80', '0xE0', '0xE1', '0xC0', '0xCF', '0x3F8', '0xCF8']) {
    for (const mode of ['out', 'in']) {
      const vm = Machine.fromFile(bin, { args: [bin, mode, port], timeout: 5000 });
      const err = t.throws(() => vm.run(), { instanceOf: GuestFaultError }, `${mode} ${port}`);
      t.is(err.vector, GP, `${mode} ${port}`);
    }
  }
});

test('int n for every vector the guest tries is a fault', (t) => {
  for (const n of [0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 30, 31, 32, 33, 0x40, 0x80, 0x81, 0xc0, 0xe0, 0xe1, 0xfe, 0xff]) {
    const vm = Machine.fromFile(bin, { args: [bin, 'int', String(n)], timeout: 5000 });
    const err = t.throws(() => vm.run(), { instanceOf: GuestFaultError }, `int ${n}`);
    t.true([UD, GP, 4, 11].includes(err.vector), `int ${n}: vector ${err.vector}`);
  }
});

test('syscall pointers to the kernel half, the system area, and overflowing lengths get EFAULT', (t) => {
  const probe = Machine.fromFile(bin, { args: [bin, 'sgdt_then_write'] });
  let gdt;
  try {
    probe.run();
  } catch (e) {
    gdt = e.address;
  }
  t.true(typeof gdt === 'bigint' && gdt > 0n);
  const vm = Machine.fromFile(bin, { args: [bin, 'read_kernel_ptr', gdt.toString(16)], stdin: 'some input' });
  const r = vm.run();
  t.is(r.exitCode, 0);
  t.regex(r.stdout.toString(), /results -1 -1 -1 -1\n/);
});

test('the system pages (stubs, GDT, IDT, TSS, ring-0 stack, page tables) cannot be read, written or executed', (t) => {
  // The GDT's address leaks through sgdt (no UMIP); the system area's layout follows from it:
  // syscall entry, call return, exception stubs, GDT, IDT, TSS (3 pages), ring-0 stack, page
  // tables up to the end of guest memory (128 MiB by default).
  let gdt;
  try {
    Machine.fromFile(bin, { args: [bin, 'sgdt_then_write'] }).run();
  } catch (e) {
    gdt = e.address;
  }
  const page = 4096n;
  const sys = gdt - 3n * page;
  const touch = (addr, op) => {
    const vm = Machine.fromFile(bin, { args: [bin, `touch_${op}`, addr.toString(16)], timeout: 5000 });
    try {
      return vm.run().stdout.toString().includes('NOT STOPPED') ? 'allowed' : 'exited';
    } catch (e) {
      t.true(e instanceof GuestFaultError, `${e}`);
      return e.vector;
    }
  };
  const supervisor = { stubs: sys + 2n * page, gdt, idt: sys + 4n * page, tss: sys + 5n * page, 'tss+2': sys + 7n * page, 'ring-0 stack': sys + 8n * page, pml4: sys + 9n * page, 'last page table': (128n << 20n) - page };
  for (const [name, addr] of Object.entries(supervisor)) {
    for (const op of ['r', 'w', 'x']) t.is(touch(addr, op), PF, `${op} ${name} at 0x${addr.toString(16)}`);
  }
  // The two entry pages hold only kvmbox's stub code: readable, never writable, and entering
  // them other than through `syscall`/a call return is a fault (the forged-exit check).
  for (const [name, addr] of Object.entries({ 'syscall entry': sys, 'call return': sys + page })) {
    t.is(touch(addr, 'r'), 'allowed', `read ${name}`);
    t.is(touch(addr, 'w'), PF, `write ${name}`);
    t.true([PF, GP].includes(touch(addr, 'x')), `jump into ${name}`);
  }
});

test('after all of that the host is fine', (t) => {
  assertHealthy(t);
});

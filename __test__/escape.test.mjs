// Escape attempts (issue "security hardening", first part): every privileged or forbidden
// action of a ring-3 guest is stopped with a typed fault — or an errno for syscall arguments —
// and the host keeps working.
import test from 'ava';

import { assertHealthy, GuestFaultError, guest, Machine, probe, requireKvm } from './helpers.mjs';

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
  exec_heap: [PF], // memory mapped without PROT_EXEC is NX
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

test('in/out across the whole port range, including the stub ports, is a #GP', (t) => {
  // The stubs' own ports and well-known devices, plus every 257th port of the 64 Ki range.
  const ports = new Set([0x80, 0xe0, 0xe1, 0xc0, 0xcf, 0x3f8, 0xcf8, 0xffff]);
  for (let p = 0; p < 0x10000; p += 257) ports.add(p);
  for (const port of [...ports].map((p) => `0x${p.toString(16)}`)) {
    for (const mode of ['out', 'in']) {
      const vm = Machine.fromFile(bin, { args: [bin, mode, port], timeout: 5000 });
      const err = t.throws(() => vm.run(), { instanceOf: GuestFaultError }, `${mode} ${port}`);
      t.is(err.vector, GP, `${mode} ${port}`);
    }
  }
});

test('int n for every vector 0-255 is a fault', (t) => {
  const pvm = probe().backend === 'pvm';
  for (let n = 0; n < 256; n++) {
    const vm = Machine.fromFile(bin, { args: [bin, 'int', String(n)], timeout: 5000 });
    if (pvm && n === 26) {
      // Measured: on PVM, `int $26` from ring 3 never reaches the guest IDT (nor kvmbox): the
      // PVM hypervisor consumes it and the guest continues (with eax–edx zeroed). Recorded in
      // the README; nothing kvmbox can intercept. Anything else from it would show here.
      const r = vm.run();
      t.is(r.exitCode, 1, 'int 26 on PVM: the guest went on to its end');
      t.is(r.stdout.toString(), 'escape: int\nNOT STOPPED\n');
      continue;
    }
    const err = t.throws(() => vm.run(), { instanceOf: GuestFaultError }, `int ${n}`);
    // #BP for int3's vector (a user-callable gate, as on Linux), #OF for 4, else #UD/#GP/#NP.
    t.true([UD, GP, 3, 4, 11].includes(err.vector), `int ${n}: vector ${err.vector}`);
  }
});

/**
 * The GDT's guest address: it leaks through sgdt (no UMIP), and writing there faults with it
 * as the fault address. Undefined if the guest did not fault.
 */
function gdtAddress() {
  try {
    Machine.fromFile(bin, { args: [bin, 'sgdt_then_write'] }).run();
  } catch (e) {
    return e.address;
  }
  return undefined;
}

test('syscall pointers to the kernel half, the system area, and overflowing lengths get EFAULT', (t) => {
  const gdt = gdtAddress();
  t.true(typeof gdt === 'bigint' && gdt > 0n);
  const vm = Machine.fromFile(bin, { args: [bin, 'read_kernel_ptr', gdt.toString(16)], stdin: 'some input' });
  const r = vm.run();
  t.is(r.exitCode, 0);
  t.regex(r.stdout.toString(), /results -1 -1 -1 -1\n/);
});

test('the system pages (stubs, GDT, IDT, TSS, ring-0 stack, page tables) cannot be read, written or executed', (t) => {
  // The system area's layout follows from the GDT's address: syscall entry, call return, the
  // vDSO's parameters page and the vDSO, exception stubs, GDT, IDT, TSS (3 pages), ring-0
  // stack, page tables up to the end of guest memory (128 MiB by default).
  const gdt = gdtAddress();
  const page = 4096n;
  const sys = gdt - 5n * page;
  const touch = (addr, op) => {
    const vm = Machine.fromFile(bin, { args: [bin, `touch_${op}`, addr.toString(16)], timeout: 5000 });
    try {
      return vm.run().stdout.toString().includes('NOT STOPPED') ? 'allowed' : 'exited';
    } catch (e) {
      t.true(e instanceof GuestFaultError, `${e}`);
      return e.vector;
    }
  };
  const supervisor = {
    stubs: gdt - page,
    gdt,
    idt: gdt + page,
    tss: gdt + 2n * page,
    'tss+2': gdt + 4n * page,
    'ring-0 stack': gdt + 5n * page,
    pml4: gdt + 7n * page,
    'last page table': (128n << 20n) - page,
  };
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
  // The vDSO's parameters page is read-only data; the vDSO itself read+execute, never writable.
  t.is(touch(sys + 2n * page, 'r'), 'allowed', 'read the vDSO parameters');
  t.is(touch(sys + 2n * page, 'w'), PF, 'write the vDSO parameters');
  t.is(touch(sys + 2n * page, 'x'), PF, 'execute the vDSO parameters');
  t.is(touch(sys + 3n * page, 'r'), 'allowed', 'read the vDSO');
  t.is(touch(sys + 3n * page, 'w'), PF, 'write the vDSO');
});

test('a jump into the syscall entry page cannot choose a non-canonical return or IOPL 3', (t) => {
  const entry = gdtAddress() - 5n * 4096n; // the syscall entry page (see above)
  // Non-canonical rcx: PVM treats the jump as a syscall and refuses to return there (the #GP
  // Linux gives); VMX/SVM treat any ring-3 exit at the entry stub as forged.
  let vm = Machine.fromFile(bin, { args: [bin, 'lstar_noncanonical', entry.toString(16)], timeout: 5000 });
  let err = t.throws(() => vm.run(), { instanceOf: GuestFaultError });
  t.is(err.vector, GP);
  t.true([0x8000000000000000n, entry].includes(err.rip), `rip 0x${err.rip.toString(16)}`);
  t.is(err.stdout.toString(), 'escape: lstar_noncanonical\n');
  // r11 with IOPL 3: where the jump returns at all (PVM), IOPL is 0 and `cli` still faults.
  vm = Machine.fromFile(bin, { args: [bin, 'lstar_iopl', entry.toString(16)], timeout: 5000 });
  err = t.throws(() => vm.run(), { instanceOf: GuestFaultError });
  t.is(err.vector, GP);
  t.regex(err.stdout.toString(), /^escape: lstar_iopl\n(iopl=0\n)?$/);
  if (probe().backend === 'pvm') t.is(err.stdout.toString(), 'escape: lstar_iopl\niopl=0\n');
});

test('syscall with the stack pointer on the GDT works and leaves the GDT alone', (t) => {
  const gdt = gdtAddress();
  const r = Machine.fromFile(bin, { args: [bin, 'syscall_rsp_gdt', gdt.toString(16)], timeout: 5000 }).run();
  t.is(r.exitCode, 0);
  t.is(r.stdout.toString(), 'escape: syscall_rsp_gdt\ngetpid ok\n');
  t.is(gdtAddress(), gdt, 'the next guest still runs with the same tables');
});

test('no 32-bit compatibility-mode code segment', (t) => {
  const vm = Machine.fromFile(bin, { args: [bin, 'far_jump_compat'], timeout: 5000 });
  const err = t.throws(() => vm.run(), { instanceOf: GuestFaultError });
  // #BP would mean the int3 at the target ran in compatibility mode.
  t.true([GP, 11, UD].includes(err.vector), `vector ${err.vector}`);
});

test('vmcall from the guest faults or fails, and its code is never rewritten', (t) => {
  const vm = Machine.fromFile(bin, { args: [bin, 'vmcall'], timeout: 5000 });
  try {
    const r = vm.run();
    t.is(r.exitCode, 0);
    t.regex(r.stdout.toString(), /vmcall rax=-\d+ code=0f01c1\n$/);
  } catch (e) {
    t.true(e instanceof GuestFaultError, `${e}`);
    t.true([UD, GP].includes(e.vector), `vector ${e.vector}`);
  }
});

test('after all of that the host is fine', (t) => {
  assertHealthy(t);
});

// Page rights: mmap/mprotect/munmap/brk/mremap rights are enforced as on Linux — differential
// against the native run (guard pages, W^X JIT flips with native call loops, RWX, NX, RELRO,
// si_code and fault addresses), fatal faults, and rights across snapshots, forks, resets and
// snapshot files.
import path from 'node:path';

import test from 'ava';

import { GuestFaultError, guest, Machine, requireKvm, runKvm, runNative, Snapshot, summarize, tempDir, VARIANTS } from './helpers.mjs';

requireKvm(test);

const PROT_NONE = 0;
const PROT_READ = 1;
const PROT_RW = 3;

for (const variant of VARIANTS) {
  const file = guest(`pagerights-${variant}`);
  test(`pagerights-${variant}: every check as natively`, (t) => {
    const opts = { args: [file] };
    const native = summarize(runNative(file, opts));
    const kvm = summarize(runKvm(file, opts));
    t.is(native.exitCode, 0, 'native run');
    t.true(native.stdout.includes('20 W^X rounds of 1000 calls: 2190000'), native.stdout);
    t.true(native.stdout.includes('write a PROT_NONE page                       fault ACCERR at +4104'), native.stdout);
    t.deepEqual(kvm, native);
  });

  // Without a handler the fault is SIGSEGV natively; kvmbox reports it as a GuestFaultError
  // carrying that signal and the faulting address.
  for (const [mode, access] of [
    ['guard', 'write'],
    ['nx', 'fetch'],
    ['ro', 'write'],
    ['unmapped', 'read'],
  ]) {
    test(`pagerights-${variant}: an unhandled ${mode} fault is SIGSEGV, as natively`, (t) => {
      const native = summarize(runNative(file, { args: [file, mode] }));
      t.deepEqual({ status: native.status, signal: native.signal }, { status: 'signaled', signal: 'SIGSEGV' });
      const vm = Machine.fromFile(file, { args: [file, mode] });
      t.teardown(() => vm.close());
      const err = t.throws(() => vm.run(), { instanceOf: GuestFaultError });
      t.is(err.signal, 'SIGSEGV');
      t.is(err.vector, 14);
      // #PF error code: bit 1 write, bit 4 instruction fetch, bit 2 user mode.
      const code = Number(err.errorCode);
      t.is(code & 4, 4, 'user-mode access');
      t.is(code & 2 ? 'write' : code & 16 ? 'fetch' : 'read', access);
      t.is(err.stdout.toString(), native.stdout);
    });
  }
}

/** A `pagerights serve` machine paused with its pages set up (see the guest). */
function serving(t) {
  const file = guest('pagerights-glibc');
  const vm = Machine.fromFile(file, { args: [file, 'serve'] });
  t.teardown(() => vm.close());
  t.is(vm.run().status, 'paused');
  return vm;
}

/** What each probe says about a machine's pages right now. */
function probe(vm, extra) {
  const page = (i) => vm.call('page_addr', i);
  return {
    read0: vm.call('read_at', page(0)),
    read1: vm.call('read_at', page(1)),
    jit: vm.call('jit_call'),
    extra: extra === undefined ? undefined : vm.call('read_at', extra),
  };
}

const A = 'a'.charCodeAt(0);
const B = 'b'.charCodeAt(0);
const AT_SNAPSHOT = { read0: A, read1: -1, jit: 1 };

test('reset restores page rights taken away and given since the snapshot', (t) => {
  const vm = serving(t);
  const snap = vm.snapshot();
  t.teardown(() => snap.close());
  const fork = snap.fork();
  t.teardown(() => fork.close());
  t.like(probe(fork), AT_SNAPSHOT, 'a fork sees the snapshot rights');

  // Give rights (PROT_NONE → RW), take them (RW → NONE, unmap), flip code, map something new.
  t.is(fork.call('protect', 1, PROT_RW), 0);
  t.is(fork.call('protect', 0, PROT_NONE), 0);
  t.is(fork.call('jit_set', 2), 0);
  const fresh = fork.call('map_new');
  t.true(fresh > 0);
  t.is(fork.call('write_at', fresh, 9), 0);
  t.deepEqual(probe(fork, fresh), { read0: -1, read1: B, jit: 2, extra: 9 });

  fork.reset();
  t.deepEqual(probe(fork, fresh), { ...AT_SNAPSHOT, extra: -1 }, 'rights and contents as in the snapshot; the new mapping is gone');
  t.is(fork.call('write_at', fork.call('page_addr', 1), 1), -1, 'page 1 is PROT_NONE again');

  // The same again with an unmap, and many rounds (each reset undoes the last request).
  for (let round = 0; round < 20; round++) {
    t.is(fork.call('unmap', round % 2), 0);
    t.is(fork.call('jit_set', 10 + round), 0);
    t.is(fork.call('jit_call'), 10 + round);
    fork.reset();
    t.like(probe(fork), AT_SNAPSHOT, `round ${round}`);
  }
  t.like(probe(vm), AT_SNAPSHOT, 'the snapshot taker is untouched by its fork');
});

test('the machine that took the snapshot resets its rights too, and forks stay independent', (t) => {
  const vm = serving(t);
  const snap = vm.snapshot();
  t.teardown(() => snap.close());
  const other = snap.fork();
  t.teardown(() => other.close());
  t.is(vm.call('protect', 1, PROT_READ), 0);
  t.is(vm.call('protect', 0, PROT_NONE), 0);
  t.like(probe(vm), { read0: -1, read1: B });
  t.like(probe(other), AT_SNAPSHOT, 'a fork does not see another machine’s rights');
  vm.reset();
  t.like(probe(vm), AT_SNAPSHOT);
});

test('a snapshot file keeps page rights', (t) => {
  const vm = serving(t);
  t.is(vm.call('jit_set', 5), 0);
  t.is(vm.call('protect', 0, PROT_READ), 0);
  const snap = vm.snapshot();
  const file = path.join(tempDir('kvmbox-pagerights-'), 'rights.snap');
  snap.save(file);
  snap.close();
  const loaded = Snapshot.load(file);
  t.teardown(() => loaded.close());
  const fork = loaded.fork();
  t.teardown(() => fork.close());
  t.deepEqual(probe(fork), { read0: A, read1: -1, jit: 5, extra: undefined });
  t.is(fork.call('write_at', fork.call('page_addr', 0), 1), -1, 'page 0 is read-only');
  t.is(fork.call('protect', 1, PROT_RW), 0);
  t.is(fork.call('read_at', fork.call('page_addr', 1)), B);
  fork.reset();
  t.is(fork.call('read_at', fork.call('page_addr', 1)), -1);
});

test('taking rights away runs the commit stub; giving them does not', (t) => {
  const vm = serving(t);
  vm.call('protect', 1, PROT_RW);
  t.is(vm.lastStats.pageTableCommits, 0, 'PROT_NONE → RW is a host write');
  vm.call('protect', 1, PROT_NONE);
  t.true(vm.lastStats.pageTableCommits >= 1, 'RW → PROT_NONE goes through the guest');
});

// Huge pages: a guest touching 256 MiB runs correctly with and without them, and with
// transparent huge pages available its memory is really backed by huge pages.
import fs from 'node:fs';

import test from 'ava';

import { CLI, guest, kvmbox, Machine, requireKvm, runNative } from './helpers.mjs';

requireKvm(test);

const thp = fs.readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8');
const thpAvailable = !/\[never\]/.test(thp);

for (const hugepages of [false, true]) {
  test(`256 MiB guest with hugepages: ${hugepages} gives the native output`, (t) => {
    const bin = guest('bigtouch-glibc');
    const native = runNative(bin);
    t.is(native.exitCode, 0);
    const vm = Machine.fromFile(bin, { memory: 512 << 20, hugepages });
    const paused = vm.run();
    t.is(paused.status, 'paused');
    const usage = vm.memoryUsage();
    if (hugepages) {
      t.true(['transparent', 'hugetlb'].includes(usage.hugepages) || !thpAvailable, `huge page kind: ${usage.hugepages}`);
      if (thpAvailable) t.true(usage.hugeBytes >= 128 << 20, `only ${usage.hugeBytes} bytes of 256 MiB are in huge pages`);
    } else {
      t.is(usage.hugepages, 'none');
      t.is(usage.hugeBytes, 0);
    }
    t.true(usage.privateBytes >= 256 << 20, 'the touched memory is resident');
    const done = vm.run();
    t.is(done.status, 'exited');
    t.is(done.exitCode, 0);
    t.is(paused.stdout.toString() + done.stdout.toString(), native.stdout.toString());
  });
}

test('a snapshot of a huge-page machine forks with 4 KiB pages and the same contents', (t) => {
  const vm = Machine.fromFile(guest('bigtouch-glibc'), { memory: 512 << 20, hugepages: true });
  t.is(vm.run().status, 'paused');
  const snap = vm.snapshot();
  const f = snap.fork();
  t.is(f.memoryUsage().hugepages, 'none');
  const r = f.run();
  t.is(r.exitCode, 0);
  t.regex(r.stdout.toString(), /, 0 bad words/);
  f.close();
  vm.close();
});

test('the CLI accepts --hugepages', (t) => {
  t.truthy(kvmbox.Machine);
  const out = runNative(process.execPath, { args: [process.execPath, CLI, 'run', '--hugepages', '--memory', '512', guest('bigtouch-glibc')] });
  t.is(out.exitCode, 0, out.stderr.toString());
  t.regex(out.stdout.toString(), /filled 256 MiB[\s\S]*, 0 bad words/);
});

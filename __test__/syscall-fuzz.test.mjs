// Random syscalls with random arguments from inside a guest (seeded, so failures reproduce):
// kvmbox answers every one with a result or an errno and the host stays healthy.
import test from 'ava';

import { assertHealthy, guest, KvmboxError, Machine, requireKvm } from './helpers.mjs';

requireKvm(test);

const bin = guest('syscall_fuzz-glibc');

for (const seed of [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23]) {
  test(`seed ${seed}: 3000 random syscalls`, (t) => {
    const vm = Machine.fromFile(bin, { args: [bin, String(seed), '3000'], timeout: 20_000, outputLimit: 1 << 20, stdin: 'input' });
    let r;
    try {
      r = vm.run();
    } catch (e) {
      // A guest may legitimately damage itself (e.g. a random write over its own data);
      // that must surface as a typed kvmbox error, nothing else.
      t.true(e instanceof KvmboxError, `${e}`);
      t.not(e.code, 'INTERNAL', `${e}`);
      return;
    }
    t.is(r.status, 'exited');
    t.is(r.exitCode, 0);
    t.regex(r.stdout.toString('latin1'), /survived \d+ calls/);
  });
}

test.after('the host is fine after the random syscalls', (t) => {
  assertHealthy(t);
});

// File access sandbox: only paths under allowRead can be opened (read-only);
// everything else does not exist for the guest (ENOENT), including tricks (.., symlinks,
// prefixes).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import test from 'ava';

import { guest, InvalidArgumentError, Machine, requireKvm, runKvm, runNative, summarize, systemLibraries, tempDir, VARIANTS } from './helpers.mjs';

requireKvm(test);

const root = tempDir('kvmbox-files-');
const pub = path.join(root, 'pub');
const sub = path.join(pub, 'sub');
fs.mkdirSync(sub, { recursive: true });
const ALLOWED_CONTENT = `allowed file, line 1\nline 2 with some more text: 0123456789\n${'x'.repeat(300)}\nlast line\n`;
const allowed = path.join(pub, 'allowed.txt');
fs.writeFileSync(allowed, ALLOWED_CONTENT);
const nested = path.join(sub, 'nested.txt');
fs.writeFileSync(nested, 'nested content\n');
const secret = path.join(root, 'secret.txt');
fs.writeFileSync(secret, 'TOP SECRET\n');
// A sibling whose name starts with the allowed directory's name ("pub" -> "pub-evil").
const prefixDir = path.join(root, 'pub-evil');
fs.mkdirSync(prefixDir);
const prefixSecret = path.join(prefixDir, 'secret.txt');
fs.writeFileSync(prefixSecret, 'PREFIX SECRET\n');
const prefixFile = path.join(root, 'allowed.txt.bak');
fs.writeFileSync(prefixFile, 'BACKUP SECRET\n');
// Symlinks inside the allowed dir: one escaping it, one staying inside it.
const linkOut = path.join(pub, 'link-to-secret');
fs.symlinkSync('../secret.txt', linkOut);
const linkOutAbs = path.join(pub, 'abs-link-to-secret');
fs.symlinkSync(secret, linkOutAbs);
const linkIn = path.join(pub, 'link-to-nested');
fs.symlinkSync('sub/nested.txt', linkIn);
const dirLinkOut = path.join(pub, 'dirlink');
fs.symlinkSync(root, dirLinkOut);

/** Splits off the "second open" lines, which differ by design between native and kvmbox. */
function splitSecond(stdout) {
  const lines = stdout.split('\n');
  const second = lines.filter((l) => l.startsWith('second open'));
  const rest = lines.filter((l) => !l.startsWith('second open')).join('\n');
  return { second, rest };
}

/** Runs `files <first> <second>` in kvmbox and natively; returns both summaries. */
function runBoth(variant, first, second, allowRead) {
  const file = guest(`files-${variant}`);
  const args = second === undefined ? [file, first] : [file, first, second];
  const native = summarize(runNative(file, { args }));
  const kvm = summarize(runKvm(file, { args, allowRead }));
  return { native, kvm };
}

const DENIED = ['second open: failed', 'second open errno: ENOENT'];

for (const v of VARIANTS) {
  test(`${v}: allowed file is readable, same output as native; secret file is denied`, (t) => {
    const { native, kvm } = runBoth(v, allowed, secret, [allowed]);
    const n = splitSecond(native.stdout);
    const k = splitSecond(kvm.stdout);
    t.deepEqual(n.second, ['second open: ok'], 'native can open the secret');
    t.true(k.rest.includes(ALLOWED_CONTENT), 'content printed');
    t.deepEqual(k.rest, n.rest, 'stdout apart from the second-open lines');
    t.deepEqual(k.second, DENIED, 'secret denied: it does not exist for the guest (ENOENT)');
    t.deepEqual(kvm.stderr, native.stderr);
    t.is(kvm.exitCode, 0);
    t.is(native.exitCode, 0);
    t.true(k.rest.includes('failures: 0'));
  });

  test(`${v}: allowRead a directory: files below it are readable, ../secret is denied`, (t) => {
    const { native, kvm } = runBoth(v, path.join(pub, 'sub', '..', 'allowed.txt'), `${pub}/../secret.txt`, [pub]);
    t.deepEqual(splitSecond(kvm.stdout).rest, splitSecond(native.stdout).rest);
    t.deepEqual(splitSecond(kvm.stdout).second, DENIED);
    t.is(kvm.exitCode, 0);
  });
}

test('nested file in an allowed directory is readable', (t) => {
  const { native, kvm } = runBoth('glibc', nested, undefined, [pub]);
  t.deepEqual(kvm, native);
  t.true(kvm.stdout.includes('nested content'));
});

const DENIED_CASES = [
  ['path traversal <dir>/../secret', () => `${pub}/../secret.txt`],
  ['deep traversal <dir>/sub/../../secret', () => `${pub}/sub/../../secret.txt`],
  ['relative symlink inside the dir pointing outside', () => linkOut],
  ['absolute symlink inside the dir pointing outside', () => linkOutAbs],
  ['directory symlink inside the dir pointing outside', () => path.join(dirLinkOut, 'secret.txt')],
  ['sibling dir sharing the name prefix (pub-evil/)', () => prefixSecret],
  ['sibling file sharing an allowed file name prefix', () => prefixFile],
  ['/etc/passwd', () => '/etc/passwd'],
  ['/proc/self/maps', () => '/proc/self/maps'],
  ['/ (root dir)', () => '/'],
];

for (const [label, target] of DENIED_CASES) {
  test(`denied: ${label}`, (t) => {
    const file = guest('files-glibc');
    const allowRead = label.includes('allowed file name prefix') ? [allowed] : [pub];
    const r = summarize(runKvm(file, { args: [file, allowed, target()], allowRead }));
    // A directory on the way to an allowed path exists (stat works) but cannot be read.
    const expected = label.startsWith('/ ') ? ['second open: failed', 'second open errno: EACCES'] : DENIED;
    t.deepEqual(splitSecond(r.stdout).second, expected, r.stdout);
    t.false(r.stdout.includes('SECRET'));
    t.is(r.exitCode, 0);
  });
}

test('symlink inside the allowed dir pointing inside it is readable', (t) => {
  const file = guest('files-glibc');
  const r = summarize(runKvm(file, { args: [file, linkIn], allowRead: [pub] }));
  t.is(r.exitCode, 0, r.stdout);
  t.true(r.stdout.includes('nested content'), r.stdout);
});

test('without allowRead nothing can be opened (ENOENT)', (t) => {
  const file = guest('files-musl');
  const r = summarize(runKvm(file, { args: [file, allowed] }));
  t.is(r.exitCode, 1);
  t.is(r.stdout, `open ${allowed} failed: ENOENT\n`);
});

test('the guest binary itself is not readable unless allowed', (t) => {
  const file = guest('files-pie');
  const r = summarize(runKvm(file, { args: [file, allowed, file], allowRead: [allowed] }));
  t.deepEqual(splitSecond(r.stdout).second, DENIED, r.stdout);
});

// Kernel pseudo files and special files stay out of reach even when an allowed directory
// contains them (here the whole root): /proc/self/mem would be the host process's memory.
const fifo = path.join(root, 'fifo');
spawnSync('mkfifo', [fifo]);
const PSEUDO_CASES = [
  ['/proc/self/mem (the host process memory)', '/proc/self/mem'],
  ['/proc/self/environ', '/proc/self/environ'],
  ['/proc/self/fd/0 (a magic link)', '/proc/self/fd/0'],
  ['/proc/self/root/etc/hostname (a magic link)', '/proc/self/root/etc/hostname'],
  ['/sys/kernel/mm/transparent_hugepage/enabled', '/sys/kernel/mm/transparent_hugepage/enabled'],
  ['/dev/kvm (a device)', '/dev/kvm'],
  ['a FIFO (must not block the host)', fifo],
];
for (const [label, target] of PSEUDO_CASES) {
  test(`denied even with allowRead ['/']: ${label}`, (t) => {
    t.true(fs.existsSync(target) || target.startsWith('/proc/self'), `${target} exists on this host`);
    const file = guest('files-glibc');
    const started = Date.now();
    const r = summarize(runKvm(file, { args: [file, allowed, target], allowRead: ['/'], timeout: 5000 }));
    t.deepEqual(splitSecond(r.stdout).second, DENIED, r.stdout);
    t.is(r.exitCode, 0);
    t.true(Date.now() - started < 4000, 'the open did not block');
  });
}

test('allowRead of a pseudo filesystem or a device is refused up front', (t) => {
  const file = guest('files-glibc');
  for (const [p, what] of [
    ['/proc/self', /procfs/],
    ['/sys/kernel', /sysfs/],
    ['/proc', /procfs/],
    ['/dev/null', /neither a regular file nor a directory/],
  ]) {
    t.throws(() => runKvm(file, { args: [file, allowed], allowRead: [p] }), { instanceOf: InvalidArgumentError, message: what }, p);
  }
});

test('a host device below an allowed directory is denied', (t) => {
  const file = guest('files-glibc');
  const r = summarize(runKvm(file, { args: [file, allowed, '/dev/kvm'], allowRead: [allowed, '/dev'] }));
  t.deepEqual(splitSecond(r.stdout).second, DENIED, r.stdout);
});

test('/dev/null, /dev/zero and /dev/urandom are emulated (no host device is opened)', (t) => {
  const file = guest('files-glibc');
  const r = summarize(runKvm(file, { args: [file, allowed, '/dev/null'], allowRead: [allowed] }));
  t.deepEqual(splitSecond(r.stdout).second, ['second open: ok'], r.stdout);
  const vm = Machine.fromFile('/usr/bin/head', { args: ['head', '-c', '64', '/dev/zero', '/dev/urandom'], allowRead: systemLibraries() });
  const out = vm.run().stdout;
  t.is(out.length, 2 * 64 + '==> /dev/zero <==\n\n==> /dev/urandom <==\n'.length, out.toString('latin1'));
  t.true(out.includes(Buffer.alloc(64)), 'zeros from /dev/zero');
  const tee = Machine.fromFile('/usr/bin/tee', { args: ['tee', '/dev/null'], stdin: 'through tee\n', allowRead: systemLibraries() }).run();
  t.is(tee.stdout.toString(), 'through tee\n', 'writes to /dev/null succeed');
  t.is(tee.exitCode, 0);
});

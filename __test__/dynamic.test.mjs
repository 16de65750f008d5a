// Dynamic executables: the interpreter named by PT_INTERP is loaded with the auxv Linux gives,
// and the distribution's own dynamic programs — /bin/ls, /bin/cat, python3 importing extension
// modules, perl with XS modules, luajit with its JIT on, lua5.4 — and dynamic C programs built
// here run identically to native (stdout, stderr, status), with systemLibraries() plus their
// own files allowed. Also: paths are checked where symlinks lead (merged /usr), files outside
// allowRead do not exist for the guest, and a paused dynamic program snapshots, forks and
// resets.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import test from 'ava';

import { ElfError, GUEST_DIR, Machine, requireKvm, runKvm, runNative, Snapshot, summarize, systemLibraries, tempDir } from './helpers.mjs';

requireKvm(test);

const tmp = tempDir('kvmbox-dynamic-');
const existing = (paths) => paths.filter((p) => fs.existsSync(p));

function gcc(args) {
  const r = spawnSync('gcc', args, { cwd: tmp, encoding: 'utf8' });
  if (r.error || r.status !== 0) throw new Error(`gcc ${args.join(' ')} failed: ${r.error || r.stderr}`);
}

/** Run `file` natively and in kvmbox with the same argv, env and stdin; both must agree. */
function sameAsNative(t, file, { args = [], env = {}, input = '', allowRead = [], memory } = {}) {
  const opts = { args: [file, ...args], env, input };
  const native = summarize(runNative(file, opts));
  const kvm = summarize(runKvm(file, { ...opts, allowRead: [...systemLibraries(), ...allowRead], memory }));
  t.deepEqual(kvm, native);
  return native;
}

test('a dynamic C program (PIE and not) runs as natively, args, env and exit status included', (t) => {
  for (const pie of [true, false]) {
    const out = path.join(tmp, pie ? 'hello-pie' : 'hello-nopie');
    gcc(['-O2', pie ? '-pie' : '-no-pie', '-o', out, path.join(GUEST_DIR, 'args.c')]);
    const native = sameAsNative(t, out, { args: ['one', 'two words'], env: { FOO: 'bar' } });
    t.true(native.stdout.includes('argv[2]=two words'), native.stdout);
    t.true(native.stdout.includes('AT_RANDOM: random ok'), native.stdout);
  }
});

test('page rights in a dynamic program: RELRO, guard pages, W^X flips, as natively', (t) => {
  // The pagerights guest built dynamic: ld.so applies RELRO with mprotect, libc's own pages
  // have their rights, and every check prints what happened.
  const out = path.join(tmp, 'pagerights-dyn');
  gcc(['-O2', '-o', out, path.join(GUEST_DIR, 'pagerights.c')]);
  const native = sameAsNative(t, out);
  t.true(native.stdout.includes('write .data.rel.ro                           fault ACCERR'), native.stdout);
  t.true(native.stdout.includes('20 W^X rounds of 1000 calls: 2190000'), native.stdout);
});

test('/bin/ls -l and /bin/cat on allowed paths, symlinks included', (t) => {
  const dir = path.join(tmp, 'listing');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'a.txt'), 'alpha\n');
  fs.writeFileSync(path.join(dir, 'b.txt'), 'bravo bravo\n');
  fs.symlinkSync('a.txt', path.join(dir, 'link'));
  fs.mkdirSync(path.join(dir, 'sub'));
  // ls shows user and group names (through NSS) and times in the local zone.
  const names = existing(['/etc/passwd', '/etc/group', '/etc/nsswitch.conf']);
  const env = { TZ: 'UTC', LANG: 'C' };
  const ls = sameAsNative(t, '/bin/ls', { args: ['-l', dir], env, allowRead: [dir, ...names] });
  t.regex(ls.stdout, /link -> a\.txt/);
  t.is(ls.exitCode, 0);
  const cat = sameAsNative(t, '/bin/cat', { args: [path.join(dir, 'a.txt'), path.join(dir, 'link'), '-'], input: 'from stdin\n', allowRead: [dir] });
  t.is(cat.stdout, 'alpha\nalpha\nfrom stdin\n');
  // A file that is not allowed does not exist for the guest.
  const denied = runNative('/bin/cat', { args: ['/bin/cat', path.join(dir, 'b.txt')] });
  t.is(denied.exitCode, 0, 'natively the file is there');
  const r = runKvm('/bin/cat', { args: ['/bin/cat', path.join(dir, 'b.txt')], allowRead: [...systemLibraries(), path.join(dir, 'a.txt')] });
  t.is(r.exitCode, 1);
  t.regex(r.stderr.toString(), /No such file or directory/);
});

test('python3 -c importing extension modules (json, math, hashlib)', (t) => {
  const python = '/usr/bin/python3';
  const stdlib = spawnSync(python, ['-c', 'import sysconfig; print(sysconfig.get_path("stdlib"))'], { encoding: 'utf8' }).stdout.trim();
  t.true(fs.existsSync(stdlib), stdlib);
  const script = [
    'import json, math, hashlib, sys',
    'print(json.dumps({"pi": round(math.pi, 6), "sqrt2": math.sqrt(2)}, sort_keys=True))',
    'print(hashlib.sha256(b"kvmbox").hexdigest())',
    'print(sum(i * i for i in range(100000)))',
    'sys.stderr.write("to stderr\\n")',
    'sys.exit(4)',
  ].join('\n');
  const out = sameAsNative(t, python, { args: ['-c', script], env: { LANG: 'C' }, allowRead: [stdlib], memory: 512 * 1024 * 1024 });
  t.is(out.exitCode, 4);
  t.true(out.stdout.includes('"pi": 3.141593'), out.stdout);
});

test('perl with POSIX and List::Util (XS modules)', (t) => {
  const inc = existing(['/usr/share/perl', '/usr/share/perl5', '/etc/perl']);
  const out = sameAsNative(t, '/usr/bin/perl', {
    args: [
      '-MPOSIX',
      '-MList::Util=sum,max',
      '-e',
      'print sum(1..100), " ", max(3, 9, 4), " ", POSIX::floor(-2.5), " ", strftime("%Y-%m-%d", gmtime(86400 * 365)), "\\n"',
    ],
    env: { LANG: 'C' },
    allowRead: inc,
  });
  t.is(out.stdout, '5050 9 -3 1971-01-01\n');
});

test('luajit -e with the JIT on, and lua5.4', (t) => {
  const jit = sameAsNative(t, '/usr/bin/luajit', {
    args: ['-e', 'local t = 0 for i = 1, 3e6 do t = t + (i % 7) * 2 end print(t, jit.status())'],
  });
  t.regex(jit.stdout, /^17999994\ttrue/);
  const lua = sameAsNative(t, '/usr/bin/lua5.4', { args: ['-e', 'print(string.format("%d %s", 6 * 7, table.concat({1, 2, 3}, ",")))'] });
  t.is(lua.stdout, '42 1,2,3\n');
});

test('without its interpreter allowed a dynamic program is an ElfError that names it', (t) => {
  const out = path.join(tmp, 'needs-ldso');
  gcc(['-O2', '-o', out, path.join(GUEST_DIR, 'hello.c')]);
  const err = t.throws(() => Machine.fromFile(out), { instanceOf: ElfError });
  t.regex(err.message, /dynamic executable needs its interpreter \/lib64\/ld-linux-x86-64\.so\.2/);
  t.regex(err.message, /systemLibraries/);
});

test('a paused dynamic program serves calls, snapshots, forks and resets', (t) => {
  // The program calls into libc (malloc, snprintf, strlen) and into a shared library of its
  // own; the host calls into both, and into a library the guest dlopen()s later.
  const lib = path.join(tmp, 'libsquare.so');
  fs.writeFileSync(path.join(tmp, 'square.c'), 'long lib_square(long x) { return x * x; }\n');
  gcc(['-O2', '-shared', '-fPIC', '-o', lib, 'square.c']);
  const plugin = path.join(tmp, 'libcube.so');
  fs.writeFileSync(path.join(tmp, 'cube.c'), 'long lib_cube(long x) { return x * x * x; }\n');
  gcc(['-O2', '-shared', '-fPIC', '-o', plugin, 'cube.c']);
  fs.writeFileSync(
    path.join(tmp, 'dynserve.c'),
    `#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "${path.join(GUEST_DIR, '..', '..', 'guest', 'include', 'kvmbox.h')}"
long lib_square(long x);
static char *greeting;
static long counter;
KVMBOX_EXPORT long square_plus(long x) { return lib_square(x) + ++counter; }
KVMBOX_EXPORT long greet(char *out, long len) { return snprintf(out, (size_t)len, "%s #%ld", greeting, ++counter); }
KVMBOX_EXPORT long load_plugin(const char *path) { return dlopen(path, RTLD_NOW) ? 0 : -1; }
int main(void) {
  greeting = strdup("hello from a dynamic guest");
  if (kvmbox_pause() < 0) return 3;
  return 0;
}
`,
  );
  const exe = path.join(tmp, 'dynserve');
  gcc(['-O2', '-o', exe, 'dynserve.c', `-L${tmp}`, '-lsquare', `-Wl,-rpath,${tmp}`]);
  const vm = Machine.fromFile(exe, { allowRead: [...systemLibraries(), lib, plugin] });
  t.teardown(() => vm.close());
  t.is(vm.run().status, 'paused');
  t.is(vm.call('square_plus', 7), 50);
  // Symbols of the loaded shared objects, the program's own first.
  t.is(vm.call('lib_square', 12), 144, 'a function of the program’s own library');
  t.is(vm.call('labs', -5), 5, 'a libc function');
  t.is(typeof vm.symbol('atoi'), 'bigint');
  t.is(vm.symbol('strlen'), undefined, 'an IFUNC (its value is the resolver, not the function) is not offered');
  t.is(vm.symbol('lib_cube'), undefined, 'not loaded yet');
  t.is(vm.call('load_plugin', plugin), 0, 'dlopen at run time');
  t.is(vm.call('lib_cube', 3), 27, 'found after dlopen');
  const snap = vm.snapshot();
  t.teardown(() => snap.close());
  const fork = snap.fork();
  t.teardown(() => fork.close());
  for (let i = 0; i < 3; i++) {
    t.is(fork.call('lib_cube', 2), 8, 'the dlopened library is in the snapshot');
    t.is(fork.call('square_plus', 9), 83, `round ${i}: counter back at the snapshot's`);
    const buf = Buffer.alloc(64);
    const n = fork.call('greet', buf, buf.length);
    t.is(buf.subarray(0, n).toString(), 'hello from a dynamic guest #3');
    fork.reset();
  }
  // Through a snapshot file too.
  const file = path.join(tmp, 'dynamic.snap');
  snap.save(file);
  const loaded = Snapshot.load(file, { allowRead: [...systemLibraries(), lib, plugin] });
  t.teardown(() => loaded.close());
  const again = loaded.fork();
  t.teardown(() => again.close());
  t.is(again.call('square_plus', 9), 83);
  t.is(again.call('lib_cube', 4), 64);
  t.is(vm.call('square_plus', 2), 6, 'the snapshot taker goes on by itself');
});

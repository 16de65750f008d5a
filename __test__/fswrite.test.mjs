// The writable in-memory filesystem: /tmp (and configured mounts) take writes — files,
// directories, renames, links, symlinks, metadata, locks — identically to a native run, while
// nothing reaches the host; SQLite keeps a database in /tmp; the files are part of snapshots,
// forks, resets and snapshot files, and count against fsLimit.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import test from 'ava';

import {
  CLI,
  guest,
  InvalidArgumentError,
  Machine,
  requireKvm,
  runKvm,
  runNative,
  Snapshot,
  summarize,
  systemLibraries,
  tempDir,
  VARIANTS,
} from './helpers.mjs';

requireKvm(test);

const dir = tempDir('kvmbox-fswrite-');

for (const variant of VARIANTS) {
  test(`fswrite-${variant}: files, directories, links, metadata and locks in /tmp as natively`, (t) => {
    const file = guest(`fswrite-${variant}`);
    const native = summarize(runNative(file));
    t.is(native.exitCode, 0, native.stderr);
    t.true(native.stdout.includes('rename dir into itself       -1 EINVAL'), native.stdout);
    t.true(native.stdout.includes('ghost: ghost'), native.stdout);
    t.deepEqual(summarize(runKvm(file)), native);
  });
}

/** Runs the fswrite guest's commands (see the guest) in kvmbox; returns its stdout lines. */
function commands(args, opts = {}) {
  const file = guest('fswrite-glibc');
  const r = Machine.fromFile(file, { args: [file, ...args], ...opts }).run();
  return r.stdout.toString().trim().split('\n');
}

test('what a guest writes never reaches the host, and host files stay read-only', (t) => {
  const name = `/tmp/kvmbox-fswrite-${process.pid}-${Date.now()}`;
  t.deepEqual(commands(['put', name, 'hi', 'cat', name]), [`put ${name}: 2`, `cat ${name}: hi`]);
  t.false(fs.existsSync(name), 'the file exists only in the machine');
  // Outside the mounts the guest's view is read-only.
  t.deepEqual(commands(['put', '/etc/kvmbox-nope', 'x', 'mkdir', '/kvmbox-nope']), ['put /etc/kvmbox-nope: EROFS', 'mkdir                        -1 EROFS']);
  t.false(fs.existsSync('/etc/kvmbox-nope'));
});

test('allowed host files under /tmp show through, and writing them changes only the machine', (t) => {
  const host = path.join(dir, 'shown.txt');
  fs.writeFileSync(host, 'from the host');
  const out = commands(['cat', host, 'put', host, 'changed', 'cat', host, 'ls', dir, 'rm', host, 'cat', host], { allowRead: [host] });
  t.deepEqual(out, [
    `cat ${host}: from the host`,
    `put ${host}: 7`,
    `cat ${host}: changed`,
    `ls ${dir}: ..:d .:d shown.txt:f`,
    'rm                           0',
    `cat ${host}: ENOENT`,
  ]);
  t.is(fs.readFileSync(host, 'utf8'), 'from the host');
});

test('mounts: an empty in-memory directory and a host directory read-only underneath', (t) => {
  const data = path.join(dir, 'data');
  fs.mkdirSync(path.join(data, 'sub'), { recursive: true });
  fs.writeFileSync(path.join(data, 'a.txt'), 'alpha');
  fs.symlinkSync('a.txt', path.join(data, 'link'));
  const out = commands(
    [
      'put',
      '/work/new',
      'fresh',
      'cat',
      '/work/new',
      'ls',
      '/data',
      'cat',
      '/data/link',
      'append',
      '/data/a.txt',
      '+more',
      'cat',
      '/data/a.txt',
      'rm',
      '/data/link',
      'rmdir',
      '/data/sub',
      'ls',
      '/data',
    ],
    { mounts: { '/work': { memory: true }, '/data': { host: data } } },
  );
  t.deepEqual(out, [
    'put /work/new: 5',
    'cat /work/new: fresh',
    'ls /data: ..:d .:d a.txt:f link:l sub:d',
    'cat /data/link: alpha',
    'put /data/a.txt: 5',
    'cat /data/a.txt: alpha+more',
    'rm                           0',
    'rmdir                        0',
    'ls /data: ..:d .:d a.txt:f',
  ]);
  // The host directory is as it was.
  t.is(fs.readFileSync(path.join(data, 'a.txt'), 'utf8'), 'alpha');
  t.true(fs.existsSync(path.join(data, 'sub')));
  t.is(fs.readlinkSync(path.join(data, 'link')), 'a.txt');
});

test('a host mount cannot be left through .. or a symlink', (t) => {
  const data = path.join(dir, 'jail');
  fs.mkdirSync(data, { recursive: true });
  fs.symlinkSync('/etc/hostname', path.join(data, 'out'));
  const out = commands(['cat', '/data/out', 'cat', '/data/../etc/hostname'], { mounts: { '/data': { host: data } } });
  // The absolute link is followed in the guest's own view, where /etc/hostname is not allowed.
  t.deepEqual(out, ['cat /data/out: ENOENT', 'cat /data/../etc/hostname: ENOENT']);
});

test('fsLimit bounds the in-memory files: ENOSPC, and removing a file gives the space back', (t) => {
  const limit = 1 << 20;
  const out = commands(['fill', '/tmp/a', String(2 << 20), 'rm', '/tmp/a', 'fill', '/tmp/b', String(512 << 10)], { fsLimit: limit });
  const [first, rm, second] = out;
  const written = Number(first.match(/fill \/tmp\/a: (\d+) ENOSPC/)?.[1]);
  t.true(written > 0 && written < limit, first);
  t.is(rm, 'rm                           0');
  t.is(second, `fill /tmp/b: ${512 << 10}`);
});

test('bad mounts are refused with a typed error', (t) => {
  const file = guest('fswrite-glibc');
  for (const mounts of [
    { work: { memory: true } },
    { '/': { memory: true } },
    { '/a/../b': { memory: true } },
    { '/data': { host: path.join(dir, 'does-not-exist') } },
    { '/data': { host: '/proc' } },
    { '/data': { memory: false } },
    { '/data': { host: 'x', memory: true } },
    [],
  ]) {
    t.throws(() => Machine.fromFile(file, { mounts }), { instanceOf: InvalidArgumentError }, JSON.stringify(mounts));
  }
  t.throws(() => Machine.fromFile(file, { fsLimit: -1 }), { instanceOf: InvalidArgumentError });
});

test('in-memory files are part of snapshots: forks see them, reset restores them, snapshot files keep them', (t) => {
  const file = guest('fswrite-glibc');
  const args = [file, 'put', '/tmp/a', 'one', 'mkdir', '/tmp/d', 'pause', 'cat', '/tmp/a', 'put', '/tmp/a', 'two', 'put', '/tmp/d/x', 'y', 'ls', '/tmp/d'];
  const vm = Machine.fromFile(file, { args, mounts: { '/work': { memory: true } } });
  t.teardown(() => vm.close());
  t.is(vm.run().status, 'paused');
  const snap = vm.snapshot();
  const expected = ['cat /tmp/a: one', 'put /tmp/a: 3', 'put /tmp/d/x: 1', 'ls /tmp/d: ..:d .:d x:f'];
  const fork = snap.fork();
  t.deepEqual(fork.run().stdout.toString().trim().split('\n'), expected);
  fork.reset();
  t.deepEqual(fork.run().stdout.toString().trim().split('\n'), expected, 'after reset the files are as in the snapshot');
  fork.close();
  // The paused machine itself was not changed by its forks.
  t.deepEqual(vm.run().stdout.toString().trim().split('\n'), expected);

  const saved = path.join(dir, 'fs.snap');
  snap.save(saved);
  const loaded = Snapshot.load(saved, { mounts: { '/work': { memory: true } } });
  const f2 = loaded.fork();
  t.deepEqual(f2.run().stdout.toString().trim().split('\n'), expected);
  f2.close();
  // Loading needs the mounts it was made with.
  t.throws(() => Snapshot.load(saved), { instanceOf: InvalidArgumentError, message: /mounts/ });
});

test('the CLI mounts in-memory directories (--mount) and limits them (--fs-limit)', (t) => {
  const file = guest('fswrite-glibc');
  const r = spawnSync(process.execPath, [CLI, 'run', '--mount', '/work=memory', file, 'put', '/work/a', 'hi', 'cat', '/work/a'], { encoding: 'utf8' });
  t.is(r.status, 0, r.stderr);
  t.is(r.stdout, 'put /work/a: 2\ncat /work/a: hi\n');
  const full = spawnSync(process.execPath, [CLI, 'run', '--fs-limit', '1', file, 'fill', '/tmp/a', String(2 << 20)], { encoding: 'utf8' });
  t.regex(full.stdout, /^fill \/tmp\/a: \d+ ENOSPC\n$/);
  const bad = spawnSync(process.execPath, [CLI, 'run', '--mount', 'nope', file], { encoding: 'utf8' });
  t.is(bad.status, 125);
});

test('python3: tempfile, pathlib, shutil and an SQLite database in /tmp, as natively', (t) => {
  const python = '/usr/bin/python3';
  const stdlib = spawnSync(python, ['-c', 'import sysconfig; print(sysconfig.get_path("stdlib"))'], { encoding: 'utf8' }).stdout.trim();
  const script = path.join(dir, 'files.py');
  fs.writeFileSync(
    script,
    `import os, pathlib, shutil, sqlite3, tempfile
d = pathlib.Path(tempfile.mkdtemp(prefix="kvmbox-"))
(d / "a" / "b").mkdir(parents=True)
(d / "a" / "b" / "f.txt").write_text("hello\\n")
with open(d / "log", "a") as f:
    for i in range(3):
        f.write(f"line {i}\\n")
os.replace(d / "log", d / "a" / "log")
os.symlink("b/f.txt", d / "a" / "link")
print(sorted(str(p.relative_to(d)) for p in d.rglob("*")))
print((d / "a" / "link").read_text(), end="")
print(os.stat(d / "a" / "log").st_size, oct(os.stat(d / "a").st_mode & 0o777))
db = d / "test.db"
con = sqlite3.connect(db)
con.execute("create table t (id integer primary key, name text)")
with con:
    con.executemany("insert into t (name) values (?)", [(f"n{i}",) for i in range(500)])
con.close()
con = sqlite3.connect(db)
print(con.execute("select count(*), min(name), max(name) from t").fetchone())
with con:
    con.execute("delete from t where id % 2 = 0")
con.execute("vacuum")
print(con.execute("select count(*) from t").fetchone(), con.execute("pragma integrity_check").fetchone())
con.close()
print(sorted(os.listdir(d)))
shutil.rmtree(d)
print(os.path.exists(d))
`,
  );
  const opts = { args: [python, script], env: { LANG: 'C' } };
  const native = summarize(runNative(python, opts));
  t.is(native.exitCode, 0, native.stderr);
  t.true(native.stdout.includes("(500, 'n0', 'n99')"), native.stdout);
  const kvm = summarize(runKvm(python, { ...opts, allowRead: [...systemLibraries(), stdlib, script], memory: 512 * 1024 * 1024 }));
  t.deepEqual(kvm, native);
});

test('a writable host mount (opt-in) changes the host directory, and only below it', (t) => {
  const out = path.join(dir, 'out');
  fs.mkdirSync(out, { recursive: true });
  fs.writeFileSync(path.join(out, 'old.txt'), 'old');
  fs.symlinkSync('/etc', path.join(out, 'etc-link'));
  fs.symlinkSync('..', path.join(out, 'up'));
  spawnSync('mkfifo', [path.join(out, 'fifo')]);
  const lines = commands(
    [
      'put',
      '/out/new.txt',
      'fresh',
      'append',
      '/out/old.txt',
      '+more',
      'mkdir',
      '/out/sub',
      'put',
      '/out/sub/deep',
      'x',
      'rm',
      '/out/old.txt',
      'put',
      '/out/etc-link/kvmbox-escape',
      'x',
      'put',
      '/out/up/kvmbox-escape',
      'x',
      'cat',
      '/out/fifo',
      'ls',
      '/out',
    ],
    { mounts: { '/out': { host: out, writable: true } } },
  );
  t.deepEqual(lines, [
    'put /out/new.txt: 5',
    'put /out/old.txt: 5',
    'mkdir                        0',
    'put /out/sub/deep: 1',
    'rm                           0',
    'put /out/etc-link/kvmbox-escape: ENOENT',
    'put /out/up/kvmbox-escape: ENOENT',
    'cat /out/fifo: ENOENT',
    'ls /out: ..:d .:d etc-link:l fifo:? new.txt:f sub:d up:l',
  ]);
  t.is(fs.readFileSync(path.join(out, 'new.txt'), 'utf8'), 'fresh');
  t.is(fs.readFileSync(path.join(out, 'sub', 'deep'), 'utf8'), 'x');
  t.false(fs.existsSync(path.join(out, 'old.txt')));
  t.false(fs.existsSync('/etc/kvmbox-escape'));
  t.false(fs.existsSync(path.join(dir, 'kvmbox-escape')));
  // Not together with the seccomp filter, which refuses host writes.
  const file = guest('fswrite-glibc');
  t.throws(() => Machine.fromFile(file, { seccomp: true, mounts: { '/out': { host: out, writable: true } } }), { instanceOf: InvalidArgumentError });
  // The CLI's --mount-writable.
  const r = spawnSync(process.execPath, [CLI, 'run', '--mount-writable', `/o=${out}`, file, 'put', '/o/cli.txt', 'via cli'], { encoding: 'utf8' });
  t.is(r.status, 0, r.stderr);
  t.is(fs.readFileSync(path.join(out, 'cli.txt'), 'utf8'), 'via cli');
});

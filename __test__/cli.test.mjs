// The `kvmbox` CLI (node dist/cli.js): stdio passthrough, exit statuses, options.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import test from 'ava';

import { CLI, guest, requireKvm, runNative, tempDir } from './helpers.mjs';

requireKvm(test);

/** Runs `node dist/cli.js ...args`; returns { code, signal, stdout, stderr } (strings). */
function cli(args, { input = '', env = {} } = {}) {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    input,
    encoding: 'utf8',
    env: { PATH: process.env.PATH, ...env },
    timeout: 60_000,
  });
  if (r.error) throw r.error;
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

test('run hello: stdout equals the native run, exit 0, nothing on stderr', (t) => {
  const file = guest('hello-glibc');
  const r = cli(['run', file]);
  const native = runNative(file);
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, native.stdout.toString());
  t.is(r.stderr, '');
});

test('exit code passthrough (42), stdout and stderr both pass through', (t) => {
  const file = guest('exit-musl');
  const r = cli(['run', file, '42']);
  t.is(r.code, 42);
  t.is(r.stdout, 'exit guest: stdout line, exiting with 42\n');
  t.is(r.stderr, 'exit guest: stderr line, exiting with 42\n');
});

test('guest args pass through, including ones that look like options', (t) => {
  const file = guest('args-glibc');
  const r = cli(['run', file, '--timeout', '-x', 'two words']);
  t.is(r.code, 0, r.stderr);
  t.true(r.stdout.startsWith(`argc=4\nargv[0]=${file}\nargv[1]=--timeout\nargv[2]=-x\nargv[3]=two words\n`), r.stdout);
});

test('-- ends the options', (t) => {
  const file = guest('args-musl');
  const r = cli(['run', '--', file, 'a']);
  t.is(r.code, 0, r.stderr);
  t.true(r.stdout.startsWith(`argc=2\nargv[0]=${file}\nargv[1]=a\n`), r.stdout);
});

test('stdin passthrough', (t) => {
  const file = guest('stdin-pie');
  const input = 'line one\nline two\n'.repeat(300);
  const r = cli(['run', file], { input });
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, runNative(file, { input }).stdout.toString());
  t.true(r.stdout.startsWith(`length: ${input.length}\n`));
});

test('--env sets variables; the host env is not passed by default', (t) => {
  const file = guest('args-glibc');
  const r = cli(['run', '--env', 'FOO=bar', '--env', 'X=a=b', file], { env: { HOST_ONLY: 'nope' } });
  t.is(r.code, 0, r.stderr);
  t.true(r.stdout.includes('env[0]=FOO=bar\nenv[1]=X=a=b\nenvc=2\n'), r.stdout);
  t.false(r.stdout.includes('HOST_ONLY'));
});

test('--inherit-env passes the host environment', (t) => {
  const file = guest('args-glibc');
  const r = cli(['run', '--inherit-env', file], { env: { HOST_ONLY: 'yes' } });
  t.is(r.code, 0, r.stderr);
  t.true(r.stdout.includes('=HOST_ONLY=yes\n'), r.stdout);
});

test('--timeout 200 on faults loop -> exit 124 with a message', (t) => {
  const file = guest('faults-glibc');
  const t0 = Date.now();
  const r = cli(['run', '--timeout', '200', file, 'loop']);
  t.is(r.code, 124);
  t.is(r.stdout, 'faults: mode=loop\n');
  t.regex(r.stderr, /^kvmbox: .*time/im);
  t.true(Date.now() - t0 < 10_000);
});

for (const [mode, code] of [
  ['null', 139],
  ['write_text', 139],
  ['ud2', 132],
  ['div0', 136],
]) {
  test(`faults ${mode} -> exit ${code} with a message on stderr`, (t) => {
    const file = guest('faults-musl');
    const r = cli(['run', file, mode]);
    t.is(r.code, code);
    t.is(r.stdout, `faults: mode=${mode}\n`);
    t.regex(r.stderr, /^kvmbox: .*fault/im);
  });
}

test('faults abort -> 134 (128 + SIGABRT), like a shell', (t) => {
  const r = cli(['run', guest('faults-glibc'), 'abort']);
  t.is(r.code, 134);
  t.is(r.signal, null);
});

test('rust panic -> exit 101, stderr passes through', (t) => {
  const file = guest('rust_std');
  const r = cli(['run', file, 'panic']);
  const native = runNative(file, { args: [file, 'panic'] });
  t.is(r.code, 101);
  t.is(r.stdout, native.stdout.toString());
  t.is(r.stderr, native.stderr.toString());
});

test('a non-ELF file -> exit 125 with a message mentioning ELF', (t) => {
  const dir = tempDir('kvmbox-cli-');
  const f = path.join(dir, 'not-elf');
  fs.writeFileSync(f, 'just some text\n');
  const r = cli(['run', f]);
  t.is(r.code, 125);
  t.regex(r.stderr, /ELF/);
  t.is(r.stdout, '');
});

test('a missing program -> exit 125 with a message', (t) => {
  const r = cli(['run', '/nonexistent/kvmbox/prog']);
  t.is(r.code, 125);
  t.regex(r.stderr, /^kvmbox: /m);
});

test('bad options -> exit 125 with a message', (t) => {
  const file = guest('hello-glibc');
  for (const args of [
    ['run', '--timeout', 'abc', file],
    ['run', '--memory', '-3', file],
    ['run', '--memory', '1', file], // below the 8 MiB minimum
    ['run', '--bogus-option', file],
    ['run', '--env', 'NOEQUALS', file],
    ['run'],
    ['frobnicate'],
  ]) {
    const r = cli(args);
    t.is(r.code, 125, `${args.join(' ')}: ${r.stderr}`);
    t.regex(r.stderr, /^kvmbox: /m, args.join(' '));
  }
});

test('--help exits 0 and prints Usage', (t) => {
  for (const args of [['--help'], ['run', '--help']]) {
    const r = cli(args);
    t.is(r.code, 0);
    t.regex(r.stdout, /Usage/);
  }
});

test('probe prints JSON with available: true', (t) => {
  const r = cli(['probe']);
  t.is(r.code, 0);
  const p = JSON.parse(r.stdout);
  t.true(p.available);
  t.is(typeof p.backend, 'string');
});

test('--memory is honoured (bomb gets NULL below the limit)', (t) => {
  const r = cli(['run', '--memory', '32', guest('faults-glibc'), 'bomb']);
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, 'faults: mode=bomb\nbomb: got NULL\n');
  const m = /after (\d+) MiB/.exec(r.stderr);
  t.truthy(m);
  if (m) t.true(Number(m[1]) < 32);
});

test('--allow-read lets the files guest read the allowed file only', (t) => {
  const dir = tempDir('kvmbox-cli-');
  const allowed = path.join(dir, 'ok.txt');
  const secret = path.join(dir, 'secret.txt');
  fs.writeFileSync(allowed, 'allowed via cli\n');
  fs.writeFileSync(secret, 'SECRET\n');
  const file = guest('files-glibc');
  const r = cli(['run', '--allow-read', allowed, file, allowed, secret]);
  t.is(r.code, 0, r.stdout + r.stderr);
  t.true(r.stdout.includes('--- content (16 bytes) ---\nallowed via cli\n--- end ---\n'), r.stdout);
  t.true(r.stdout.includes('second open: failed\nsecond open errno: ENOENT\n'), r.stdout);
  t.false(r.stdout.includes('SECRET'));

  const denied = cli(['run', file, allowed]);
  t.is(denied.code, 1);
  t.is(denied.stdout, `open ${allowed} failed: ENOENT\n`);
});

test('stdout closed early (| head -c 10): the guest dies of SIGPIPE like natively (141), no kvmbox error', (t) => {
  const dir = tempDir('kvmbox-cli-');
  const input = path.join(dir, 'big.txt');
  fs.writeFileSync(input, 'abcdefghijklmnopqrstuvwxyz0123456789\n'.repeat(100_000)); // 3.7 MB, far more than a pipe holds
  const file = guest('stdin-glibc');
  const sh = (cmd) => {
    const r = spawnSync('bash', ['-c', `${cmd} < ${JSON.stringify(input)} | head -c 10 >/dev/null; echo "status=\${PIPESTATUS[0]}"`], {
      encoding: 'utf8',
      env: { PATH: process.env.PATH },
    });
    return { stdout: r.stdout, stderr: r.stderr };
  };
  const native = sh(JSON.stringify(file));
  t.is(native.stdout, 'status=141\n', 'native: killed by SIGPIPE');
  const kvm = sh(`${JSON.stringify(process.execPath)} ${JSON.stringify(CLI)} run ${JSON.stringify(file)}`);
  t.is(kvm.stdout, native.stdout);
  t.is(kvm.stderr, native.stderr);
});

test('--seccomp runs the guest on a filtered thread: same output, exit codes, stdin, timeouts', (t) => {
  const file = guest('exit-musl');
  const r = cli(['run', '--seccomp', file, '7']);
  t.is(r.code, 7, r.stderr);
  t.is(r.stdout, 'exit guest: stdout line, exiting with 7\n');
  t.is(r.stderr, 'exit guest: stderr line, exiting with 7\n');
  const hello = guest('hello-glibc');
  t.is(cli(['run', '--seccomp', hello]).stdout, runNative(hello).stdout.toString());
  const loop = cli(['run', '--seccomp', '--timeout', '200', guest('faults-glibc'), 'loop']);
  t.is(loop.code, 124);
  t.regex(loop.stderr, /timed out/);
  const both = cli(['run', '--seccomp', '--gdb', '1234', hello]);
  t.is(both.code, 125);
  t.regex(both.stderr, /--gdb cannot be combined with --seccomp/);
});

test('--version prints the package version', (t) => {
  const r = cli(['--version']);
  t.is(r.code, 0);
  t.is(r.stdout, `${JSON.parse(fs.readFileSync(path.join(path.dirname(CLI), '..', 'package.json'), 'utf8')).version}\n`);
});

test("options take --opt=value too; options after PROGRAM are the program's; -- ends ours", (t) => {
  const file = guest('faults-glibc');
  const r = cli(['run', '--timeout=200', file, 'loop']);
  t.is(r.code, 124);
  const args = guest('args-glibc');
  const own = cli(['run', '--memory=64', args, '--timeout=5', '-x']);
  t.is(own.code, 0, own.stderr);
  t.regex(own.stdout, /argv\[1\]=--timeout=5\nargv\[2\]=-x\n/);
  const dashed = cli(['run', '--', args, '--json']);
  t.regex(dashed.stdout, /argv\[1\]=--json\n/);
  t.is(cli(['run', '--memory=abc', args]).code, 125);
  const unknown = cli(['run', '--timeout-ms=5', args]);
  t.is(unknown.code, 125);
  t.regex(unknown.stderr, /^kvmbox: .*--timeout-ms/m);
});

test('--json prints the result (exit, signal, fault, timeout, missing file) as one JSON object', (t) => {
  const exit = cli(['run', '--json', guest('exit-musl'), '3']);
  t.is(exit.code, 3);
  t.deepEqual(JSON.parse(exit.stdout), {
    status: 'exited',
    exitCode: 3,
    stdout: 'exit guest: stdout line, exiting with 3\n',
    stderr: 'exit guest: stderr line, exiting with 3\n',
    stdoutTruncated: false,
    stderrTruncated: false,
  });
  const faults = guest('faults-glibc');
  const abort = JSON.parse(cli(['run', '--json', faults, 'abort']).stdout);
  t.like(abort, { status: 'signaled', exitCode: 134, signal: 'SIGABRT', signalNumber: 6 });
  const fault = cli(['run', '--json', faults, 'null']);
  t.is(fault.code, 139);
  t.like(JSON.parse(fault.stdout), { status: 'error', error: { code: 'GUEST_FAULT', vector: 14, signal: 'SIGSEGV', address: '0x0' } });
  const ud = cli(['run', '--json', faults, 'ud2']);
  t.is(ud.code, 132, 'SIGILL, from the one vector-to-signal table the debugger uses too');
  const slow = cli(['run', '--json', '--timeout', '100', faults, 'loop']);
  t.is(slow.code, 124);
  t.like(JSON.parse(slow.stdout), { status: 'error', error: { code: 'TIMEOUT' } });
  const missing = cli(['run', '--json', '/nonexistent/kvmbox/prog']);
  t.is(missing.code, 125);
  t.like(JSON.parse(missing.stdout), { status: 'error', error: { code: 'FILE_ERROR', name: 'FileError' } });
});

test('kvmbox cflags lets gcc find kvmbox.h: the README guest compiles and serves calls', (t) => {
  const flags = cli(['cflags']);
  t.is(flags.code, 0);
  t.regex(flags.stdout, /^-I\/.*\/guest\/include\n$/);
  const dir = tempDir();
  const src = path.join(dir, 'guest.c');
  fs.writeFileSync(src, '#include "kvmbox.h"\nKVMBOX_EXPORT long add(long a, long b) { return a + b; }\nint main(void) { kvmbox_pause(); return 0; }\n');
  const exe = path.join(dir, 'guest');
  const cc = spawnSync('gcc', ['-O2', '-static', flags.stdout.trim(), src, '-o', exe], { encoding: 'utf8' });
  t.is(cc.status, 0, cc.stderr);
  const r = cli(['run', exe]);
  t.is(r.code, 0, r.stderr);
});

// Install test: kvmbox as a user gets it from npm. scripts/pack.mjs packs the root package and the
// platform package (with the prebuilt .node); both tarballs are installed into a fresh project
// with no cargo or rustc on PATH, and everything is then used from that project only: ESM and
// CommonJS imports running guests, the guest header, `npx kvmbox`, the TypeScript declarations
// (tsc --noEmit under nodenext, bundler and node10 resolution), and the errors a user sees when
// KVM is unusable, the prebuilt binary is missing, or the platform has none.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import test from 'ava';
import { expectedPlatformFiles, expectedRootFiles, packAll, packageInfo } from '../scripts/pack.mjs';
import { kvmbox, REPO_DIR, requireKvm, tempDir } from './helpers.mjs';

requireKvm(test);

const TSC = path.join(REPO_DIR, 'node_modules', 'typescript', 'bin', 'tsc');
const TYPE_ROOTS = path.join(REPO_DIR, 'node_modules', '@types');
const PLATFORM_PKG = 'kvmbox-linux-x64-gnu';

const work = tempDir('kvmbox-install-');
const project = path.join(work, 'project');
let packed;
let env; // the user's environment: no cargo/rustc on PATH, no npm_* from a surrounding `npm test`

const isExecutable = (p) => {
  try {
    fs.accessSync(p, fs.constants.X_OK);
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
};
const which = (cmd, pathVar = process.env.PATH) =>
  pathVar
    .split(path.delimiter)
    .map((d) => path.join(d, cmd))
    .find(isExecutable);

/** An environment whose PATH has node, npm and npx but no directory holding cargo or rustc. */
function userEnv() {
  const bin = path.join(work, 'bin');
  fs.mkdirSync(bin);
  fs.symlinkSync(process.execPath, path.join(bin, 'node'));
  for (const tool of ['npm', 'npx']) {
    const p = which(tool);
    if (!p) throw new Error(`${tool} is not on PATH`);
    fs.symlinkSync(fs.realpathSync(p), path.join(bin, tool));
  }
  const rustTools = ['cargo', 'rustc', 'rustup'];
  const dirs = process.env.PATH.split(path.delimiter).filter((d) => d && !rustTools.some((t) => isExecutable(path.join(d, t))));
  const e = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(npm_|INIT_CWD$|NODE_PATH$|CARGO|RUSTUP|RUSTC|KVMBOX_)/i.test(k)) continue;
    e[k] = v;
  }
  e.PATH = [bin, ...dirs].join(path.delimiter);
  e.npm_config_update_notifier = 'false';
  return e;
}

function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { cwd: project, env: env, encoding: 'utf8', timeout: 120_000, ...opts });
  if (r.error) throw r.error;
  return r;
}
const show = (r) => `exit ${r.status}${r.signal ? ` (${r.signal})` : ''}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;
function ok(t, r, what) {
  t.is(r.status, 0, `${what}: ${show(r)}`);
  return r;
}
/** Checks a snippet's run of the hello guest (its line, then a JSON summary); returns the summary. */
function helloRun(t, r, tag) {
  const [line, json] = r.stdout.trimEnd().split('\n');
  t.is(line, `hello from ${tag}`);
  const o = JSON.parse(json);
  t.is(o.status, 'exited');
  t.is(o.exitCode, 0);
  return o;
}
/** Runs a JS snippet with node in the project; `file` decides ESM (.mjs) or CommonJS (.cjs). */
function node(file, source, opts = {}) {
  fs.writeFileSync(path.join(project, file), source);
  return sh(process.execPath, [...(opts.nodeArgs ?? []), file], opts);
}

test.before('pack both packages and install them from the tarballs into a fresh project', (t) => {
  packed = packAll({ outDir: path.join(work, 'tarballs') });
  fs.mkdirSync(project);
  env = userEnv();

  const noRust = sh('sh', ['-c', 'command -v cargo; command -v rustc; command -v rustup; exit 0']);
  if (noRust.stdout.trim()) throw new Error(`cargo/rustc still reachable in the test PATH: ${noRust.stdout}`);
  const cargo = sh('sh', ['-c', 'cargo --version']);
  if (cargo.status === 0) throw new Error('cargo runs in the test PATH');

  const init = sh('npm', ['init', '-y']);
  if (init.status !== 0) throw new Error(`npm init: ${show(init)}`);
  // --offline: nothing may come from the registry; kvmbox has no dependencies besides its binary.
  const install = sh('npm', ['install', '--no-audit', '--no-fund', '--offline', packed.root.tarball, packed.platform.tarball]);
  if (install.status !== 0) throw new Error(`npm install: ${show(install)}`);

  // Guests, built with the host's gcc (not part of what the user installs).
  fs.writeFileSync(
    path.join(project, 'hello.c'),
    '#include <stdio.h>\nint main(int argc, char **argv) { printf("hello from %s\\n", argc > 1 ? argv[1] : "kvmbox"); return 0; }\n',
  );
  const gcc = spawnSync('gcc', ['-O2', '-static', '-o', 'hello', 'hello.c'], { cwd: project, encoding: 'utf8' });
  if (gcc.status !== 0) throw new Error(`gcc hello: ${gcc.stderr}`);
  t.pass();
});

test.serial('the tarballs hold exactly the intended files', (t) => {
  t.deepEqual(packed.root.files, expectedRootFiles());
  for (const f of packed.root.files) {
    t.regex(
      f,
      /^(package\.json|README\.md|docs\/[\w-]+\.md|LICEN[CS]E.*|dist\/[\w/-]+\.(js|d\.ts)|dist\/index\.(mjs|d\.mts)|native\/index\.(js|d\.ts)|guest\/include\/kvmbox\.h)$/,
      f,
    );
  }
  t.true(packed.root.files.includes('dist/cli.js') && packed.root.files.includes('guest/include/kvmbox.h'));
  const { binary, root } = packageInfo();
  t.deepEqual(packed.platform.files, expectedPlatformFiles(binary));

  const installed = JSON.parse(fs.readFileSync(path.join(project, 'node_modules', 'kvmbox', 'package.json'), 'utf8'));
  t.deepEqual(installed.optionalDependencies, { [PLATFORM_PKG]: root.version });
  const platform = JSON.parse(fs.readFileSync(path.join(project, 'node_modules', PLATFORM_PKG, 'package.json'), 'utf8'));
  t.is(platform.version, root.version);
  t.true(fs.statSync(path.join(project, 'node_modules', PLATFORM_PKG, binary)).size > 0);
  // Nothing of the repo leaks in: no sources, tests, crates, maps.
  const all = fs.readdirSync(path.join(project, 'node_modules', 'kvmbox'), { recursive: true });
  t.deepEqual(
    all.filter((f) => /(^|\/)(src|crates|target|__test__|node_modules|benches|examples)(\/|$)|\.map$|\.ts$(?<!\.d\.ts)/.test(f)),
    [],
  );
});

test.serial('ESM: import { Machine } from "kvmbox" runs a guest', (t) => {
  const r = ok(
    t,
    node(
      'esm.mjs',
      `import { Machine, KvmboxError, GuestFaultError } from 'kvmbox'
      import * as ns from 'kvmbox'
      import kvmboxDefault from 'kvmbox'
      import { createRequire } from 'node:module'
      const cjs = createRequire(import.meta.url)('kvmbox')
      const r = Machine.fromFile('./hello', { args: ['hello', 'esm'] }).run()
      process.stdout.write(r.stdout)
      console.log(JSON.stringify({
        status: r.status, exitCode: r.exitCode,
        esmNames: Object.keys(ns).filter((k) => k !== 'default').sort(),
        cjsNames: Object.keys(cjs).sort(),
        sameModule: kvmboxDefault === cjs && Machine === cjs.Machine && KvmboxError === cjs.KvmboxError,
        faultIsKvmboxError: GuestFaultError.prototype instanceof KvmboxError,
        resolved: import.meta.resolve('kvmbox'),
      }))`,
    ),
    'node esm.mjs',
  );
  const o = helloRun(t, r, 'esm');
  t.deepEqual(o.esmNames, o.cjsNames, 'the ESM entry exports every name of the CommonJS build');
  t.deepEqual(o.cjsNames, Object.keys(kvmbox).sort(), 'the installed package exports what the repo build does');
  t.true(o.sameModule, 'ESM and CommonJS share one module instance');
  t.true(o.faultIsKvmboxError);
  t.true(o.resolved.endsWith('/node_modules/kvmbox/dist/index.mjs'), o.resolved);
});

test.serial('CommonJS: require("kvmbox") runs a guest', (t) => {
  const r = ok(
    t,
    node(
      'cjs.cjs',
      `const { Machine } = require('kvmbox')
      const r = Machine.fromFile('./hello', { args: ['hello', 'cjs'] }).run()
      process.stdout.write(r.stdout)
      console.log(JSON.stringify({ status: r.status, exitCode: r.exitCode, resolved: require.resolve('kvmbox') }))`,
    ),
    'node cjs.cjs',
  );
  const o = helloRun(t, r, 'cjs');
  t.true(o.resolved.endsWith('/node_modules/kvmbox/dist/index.js'), o.resolved);
});

test.serial('a guest built against the shipped kvmbox.h pauses, serves calls and host calls', (t) => {
  const include = path.join(project, 'node_modules', 'kvmbox', 'guest', 'include');
  fs.writeFileSync(
    path.join(project, 'calls.c'),
    `#include "kvmbox.h"
    KVMBOX_EXPORT long add(long a, long b) { return a + b; }
    KVMBOX_EXPORT long twice_host(long x) { return 2 * kvmbox_hostcall1(KVMBOX_HOSTCALL_FIRST, x); }
    int main(void) { kvmbox_pause(); return 7; }\n`,
  );
  const gcc = spawnSync('gcc', ['-O2', '-static', '-I', include, '-o', 'calls', 'calls.c'], { cwd: project, encoding: 'utf8' });
  t.is(gcc.status, 0, gcc.stderr);
  const r = ok(
    t,
    node(
      'calls.mjs',
      `import { Machine, HOSTCALL_FIRST } from 'kvmbox'
      import { createRequire } from 'node:module'
      const header = createRequire(import.meta.url).resolve('kvmbox/guest/include/kvmbox.h')
      const vm = Machine.fromFile('./calls')
      vm.onSyscall(HOSTCALL_FIRST, (c) => Number(c.args[0]) + 1)
      const paused = vm.run().status
      const add = vm.call('add', 2, 3)
      const host = vm.call('twice_host', 20)
      const end = vm.run()
      console.log(JSON.stringify({ paused, add, host, status: end.status, exitCode: end.exitCode, header }))`,
    ),
    'node calls.mjs',
  );
  const o = JSON.parse(r.stdout);
  t.deepEqual(
    { paused: o.paused, add: o.add, host: o.host, status: o.status, exitCode: o.exitCode },
    { paused: 'paused', add: 5, host: 42, status: 'exited', exitCode: 7 },
  );
  t.is(o.header, path.join(fs.realpathSync(include), 'kvmbox.h'));
});

test.serial('npx kvmbox run ./hello prints the hello line and exits 0', (t) => {
  const r = ok(t, sh('npx', ['kvmbox', 'run', './hello', 'npx']), 'npx kvmbox run ./hello npx');
  t.is(r.stdout, 'hello from npx\n');
  t.is(r.stderr, '');
});

test.serial('npx kvmbox probe reports KVM available', (t) => {
  const r = ok(t, sh('npx', ['kvmbox', 'probe']), 'npx kvmbox probe');
  const p = JSON.parse(r.stdout);
  t.true(p.available);
  t.is(typeof p.backend, 'string');
});

const TS_ESM = `import { Machine, GuestFaultError, KvmboxError, Pool, type RunResult, type MachineOptions } from 'kvmbox'
import kvmbox from 'kvmbox'

const opts: MachineOptions = { args: ['hello'], memory: 64 << 20, timeout: 1000, stdout: 'pipe' }
const vm: Machine = Machine.fromFile('./hello', opts)
const r: RunResult = vm.run()
if (r.status === 'exited') {
  const code: number = r.exitCode
  const out: Buffer = r.stdout
  console.log(code, out.toString())
}
export function describe(e: unknown): string {
  if (e instanceof GuestFaultError) return \`\${e.vectorName} at 0x\${e.rip.toString(16)}\`
  if (e instanceof KvmboxError) return e.code
  return String(e)
}
export const same: typeof Machine = kvmbox.Machine
export const pool: typeof Pool = kvmbox.Pool
// @ts-expect-error memory is a number of bytes (proves the types are real, not any)
Machine.fromFile('./hello', { memory: '64M' })
`;
const TS_CJS = `import kvmbox = require('kvmbox')
import type { RunResult } from 'kvmbox'
const { Machine, GuestFaultError } = kvmbox

const r: RunResult = Machine.fromFile('./hello').run()
export const status: 'exited' | 'signaled' | 'paused' = r.status
export const isFault = (e: unknown): e is InstanceType<typeof GuestFaultError> => e instanceof GuestFaultError
// @ts-expect-error no such export (proves the types are real, not any)
kvmbox.NoSuchThing
`;

/** Writes the consumer files and a tsconfig per resolution mode, runs tsc --noEmit on each. */
function typeCheck(t, { skipLibCheck }) {
  const dir = path.join(project, `ts-${skipLibCheck ? 'skiplib' : 'full'}`);
  fs.mkdirSync(dir);
  const write = (f, s) => fs.writeFileSync(path.join(dir, f), s);
  write('esm.mts', TS_ESM);
  write('cjs.cts', TS_CJS);
  write('bundler.ts', TS_ESM);
  write('node10.ts', TS_ESM.replace("import kvmbox from 'kvmbox'", "import * as kvmbox from 'kvmbox'"));
  const base = { strict: true, noEmit: true, skipLibCheck, types: ['node'], typeRoots: [TYPE_ROOTS], target: 'ES2022', lib: ['ES2022'] };
  const configs = {
    'nodenext (ESM .mts, CommonJS .cts)': [{ ...base, module: 'nodenext', moduleResolution: 'nodenext' }, ['esm.mts', 'cjs.cts']],
    bundler: [{ ...base, module: 'esnext', moduleResolution: 'bundler' }, ['bundler.ts']],
    node10: [{ ...base, module: 'commonjs', moduleResolution: 'node10', esModuleInterop: true }, ['node10.ts']],
  };
  for (const [name, [compilerOptions, files]] of Object.entries(configs)) {
    const tsconfig = path.join(dir, `tsconfig.${name.split(' ')[0]}.json`);
    fs.writeFileSync(tsconfig, JSON.stringify({ compilerOptions, files }, null, 2));
    const r = sh(process.execPath, [TSC, '-p', tsconfig, '--traceResolution']);
    t.is(
      r.status,
      0,
      `tsc --noEmit, ${name}, skipLibCheck ${skipLibCheck}:\n${r.stdout
        .split('\n')
        .filter((l) => /error TS/.test(l))
        .join('\n')}`,
    );
    // The declarations come from the installed package.
    const resolvedTo = [...r.stdout.matchAll(/Module name 'kvmbox' was successfully resolved to '([^']+)'/g)].map((m) => path.relative(project, m[1]));
    t.true(resolvedTo.length > 0, `${name}: kvmbox resolved`);
    for (const p of resolvedTo) t.regex(p, /^node_modules\/kvmbox\/dist\/index\.d\.(mts|ts)$/, name);
  }
}

test.serial('TypeScript consumers type-check against the installed declarations (tsc --noEmit: nodenext ESM and CommonJS, bundler, node10)', (t) => {
  typeCheck(t, { skipLibCheck: true });
});

test.serial('the shipped declarations are themselves error-free (tsc --noEmit with skipLibCheck: false, the default)', (t) => {
  typeCheck(t, { skipLibCheck: false });
});

test.serial('a host without usable KVM: KvmUnavailableError and CLI exit 125, naming the device', (t) => {
  const noKvm = { env: { ...env, KVMBOX_KVM_DEVICE: '/nonexistent/kvm' } };
  const r = ok(
    t,
    node(
      'nokvm.mjs',
      `import { Machine, KvmUnavailableError, probe } from 'kvmbox'
      let e
      try { Machine.fromFile('./hello') } catch (err) { e = err }
      console.log(JSON.stringify({ isKvmUnavailable: e instanceof KvmUnavailableError, code: e && e.code, message: e && e.message, probe: probe() }))`,
      noKvm,
    ),
    'node nokvm.mjs',
  );
  const o = JSON.parse(r.stdout);
  t.true(o.isKvmUnavailable);
  t.is(o.code, 'KVM_UNAVAILABLE');
  t.regex(o.message, /\/nonexistent\/kvm/);
  t.false(o.probe.available);
  const cli = sh('npx', ['kvmbox', 'run', './hello'], noKvm);
  t.is(cli.status, 125, show(cli));
  t.regex(cli.stderr, /^kvmbox: .*KVM is unavailable.*\/nonexistent\/kvm/m);
});

const NEEDS_LOADER = ' (src/native.ts must load ../native through ./load-native)';

test.serial('a missing or broken prebuilt binary: the error names the platform and the package', (t) => {
  const pkgDir = path.join(project, 'node_modules', PLATFORM_PKG);
  const aside = path.join(work, `${PLATFORM_PKG}.aside`);
  // Importing kvmbox works either way; probe() reports what is missing, and creating a
  // machine throws the same message.
  const loadMessage = (file) => {
    const report = `const p = k.probe(); let used = 'ok'; try { k.Machine.fromFile('/bin/true') } catch (e) { used = e.message }
      console.log(p.available ? 'loaded' : p.error === used ? p.error : 'probe and use disagree: ' + p.error + ' / ' + used)`;
    const src = file.endsWith('.mjs') ? `const k = (await import('kvmbox')).default; ${report}` : `const k = require('kvmbox'); ${report}`;
    const r = node(file, src);
    t.is(r.status, 0, show(r));
    return r.stdout.trim();
  };
  fs.renameSync(pkgDir, aside);
  try {
    for (const file of ['missing.cjs', 'missing.mjs']) {
      const m = loadMessage(file);
      t.regex(m, /linux-x64-gnu/, `${file}: names the platform${NEEDS_LOADER}`);
      t.regex(m, new RegExp(`package ${PLATFORM_PKG} .*is not installed`), `${file}: names the missing package${NEEDS_LOADER}`);
    }
    const cli = sh('npx', ['kvmbox', 'probe']);
    t.not(cli.status, 0);
    t.regex(JSON.parse(cli.stdout).error, new RegExp(`package ${PLATFORM_PKG} .*is not installed`), `npx kvmbox probe${NEEDS_LOADER}`);

    // Installed, but the binary does not load: the error says so and gives the loader's reason.
    fs.mkdirSync(pkgDir);
    fs.copyFileSync(path.join(aside, 'package.json'), path.join(pkgDir, 'package.json'));
    fs.writeFileSync(path.join(pkgDir, packageInfo().binary), 'not an ELF file');
    const m = loadMessage('broken.cjs');
    t.regex(m, new RegExp(`\\(package ${PLATFORM_PKG}\\) is installed but failed to load: .*${packageInfo().binary}`), `broken binary${NEEDS_LOADER}`);
  } finally {
    fs.rmSync(pkgDir, { recursive: true, force: true });
    fs.renameSync(aside, pkgDir);
  }
  t.is(loadMessage('restored.cjs'), 'loaded');
});

test.serial('a platform without a prebuilt binary: the error names the platform', (t) => {
  fs.writeFileSync(
    path.join(project, 'as-darwin-arm64.cjs'),
    `Object.defineProperty(process, 'platform', { value: 'darwin' }); Object.defineProperty(process, 'arch', { value: 'arm64' })\n`,
  );
  const r = node('unsupported.cjs', `const p = require('kvmbox').probe(); console.log(p.available ? 'loaded' : p.error)`, {
    nodeArgs: ['--require', './as-darwin-arm64.cjs'],
  });
  t.is(r.status, 0, show(r));
  t.regex(r.stdout, /no prebuilt native binary for this platform \(darwin-arm64\)/, `names the platform${NEEDS_LOADER}`);
  t.regex(r.stdout, /linux-x64-gnu/, 'names the platforms that have one');
});

// Shared helpers for the kvmbox ava suite.
//
//   import { kvmbox, guest, runNative, runKvm, requireKvm, ... } from './helpers.mjs'
//
// Importing this module builds the guest programs (once per test process; it is
// a no-op when __test__/guests/build/ is up to date). A build failure throws at
// import time, which makes every test file that uses the helpers fail loudly.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import kvmboxDefault from '../dist/index.js';
import { BUILD_DIR, buildGuests, GUEST_DIR } from './build-guests.mjs';

export const kvmbox = kvmboxDefault;
// Every name the package exports (the ESM entry shares the CommonJS module instance).
export * from '../dist/index.mjs';

const { Machine, probe } = kvmboxDefault;

export const TEST_DIR = path.dirname(fileURLToPath(import.meta.url));
export const REPO_DIR = path.dirname(TEST_DIR);
export const CLI = path.join(REPO_DIR, 'dist', 'cli.js');
export { BUILD_DIR, GUEST_DIR };

// Build once per process (ava runs each test file in its own process).
let built;
export function ensureGuests() {
  if (!built) built = buildGuests({ log: () => {} });
  return built;
}
ensureGuests();

/** Absolute path of a built guest, e.g. guest('hello-glibc'), guest('rust_std'). */
export function guest(name) {
  const p = path.join(BUILD_DIR, name);
  if (!fs.existsSync(p)) throw new Error(`guest program ${name} is not built (${p})`);
  return p;
}

/**
 * A machine of `file` (default: the `calls` guest) run up to its kvmbox_pause(), closed when
 * test `t` ends.
 */
export function pausedMachine(t, file = guest('calls-glibc'), opts = {}) {
  const vm = Machine.fromFile(file, opts);
  t.teardown(() => vm.close());
  t.is(vm.run().status, 'paused');
  return vm;
}

/**
 * Polls `done()` every 50 ms until it holds or `ms` passed: for resources released by the
 * background teardown thread, which on a busy host takes a moment to catch up.
 */
export async function waitFor(done, ms = 5000) {
  for (let waited = 0; waited < ms && !done(); waited += 50) await new Promise((r) => setTimeout(r, 50));
}

/** 'K=V' array or object -> object (for child_process). */
function envObject(env) {
  if (env === undefined) return {};
  if (!Array.isArray(env)) return { ...env };
  const o = {};
  for (const kv of env) {
    const i = kv.indexOf('=');
    o[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return o;
}

/**
 * Runs `file` natively with spawnSync: argv[0] = args[0] (default: file), the
 * environment exactly as given (default: empty), stdin = input (default: empty).
 * Returns { status: 'exited', exitCode } or { status: 'signaled', signal }, plus
 * stdout/stderr Buffers.
 */
export function runNative(file, { args = [file], env = {}, input = '', timeout = 60_000 } = {}) {
  const r = spawnSync(file, args.slice(1), {
    argv0: args[0],
    env: envObject(env),
    input,
    timeout,
    maxBuffer: 256 << 20,
  });
  if (r.error) throw r.error;
  const base = { stdout: r.stdout, stderr: r.stderr };
  if (r.signal) return { status: 'signaled', signal: r.signal, ...base };
  return { status: 'exited', exitCode: r.status, ...base };
}

/** Runs `file` in kvmbox with the same option names as runNative (plus any Machine option). */
export function runKvm(file, { args = [file], env = {}, input = '', ...rest } = {}) {
  const vm = Machine.fromFile(file, { args, env, stdin: input, ...rest });
  return vm.run();
}

/** Reduces a native or kvmbox result to comparable, readable strings. */
export function summarize(r) {
  const s = { status: r.status };
  if (r.status === 'signaled') s.signal = r.signal;
  else s.exitCode = r.exitCode;
  s.stdout = r.stdout.toString('utf8');
  s.stderr = r.stderr.toString('utf8');
  return s;
}

/**
 * Registers a `test.before` hook that fails (never skips) when KVM is not usable.
 * Every test file must call it.
 */
export function requireKvm(test) {
  test.before('KVM is available', (t) => {
    let p;
    try {
      p = probe();
    } catch (e) {
      throw new Error(`KVM is required for these tests: probe() threw: ${e?.message}`);
    }
    if (!p?.available) {
      throw new Error(`KVM is required for these tests: ${p?.error || 'probe() reported it unavailable'}`);
    }
    t.pass();
  });
}

/** Asserts that the host process is still healthy: a fresh hello machine runs fine. */
export function assertHealthy(t, variant = 'glibc') {
  const p = guest(`hello-${variant}`);
  const r = Machine.fromFile(p, { args: [p] }).run();
  t.is(r.status, 'exited', 'hello after the previous run: status');
  t.is(r.exitCode, 0, 'hello after the previous run: exit code');
  t.is(r.stdout.toString(), 'hello from kvmbox guest\n', 'hello after the previous run: stdout');
}

/** Creates a fresh temp dir (removed at process exit). */
export function tempDir(prefix = 'kvmbox-test-') {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  process.on('exit', () => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

/** Function symbols of an ELF file from `nm -n`: [{ addr: bigint, type, name }], by address. */
export function nmSymbols(file) {
  const r = spawnSync('nm', ['-n', file], { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.error || r.status !== 0) throw new Error(`nm ${file} failed: ${r.error || r.stderr}`);
  const syms = [];
  for (const line of r.stdout.split('\n')) {
    const m = /^([0-9a-f]+) (\w) (\S+)$/.exec(line);
    if (m && /[tTwW]/.test(m[2])) syms.push({ addr: BigInt(`0x${m[1]}`), type: m[2], name: m[3] });
  }
  return syms;
}

export const VARIANTS = ['glibc', 'pie', 'musl'];

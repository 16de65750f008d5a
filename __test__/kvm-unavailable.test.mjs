// Without a usable KVM device every entry point fails with KvmUnavailableError and a message
// naming the device — never a crash. KVMBOX_KVM_DEVICE points kvmbox at a missing device.

import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import test from 'ava';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function inChild(device, code) {
  return spawnSync(process.execPath, ['-e', code], { cwd: root, env: { ...process.env, KVMBOX_KVM_DEVICE: device }, encoding: 'utf8' });
}

test('Machine.fromFile throws KvmUnavailableError when the device is missing', (t) => {
  const r = inChild(
    '/nonexistent/kvm',
    `const k = require('./dist');
     try { k.Machine.fromFile(process.execPath); console.log('created') }
     catch (e) { console.log(JSON.stringify({ name: e.name, code: e.code, isBase: e instanceof k.KvmboxError, message: e.message })) }`,
  );
  t.is(r.status, 0, r.stderr);
  const e = JSON.parse(r.stdout);
  t.is(e.name, 'KvmUnavailableError');
  t.is(e.code, 'KVM_UNAVAILABLE');
  t.true(e.isBase);
  t.regex(e.message, /\/nonexistent\/kvm does not exist/);
});

test('probe() reports the reason instead of throwing', (t) => {
  const r = inChild('/dev/null', `console.log(JSON.stringify(require('./dist').probe()))`);
  t.is(r.status, 0, r.stderr);
  const p = JSON.parse(r.stdout);
  t.false(p.available);
  t.regex(p.error, /not a KVM device/);
});

test('the CLI exits 125 with a clear message', (t) => {
  const r = spawnSync(process.execPath, ['dist/cli.js', 'run', process.execPath], {
    cwd: root,
    env: { ...process.env, KVMBOX_KVM_DEVICE: '/nonexistent/kvm' },
    encoding: 'utf8',
  });
  t.is(r.status, 125);
  t.regex(r.stderr, /KVM is unavailable/);
});

// Live debugging with the real gdb in batch mode, and the GDB remote protocol by hand for the
// cases batch gdb cannot drive (Ctrl-C, a dropped connection).
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { Worker } from 'node:worker_threads';

import test from 'ava';

import { GUEST_DIR, guest, Machine, pausedMachine, requireKvm, runNative, TimeoutError, tempDir } from './helpers.mjs';

requireKvm(test);

const dir = tempDir('kvmbox-debug-');
const debugme = path.join(dir, 'debugme');
{
  const r = spawnSync('gcc', ['-g', '-O0', '-static', '-o', debugme, path.join(GUEST_DIR, 'debugme.c')], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`compiling debugme.c: ${r.stderr}`);
}

const debugthreads = path.join(dir, 'debugthreads');
{
  const src = path.join(GUEST_DIR, 'debugthreads.c');
  const r = spawnSync('gcc', ['-g', '-O0', '-static', '-pthread', '-o', debugthreads, src], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`compiling debugthreads.c: ${r.stderr}`);
}

/** Start batch gdb against 127.0.0.1:port; resolves to its output once it exits. */
function gdb(port, commands, file = debugme) {
  const args = ['-batch', '-nx', '-ex', `file ${file}`, '-ex', `target remote 127.0.0.1:${port}`];
  for (const c of commands) args.push('-ex', c);
  const child = spawn('gdb', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  return new Promise((resolve) => child.on('close', () => resolve(out)));
}

test.serial('gdb: breakpoint, backtrace, variables, stepping, registers, then normal completion', async (t) => {
  const native = runNative(debugme);
  const vm = Machine.fromFile(debugme);
  const port = vm.debug({ port: 0 });
  const session = gdb(port, [
    'break compute',
    'continue',
    'bt',
    'print x',
    'next',
    'next',
    'print y',
    'info registers rip',
    'info registers fs_base',
    'print $mxcsr',
    'delete',
    'continue',
  ]);
  const r = vm.run(); // blocks until gdb lets the program finish
  const out = await session;
  t.regex(out, /Breakpoint 1, compute \(x=10\) at .*debugme\.c:5/);
  t.regex(out, /#0 {2}compute \(x=10\) at .*debugme\.c:5\n#1 {2}0x[0-9a-f]+ in main \(\) at .*debugme\.c:12/);
  t.regex(out, /\$1 = 10\n/);
  t.regex(out, /\n6\t {4}int z = y \+ 3;\n7\t {4}return z \* z;/, 'next stepped line by line');
  t.regex(out, /\$2 = 20\n/);
  t.regex(out, /rip +0x[0-9a-f]+ +0x[0-9a-f]+ <compute\+\d+>/);
  t.regex(out, /fs_base +0x[1-9a-f][0-9a-f]* /, 'the TLS base (segment base) is reported');
  t.regex(out, /\$3 = \[ IM DM ZM OM UM PM \]/, 'SSE control register');
  t.regex(out, /exited with code 0313/);
  t.is(r.status, 'exited');
  t.is(r.exitCode, native.exitCode);
  t.is(r.stdout.toString(), native.stdout.toString());
});

test.serial('gdb: threads are listed, each with its own registers; a breakpoint in a worker names its thread', async (t) => {
  const native = runNative(debugthreads);
  const vm = Machine.fromFile(debugthreads);
  const port = vm.debug({ port: 0 });
  const session = gdb(
    port,
    ['break work', 'continue', 'info threads', 'print id', 'bt 1', 'thread 1', 'bt', 'info registers rip', 'delete', 'continue'],
    debugthreads,
  );
  const r = vm.run();
  const out = await session;
  // Whichever worker gets there first stops; gdb numbers threads itself, the target ids are
  // pid.tid (tids 1–4).
  t.regex(out, /Thread \d hit Breakpoint 1, work \(id=[123]\) at .*debugthreads\.c:8/);
  // info threads: the main thread and three workers, the stopped one marked and in work().
  for (const tid of [1, 2, 3, 4]) t.regex(out, new RegExp(`\\n[ *]+\\d +Thread 1\\.${tid} `), `tid ${tid} is listed`);
  t.regex(out, /\* \d +Thread 1\.[234] +work \(id=[123]\)/);
  t.regex(out, /\$1 = [123]\n/);
  // The main thread, waiting in the barrier: its own registers and stack.
  t.regex(out, /Switching to thread 1 \(Thread 1\.1\)/);
  t.regex(out, /#1 +0x[0-9a-f]+ in main \(\) at .*debugthreads\.c:2\d/, 'thread 1 is in main');
  t.regex(out, /rip +0x[0-9a-f]+ +0x[0-9a-f]+ <pthread_barrier_wait\+\d+>/, 'its own rip');
  t.is(r.status, 'exited');
  t.is(r.stdout.toString(), native.stdout.toString());
});

test.serial('gdb: a breakpoint on a line, then detach: the guest finishes exactly as undebugged', async (t) => {
  const native = runNative(debugme);
  const vm = Machine.fromFile(debugme);
  const port = vm.debug({ port: 0 });
  const session = gdb(port, ['break debugme.c:6', 'continue', 'print y', 'continue', 'print x', 'detach']);
  const r = vm.run();
  const out = await session;
  t.regex(out, /\$1 = 20\n/);
  t.regex(out, /\$2 = 20\n/, 'second hit: compute(20)');
  t.regex(out, /detached/);
  t.is(r.exitCode, native.exitCode);
  t.is(r.stdout.toString(), native.stdout.toString());
});

test.serial('gdb: debugging a call in one fork leaves its siblings and later calls untouched', async (t) => {
  const calls = guest('calls-glibc');
  const vm = pausedMachine(t, calls);
  const snap = vm.snapshot();
  const a = snap.fork();
  const b = snap.fork();
  const port = a.debug({ port: 0 });
  // The debugged call stops at the function's first instruction; step into it, plant a
  // breakpoint at its return, continue.
  const session = gdb(port, ['bt 1', 'stepi', 'info registers rip', 'break *($pc + 1)', 'continue'], calls);
  t.is(a.call('counter_next'), 1);
  const out = await session;
  t.regex(out, /#0 {2}0x[0-9a-f]+ in counter_next \(\)/);
  t.regex(out, /rip +0x[0-9a-f]+ +0x[0-9a-f]+ <counter_next\+\d+>/, 'single-stepped inside the function');
  // No int3 left behind: the sibling and the debugged fork itself run the function freely.
  t.is(b.call('counter_next'), 1);
  t.is(a.call('counter_next'), 2);
  a.reset();
  t.is(a.call('counter_next'), 1);
  t.is(snap.fork().call('counter_next'), 1, 'the snapshot is unchanged');
});

/**
 * A minimal GDB remote-protocol client running a script of steps in a worker thread (the
 * main thread is blocked inside the synchronous vm.run() meanwhile). Steps: ['packet', p],
 * ['reply'], ['raw', s], ['sleep', ms], ['close'] or ['destroy']. Resolves to the replies.
 */
function rspClient(port, steps) {
  const code = `
    const { parentPort, workerData } = require('node:worker_threads');
    const net = require('node:net');
    const { port, steps } = workerData;
    const sock = net.connect(port, '127.0.0.1');
    let buf = '';
    const waiters = [];
    const replies = [];
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      for (;;) {
        const m = /\\$([^#]*)#[0-9a-f]{2}/.exec(buf);
        if (!m) break;
        buf = buf.slice(m.index + m[0].length);
        sock.write('+');
        const w = waiters.shift();
        if (w) w(m[1]);
      }
    });
    sock.on('error', () => {});
    const packet = (p) => {
      const sum = [...p].reduce((s, c) => (s + c.charCodeAt(0)) & 0xff, 0);
      sock.write('$' + p + '#' + sum.toString(16).padStart(2, '0'));
    };
    sock.on('connect', async () => {
      for (const [op, arg] of steps) {
        if (op === 'packet') packet(arg);
        else if (op === 'reply') replies.push(await new Promise((r) => waiters.push(r)));
        else if (op === 'raw') sock.write(arg);
        else if (op === 'sleep') await new Promise((r) => setTimeout(r, arg));
        else if (op === 'close') sock.end();
        else if (op === 'destroy') sock.destroy();
      }
      parentPort.postMessage(replies);
    });
  `;
  const w = new Worker(code, { eval: true, workerData: { port, steps } });
  return new Promise((resolve, reject) => {
    w.once('message', (m) => {
      resolve(m);
      w.terminate();
    });
    w.once('error', reject);
  });
}

test.serial('gdb protocol: Ctrl-C interrupts a running guest, which then continues after detach', async (t) => {
  const faults = guest('faults-glibc');
  const vm = Machine.fromFile(faults, { args: [faults, 'loop'], timeout: 1500 });
  const port = vm.debug({ port: 0 });
  const client = rspClient(port, [
    ['packet', '?'],
    ['reply'],
    ['packet', 'c'],
    ['sleep', 300],
    ['raw', '\x03'],
    ['reply'],
    ['packet', 'D'],
    ['reply'],
    ['close'],
  ]);
  t.throws(() => vm.run(), { instanceOf: TimeoutError }, 'after detach the loop runs on until its timeout');
  const [first, stop, detached] = await client;
  t.regex(first, /^[ST]05/, 'initial stop');
  t.regex(stop, /^[ST]02/, 'stopped by SIGINT');
  t.is(detached, 'OK');
});

test.serial('gdb protocol: a connection that drops mid-session leaves the guest running to completion', async (t) => {
  const native = runNative(debugme);
  const vm = Machine.fromFile(debugme);
  const port = vm.debug({ port: 0 });
  const compute = vm.symbol('compute');
  // A breakpoint that must not survive the drop.
  const client = rspClient(port, [['packet', '?'], ['reply'], ['packet', `Z0,${compute.toString(16)},1`], ['reply'], ['destroy']]);
  const r = vm.run();
  const [, planted] = await client;
  t.is(planted, 'OK');
  t.is(r.status, 'exited');
  t.is(r.exitCode, native.exitCode);
  t.is(r.stdout.toString(), native.stdout.toString());
});

test.serial('gdb: kill ends the guest (as SIGKILL) and the host is fine', async (t) => {
  const vm = Machine.fromFile(debugme);
  const port = vm.debug({ port: 0 });
  const session = gdb(port, ['break compute', 'continue', 'kill']);
  const r = vm.run();
  const out = await session;
  t.regex(out, /Breakpoint 1, compute/);
  t.is(r.status, 'signaled');
  t.is(r.signal, 'SIGKILL');
  t.is(r.stdout.toString(), '', 'killed before printing');
  const again = Machine.fromFile(debugme).run();
  t.is(again.exitCode, 203);
});

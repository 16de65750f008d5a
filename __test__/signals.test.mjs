// Signal delivery, differentially: the signals guest (glibc, static-pie, musl; see the comment at
// the top of __test__/guests/signals.c) runs natively and in kvmbox with the same argv; stdout,
// stderr and the exit status (or the signal that killed it) must be identical. Handlers on real
// rt_sigframes, rt_sigreturn, sa_flags (SA_SIGINFO, SA_ONSTACK, SA_RESTART, SA_NODEFER,
// SA_RESETHAND), sa_mask, sigaltstack, kill/tgkill/raise to itself, CPU faults as signals (#PF,
// #GP, #UD, #DE, int3), alarm/setitimer/POSIX timers, pause, sigsuspend, sigtimedwait,
// sigpending, signals between threads. The guest prints only what does not depend on timing,
// addresses or the scheduler, so one run of each side is compared.
//
// A fault the program does not handle (no handler, SIGSEGV blocked or ignored) kills it natively;
// kvmbox ends the run with a GuestFaultError carrying the signal instead (kvmbox-only tests). The
// guest's segv-mprotect mode (a handler mprotect()s the faulting page writable) is not compared:
// kvmbox's mprotect cannot change page rights (README, "Limits").
//
// Plus Debian's bash-static (scripts/test-deps.sh installs it): `trap` handlers of a real shell.
import fs from 'node:fs';

import test from 'ava';

import { assertHealthy, GuestFaultError, guest, KvmboxError, Machine, requireKvm, runKvm, runNative, summarize, VARIANTS } from './helpers.mjs';

requireKvm(test);

/**
 * kvmbox options for every run here. The timeout only turns a hang into a failure: natively every
 * mode takes well under a second (the default run ~0.3 s), so nothing here depends on the
 * machine's speed. The memory is address space (only touched pages use host memory): up to four
 * threads with glibc's 8 MiB stacks.
 */
const KVM_OPTS = { timeout: 30_000, memory: 512 * 1024 ** 2 };

/**
 * Scenarios of the default run, in its order, each with lines the native stdout must contain (so
 * that the comparison means something: natively the check really happened and came out as Linux
 * defines it). Lines that differ between glibc and musl (sigwaitinfo's si_code for a tgkill,
 * timer_delete's error) or between kernel versions (unknown sa_flags bits are dropped since Linux
 * 5.11) are left out here; each variant is compared with its own native run.
 */
const SCENARIOS = {
  segv: [
    'round 3: NULL write: caught=yes si_signo=SIGSEGV si_code=SEGV_MAPERR si_addr is the address: yes\n',
    'round 3: .rodata write: caught=yes si_signo=SIGSEGV si_code=SEGV_ACCERR si_addr is the address: yes\n',
    'round 3: SIGSEGV blocked after siglongjmp: no\n',
    'non-canonical address write: caught=yes si_signo=SIGSEGV si_code=SI_KERNEL si_addr is 0: yes\n',
    'hlt in user mode: caught=yes si_signo=SIGSEGV si_code=SI_KERNEL si_addr is 0: yes\n',
    'register fix-up: handler ran 1 time(s), SEGV_MAPERR: yes, si_addr and rbx 0: yes, the store was retried with the new rbx: yes\n',
  ],
  fpe: [
    'round 2: 1/0: caught=yes si_signo=SIGFPE si_code=FPE_INTDIV si_addr == rip: yes\n',
    'INT_MIN/-1: caught=yes si_signo=SIGFPE si_code=FPE_INTDIV si_addr == rip: yes\n',
  ],
  ill: [
    'round 2: ud2: caught=yes si_signo=SIGILL si_code=ILL_ILLOPN si_addr == rip: yes rip at the ud2: yes\n',
    'handler moved REG_RIP past the ud2 and returned: runs=1 si_code=ILL_ILLOPN saw the ud2: yes continued: yes\n',
  ],
  trap: ['int3 x3: handler runs=3 si_signo=SIGTRAP si_code=SI_KERNEL rip after the int3: yes execution continued: yes\n'],
  raise: [
    'raise(SIGUSR1)=0: handler ran before raise returned: yes, SIGUSR1 blocked inside it: yes, unblocked after: yes\n',
    'kill(getpid(), SIGUSR1)=0: the handler changed a global (5 -> 15) and the interrupted code resumed\n',
    'SA_SIGINFO handler, raise: si_code=SI_TKILL si_pid is getpid: yes si_uid is getuid: yes\n',
    'SA_SIGINFO handler, kill: si_code=SI_USER si_pid is getpid: yes si_uid is getuid: yes\n',
    'SA_RESETHAND: handler ran: yes, disposition now SIG_DFL: yes, sa_flags kept: yes\n',
    'SA_NODEFER: handler raised its signal again: calls=2 max nesting depth=2\n',
    'without SA_NODEFER: calls=2 max nesting depth=1 (the second ran after the first returned)\n',
    'sa_mask {SIGUSR2}: usr1:begin usr1:usr2-pending usr1:end usr2 main:after-raise\n',
    'registers across a handler: red zone intact: yes, r8-r10 restored: yes, rdi/rsi/rdx restored: yes, xmm0-15 restored: yes\n',
    'sigaction returns the installed handler and sa_mask: yes\n',
    'signal() returns the previous handler: yes\n',
    'handler entered with DF clear: yes, with the stack aligned as after a call: yes; DF set again after it: yes\n',
  ],
  mask: [
    'blocked SIGUSR1: raised pending handler after-unblock\n',
    'raised 3 times while blocked: SIGUSR1 handled 1 time(s), SIGRTMIN handled 3 time(s)\n',
    'SIGUSR2 then SIGUSR1 raised while blocked, both unblocked at once: SIGUSR2-handler SIGUSR1-handler main\n',
    'kill + sigwaitinfo: SIGUSR2 si_code=SI_USER si_pid is getpid: yes si_uid is getuid: yes\n',
    'sigtimedwait 10 ms, nothing pending: -1 EAGAIN\n',
    'sigfillset mask: SIGKILL blocked: no SIGSTOP blocked: no SIGUSR1 blocked: yes\n',
    'SIG_IGN + blocked SIGUSR1 raised: pending: yes\n',
    'pending SIGUSR1 then SIG_IGN: pending before: yes after: no\n',
  ],
  alarm: [
    'busy loop ended by SIGALRM ticks (>= 3): yes, FP state intact across the handlers: yes\n',
    'alarm(5)=0 alarm(0)=5 alarm(0)=0\n',
    'alarm(0) after setitimer(3.9 s) = 4 (rounded to the nearest second)\n',
    'pause() = -1 EINTR, the SIGALRM handler ran: yes\n',
  ],
  timer: [
    'one-shot 10 ms timer: sigwaitinfo=SIGRTMIN si_code=SI_TIMER si_value=42\n',
    'periodic timer: handler saw SI_TIMER with si_value 7 at least 3 times: yes\n',
    'SIGEV_THREAD_ID timer: handled by the target thread: yes si_code=SI_TIMER si_value=99\n',
  ],
  sigsuspend: [
    'sigsuspend(empty mask) = -1 EINTR, handler ran once: yes, SIGUSR1 blocked again after: yes\n',
    'sigsuspend with SIGUSR1 already pending = -1 EINTR, handler ran: yes\n',
  ],
  altstack: [
    'round 2: caught overflow: yes signal=SIGSEGV deep (> 100 frames of 4 KiB): yes\n',
    'round 2: handler ran on the alternate stack: yes (aligned: yes), sigaltstack said SS_ONSTACK: yes, changing it from the handler: EPERM\n',
    'round 2: back on the normal stack: yes\n',
  ],
  restart: [
    'SA_RESTART: FUTEX_WAIT interrupted: yes, restarted: yes (futex), returned 0 0\n',
    'SA_RESTART: sem_wait interrupted: yes, restarted: yes, returned 0 0\n',
    'SA_RESTART: nanosleep(10 s) interrupted: yes, restarted: no, returned -1 EINTR, remaining time set: yes\n',
    'no SA_RESTART: FUTEX_WAIT interrupted: yes, restarted: no, returned -1 EINTR\n',
    'no SA_RESTART: sem_wait interrupted: yes, restarted: no, returned -1 EINTR\n',
  ],
  'thread-signal': [
    'pthread_kill: handler ran once, on the target thread: yes\n',
    'kill(getpid(), SIGUSR2) blocked everywhere but in one thread: handled once, by that thread: yes\n',
    "new threads inherit the creator's mask: yes\n",
    'raise() in a thread: handled by that thread: yes\n',
    'NULL write in a thread: SIGSEGV handled by that thread: yes\n',
  ],
};

/**
 * Cases: { name (guest), label, argv, status: expected natively ({ exitCode } or { signal }),
 * stderr (expected natively, default ''), stdoutHas (lines the native stdout must contain) }.
 */
const CASES = [];
for (const v of VARIANTS) {
  const name = `signals-${v}`;
  CASES.push({ name, label: 'all default scenarios', stdoutHas: Object.values(SCENARIOS).flat() });
  for (const [mode, lines] of Object.entries(SCENARIOS)) CASES.push({ name, label: mode, argv: [mode], stdoutHas: [`== ${mode} ==\n`, ...lines] });
  CASES.push({ name, label: 'default-term: raise(SIGTERM), no handler -> killed by SIGTERM', argv: ['default-term'], status: { signal: 'SIGTERM' } });
  CASES.push({
    name,
    label: 'default-ignore: SIGCHLD/SIGURG/SIGWINCH/SIGCONT by default, SIGUSR1 set to SIG_IGN -> nothing happens',
    argv: ['default-ignore'],
    stdoutHas: ['raise(SIGWINCH) with the default action (ignore): 0, still running\n', 'nothing pending: yes\n'],
  });
  CASES.push({ name, label: 'abort -> killed by SIGABRT', argv: ['abort'], status: { signal: 'SIGABRT' } });
  CASES.push({
    name,
    label: 'abort-handler: a SIGABRT handler returns, abort() still kills with SIGABRT',
    argv: ['abort-handler'],
    status: { signal: 'SIGABRT' },
    stdoutHas: ['SIGABRT handler ran and returns\n'],
  });
  CASES.push({ name, label: 'unknown mode: usage, exit 2', argv: ['bogus'], status: { exitCode: 2 }, stderr: /^usage: signals / });
}

for (const c of CASES) {
  test(`${c.name}: ${c.label}`, (t) => {
    const file = guest(c.name);
    const opts = { args: [file, ...(c.argv ?? [])] };
    const native = summarize(runNative(file, opts));

    // Sanity of the native run itself, so the comparison means something.
    const status = c.status ?? { exitCode: 0 };
    if (status.signal) t.deepEqual({ status: native.status, signal: native.signal }, { status: 'signaled', signal: status.signal }, 'native run');
    else t.deepEqual({ status: native.status, exitCode: native.exitCode }, { status: 'exited', exitCode: status.exitCode }, 'native run');
    if (c.stderr instanceof RegExp) t.regex(native.stderr, c.stderr, 'native stderr');
    else t.is(native.stderr, c.stderr ?? '', 'native stderr');
    for (const line of c.stdoutHas ?? []) t.true(native.stdout.includes(line), `native stdout lacks ${JSON.stringify(line)}`);
    t.false(native.stdout.includes('caught=no'), 'native run: every fault was caught');

    const kvm = runKvm(file, { ...opts, ...KVM_OPTS });
    const k = summarize(kvm);
    t.is(k.status, native.status, 'status');
    if (native.status === 'signaled') {
      t.is(k.signal, native.signal, 'signal');
      t.is(kvm.exitCode, 128 + kvm.signalNumber, 'exitCode of a signaled run is 128+signal');
    } else {
      t.is(k.exitCode, native.exitCode, 'exit code');
    }
    t.deepEqual(k.stdout, native.stdout, 'stdout');
    t.deepEqual(k.stderr, native.stderr, 'stderr');
    t.false(kvm.stdoutTruncated);
    t.false(kvm.stderrTruncated);
  });
}

// Timers, threads and restarts must not make a difference between runs (nor between run() and
// runAsync()).
for (const v of ['glibc', 'musl']) {
  test(`signals-${v}: all default scenarios, 3 more kvmbox runs and one runAsync, all the same as native`, async (t) => {
    const file = guest(`signals-${v}`);
    const native = summarize(runNative(file, { args: [file] }));
    for (let i = 0; i < 3; i++) t.deepEqual(summarize(runKvm(file, { args: [file], ...KVM_OPTS })), native, `run ${i + 1}`);
    const vm = Machine.fromFile(file, { args: [file], env: {}, stdin: '', ...KVM_OPTS });
    t.deepEqual(summarize(await vm.runAsync()), native, 'runAsync');
  });
}

// --------------------------------------------------------------- faults nobody handles

/**
 * Natively these kill the process with SIGSEGV (Linux forces the signal: a blocked or ignored
 * SIGSEGV from a fault is unblocked and reset to SIG_DFL first). kvmbox ends the run with a
 * GuestFaultError saying SIGSEGV, keeping the output so far, and never runs the handler.
 */
const UNHANDLED = {
  'unhandled-segv': 'a NULL write without a handler',
  'blocked-fault': 'a NULL write with a SIGSEGV handler installed but SIGSEGV blocked',
  'ignored-fault': 'a NULL write with SIGSEGV set to SIG_IGN',
};

for (const v of VARIANTS) {
  for (const [mode, what] of Object.entries(UNHANDLED)) {
    test(`signals-${v} ${mode}: ${what} -> natively killed by SIGSEGV, in kvmbox a GuestFaultError with signal SIGSEGV`, (t) => {
      const file = guest(`signals-${v}`);
      const native = summarize(runNative(file, { args: [file, mode] }));
      t.deepEqual(native, { status: 'signaled', signal: 'SIGSEGV', stdout: `== ${mode} ==\n`, stderr: '' }, 'native run');

      const vm = Machine.fromFile(file, { args: [file, mode], ...KVM_OPTS });
      const err = t.throws(() => vm.run());
      t.true(err instanceof GuestFaultError, `a GuestFaultError, got ${err?.name}: ${err?.message}`);
      t.true(err instanceof KvmboxError);
      t.is(err.code, 'GUEST_FAULT');
      t.is(err.vector, 14, 'a page fault');
      t.is(err.address, 0n, 'at address 0');
      t.is(err.signal, 'SIGSEGV');
      t.is(err.signalNumber, 11);
      t.is(err.stdout?.toString(), native.stdout, 'output before the fault is kept (and the handler did not run)');
      t.is(err.stderr?.toString(), '');
      assertHealthy(t, v);
    });
  }
}

// --------------------------------------------------------------- bash-static

const BASH = ['/usr/bin/bash-static', '/bin/bash-static'].find((p) => fs.existsSync(p));

/** Runs bash-static with `args` natively and in kvmbox; asserts the same result, returns it. */
function sameAsNative(t, args) {
  t.truthy(BASH, 'bash-static is installed (scripts/test-deps.sh installs it: apt-get install bash-static)');
  if (!BASH) return undefined;
  const opts = { args: [BASH, ...args] };
  const native = summarize(runNative(BASH, opts));
  const kvm = summarize(runKvm(BASH, { ...opts, ...KVM_OPTS }));
  t.deepEqual(kvm, native);
  return native;
}

// --norc: Debian builds bash with SSH_SOURCE_BASHRC, so a non-interactive `bash -c` whose stdin is
// a socket ("run by sshd/rshd": getpeername(0) succeeds) reads /etc/bash.bashrc and ~/.bashrc.
// Node's spawnSync gives the native run a socketpair as stdin, so without --norc the native
// result would depend on the host's rc files.
test('bash-static --norc: trap "echo caught" USR1; kill -USR1 $$; echo after', (t) => {
  const native = sameAsNative(t, ['--norc', '-c', 'trap "echo caught" USR1; kill -USR1 $$; echo after']);
  if (native) t.deepEqual(native, { status: 'exited', exitCode: 0, stdout: 'caught\nafter\n', stderr: '' }, 'native run');
});

test('bash-static --norc: traps on two signals, trap reset and ignore, then kill -TERM $$ -> killed by SIGTERM', (t) => {
  const script =
    'trap "echo caught \\$((++n))" USR1 USR2; kill -USR1 $$; kill -USR2 $$; trap - USR1; trap "" USR2; kill -USR2 $$; echo after; kill -TERM $$; echo not reached';
  const native = sameAsNative(t, ['--norc', '-c', script]);
  if (native) t.deepEqual(native, { status: 'signaled', signal: 'SIGTERM', stdout: 'caught 1\ncaught 2\nafter\n', stderr: '' }, 'native run');
});

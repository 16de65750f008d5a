// Rust data parallelism with the rayon crate, differentially: the rayon guest (a cargo project in
// __test__/guests/rayon/, built static by build-guests.mjs; see the comment at the top of its
// src/main.rs) runs natively and in kvmbox with the same argv and environment; stdout, stderr and
// the exit status must be identical. RAYON_NUM_THREADS fixes the size of rayon's global pool on
// both sides (without it rayon uses one worker per CPU, and kvmbox reports one CPU), and the
// guest proves every worker ran: a broadcast answered by each, and a parallel loop in which each
// item waits until every worker has taken one. Everything else it prints (sums, sorts, collects,
// join, scope, a custom pool, a panic in a worker) is compared with sequential results and does
// not depend on how work was split or stolen, so one run of each side is compared.
import test from 'ava';

import { guest, requireKvm, runKvm, runNative, summarize } from './helpers.mjs';

requireKvm(test);

/**
 * kvmbox options for every run here. The timeout only turns a hang into a failure: natively the
 * default run takes about a second. The memory is address space (only touched pages use host
 * memory): up to 8 workers with 2 MiB stacks, and two 80 MB vectors.
 */
const KVM_OPTS = { timeout: 60_000, memory: 1024 ** 3 };

/** Lines the native stdout must contain per mode, with 4 workers. */
const SCENARIOS = {
  pool: [
    'current_num_threads: 4\n',
    "main thread's current_thread_index: None\n",
    'broadcast: one call per worker: [(0, 4), (1, 4), (2, 4), (3, 4)]\n',
    'parallel loop of 64 items: workers that took items: {0, 1, 2, 3}; checksum 30458618eb4051b8\n',
    'every worker took part: yes\n',
  ],
  iter: [
    '10M elements: sum of x%1000 = 4995828985; equal to sequential: yes\n',
    'collect of map: same values in the same order: yes\n',
    'par_chunks(100000): 100 chunks, total equal: yes\n',
  ],
  sort: ['par_sort of 2M: equal to sort(): yes; par_sort_unstable: yes\n', 'par_sort_by_key on 1000 keys: sorted and stable: yes\n'],
  join: ['fib(30) with rayon::join: 832040\n', 'halves sorted in join: yes\n'],
  scope: ['nested spawns: 100\n'],
  custom: ['custom pool: 3 threads, broadcast from ["0:custom-0", "1:custom-1", "2:custom-2"]\n', 'custom pool dropped\n'],
  panic: ['panic in a parallel loop reached the caller: yes; message Some("boom at item 500")\n', 'the pool works afterwards: sum 499500\n'],
};
const PANIC_HOOK = 'panic hook: boom at item 500\n';

/**
 * Cases: { label, argv, env, exitCode (expected natively, default 0), stderr (expected natively,
 * default ''), stdoutHas (lines the native stdout must contain) }.
 */
const FOUR = { RAYON_NUM_THREADS: '4' };
const CASES = [
  { label: 'RAYON_NUM_THREADS=4: all modes', env: FOUR, stderr: PANIC_HOOK, stdoutHas: Object.values(SCENARIOS).flat() },
  ...Object.entries(SCENARIOS).map(([mode, lines]) => ({
    label: `RAYON_NUM_THREADS=4: ${mode}`,
    argv: [mode],
    env: FOUR,
    stderr: mode === 'panic' ? PANIC_HOOK : '',
    stdoutHas: [`== ${mode} ==\n`, ...lines],
  })),
  {
    label: 'RAYON_NUM_THREADS=1: all modes',
    env: { RAYON_NUM_THREADS: '1' },
    stderr: PANIC_HOOK,
    stdoutHas: ['broadcast: one call per worker: [(0, 1)]\n', 'every worker took part: yes\n'],
  },
  {
    label: 'RAYON_NUM_THREADS=8: all modes',
    env: { RAYON_NUM_THREADS: '8' },
    stderr: PANIC_HOOK,
    stdoutHas: ['workers that took items: {0, 1, 2, 3, 4, 5, 6, 7}; checksum 30458618eb4051b8\n', 'every worker took part: yes\n'],
  },
  { label: 'unknown mode: usage, exit 2', argv: ['bogus'], env: FOUR, exitCode: 2, stderr: 'usage: rayon_guest [pool|iter|sort|join|scope|custom|panic]\n' },
];

for (const c of CASES) {
  test(`rayon: ${c.label}`, (t) => {
    const file = guest('rayon');
    const opts = { args: [file, ...(c.argv ?? [])], env: c.env };
    const native = summarize(runNative(file, opts));

    // Sanity of the native run itself, so the comparison means something.
    t.deepEqual({ status: native.status, exitCode: native.exitCode }, { status: 'exited', exitCode: c.exitCode ?? 0 }, 'native run');
    t.is(native.stderr, c.stderr ?? '', 'native stderr');
    for (const line of c.stdoutHas ?? []) t.true(native.stdout.includes(line), `native stdout lacks ${JSON.stringify(line)}`);
    t.false(/: no\b/.test(native.stdout), 'native run: no check printed "no"');

    const kvm = runKvm(file, { ...opts, ...KVM_OPTS });
    const k = summarize(kvm);
    t.is(k.status, native.status, 'status');
    t.is(k.exitCode, native.exitCode, 'exit code');
    t.deepEqual(k.stdout, native.stdout, 'stdout');
    t.deepEqual(k.stderr, native.stderr, 'stderr');
    t.false(kvm.stdoutTruncated);
    t.false(kvm.stderrTruncated);
  });
}

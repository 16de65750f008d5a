#!/usr/bin/env node
// Builds the differential-test guest programs in __test__/guests/ into
// __test__/guests/build/. No dependencies.
//
//   node __test__/build-guests.mjs            # build what is out of date
//   node __test__/build-guests.mjs --force    # rebuild everything
//
// Variants:
//   <base>.c    -> <base>-glibc  gcc -O2 -static            -lm
//                  <base>-pie    gcc -O2 -static-pie -fPIE  -lm
//                  <base>-musl   musl-gcc -O2 -static       -lm
//   <base>.cpp  -> <base>        g++ -O2 -static
//   <base>.rs   -> <base>        rustc --edition 2021 -O -C target-feature=+crt-static
//                                      --target x86_64-unknown-linux-gnu
//                                (rustc produces a static-pie executable)
//
// Some sources add flags to every variant or leave variants out (SOURCE_OPTIONS):
//   threads.c, threads_cpp.cpp  -pthread
//   signals.c, threadpool.c     -pthread
//   openmp.c                    -fopenmp; no -musl variant (gcc's libgomp.a is built
//                               against glibc)
//
// An output is rebuilt when it is missing or older than its source (or older
// than this script, so flag changes take effect). Outputs are written to a
// temporary name and renamed, so a failed build never leaves a "fresh" file.
//
// Can also be imported: `import { buildGuests } from './build-guests.mjs'`;
// buildGuests() throws on a missing compiler or a failed build.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const SCRIPT = fileURLToPath(import.meta.url);
export const GUEST_DIR = path.join(path.dirname(SCRIPT), 'guests');
export const BUILD_DIR = path.join(GUEST_DIR, 'build');

const RUST_TARGET = 'x86_64-unknown-linux-gnu';

/** Variants per source extension: [suffix, compiler, args(src, out)]. */
const VARIANTS = {
  '.c': [
    ['-glibc', 'gcc', (src, out) => ['-O2', '-static', '-o', out, src, '-lm']],
    ['-pie', 'gcc', (src, out) => ['-O2', '-static-pie', '-fPIE', '-o', out, src, '-lm']],
    ['-musl', 'musl-gcc', (src, out) => ['-O2', '-static', '-o', out, src, '-lm']],
  ],
  '.cpp': [['', 'g++', (src, out) => ['-O2', '-static', '-o', out, src]]],
  '.rs': [['', 'rustc', (src, out) => ['--edition', '2021', '-O', '-C', 'target-feature=+crt-static', '--target', RUST_TARGET, '-o', out, src]]],
};

/**
 * Per-source additions: `flags` are put in front of every variant's arguments; variants whose
 * suffix is in `skip` are not built.
 */
const SOURCE_OPTIONS = {
  'threads.c': { flags: ['-pthread'] },
  'signals.c': { flags: ['-pthread'] },
  'threadpool.c': { flags: ['-pthread'] },
  'threads_cpp.cpp': { flags: ['-pthread'] },
  'openmp.c': { flags: ['-fopenmp'], skip: ['-musl'] },
};

const INSTALL_HINTS = {
  'musl-gcc': 'musl-gcc not found: install it with `apt-get install musl-tools` (Debian/Ubuntu).',
  gcc: 'gcc not found: install it with `apt-get install gcc libc6-dev`.',
  'g++': 'g++ not found: install it with `apt-get install g++` (static libstdc++ comes with it).',
  rustc: `rustc not found: install Rust (rustup) and the ${RUST_TARGET} target.`,
};

class BuildError extends Error {}

/** Returns an error line if `tool --version` does not run, else null. */
function checkCompiler(tool) {
  const r = spawnSync(tool, ['--version'], { encoding: 'utf8' });
  if (!r.error && r.status === 0) return null;
  const why = r.error ? r.error.code || r.error.message : `exit status ${r.status}`;
  return `build-guests: ERROR: ${INSTALL_HINTS[tool] || `${tool} not found`} (${tool} --version: ${why})`;
}

function mtime(p) {
  try {
    return fs.statSync(p).mtimeMs;
  } catch {
    return -1;
  }
}

/** Lists every (source, output, compiler, args) job, sorted by output name. */
export function listJobs() {
  const jobs = [];
  for (const name of fs.readdirSync(GUEST_DIR).sort()) {
    const ext = path.extname(name);
    const variants = VARIANTS[ext];
    if (!variants) continue;
    const src = path.join(GUEST_DIR, name);
    if (!fs.statSync(src).isFile()) continue;
    const base = path.basename(name, ext);
    const { flags = [], skip = [] } = SOURCE_OPTIONS[name] ?? {};
    for (const [suffix, tool, args] of variants) {
      if (skip.includes(suffix)) continue;
      const withFlags = (s, o) => [...flags, ...args(s, o)];
      jobs.push({ src, name: base + suffix, out: path.join(BUILD_DIR, base + suffix), tool, args: withFlags });
    }
  }
  return jobs;
}

/**
 * Builds all guests. Returns { buildDir, binaries: {name: absPath}, built, upToDate }.
 * Throws BuildError (with a readable message) on a missing compiler or a failed build.
 */
export function buildGuests({ force = false, log = (s) => process.stderr.write(`${s}\n`) } = {}) {
  const jobs = listJobs();
  if (jobs.length === 0) throw new BuildError(`build-guests: ERROR: no guest sources found in ${GUEST_DIR}`);
  // Check every compiler up front so a missing one fails before any work.
  const missing = [...new Set(jobs.map((j) => j.tool))].map(checkCompiler).filter(Boolean);
  if (missing.length) throw new BuildError(missing.join('\n'));

  fs.mkdirSync(BUILD_DIR, { recursive: true });
  const scriptTime = mtime(SCRIPT);
  const failures = [];
  let built = 0;
  let upToDate = 0;
  const binaries = {};
  for (const job of jobs) {
    binaries[job.name] = job.out;
    const outTime = mtime(job.out);
    if (!force && outTime > mtime(job.src) && outTime > scriptTime) {
      upToDate++;
      continue;
    }
    const tmp = `${job.out}.tmp-${process.pid}`;
    const args = job.args(path.basename(job.src), tmp);
    const cmd = `${job.tool} ${args.join(' ')}`.replace(tmp, job.out);
    // Run from the guest dir with a relative source path so diagnostics (and
    // any embedded source paths) do not depend on where the repo lives.
    const r = spawnSync(job.tool, args, { cwd: GUEST_DIR, encoding: 'utf8', maxBuffer: 64 << 20 });
    const diag = `${r.stdout || ''}${r.stderr || ''}`.trim();
    if (r.error || r.status !== 0) {
      fs.rmSync(tmp, { force: true });
      failures.push(`  ${job.name}: ${cmd}\n${r.error ? String(r.error) : `exit status ${r.status}`}\n${diag}`);
      continue;
    }
    if (diag) log(`build-guests: warnings from ${job.name}:\n${diag}`);
    fs.renameSync(tmp, job.out);
    built++;
  }
  if (failures.length) {
    throw new BuildError(`build-guests: ERROR: ${failures.length} build(s) failed:\n${failures.join('\n')}`);
  }
  return { buildDir: BUILD_DIR, binaries, built, upToDate };
}

const isMain = process.argv[1] && pathToFileURL(path.resolve(process.argv[1])).href === import.meta.url;
if (isMain) {
  const force = process.argv.includes('--force') || process.argv.includes('-f');
  try {
    const t0 = Date.now();
    const r = buildGuests({ force });
    const total = Object.keys(r.binaries).length;
    console.log(
      `build-guests: ${total} binaries in ${path.relative(process.cwd(), r.buildDir) || '.'} ` +
        `(${r.built} built, ${r.upToDate} up to date, ${((Date.now() - t0) / 1000).toFixed(1)}s)`,
    );
  } catch (e) {
    console.error(e instanceof BuildError ? e.message : e.stack || String(e));
    process.exit(1);
  }
}

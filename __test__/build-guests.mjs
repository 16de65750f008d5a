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
//   <base>.go   -> <base>        go build -trimpath -o <base> <base>.go, with CGO_ENABLED=0 (a
//                                static executable), GO111MODULE=off (a single file needs no
//                                go.mod), GOPROXY=off, GOTOOLCHAIN=local, GOENV=off and GOFLAGS
//                                empty (the user's settings do not apply), and GOCACHE/GOPATH in
//                                build/go-cache and build/go-path (works for any user, offline)
//   <dir>/Cargo.toml -> <dir>    cargo build --release --locked --target x86_64-unknown-linux-gnu
//                                --target-dir build/cargo-target, run in <dir> (its
//                                .cargo/config.toml makes it static; RUSTFLAGS and friends are
//                                removed from the environment so they cannot override that), then
//                                the package's binary is copied to build/<dir>. For guests that use
//                                crates: the first build fetches them from crates.io, later builds
//                                work offline from cargo's cache (Cargo.lock pins them).
//
// Some sources add flags to every variant or leave variants out (SOURCE_OPTIONS):
//   threads.c, threads_cpp.cpp  -pthread
//   signals.c, threadpool.c     -pthread
//   openmp.c                    -fopenmp; no -musl variant (gcc's libgomp.a is built
//                               against glibc)
//
// An output is rebuilt when it is missing or older than its source (for a cargo
// project: than any file in its directory) or than this script, so flag changes
// take effect. Outputs are written to a temporary name and renamed, so a failed
// build never leaves a "fresh" file.
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

/** The Go toolchain's environment: see the header. */
const GO_ENV = {
  CGO_ENABLED: '0',
  GO111MODULE: 'off',
  GOFLAGS: '',
  GOPROXY: 'off',
  GOTOOLCHAIN: 'local',
  GOENV: 'off',
  GOOS: 'linux',
  GOARCH: 'amd64',
  GOCACHE: path.join(BUILD_DIR, 'go-cache'),
  GOPATH: path.join(BUILD_DIR, 'go-path'),
};

/** Where cargo builds the cargo-project guests (shared, so crates are compiled once). */
const CARGO_TARGET_DIR = path.join(BUILD_DIR, 'cargo-target');

/** Variables that would override the rustflags of a cargo project's .cargo/config.toml. */
const RUSTFLAGS_VARS = ['RUSTFLAGS', 'CARGO_ENCODED_RUSTFLAGS', 'CARGO_BUILD_RUSTFLAGS', 'CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS'];

/** Variants per source extension: [suffix, compiler, args(src, out), env (added to the build's)]. */
const VARIANTS = {
  '.c': [
    ['-glibc', 'gcc', (src, out) => ['-O2', '-static', '-o', out, src, '-lm']],
    ['-pie', 'gcc', (src, out) => ['-O2', '-static-pie', '-fPIE', '-o', out, src, '-lm']],
    ['-musl', 'musl-gcc', (src, out) => ['-O2', '-static', '-o', out, src, '-lm']],
  ],
  '.cpp': [['', 'g++', (src, out) => ['-O2', '-static', '-o', out, src]]],
  '.rs': [['', 'rustc', (src, out) => ['--edition', '2021', '-O', '-C', 'target-feature=+crt-static', '--target', RUST_TARGET, '-o', out, src]]],
  '.go': [['', 'go', (src, out) => ['build', '-trimpath', '-o', out, src], GO_ENV]],
};

/**
 * Per-source additions: `flags` are put in front of every variant's arguments; variants whose
 * suffix is in `skip` are not built.
 */
const SOURCE_OPTIONS = {
  'threads.c': { flags: ['-pthread'] },
  'sockets.c': { flags: ['-pthread'] },
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
  cargo: `cargo not found: install Rust (rustup) and the ${RUST_TARGET} target.`,
  go: 'go not found: install it with `apt-get install golang-go` (Debian/Ubuntu; scripts/test-deps.sh does).',
};

/** How to ask a tool its version when `--version` is not it. */
const VERSION_ARGS = { go: ['version'] };

class BuildError extends Error {}

/** Returns an error line if `tool --version` does not run, else null. */
function checkCompiler(tool) {
  const args = VERSION_ARGS[tool] ?? ['--version'];
  const r = spawnSync(tool, args, { encoding: 'utf8' });
  if (!r.error && r.status === 0) return null;
  const why = r.error ? r.error.code || r.error.message : `exit status ${r.status}`;
  return `build-guests: ERROR: ${INSTALL_HINTS[tool] || `${tool} not found`} (${tool} ${args.join(' ')}: ${why})`;
}

function mtime(p) {
  try {
    return fs.statSync(p).mtimeMs;
  } catch {
    return -1;
  }
}

/** Every file below `dir` (recursively), except in `target/` directories. */
function filesBelow(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return e.name === 'target' ? [] : filesBelow(p);
    return e.isFile() ? [p] : [];
  });
}

/** The job of a cargo project in directory `dir` (its binary is named after its package). */
function cargoJob(dir) {
  const manifest = fs.readFileSync(path.join(dir, 'Cargo.toml'), 'utf8');
  const pkg = /^\[package\][^[]*?^name\s*=\s*"([^"]+)"/m.exec(manifest)?.[1];
  if (!pkg) throw new BuildError(`build-guests: ERROR: no [package] name in ${path.join(dir, 'Cargo.toml')}`);
  const name = path.basename(dir);
  const env = { ...process.env };
  for (const k of RUSTFLAGS_VARS) delete env[k];
  return {
    src: dir,
    inputs: filesBelow(dir),
    name,
    out: path.join(BUILD_DIR, name),
    tool: 'cargo',
    cwd: dir,
    args: () => ['build', '--release', '--locked', '--quiet', '--target', RUST_TARGET, '--target-dir', CARGO_TARGET_DIR],
    env,
    product: path.join(CARGO_TARGET_DIR, RUST_TARGET, 'release', pkg),
  };
}

/** Lists every (source, output, compiler, args) job, sorted by output name. */
export function listJobs() {
  const jobs = [];
  for (const name of fs.readdirSync(GUEST_DIR).sort()) {
    const src = path.join(GUEST_DIR, name);
    if (fs.existsSync(path.join(src, 'Cargo.toml'))) {
      jobs.push(cargoJob(src));
      continue;
    }
    const ext = path.extname(name);
    const variants = VARIANTS[ext];
    if (!variants) continue;
    if (!fs.statSync(src).isFile()) continue;
    const base = path.basename(name, ext);
    const { flags = [], skip = [] } = SOURCE_OPTIONS[name] ?? {};
    for (const [suffix, tool, args, env] of variants) {
      if (skip.includes(suffix)) continue;
      const withFlags = (s, o) => [...flags, ...args(s, o)];
      jobs.push({ src, name: base + suffix, out: path.join(BUILD_DIR, base + suffix), tool, args: withFlags, env: env && { ...process.env, ...env } });
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
    if (!force && (job.inputs ?? [job.src]).every((p) => outTime > mtime(p)) && outTime > scriptTime) {
      upToDate++;
      continue;
    }
    const tmp = `${job.out}.tmp-${process.pid}`;
    const args = job.args(path.basename(job.src), tmp);
    const cmd = `${job.tool} ${args.join(' ')}`.replace(tmp, job.out);
    // Run from the guest dir with a relative source path so diagnostics (and
    // any embedded source paths) do not depend on where the repo lives; cargo
    // runs in its project's directory.
    const r = spawnSync(job.tool, args, { cwd: job.cwd ?? GUEST_DIR, env: job.env, encoding: 'utf8', maxBuffer: 64 << 20 });
    const diag = `${r.stdout || ''}${r.stderr || ''}`.trim();
    if (r.error || r.status !== 0) {
      fs.rmSync(tmp, { force: true });
      failures.push(`  ${job.name}: ${cmd}\n${r.error ? String(r.error) : `exit status ${r.status}`}\n${diag}`);
      continue;
    }
    if (diag) log(`build-guests: warnings from ${job.name}:\n${diag}`);
    // A cargo build leaves its binary in the target dir: copy it (cargo may skip an up-to-date
    // build, so the copy is what makes the output newer than its inputs).
    if (job.product) fs.copyFileSync(job.product, tmp);
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

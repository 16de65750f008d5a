#!/usr/bin/env node
// Packs the two npm packages kvmbox is published as, and checks what goes into them:
//
//   kvmbox                  the SDK, CLI, generated loader, guest header (package.json "files")
//   kvmbox-linux-x64-gnu    npm/linux-x64-gnu/ plus the prebuilt native/kvmbox.linux-x64-gnu.node
//
//   node scripts/pack.mjs [--out DIR] [--json]    (npm run pack:npm) pack both into DIR (default:
//                                                 a new temp dir); prints the tarball paths
//   node scripts/pack.mjs --check                 (prepack) the files to pack are built and fresh
//   node scripts/pack.mjs --refuse-publish        (prepublishOnly) refuse `npm publish` of the repo
//
// Both packages are packed from staging copies, so the repo is never modified. The root package's
// manifest gets `optionalDependencies: { "kvmbox-linux-x64-gnu": <version> }` there — what
// `napi prepublish` adds at publish time. The repo's package.json does not declare it: npm ci
// fails on an optional dependency the lockfile cannot resolve (it is not on the registry until
// the first release), and it would make every dev install fetch the published binary. So publish
// the two tarballs this script makes, platform package first:
//   npm publish DIR/kvmbox-linux-x64-gnu-<v>.tgz && npm publish DIR/kvmbox-<v>.tgz

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const readJson = (p) => JSON.parse(fs.readFileSync(p, 'utf8'));

/** The root package's identity and its one platform package (napi.targets has one target). */
export function packageInfo(repo = REPO_DIR) {
  const root = readJson(path.join(repo, 'package.json'));
  const platformDir = path.join(repo, 'npm', 'linux-x64-gnu');
  const platform = readJson(path.join(platformDir, 'package.json'));
  const binary = platform.main; // kvmbox.linux-x64-gnu.node
  if (binary !== `${root.napi.binaryName}.linux-x64-gnu.node`) {
    throw new Error(`npm/linux-x64-gnu/package.json "main" is ${binary}, expected ${root.napi.binaryName}.linux-x64-gnu.node`);
  }
  if (platform.name !== `${root.name}-linux-x64-gnu`) {
    throw new Error(`npm/linux-x64-gnu/package.json "name" is ${platform.name}, expected ${root.name}-linux-x64-gnu`);
  }
  if (platform.version !== root.version) {
    throw new Error(`version mismatch: kvmbox is ${root.version}, npm/linux-x64-gnu is ${platform.version}; make them equal`);
  }
  return { root, platform, platformDir, binary, binaryPath: path.join(repo, 'native', binary) };
}

/** Files that must exist before packing, with what builds them. */
function requiredFiles(repo) {
  // tsconfig.json compiles src/**/*.ts to dist/ (rootDir src).
  const srcs = fs
    .readdirSync(path.join(repo, 'src'), { recursive: true })
    .map((f) => f.split(path.sep).join('/'))
    .filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'));
  const req = [
    ['native/index.js', 'npm run build:native'],
    ['native/index.d.ts', 'npm run build:native'],
    ['guest/include/kvmbox.h', null],
    ['dist/index.mjs', 'npm run build:ts', 'dist/index.d.ts'],
    ['dist/index.d.mts', 'npm run build:ts', 'dist/index.d.ts'],
    ['README.md', null],
    // The README links to docs/: they ship with it.
    ...fs
      .readdirSync(path.join(repo, 'docs'))
      .filter((f) => f.endsWith('.md'))
      .map((f) => [`docs/${f}`, null]),
  ];
  for (const f of srcs) {
    const base = f.slice(0, -3);
    req.push([`dist/${base}.js`, 'npm run build:ts', `src/${f}`], [`dist/${base}.d.ts`, 'npm run build:ts', `src/${f}`]);
  }
  return req;
}

/** Throws unless everything the root package ships is built, and dist/ is newer than src/. */
export function checkBuilt(repo = REPO_DIR) {
  const problems = [];
  for (const [rel, how, source] of requiredFiles(repo)) {
    const p = path.join(repo, rel);
    if (!fs.existsSync(p)) {
      problems.push(`${rel} is missing${how ? ` (run ${how})` : ''}`);
    } else if (source && fs.existsSync(path.join(repo, source)) && fs.statSync(p).mtimeMs < fs.statSync(path.join(repo, source)).mtimeMs) {
      problems.push(`${rel} is older than ${source} (run ${how})`);
    }
  }
  const { root, binaryPath } = packageInfo(repo);
  const loader = path.join(repo, 'native', 'index.js');
  if (fs.existsSync(loader) && !fs.readFileSync(loader, 'utf8').includes(`expected ${root.version} but got`)) {
    problems.push(`native/index.js was generated for another version than ${root.version} (run npm run build:native)`);
  }
  if (problems.length) throw new Error(`kvmbox is not ready to pack:\n  ${problems.join('\n  ')}`);
  return { binaryPath };
}

/**
 * The exact file list of the root tarball: the compiled SDK (.js + .d.ts of every src/*.ts, no
 * source maps), the ESM entry (dist/index.mjs + .d.mts), the generated loader, the guest header, README, package.json.
 */
export function expectedRootFiles(repo = REPO_DIR) {
  const files = requiredFiles(repo).map(([rel]) => rel);
  files.push('package.json');
  for (const f of fs.readdirSync(repo)) if (/^(LICEN[CS]E|LICEN[CS]E\..*)$/i.test(f)) files.push(f); // npm always adds it
  return files.sort();
}

export const expectedPlatformFiles = (binary) => ['README.md', binary, 'package.json'].sort();

function compareFiles(what, actual, expected) {
  const a = new Set(actual);
  const e = new Set(expected);
  const extra = [...a].filter((f) => !e.has(f));
  const missing = [...e].filter((f) => !a.has(f));
  if (extra.length || missing.length) {
    throw new Error(
      `${what}: unexpected file list` +
        (extra.length ? `\n  not meant to be shipped: ${extra.join(', ')}` : '') +
        (missing.length ? `\n  missing: ${missing.join(', ')}` : ''),
    );
  }
}

function npmPack(cwd, args) {
  const out = execFileSync('npm', ['pack', '--json', '--ignore-scripts', ...args], {
    cwd,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, npm_config_loglevel: 'error' },
  });
  const [info] = JSON.parse(out);
  return info;
}

/** `npm pack --dry-run` of the repo root: the files package.json "files" selects. */
export function dryRunRootFiles(repo = REPO_DIR) {
  return npmPack(repo, ['--dry-run'])
    .files.map((f) => f.path)
    .sort();
}

function copy(from, to) {
  fs.mkdirSync(path.dirname(to), { recursive: true });
  fs.copyFileSync(from, to);
  fs.chmodSync(to, fs.statSync(from).mode & 0o777);
}

/**
 * Packs both packages into `outDir` (created if needed; default a new temp dir) and checks
 * their file lists. Returns { outDir, root, platform } with the tarball paths and file lists.
 */
export function packAll({ outDir, repo = REPO_DIR, log = () => {} } = {}) {
  const { binaryPath } = checkBuilt(repo);
  const { root, platformDir, binary } = packageInfo(repo);
  if (!fs.existsSync(binaryPath)) throw new Error(`${path.relative(repo, binaryPath)} is missing (run npm run build:native)`);

  // What `npm pack` in the repo would ship must be exactly the intended files.
  const rootFiles = dryRunRootFiles(repo);
  compareFiles('npm pack --dry-run (kvmbox)', rootFiles, expectedRootFiles(repo));

  outDir = path.resolve(outDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'kvmbox-pack-')));
  fs.mkdirSync(outDir, { recursive: true });
  const stage = fs.mkdtempSync(path.join(os.tmpdir(), 'kvmbox-stage-'));
  try {
    // Platform package: its directory plus the prebuilt binary.
    const pstage = path.join(stage, 'linux-x64-gnu');
    for (const f of fs.readdirSync(platformDir)) if (!f.endsWith('.node')) copy(path.join(platformDir, f), path.join(pstage, f));
    copy(binaryPath, path.join(pstage, binary));
    const platformInfo = npmPack(pstage, ['--pack-destination', outDir]);
    const platformFiles = platformInfo.files.map((f) => f.path).sort();
    compareFiles('kvmbox-linux-x64-gnu tarball', platformFiles, expectedPlatformFiles(binary));

    // Root package: the dry-run's files, with the platform package as optional dependency.
    const rstage = path.join(stage, 'root');
    for (const f of rootFiles) copy(path.join(repo, f), path.join(rstage, f));
    const manifest = { ...root };
    manifest.optionalDependencies = { ...(root.optionalDependencies ?? {}), [platformInfo.name]: root.version };
    // Repo-only guards (their script is not shipped).
    manifest.scripts = { ...root.scripts };
    delete manifest.scripts.prepack;
    delete manifest.scripts.prepublishOnly;
    fs.writeFileSync(path.join(rstage, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`);
    const rootInfo = npmPack(rstage, ['--pack-destination', outDir]);
    const packedRootFiles = rootInfo.files.map((f) => f.path).sort();
    compareFiles('kvmbox tarball', packedRootFiles, rootFiles);

    const result = {
      outDir,
      root: { tarball: path.join(outDir, rootInfo.filename), files: packedRootFiles, size: rootInfo.size },
      platform: { tarball: path.join(outDir, platformInfo.filename), files: platformFiles, size: platformInfo.size },
    };
    log(`${result.platform.tarball}  (${platformFiles.length} files, ${platformInfo.size} bytes)`);
    log(`${result.root.tarball}  (${packedRootFiles.length} files, ${rootInfo.size} bytes)`);
    return result;
  } finally {
    fs.rmSync(stage, { recursive: true, force: true });
  }
}

function main(argv) {
  if (argv.includes('--check')) {
    checkBuilt();
    return;
  }
  if (argv.includes('--refuse-publish')) {
    throw new Error(
      'do not `npm publish` the repo directory: its package.json does not declare the platform package. ' +
        'Run `npm run pack:npm -- --out DIR`, then publish the tarballs, platform package first: ' +
        'npm publish DIR/kvmbox-linux-x64-gnu-<version>.tgz && npm publish DIR/kvmbox-<version>.tgz',
    );
  }
  const i = argv.indexOf('--out');
  const outDir = i >= 0 ? argv[i + 1] : undefined;
  const json = argv.includes('--json');
  const r = packAll({ outDir, log: json ? () => {} : (s) => console.log(s) });
  if (json) console.log(JSON.stringify(r, null, 2));
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    main(process.argv.slice(2));
  } catch (e) {
    console.error(`pack: ${e.message}`);
    process.exit(1);
  }
}

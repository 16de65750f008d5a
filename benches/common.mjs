// Helpers shared by the benchmark scripts: the kvmbox build, the KVM check, guest compilation
// and the median every table reports.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import nodeVm from 'node:vm';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const BUILD = path.join(ROOT, 'benches', 'build');

/** The CommonJS build in dist/ (`npm run build` first). */
export const kvmbox = createRequire(import.meta.url)('../dist');

/** Benchmarks measure KVM; without it they exit non-zero instead of printing meaningless rows. */
export function requireKvm() {
  const pr = kvmbox.probe();
  if (!pr.available) {
    console.error(`KVM unavailable: ${pr.error ?? 'unknown reason'}`);
    process.exit(1);
  }
  return pr;
}

/**
 * Compile `src` (default benches/<name>.c) into benches/build/<name> (`compiler` -O2 -static,
 * gcc by default) unless it is up to date.
 */
export function compileGuest(name, src = path.join(ROOT, 'benches', `${name}.c`), compiler = 'gcc') {
  fs.mkdirSync(BUILD, { recursive: true });
  const out = path.join(BUILD, name);
  if (!fs.existsSync(out) || fs.statSync(out).mtimeMs < fs.statSync(src).mtimeMs) {
    const r = spawnSync(compiler, ['-O2', '-static', '-o', out, src], { stdio: 'inherit' });
    if (r.status !== 0) process.exit(1);
  }
  return out;
}

v8.setFlagsFromString('--expose-gc');
const gc = nodeVm.runInNewContext('gc');

/** Untimed, between samples: collect garbage from earlier ones and let the event loop turn. */
export async function settle() {
  gc();
  await new Promise(setImmediate);
}

export const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

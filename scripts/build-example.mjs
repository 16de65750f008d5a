#!/usr/bin/env node
// Builds the example server: its guest examples/render.c (gcc -O2 -static) and
// examples/http-server.ts (tsc -p examples). `node scripts/build-example.mjs`, or import
// buildExample() (the load test and the server test do).
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Build both; the guest goes to `render` (default examples/render). Throws with the tools' output on failure. */
export function buildExample(render = path.join(ROOT, 'examples', 'render')) {
  for (const [cmd, args] of [
    ['gcc', ['-O2', '-static', '-o', render, path.join(ROOT, 'examples', 'render.c')]],
    [path.join(ROOT, 'node_modules', '.bin', 'tsc'), ['-p', path.join(ROOT, 'examples')]],
  ]) {
    const r = spawnSync(cmd, args, { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.error ?? ''}${r.stdout}${r.stderr}`);
  }
  return render;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) buildExample();

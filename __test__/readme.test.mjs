// The README's examples, so they cannot drift from the code: its C guests are compiled with the
// command lines written in them; the tutorial's TypeScript snippets (one ES module, in order) are
// type-checked (strict) and run against those guests — its "// 5"-style result comments become
// assertions — and every other TypeScript block is type-checked.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import test from 'ava';

import { CLI, REPO_DIR, requireKvm, tempDir } from './helpers.mjs';

requireKvm(test);

const README = fs.readFileSync(path.join(REPO_DIR, 'README.md'), 'utf8');
const DIST = path.join(REPO_DIR, 'dist', 'index.mjs');
const TSC = path.join(REPO_DIR, 'node_modules', 'typescript', 'bin', 'tsc');

/** Fenced code blocks: { lang, code, line, section } (section: the `## ` heading above it). */
function blocks(md) {
  const out = [];
  let section = '';
  const lines = md.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].startsWith('## ')) section = lines[i].slice(3);
    const open = /^```(\w*)\s*$/.exec(lines[i]);
    if (!open) continue;
    const start = i;
    const body = [];
    for (i++; i < lines.length && !lines[i].startsWith('```'); i++) body.push(lines[i]);
    out.push({ lang: open[1], code: body.join('\n'), line: start + 1, section });
  }
  return out;
}

const all = blocks(README);
const tutorial = (lang) => all.filter((b) => b.lang === lang && b.section.startsWith('A five-minute tutorial'));

/** The kvmbox import of a snippet, pointed at this checkout's build. */
const localImports = (code) => code.replace(/from 'kvmbox'/g, `from ${JSON.stringify(DIST)}`);

/**
 * `expr // 5 …` on a line of its own becomes an assertion that expr (awaited if it was) equals
 * the number in the comment.
 */
function withAssertions(code) {
  return code
    .split('\n')
    .map((line) => {
      const m = /^(\s*)((?:await )?[\w.]+\(.*\))\s+\/\/ (-?\d+)\b/.exec(line);
      return m ? `${m[1]}assertEqual(${m[2]}, ${m[3]}, ${JSON.stringify(line.trim())})` : line;
    })
    .join('\n');
}

function tsc(dir, files) {
  const r = spawnSync(
    process.execPath,
    [
      TSC,
      '--strict',
      '--target',
      'es2022',
      '--module',
      'nodenext',
      '--moduleResolution',
      'nodenext',
      '--types',
      'node',
      '--typeRoots',
      path.join(REPO_DIR, 'node_modules', '@types'),
      '--skipLibCheck',
      '--outDir',
      path.join(dir, 'out'),
      ...files,
    ],
    { cwd: dir, encoding: 'utf8' },
  );
  return r.stdout + r.stderr;
}

test('the C guests compile with the commands written in them', (t) => {
  const dir = tempDir();
  const cflags = spawnSync(process.execPath, [CLI, 'cflags'], { encoding: 'utf8' }).stdout.trim();
  const guests = all.filter((b) => b.lang === 'c');
  t.true(guests.length >= 2);
  for (const g of guests) {
    const m = /^\/\/ (\w+\.c) — (gcc .*)$/m.exec(g.code);
    t.truthy(m, `README line ${g.line}: a C block starts with "// name.c — gcc …"`);
    fs.writeFileSync(path.join(dir, m[1]), g.code);
    const args = m[2].replace('$(npx kvmbox cflags)', cflags).split(/\s+/).slice(1);
    const r = spawnSync('gcc', args, { cwd: dir, encoding: 'utf8' });
    t.is(r.status, 0, `README line ${g.line}: ${m[2]}\n${r.stderr}`);
  }
});

test('the tutorial type-checks and runs as written, its results as its comments say', (t) => {
  const dir = tempDir();
  const cflags = spawnSync(process.execPath, [CLI, 'cflags'], { encoding: 'utf8' }).stdout.trim();
  for (const g of tutorial('c')) {
    const [, file, cmd] = /^\/\/ (\w+\.c) — (gcc .*)$/m.exec(g.code);
    fs.writeFileSync(path.join(dir, file), g.code);
    t.is(spawnSync('gcc', cmd.replace('$(npx kvmbox cflags)', cflags).split(/\s+/).slice(1), { cwd: dir }).status, 0);
  }
  const snippets = tutorial('ts');
  t.true(snippets.length >= 4, 'the tutorial has its TypeScript steps');
  const prelude = `function assertEqual(actual: unknown, expected: unknown, what: string) {
  if (actual !== expected) throw new Error(\`\${what}: got \${String(actual)}\`)
}\n`;
  const module = prelude + snippets.map((b) => `// README line ${b.line}\n${withAssertions(localImports(b.code))}`).join('\n');
  fs.writeFileSync(path.join(dir, 'tutorial.mts'), module);
  t.is(tsc(dir, ['tutorial.mts']), '', 'tsc --strict');
  const r = spawnSync(process.execPath, [path.join(dir, 'out', 'tutorial.mjs')], { cwd: dir, encoding: 'utf8', timeout: 120_000 });
  t.is(r.status, 0, r.stderr);
  t.is(r.stdout, 'hello, kvmbox\n\ntrue\ntrue\nINTERRUPTED\nINTERRUPTED\n');
  t.true(module.split('assertEqual(').length - 2 >= 5, 'result comments became assertions');
});

test('every other TypeScript block type-checks', (t) => {
  const dir = tempDir();
  const others = all.filter((b) => b.lang === 'ts' && !b.section.startsWith('A five-minute tutorial'));
  t.true(others.length >= 2);
  const files = others.map((b, i) => {
    const imports = /from 'kvmbox'/.test(b.code) ? '' : `import { Machine, Pool, Snapshot } from ${JSON.stringify(DIST)}\n`;
    // Fragments may use a request and another snapshot from around them.
    const free = `declare const req: string\ndeclare const otherSnap: InstanceType<typeof Snapshot>\n`;
    const name = `block${i}.mts`;
    const code = localImports(b.code);
    const needs = /\breq\b|\botherSnap\b/.test(code)
      ? imports || /\bSnapshot\b/.test(code)
        ? free
        : `import { Snapshot } from ${JSON.stringify(DIST)}\n${free}`
      : '';
    fs.writeFileSync(path.join(dir, name), `// README line ${b.line}\n${imports}${needs}${code}\nexport {}\n`);
    return name;
  });
  t.is(tsc(dir, files), '', 'tsc --strict');
});

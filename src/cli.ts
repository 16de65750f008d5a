#!/usr/bin/env node
/**
 * kvmbox CLI: `kvmbox run [options] prog [args…]` runs a static Linux program in a KVM
 * sandbox with stdin/stdout/stderr passed through, and exits with the guest's exit code.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'
import { parseArgs } from 'node:util'
import { GuestFaultError, KvmboxError, TimeoutError } from './errors'
import type { RunResult } from './machine'
import { Machine, probe, systemLibraries } from './machine'

const HELP = `Usage:
  kvmbox run [options] PROGRAM [ARGS...]   run a static x86-64 Linux program in a KVM sandbox
  kvmbox probe                             report whether KVM is usable and which backend serves it
  kvmbox cflags                            print the compiler flags for guests using kvmbox.h
                                           (gcc -O2 -static $(kvmbox cflags) guest.c -o guest)
  kvmbox --version                         print kvmbox's version
  kvmbox --help                            show this help

Options for run (also as --option=value):
  --timeout MS        stop the guest after MS milliseconds (exit status 124)
  --memory MIB        guest memory in MiB (default 128)
  --allow-read PATH   let the guest open PATH read-only (a file, or a directory and all below it);
                      may be repeated
  --allow-system-libs let the guest read what a dynamic executable's loader needs (ld.so,
                      /etc/ld.so.cache, the library directories)
  --mount GUEST=SRC   a writable in-memory directory at GUEST: SRC 'memory' for an empty one, or a
                      host directory shown there read-only underneath (writes stay in memory);
                      may be repeated. /tmp is one by default. Nothing is written to the host.
  --mount-writable GUEST=HOSTDIR
                      let the guest change the host directory HOSTDIR, mounted at GUEST (an explicit
                      opt-in: writes reach the host; paths stay beneath HOSTDIR); may be repeated
  --fs-limit MIB      most MiB the in-memory files may hold (default 64)
  --env KEY=VALUE     set a variable in the guest's environment (may be repeated)
  --inherit-env       pass this process's whole environment to the guest
  --trace             print every syscall the guest makes to stderr
  --hugepages         back guest memory with huge pages (hugetlbfs if reserved, else THP)
  --seccomp           run the guest on a thread under kvmbox's seccomp filter (see the README)
  --gdb PORT          wait for gdb on 127.0.0.1:PORT before running (gdb PROG -ex 'target remote :PORT')
  --json              capture the guest's output and print the result as one JSON object:
                      {status, exitCode, signal?, stdout, stderr, ..., error?}
  --                  end of options (the next word is the PROGRAM even if it starts with -)

Options after PROGRAM are the program's own.

Exit status: the guest's own; 128+N if it killed itself with signal N; for a CPU fault 128 + the
signal Linux sends for it (139 SIGSEGV, 132 SIGILL, 136 SIGFPE, 133 SIGTRAP, 135 SIGBUS);
124 on timeout; 125 if kvmbox itself failed (bad ELF, missing file, no KVM, bad options).`

const RUN_OPTIONS = {
  timeout: { type: 'string' },
  memory: { type: 'string' },
  'allow-read': { type: 'string', multiple: true },
  'allow-system-libs': { type: 'boolean' },
  mount: { type: 'string', multiple: true },
  'mount-writable': { type: 'string', multiple: true },
  'fs-limit': { type: 'string' },
  env: { type: 'string', multiple: true },
  'inherit-env': { type: 'boolean' },
  trace: { type: 'boolean' },
  hugepages: { type: 'boolean' },
  seccomp: { type: 'boolean' },
  gdb: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const

function fail(msg: string): never {
  process.stderr.write(`kvmbox: ${msg}\n`)
  process.exit(125)
}

function version(): string {
  const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8')) as { version: string }
  return pkg.version
}

/** Split `run`'s words into kvmbox's options and the program with its own arguments. */
function splitRun(argv: string[]) {
  // Find where the program starts: the first word that is neither an option nor an option's
  // value (or the word after `--`); then parse what comes before it strictly.
  const { tokens } = parseArgs({ args: argv, options: RUN_OPTIONS, allowPositionals: true, strict: false, tokens: true })
  const first = tokens.find((t) => t.kind === 'positional' || t.kind === 'option-terminator')
  const cut = first?.index ?? argv.length
  try {
    const { values } = parseArgs({ args: argv.slice(0, cut), options: RUN_OPTIONS, strict: true })
    return { values, program: first?.kind === 'option-terminator' ? argv.slice(cut + 1) : argv.slice(cut) }
  } catch (e) {
    fail(`${(e as Error).message.replace(/\. To specify .*$/s, '')} (see kvmbox --help)`)
  }
}

function number(flag: string, v: string | undefined, ok: (n: number) => boolean, what: string): number | undefined {
  if (v === undefined) return undefined
  const n = Number(v)
  if (v.trim() === '' || !ok(n)) fail(`--${flag} needs ${what}`)
  return n
}

function jsonResult(r: RunResult | undefined, e?: unknown): string {
  const text = (b?: Buffer) => b?.toString('utf8') ?? ''
  if (r) {
    const signal = r.status === 'signaled' ? { signal: r.signal, signalNumber: r.signalNumber } : {}
    const exitCode = r.status === 'paused' ? undefined : r.exitCode
    return JSON.stringify({
      status: r.status,
      exitCode,
      ...signal,
      stdout: text(r.stdout),
      stderr: text(r.stderr),
      stdoutTruncated: r.stdoutTruncated,
      stderrTruncated: r.stderrTruncated,
    })
  }
  const k = e as KvmboxError
  const fault =
    e instanceof GuestFaultError
      ? { vector: e.vector, vectorName: e.vectorName, rip: `0x${e.rip.toString(16)}`, address: `0x${e.address.toString(16)}`, signal: e.signal }
      : {}
  return JSON.stringify({
    status: 'error',
    error: { code: k.code, name: k.name, message: k.message, ...fault },
    stdout: text(k.stdout),
    stderr: text(k.stderr),
  })
}

async function runCommand(argv: string[]): Promise<number> {
  const { values, program } = splitRun(argv)
  if (values.help) {
    process.stdout.write(`${HELP}\n`)
    return 0
  }
  const timeout = number('timeout', values.timeout, (n) => Number.isFinite(n) && n > 0, 'a positive number of milliseconds')
  const mib = number('memory', values.memory, (n) => Number.isSafeInteger(n) && n > 0, 'a positive whole number of MiB')
  const fsMib = number('fs-limit', values['fs-limit'], (n) => Number.isSafeInteger(n) && n >= 0, 'a whole number of MiB')
  const mounts: Record<string, { memory: true } | { host: string; writable?: boolean }> = {}
  for (const m of values.mount ?? []) {
    const eq = m.indexOf('=')
    if (eq <= 0 || eq === m.length - 1) fail('--mount needs GUEST=memory or GUEST=HOSTDIR')
    const src = m.slice(eq + 1)
    mounts[m.slice(0, eq)] = src === 'memory' ? { memory: true } : { host: src }
  }
  for (const m of values['mount-writable'] ?? []) {
    const eq = m.indexOf('=')
    if (eq <= 0 || eq === m.length - 1) fail('--mount-writable needs GUEST=HOSTDIR')
    mounts[m.slice(0, eq)] = { host: m.slice(eq + 1), writable: true }
  }
  const gdbPort = number('gdb', values.gdb, (n) => Number.isInteger(n) && n >= 0 && n <= 65535, 'a TCP port number')
  const env: Record<string, string> = {}
  for (const kv of values.env ?? []) {
    const eq = kv.indexOf('=')
    if (eq <= 0) fail('--env needs KEY=VALUE')
    env[kv.slice(0, eq)] = kv.slice(eq + 1)
  }
  if (values['inherit-env']) for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !(k in env)) env[k] = v
  const prog = program[0]
  if (prog === undefined) fail('run needs a PROGRAM (see kvmbox --help)')
  const seccomp = values.seccomp ?? false
  const json = values.json ?? false
  if (seccomp && gdbPort !== undefined) fail('--gdb cannot be combined with --seccomp (debugging runs on the main thread)')
  const output = json ? 'pipe' : 'inherit'
  let vm: Machine
  try {
    vm = Machine.fromFile(prog, {
      args: program,
      env,
      memory: mib === undefined ? undefined : mib * 1024 * 1024,
      timeout,
      trace: values.trace ?? false,
      hugepages: values.hugepages ?? false,
      seccomp,
      allowRead: [...(values['allow-system-libs'] ? systemLibraries() : []), ...(values['allow-read'] ?? [])],
      mounts,
      fsLimit: fsMib === undefined ? undefined : fsMib * 1024 * 1024,
      stdin: 'inherit',
      stdout: output,
      stderr: output,
    })
  } catch (e) {
    if (json && e instanceof KvmboxError) process.stdout.write(`${jsonResult(undefined, e)}\n`)
    if (e instanceof KvmboxError) fail(e.message)
    throw e
  }
  try {
    if (gdbPort !== undefined) {
      const port = vm.debug({ port: gdbPort })
      process.stderr.write(`kvmbox: waiting for gdb on 127.0.0.1:${port} (gdb ${prog} -ex 'target remote :${port}')\n`)
    }
    // With --seccomp the guest runs on its own, filtered vCPU thread.
    const run = () => (seccomp ? vm.runAsync() : vm.run())
    let r = await run()
    const out: Buffer[] = [r.stdout]
    const err: Buffer[] = [r.stderr]
    // A guest built for host calls pauses once initialized; on the command line, just go on.
    while (r.status === 'paused') {
      r = await run()
      out.push(r.stdout)
      err.push(r.stderr)
    }
    if (json) process.stdout.write(`${jsonResult({ ...r, stdout: Buffer.concat(out), stderr: Buffer.concat(err) })}\n`)
    return r.exitCode
  } catch (e) {
    if (!(e instanceof KvmboxError)) throw e
    if (json) process.stdout.write(`${jsonResult(undefined, e)}\n`)
    else process.stderr.write(`kvmbox: ${e.message}\n`)
    if (e instanceof TimeoutError) return 124
    if (e instanceof GuestFaultError) return 128 + e.signalNumber
    return 125
  }
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv
  if (cmd === undefined || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(`${HELP}\n`)
    return cmd === undefined ? 2 : 0
  }
  if (cmd === '--version' || cmd === '-v' || cmd === 'version') {
    process.stdout.write(`${version()}\n`)
    return 0
  }
  if (cmd === 'run') return runCommand(rest)
  if (cmd === 'cflags') {
    // The header ships in the package: guest/include/kvmbox.h next to dist/.
    process.stdout.write(`-I${path.join(__dirname, '..', 'guest', 'include')}\n`)
    return 0
  }
  if (cmd === 'probe') {
    const p = probe()
    process.stdout.write(`${JSON.stringify(p, null, 2)}\n`)
    return p.available ? 0 : 1
  }
  fail(`unknown command ${cmd} (see kvmbox --help)`)
}

void main(process.argv.slice(2)).then((code) => {
  process.exitCode = code
})

#!/usr/bin/env node
/**
 * kvmbox CLI: `kvmbox run [options] prog [args…]` runs a static Linux program in a KVM
 * sandbox with stdin/stdout/stderr passed through, and exits with the guest's exit code.
 */
import { Machine, probe } from './machine'
import { GuestFaultError, KvmboxError, TimeoutError } from './errors'

const HELP = `Usage:
  kvmbox run [options] PROGRAM [ARGS...]   run a static x86-64 Linux program in a KVM sandbox
  kvmbox probe                             report whether KVM is usable and which backend serves it
  kvmbox --help                            show this help

Options for run:
  --timeout MS        stop the guest after MS milliseconds (exit status 124)
  --memory MIB        guest memory in MiB (default 128)
  --allow-read PATH   let the guest open PATH read-only (a file, or a directory and all below it);
                      may be repeated
  --env KEY=VALUE     set a variable in the guest's environment (may be repeated)
  --inherit-env       pass this process's whole environment to the guest
  --trace             print every syscall the guest makes to stderr
  --hugepages         back guest memory with huge pages (hugetlbfs if reserved, else THP)
  --seccomp           run the guest on a thread under kvmbox's seccomp filter (see the README)
  --gdb PORT          wait for gdb on 127.0.0.1:PORT before running (gdb PROG -ex 'target remote :PORT')
  --                  end of options

Exit status: the guest's own; 128+N if it killed itself with signal N; for a CPU fault the
status a shell shows for the matching signal (139 SIGSEGV, 132 SIGILL, 136 SIGFPE, 133 SIGTRAP);
124 on timeout; 125 if kvmbox itself failed (bad ELF, no KVM, bad options).`

function fail(msg: string): never {
  process.stderr.write(`kvmbox: ${msg}\n`)
  process.exit(125)
}

function faultStatus(e: GuestFaultError): number {
  switch (e.vector) {
    case 0:
    case 16:
    case 19:
      return 128 + 8 // SIGFPE
    case 6:
      return 128 + 4 // SIGILL
    case 1:
    case 3:
      return 128 + 5 // SIGTRAP
    case 17:
      return 128 + 7 // SIGBUS
    default:
      return 128 + 11 // SIGSEGV
  }
}

async function runCommand(argv: string[]): Promise<number> {
  let timeout: number | undefined
  let memory: number | undefined
  let trace = false
  let hugepages = false
  let seccomp = false
  let gdbPort: number | undefined
  const allowRead: string[] = []
  const env: Record<string, string> = {}
  let i = 0
  const value = (flag: string) => {
    const v = argv[++i]
    if (v === undefined) fail(`${flag} needs a value`)
    return v
  }
  for (; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--') {
      i++
      break
    } else if (a === '--timeout') {
      timeout = Number(value(a))
      if (!Number.isFinite(timeout) || timeout <= 0) fail('--timeout needs a positive number of milliseconds')
    } else if (a === '--memory') {
      const mib = Number(value(a))
      if (!Number.isInteger(mib) || mib <= 0) fail('--memory needs a positive whole number of MiB')
      memory = mib * 1024 * 1024
    } else if (a === '--allow-read') {
      allowRead.push(value(a))
    } else if (a === '--env') {
      const kv = value(a)
      const eq = kv.indexOf('=')
      if (eq <= 0) fail('--env needs KEY=VALUE')
      env[kv.slice(0, eq)] = kv.slice(eq + 1)
    } else if (a === '--inherit-env') {
      for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !(k in env)) env[k] = v
    } else if (a === '--trace') {
      trace = true
    } else if (a === '--hugepages') {
      hugepages = true
    } else if (a === '--seccomp') {
      seccomp = true
    } else if (a === '--gdb') {
      gdbPort = Number(value(a))
      if (!Number.isInteger(gdbPort) || gdbPort < 0 || gdbPort > 65535) fail('--gdb needs a TCP port number')
    } else if (a === '--help' || a === '-h') {
      process.stdout.write(HELP + '\n')
      return 0
    } else if (a.startsWith('-')) {
      fail(`unknown option ${a} (see kvmbox --help)`)
    } else {
      break
    }
  }
  const prog = argv[i]
  if (prog === undefined) fail('run needs a PROGRAM (see kvmbox --help)')
  const args = argv.slice(i)
  if (seccomp && gdbPort !== undefined) fail('--gdb cannot be combined with --seccomp (debugging runs on the main thread)')
  try {
    const vm = Machine.fromFile(prog, { args, env, memory, timeout, trace, hugepages, seccomp, allowRead, stdin: 'inherit', stdout: 'inherit', stderr: 'inherit' })
    if (gdbPort !== undefined) {
      const port = vm.debug({ port: gdbPort })
      process.stderr.write(`kvmbox: waiting for gdb on 127.0.0.1:${port} (gdb ${prog} -ex 'target remote :${port}')\n`)
    }
    // With --seccomp the guest runs on its own, filtered vCPU thread.
    const run = () => (seccomp ? vm.runAsync() : vm.run())
    let r = await run()
    // A guest built for host calls pauses once initialized; on the command line, just go on.
    while (r.status === 'paused') r = await run()
    return r.exitCode
  } catch (e) {
    if (e instanceof TimeoutError) {
      process.stderr.write(`kvmbox: ${e.message}\n`)
      return 124
    }
    if (e instanceof GuestFaultError) {
      process.stderr.write(`kvmbox: ${e.message}\n`)
      return faultStatus(e)
    }
    if (e instanceof KvmboxError) fail(e.message)
    throw e
  }
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv
  if (cmd === undefined || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(HELP + '\n')
    return cmd === undefined ? 2 : 0
  }
  if (cmd === 'run') return runCommand(rest)
  if (cmd === 'probe') {
    const p = probe()
    process.stdout.write(JSON.stringify(p, null, 2) + '\n')
    return p.available ? 0 : 1
  }
  fail(`unknown command ${cmd} (see kvmbox --help)`)
}

void main(process.argv.slice(2)).then((code) => {
  process.exitCode = code
})

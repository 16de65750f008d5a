import { constants as osConstants } from 'node:os'
import * as path from 'node:path'

import native = require('./native')
import { InvalidArgumentError, InvalidStateError, fromRecord, translateNativeError } from './errors'

/** Where guest output goes: captured into the result, written to this process's own fd, or streamed. */
export type OutputOption = 'pipe' | 'inherit' | ((chunk: Buffer) => void)

export interface MachineOptions {
  /** Full argv, argv[0] included. Default: `[path]` (or `['/guest']` for buffers). */
  args?: string[]
  /** Environment. Default: empty (the guest sees none of the host's environment). */
  env?: Record<string, string> | string[]
  /** Maximum guest memory in bytes (address space; untouched memory costs nothing). Default 128 MiB, min 8 MiB. */
  memory?: number
  /** Timeout for `run()` in milliseconds. Default: none. */
  timeout?: number
  /** Standard input: the bytes to serve (then EOF), or 'inherit' to read this process's stdin. Default: empty. */
  stdin?: string | Uint8Array | 'inherit'
  /** Default 'pipe'. */
  stdout?: OutputOption
  /** Default 'pipe'. */
  stderr?: OutputOption
  /** Host files or directories (with everything below them) the guest may open read-only. */
  allowRead?: string[]
  /** Print every syscall the guest makes to this process's stderr. */
  trace?: boolean
  /** Absolute path the guest sees as its own executable (readlink /proc/self/exe). */
  exePath?: string
  /** Cap on captured stdout and stderr, each, in bytes (default 64 MiB); the rest is dropped. */
  outputLimit?: number
}

interface RunResultBase {
  /** Captured stdout ('pipe' mode; empty otherwise). */
  stdout: Buffer
  stderr: Buffer
  /** True if captured output hit `outputLimit` and the rest was dropped. */
  stdoutTruncated: boolean
  stderrTruncated: boolean
}

/** The guest called exit/exit_group. */
export interface ExitedResult extends RunResultBase {
  status: 'exited'
  exitCode: number
}

/** The guest killed itself with a signal (abort() → SIGABRT); exitCode is 128 + signal, as a shell reports it. */
export interface SignaledResult extends RunResultBase {
  status: 'signaled'
  signal: NodeJS.Signals | string
  signalNumber: number
  exitCode: number
}

export type RunResult = ExitedResult | SignaledResult

export interface RunOptions {
  /** Overrides the machine's timeout for this run (ms; 0 = none). */
  timeout?: number
}

/** What the host's KVM is and whether kvmbox can use it. */
export interface ProbeResult {
  available: boolean
  /** 'pvm' | 'vmx' | 'svm' | 'unknown': the kernel module serving /dev/kvm. */
  backend: string
  error?: string
  /** Observed from a real syscall exit: true where `syscall` stays in ring 3 (PVM). */
  syscallInRing3?: boolean
}

export function probe(): ProbeResult {
  return native.probe()
}

// First name wins: SIGABRT rather than its alias SIGIOT.
const signalNames = new Map<number, string>()
for (const [name, n] of Object.entries(osConstants.signals)) if (!signalNames.has(n as number)) signalNames.set(n as number, name)

function toNativeOptions(opts: MachineOptions, defaultArgv0: string): native.NativeOptions {
  const env = opts.env === undefined ? [] : Array.isArray(opts.env) ? opts.env : Object.entries(opts.env).map(([k, v]) => `${k}=${v}`)
  for (const e of env) {
    if (typeof e !== 'string' || e.includes('\0')) throw new InvalidArgumentError(`environment entries must be strings without NUL bytes`)
  }
  const args = opts.args ?? [defaultArgv0]
  for (const a of args) {
    if (typeof a !== 'string' || a.includes('\0')) throw new InvalidArgumentError(`arguments must be strings without NUL bytes`)
  }
  if (opts.memory !== undefined && (!Number.isSafeInteger(opts.memory) || opts.memory <= 0)) {
    throw new InvalidArgumentError(`memory must be a positive integer number of bytes, got ${opts.memory}`)
  }
  if (opts.outputLimit !== undefined && (!Number.isSafeInteger(opts.outputLimit) || opts.outputLimit < 0)) {
    throw new InvalidArgumentError(`outputLimit must be a non-negative integer number of bytes, got ${opts.outputLimit}`)
  }
  if (opts.timeout !== undefined && (!Number.isFinite(opts.timeout) || opts.timeout < 0)) {
    throw new InvalidArgumentError(`timeout must be a non-negative number of milliseconds, got ${opts.timeout}`)
  }
  const mode = (o: OutputOption | undefined) => (o === undefined ? 'pipe' : typeof o === 'function' ? 'callback' : o)
  for (const [name, o] of [['stdout', opts.stdout], ['stderr', opts.stderr]] as const) {
    const m = mode(o)
    if (m !== 'pipe' && m !== 'inherit' && m !== 'callback') throw new InvalidArgumentError(`${name} must be 'pipe', 'inherit' or a function`)
  }
  const stdin = opts.stdin
  return {
    args,
    env,
    memory: opts.memory,
    timeoutMs: opts.timeout,
    stdin: stdin === undefined || stdin === 'inherit' ? undefined : typeof stdin === 'string' ? Buffer.from(stdin) : Buffer.from(stdin),
    stdinInherit: stdin === 'inherit',
    stdout: mode(opts.stdout),
    stderr: mode(opts.stderr),
    allowRead: opts.allowRead ?? [],
    trace: opts.trace ?? false,
    exePath: opts.exePath,
    outputLimit: opts.outputLimit,
  }
}

/**
 * A static x86-64 Linux program in its own KVM virtual machine.
 *
 * ```ts
 * const vm = Machine.fromFile('./prog', { args: ['prog', 'x'], timeout: 1000 })
 * const r = vm.run() // { status: 'exited', exitCode, stdout, stderr }
 * ```
 */
export class Machine {
  readonly #native: native.NativeMachine
  readonly #onStdout?: (chunk: Buffer) => void
  readonly #onStderr?: (chunk: Buffer) => void

  private constructor(n: native.NativeMachine, opts: MachineOptions) {
    this.#native = n
    if (typeof opts.stdout === 'function') this.#onStdout = opts.stdout
    if (typeof opts.stderr === 'function') this.#onStderr = opts.stderr
  }

  /** Load a static executable from a file. */
  static fromFile(file: string, opts: MachineOptions = {}): Machine {
    const nopts = toNativeOptions(opts, file)
    try {
      return new Machine(native.NativeMachine.fromFile(path.resolve(file), nopts), opts)
    } catch (e) {
      throw translateNativeError(e)
    }
  }

  /** Load a static executable from memory. */
  static fromBuffer(bytes: Uint8Array, opts: MachineOptions = {}): Machine {
    const nopts = toNativeOptions(opts, opts.exePath ?? '/guest')
    try {
      return new Machine(native.NativeMachine.fromBuffer(Buffer.from(bytes), nopts), opts)
    } catch (e) {
      throw translateNativeError(e)
    }
  }

  /**
   * Run the program to completion on this thread. Resolves to its exit (or self-inflicted
   * signal); throws a typed error for faults, timeouts and other failures. A machine runs once.
   */
  run(opts: RunOptions = {}): RunResult {
    if (this.#native.closed) throw new InvalidStateError('the machine is closed: it already ran (a machine runs once) or close() was called')
    // Callbacks may throw anything (not only Error objects); keep the value and re-throw it
    // unchanged once the guest has been stopped.
    let thrown: { value: unknown } | undefined
    const guard = (f?: (chunk: Buffer) => void) =>
      f &&
      ((chunk: Buffer) => {
        try {
          f(chunk)
        } catch (e) {
          thrown = { value: e }
          throw new Error('output callback threw')
        }
      })
    let r: native.NativeRunResult
    try {
      r = this.#native.run(opts.timeout, guard(this.#onStdout), guard(this.#onStderr))
    } catch (e) {
      if (thrown) throw thrown.value
      throw translateNativeError(e)
    }
    if (r.status === 'error' && r.error) {
      const err = fromRecord(r.error)
      err.stdout = r.stdout
      err.stderr = r.stderr
      throw err
    }
    const base = { stdout: r.stdout, stderr: r.stderr, stdoutTruncated: r.stdoutTruncated, stderrTruncated: r.stderrTruncated }
    if (r.status === 'signaled') {
      const n = r.signal ?? 0
      return { status: 'signaled', signal: signalNames.get(n) ?? `SIG${n}`, signalNumber: n, exitCode: r.exitCode ?? 128 + n, ...base }
    }
    return { status: 'exited', exitCode: r.exitCode ?? 0, ...base }
  }

  /**
   * Release the VM, its file descriptors and guest memory now (idempotent). `run()` does this
   * itself when the guest finishes; call it for machines that are never run.
   */
  close(): void {
    this.#native.close()
  }

  /** True once the machine ran to completion or was closed. */
  get closed(): boolean {
    return this.#native.closed
  }

  /** Address of a symbol in the program's ELF symbol table, if present. */
  symbol(name: string): bigint | undefined {
    return this.#native.symbol(name) ?? undefined
  }
}

/** Benchmark support: mean ns of one bare guest-syscall round trip (no emulation at all). */
export function measureSyscallFloor(iterations = 10000): number {
  return native.measureSyscallFloor(iterations)
}

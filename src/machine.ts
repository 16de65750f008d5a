import * as path from 'node:path'

import native = require('./native')

import type * as N from '../native'
import type { NativeErrorRecord } from './errors'
import { fromRecord, HostCallError, InterruptedError, InvalidArgumentError, InvalidStateError, KvmboxError, signalName, translateNativeError } from './errors'
import { loadFailure } from './load-native'
import { checkBytes, checkInteger, checkKeys, checkPath, checkSignal, checkString, checkTimeout, show } from './validate'

/** Where guest output goes: captured into the result, written to this process's own fd, or streamed. */
export type OutputOption = 'pipe' | 'inherit' | ((chunk: Buffer) => void)

export interface MachineOptions {
  /** Full argv, argv[0] included. Default: `[path]` (or `['/guest']` for buffers). */
  args?: string[]
  /** Environment. Default: empty (the guest sees none of the host's environment). */
  env?: Record<string, string> | string[]
  /** Maximum guest memory in bytes (address space; untouched memory costs nothing). Default 128 MiB, min 8 MiB. */
  memory?: number
  /** Timeout in milliseconds for `run()` and every call (each can override it; 0 = none). Default: none. */
  timeout?: number
  /** Standard input: the bytes to serve (then EOF), or 'inherit' to read this process's stdin. Default: empty. */
  stdin?: string | Uint8Array | 'inherit'
  /** Default 'pipe'. */
  stdout?: OutputOption
  /** Default 'pipe'. */
  stderr?: OutputOption
  /** Host files or directories (with everything below them) the guest may open read-only. */
  allowRead?: string[]
  /**
   * Writable directories, by guest path: `{ memory: true }` is an empty in-memory one,
   * `{ host: './data' }` shows a host directory there, read-only underneath (what the guest
   * writes stays in memory). `/tmp` is always an in-memory one (over what `allowRead` shows of
   * /tmp) unless named here. In-memory files are never written to the host; forks, resets and
   * snapshots include them. `{ host: './out', writable: true }` is the one exception, an
   * explicit opt-in: the guest changes that host directory for real (beneath it only; reset
   * cannot undo it; not with `seccomp`).
   * Example: `{ '/work': { memory: true }, '/data': { host: './data' } }`.
   */
  mounts?: Record<string, MountOption>
  /**
   * Most bytes the in-memory files may hold (contents, plus 256 bytes per file or directory
   * and the names); past it writes fail with ENOSPC. Default 64 MiB.
   */
  fsLimit?: number
  /**
   * Trace every syscall the guest makes (host calls included): `true` prints them to this
   * process's stderr; a function gets each one as `{ nr, name, args, result }` instead (on the
   * JS thread; a throw is ignored). Forks and loaded snapshots keep it.
   */
  trace?: boolean | ((event: TraceEvent) => void)
  /** Absolute path the guest sees as its own executable (readlink /proc/self/exe). */
  exePath?: string
  /** Cap on captured stdout and stderr, each, in bytes (default 64 MiB); the rest is dropped. */
  outputLimit?: number
  /**
   * Back guest memory with huge pages: reserved hugetlbfs pages when the host has some, else
   * transparent huge pages. Forks of a snapshot use 4 KiB pages. Default false.
   */
  hugepages?: boolean
  /**
   * Run this guest only on its own vCPU thread under kvmbox's seccomp filter (defence in depth
   * for this process: that thread cannot start processes or threads, open files for writing,
   * map executable memory, use the network or issue non-KVM ioctls). Only `runAsync` and
   * `callAsync` work then; `run`/`call` throw InvalidStateError. Forks and snapshots keep it.
   * Default false.
   */
  seccomp?: boolean
}

/** What a guest directory in {@link MachineOptions.mounts} holds. */
export type MountOption = { memory: true } | { host: string; writable?: boolean }

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

/** The guest called kvmbox_pause(): functions may be called; run() again resumes it. */
export interface PausedResult extends RunResultBase {
  status: 'paused'
}

export type RunResult = ExitedResult | SignaledResult | PausedResult

/** A guest address: a number (safe integer) or a bigint. */
export type Address = number | bigint

/**
 * An argument of vm.call(): integers (number or bigint, signed or unsigned 64-bit) and booleans
 * are passed in registers; strings are copied into guest memory NUL-terminated and
 * Buffers/Uint8Arrays are copied in and, after the call, back out (so the function can fill
 * them); the function receives their guest address. null/undefined pass 0.
 */
export type CallArg = number | bigint | boolean | string | Uint8Array | null | undefined

/**
 * The parameters of `F`, each kept where it is a {@link CallArg} and replaced by CallArg where it
 * is not — so `vm.fn<(d: Date) => number>` fails its constraint while `(a: number) => number`
 * meets it.
 */
export type CallArgsOf<F> = F extends (...args: infer P) => unknown ? { [K in keyof P]: P[K] extends CallArg ? P[K] : CallArg } : never

export interface CallOptions {
  /** Milliseconds for this call; 0 = none. Default: the machine's `timeout`. */
  timeout?: number
  /**
   * callAsync/callBigIntAsync only: aborting it stops the guest (within about a millisecond)
   * and the call rejects with an {@link InterruptedError}; already aborted, the call does not
   * start.
   */
  signal?: AbortSignal
}

/** What a host-call handler gets. */
export interface HostCallContext {
  /** The syscall number. */
  readonly nr: number
  /** rdi, rsi, rdx, r10, r8, r9 as unsigned 64-bit bigints. */
  readonly args: readonly [bigint, bigint, bigint, bigint, bigint, bigint]
  readonly vm: Machine
  /** Read `len` bytes the guest itself may read (throws on a bad address). */
  read(addr: Address, len: number): Buffer
  /** Read a NUL-terminated UTF-8 string (at most `max` bytes, default 64 KiB). */
  readString(addr: Address, max?: number): string
  /** Write into memory the guest itself may write (throws on a bad address). */
  write(addr: Address, bytes: Uint8Array | string): void
  /**
   * Aborted when the run or call this host call belongs to ends early — its timeout, an
   * interrupt, close() — so an async handler can stop its own work. The run does not wait
   * for a handler once this aborts: the guest is stopped at the deadline either way.
   */
  readonly signal: AbortSignal
}

/** What a handler may return: the value becomes the guest's rax (nothing = 0). */
export type HostCallResult = number | bigint | boolean | void

/**
 * A host-call handler. Synchronous runs and calls need a synchronous result; under
 * runAsync()/callAsync() a handler may also return a Promise (the guest waits for it).
 */
export type HostCallHandler = (c: HostCallContext) => HostCallResult | Promise<HostCallResult>

/** First and last syscall number of the embedder's host-call range (see guest/include/kvmbox.h), from the core. */
export const HOSTCALL_FIRST: number = loadFailure ? NaN : native.HOSTCALL_FIRST
export const HOSTCALL_LAST: number = loadFailure ? NaN : native.HOSTCALL_LAST

/** Checked access to guest memory (where the guest itself may read/write). */
export class GuestMemory {
  readonly #native: N.NativeMemory
  readonly #vm: Machine
  constructor(n: N.NativeMemory, vm: Machine) {
    this.#native = n
    this.#vm = vm
  }
  /** Guest memory size in bytes. */
  get size(): number {
    return this.#native.size
  }
  read(addr: Address, len: number): Buffer {
    checkInteger(len, 'length', 0, Number.MAX_SAFE_INTEGER)
    return wrap(() => this.#native.read(toAddr(addr), len))
  }
  write(addr: Address, bytes: Uint8Array | string): void {
    const b = typeof bytes === 'string' ? Buffer.from(bytes) : toBuffer(checkBytes(bytes, 'bytes'))
    wrap(() => this.#native.write(toAddr(addr), b))
  }
  /** A NUL-terminated UTF-8 string of at most `max` bytes (default 64 KiB). */
  readCString(addr: Address, max = 64 << 10): string {
    checkInteger(max, 'max', 0, Number.MAX_SAFE_INTEGER)
    const b = wrap(() => this.#native.readCString(toAddr(addr), max))
    if (b === null || b === undefined) throw new InvalidArgumentError(`no NUL terminator within ${max} bytes at ${show(addr)}`)
    return b.toString('utf8')
  }
  /** Address of a symbol in the program's ELF symbol table. */
  symbol(name: string): bigint | undefined {
    return this.#vm.symbol(name)
  }
}

function wrap<T>(f: () => T): T {
  try {
    return f()
  } catch (e) {
    throw fromNative(e)
  }
}

/** The typed error for what a native method threw, with the details the binding kept for it. */
function fromNative(e: unknown): unknown {
  const rec = native.takeThrownError()
  if (rec && e instanceof Error && (e as { code?: unknown }).code === rec.code) return fromRecord(rec)
  return translateNativeError(e)
}

/** An address as the binding takes it (a number or a bigint; its range is checked there). */
function toAddr(a: Address): Address {
  if (typeof a === 'bigint' || (typeof a === 'number' && Number.isSafeInteger(a) && a >= 0)) return a
  throw new InvalidArgumentError(`addresses must be non-negative safe integers or bigints, got ${show(a)}`)
}

function toBuffer(b: Uint8Array): Buffer {
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength)
}

function toU64(v: unknown): bigint {
  if (v === undefined || v === null) return 0n
  if (typeof v === 'boolean') return v ? 1n : 0n
  if (typeof v === 'bigint') return BigInt.asUintN(64, v)
  if (typeof v === 'number' && Number.isInteger(v)) return BigInt.asUintN(64, BigInt(v))
  throw new InvalidArgumentError(`a host-call handler must return an integer, bigint, boolean or nothing; got ${show(v)}`)
}

type NativeArg = number | bigint | string | Buffer

function toNativeArg(a: CallArg, i: number): NativeArg {
  if (a === null || a === undefined) return 0
  if (typeof a === 'boolean') return a ? 1 : 0
  if (typeof a === 'number') {
    if (!Number.isSafeInteger(a))
      throw new InvalidArgumentError(`argument ${i}: numbers must be safe integers (use a bigint for 64-bit values), got ${show(a)}`)
    return a
  }
  if (typeof a === 'bigint') {
    if (a < -(1n << 63n) || a >= 1n << 64n) throw new InvalidArgumentError(`argument ${i}: bigint does not fit in 64 bits`)
    return a
  }
  if (typeof a === 'string') {
    if (a.includes('\0')) throw new InvalidArgumentError(`argument ${i}: strings passed to the guest cannot contain NUL characters`)
    return a
  }
  if (a instanceof Uint8Array) return toBuffer(a)
  throw new InvalidArgumentError(`argument ${i}: unsupported type ${show(a)}`)
}

/** @internal A trailing `{ timeout }` rather than an argument. */
export function isCallOptions(x: unknown): x is CallOptions {
  return typeof x === 'object' && x !== null && !(x instanceof Uint8Array)
}

export interface RunOptions {
  /** Overrides the machine's timeout for this run (ms; 0 = none). */
  timeout?: number
  /**
   * runAsync only: aborting it stops the guest (within about a millisecond) and the run
   * rejects with an {@link InterruptedError}; already aborted, the run does not start.
   */
  signal?: AbortSignal
}

/** Where a machine is in its life (see {@link Machine.state}): the binding's enum. */
export type MachineState = `${N.MachineState}`

/** One traced syscall (see the `trace` option). */
export interface TraceEvent {
  nr: number
  /** 'write', 'openat', 'hostcall 0x10000', … */
  name: string
  /** rdi, rsi, rdx, r10, r8, r9. */
  args: bigint[]
  /** What it returned, as strace shows it: '0x3', '-ENOENT', 'exit Code(0)', 'stopped: …'. */
  result: string
}

/** The callbacks a machine was made with, which its snapshots' forks get too. */
type Callbacks = Pick<MachineOptions, 'stdout' | 'stderr' | 'trace'>

/** What a run or call cost (see {@link Machine.lastStats}). */
export interface RunStats {
  wallNs: number
  exits: number
  syscalls: number
  pagesRestored: number
  /** Ring-0 stub runs that took page rights away (munmap, mprotect, W^X flips): each costs a VM entry. */
  pageTableCommits: number
  /**
   * Where the reset before this run or call spent its time, in ns (0 without one): reading
   * KVM's dirty log, putting memory back (host-written pages, page rights, contents), the vCPU
   * state (XSAVE, registers; now and then re-protecting written pages), the emulated process.
   */
  resetDirtyLogNs: number
  resetMemoryNs: number
  resetCpuNs: number
  resetProcessNs: number
}

/** What the host's KVM is and whether kvmbox can use it. */
export interface ProbeResult {
  available: boolean
  /** The KVM backend, decided from a real syscall exit (ring 3: PVM) and the CPU vendor. */
  backend: 'pvm' | 'vmx' | 'svm' | 'unknown'
  error?: string
  /** Observed from a real syscall exit: true where `syscall` stays in ring 3 (PVM). */
  syscallInRing3?: boolean
}

export function probe(): ProbeResult {
  if (loadFailure) return { available: false, backend: 'unknown', error: loadFailure.message }
  return native.probe() as ProbeResult
}

/** Options of {@link Snapshot.load}. */
export type LoadOptions = Pick<MachineOptions, 'allowRead' | 'mounts' | 'fsLimit' | 'stdout' | 'stderr' | 'timeout' | 'trace' | 'outputLimit' | 'seccomp'> & {
  /** Host-call handlers for every fork, by syscall number (they are not part of the file). */
  handlers?: Record<number, HostCallHandler>
}

/** A progress callback as the binding takes it (one that throws does not stop the work). */
function progressCallback(f: unknown): ((done: number, total: number) => void) | undefined {
  if (f === undefined) return undefined
  if (typeof f !== 'function') throw new InvalidArgumentError('onProgress must be a function')
  return (done, total) => {
    try {
      f(done, total)
    } catch {
      // a progress report is advisory
    }
  }
}

/** A handlers object as a checked table. */
function handlerTable(handlers: unknown): Map<number, HostCallHandler> {
  const table = new Map<number, HostCallHandler>()
  if (handlers === undefined) return table
  if (typeof handlers !== 'object' || handlers === null || Array.isArray(handlers))
    throw new InvalidArgumentError(`handlers must be an object of syscall number → function, got ${show(handlers)}`)
  for (const [k, h] of Object.entries(handlers)) {
    const nr = checkInteger(Number(k), `handlers key ${JSON.stringify(k)}`, 0, HOSTCALL_LAST)
    if (typeof h !== 'function') throw new InvalidArgumentError(`handlers[${k}] must be a function`)
    table.set(nr, h as HostCallHandler)
  }
  return table
}

const MACHINE_OPTIONS = [
  'args',
  'env',
  'memory',
  'timeout',
  'stdin',
  'stdout',
  'stderr',
  'allowRead',
  'mounts',
  'fsLimit',
  'trace',
  'exePath',
  'outputLimit',
  'hugepages',
  'seccomp',
] as const
const RUN_OPTIONS = ['timeout', 'signal'] as const
const CALL_OPTIONS = ['timeout', 'signal'] as const
/** @internal */
export const LOAD_OPTIONS = ['allowRead', 'mounts', 'fsLimit', 'stdout', 'stderr', 'timeout', 'trace', 'outputLimit', 'seccomp'] as const
const LOAD_KEYS = [...LOAD_OPTIONS, 'handlers'] as const

/** The `mounts` option as the binding takes it, checked. */
function mountList(mounts: unknown): N.NativeMount[] {
  if (mounts === undefined) return []
  if (typeof mounts !== 'object' || mounts === null || Array.isArray(mounts))
    throw new InvalidArgumentError(`mounts must be an object of guest path → { memory: true } or { host: path }, got ${show(mounts)}`)
  return Object.entries(mounts).map(([path, m]) => {
    checkPath(path, `mounts key ${JSON.stringify(path)}`)
    if (typeof m !== 'object' || m === null) throw new InvalidArgumentError(`mounts[${JSON.stringify(path)}] must be { memory: true } or { host: path }`)
    const keys = Object.keys(m)
    if (keys.length === 1 && keys[0] === 'memory' && (m as { memory: unknown }).memory === true) return { path }
    if (keys.includes('host') && keys.every((k) => k === 'host' || k === 'writable')) {
      const { host, writable } = m as { host: unknown; writable?: unknown }
      if (typeof host !== 'string' || host === '' || host.includes('\0'))
        throw new InvalidArgumentError(`mounts[${JSON.stringify(path)}].host must be a host directory path`)
      if (writable !== undefined && typeof writable !== 'boolean') throw new InvalidArgumentError(`mounts[${JSON.stringify(path)}].writable must be a boolean`)
      return { path, host, writable: writable ?? false }
    }
    throw new InvalidArgumentError(`mounts[${JSON.stringify(path)}] must be { memory: true } or { host: path }, got ${show(m)}`)
  })
}

function toNativeOptions(opts: MachineOptions, defaultArgv0: string, allowed: readonly string[] = MACHINE_OPTIONS): N.NativeOptions {
  checkKeys(opts, allowed, 'machine')
  opts ??= {}
  if (opts.env !== undefined && (typeof opts.env !== 'object' || opts.env === null))
    throw new InvalidArgumentError('env must be an object or an array of KEY=value strings')
  if (opts.args !== undefined && !Array.isArray(opts.args)) throw new InvalidArgumentError('args must be an array of strings')
  if (opts.allowRead !== undefined && (!Array.isArray(opts.allowRead) || opts.allowRead.some((p) => typeof p !== 'string' || p.includes('\0')))) {
    throw new InvalidArgumentError('allowRead must be an array of paths')
  }
  if (opts.exePath !== undefined) checkPath(opts.exePath, 'exePath')
  if (opts.trace !== undefined && typeof opts.trace !== 'boolean' && typeof opts.trace !== 'function')
    throw new InvalidArgumentError('trace must be a boolean or a function')
  for (const flag of ['hugepages', 'seccomp'] as const) {
    if (opts[flag] !== undefined && typeof opts[flag] !== 'boolean') throw new InvalidArgumentError(`${flag} must be a boolean`)
  }
  if (opts.stdin !== undefined && typeof opts.stdin !== 'string' && !(opts.stdin instanceof Uint8Array)) {
    throw new InvalidArgumentError("stdin must be a string, a Uint8Array or 'inherit'")
  }
  const env = opts.env === undefined ? [] : Array.isArray(opts.env) ? opts.env : Object.entries(opts.env).map(([k, v]) => `${k}=${checkString(v, `env.${k}`)}`)
  for (const e of env) {
    if (typeof e !== 'string' || e.includes('\0')) throw new InvalidArgumentError(`environment entries must be strings without NUL bytes`)
  }
  const args = opts.args ?? [defaultArgv0]
  for (const a of args) {
    if (typeof a !== 'string' || a.includes('\0')) throw new InvalidArgumentError(`arguments must be strings without NUL bytes`)
  }
  if (opts.memory !== undefined && (!Number.isSafeInteger(opts.memory) || opts.memory <= 0)) {
    throw new InvalidArgumentError(`memory must be a positive integer number of bytes, got ${show(opts.memory)}`)
  }
  if (opts.fsLimit !== undefined && (!Number.isSafeInteger(opts.fsLimit) || opts.fsLimit < 0)) {
    throw new InvalidArgumentError(`fsLimit must be a non-negative integer number of bytes, got ${show(opts.fsLimit)}`)
  }
  const mounts = mountList(opts.mounts)
  if (opts.outputLimit !== undefined && (!Number.isSafeInteger(opts.outputLimit) || opts.outputLimit < 0)) {
    throw new InvalidArgumentError(`outputLimit must be a non-negative integer number of bytes, got ${show(opts.outputLimit)}`)
  }
  checkTimeout(opts.timeout)
  const mode = (o: OutputOption | undefined) => (o === undefined ? 'pipe' : typeof o === 'function' ? 'callback' : o)
  for (const [name, o] of [
    ['stdout', opts.stdout],
    ['stderr', opts.stderr],
  ] as const) {
    if (o !== undefined && o !== 'pipe' && o !== 'inherit' && typeof o !== 'function')
      throw new InvalidArgumentError(`${name} must be 'pipe', 'inherit' or a function`)
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
    mounts,
    fsLimit: opts.fsLimit,
    trace: opts.trace !== undefined && opts.trace !== false,
    exePath: opts.exePath,
    outputLimit: opts.outputLimit,
    hugepages: opts.hugepages ?? false,
    seccomp: opts.seccomp ?? false,
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
  readonly #native: N.NativeMachine
  readonly #handlers = new Map<number, HostCallHandler>()
  /** Shared with the native dispatcher: slots 0–5 the arguments, 6 the result. */
  readonly #regs = new BigUint64Array(8)
  /** A value thrown by a callback during the current run/call, to re-throw afterwards. */
  #thrown: { value: unknown; fromHandler: boolean } | undefined
  #busy = false
  #busyAsync = false
  /** Created up front: the native machine cannot be borrowed again while it runs a handler. */
  readonly #memory: GuestMemory
  /** Symbol addresses already looked up, as Numbers (guest addresses are < 2^53). */
  readonly #resolved = new Map<string, number>()

  /** The output callbacks this machine was created with (forks of its snapshots reuse them). */
  readonly #outputs: Callbacks

  private constructor(n: N.NativeMachine, opts: Callbacks, handlers?: Map<number, HostCallHandler>) {
    this.#native = n
    this.#memory = new GuestMemory(n.memory(), this)
    this.#outputs = { stdout: opts.stdout, stderr: opts.stderr, trace: opts.trace }
    // The native machine holds these callbacks through references V8 cannot trace, so they
    // reach this Machine — and the user's callbacks, which may well capture the machine — only
    // through a WeakRef: a strong path back would be a cycle that is never collected (a
    // machine dropped without close() would keep its VM, descriptors and memory forever).
    const weak = new WeakRef(this)
    const stdout = opts.stdout
    const stderr = opts.stderr
    if (typeof stdout === 'function') this.#syncOutput.stdout = Machine.#catchOutput(weak, stdout, true)
    if (typeof stderr === 'function') this.#syncOutput.stderr = Machine.#catchOutput(weak, stderr, true)
    n.setHooks(
      typeof stdout === 'function' ? (chunk: Buffer) => Machine.#output(weak, 'stdout', chunk) : undefined,
      typeof stderr === 'function' ? (chunk: Buffer) => Machine.#output(weak, 'stderr', chunk) : undefined,
      (nr: number) => {
        const self = weak.deref()
        return self ? self.#dispatch(nr) : 1
      },
      this.#regs,
    )
    if (typeof stdout === 'function') this.#asyncOutput.stdout = Machine.#catchOutput(weak, stdout, false)
    if (typeof stderr === 'function') this.#asyncOutput.stderr = Machine.#catchOutput(weak, stderr, false)
    const trace = opts.trace
    if (typeof trace === 'function') {
      n.setTrace((e: TraceEvent) => {
        try {
          if (weak.deref()) trace(e)
        } catch {
          // tracing is for watching: a throw does not stop the guest
        }
      })
    }
    for (const [nr, h] of handlers ?? []) this.onSyscall(nr, h)
  }

  /**
   * Take an immutable snapshot of the paused guest: memory, CPU state (registers, FPU/SSE/AVX,
   * FS base) and kvmbox's process state (heap/mmap allocator, descriptors, signal
   * dispositions). This machine keeps running on its own private copy-on-write copy, and
   * `reset()` returns it to the snapshot. Forks get this machine's output callbacks and
   * host-call handlers as they are now.
   */
  snapshot(): Snapshot {
    this.#checkUsable()
    const n = wrap(() => this.#native.snapshot())
    return new Snapshot(n, this.#outputs, new Map(this.#handlers))
  }

  /**
   * Return to exactly the snapshot this machine was forked from (or took) — memory (every page
   * written since, by the guest or by kvmbox), registers, FPU state, heap allocator and
   * descriptors; captured output is cleared and host-call handlers stay as registered — or,
   * with `to`, to another snapshot. Works after a fault, timeout or exit too. Returns the
   * number of pages restored.
   */
  reset(to?: Snapshot): number {
    if (to !== undefined && !(to instanceof Snapshot)) throw new InvalidArgumentError(`reset() takes a Snapshot or nothing, got ${show(to)}`)
    if (this.#busy || this.#busyAsync) throw new InvalidStateError('cannot reset a machine while it runs')
    const pages = wrap(() => this.#native.reset(to?._native))
    this.#ended = undefined
    // Another snapshot may be another program: forget resolved symbol addresses.
    if (to) this.#resolved.clear()
    return pages
  }

  /**
   * Host memory used: pages private to this machine, the snapshot image it shares, and how
   * much of its memory huge pages back (`hugepages`: 'none' | 'transparent' | 'hugetlb').
   */
  memoryUsage(): { privateBytes: number; sharedBytes: number; memorySize: number; hugeBytes: number; hugepages: string } {
    return wrap(() => this.#native.memoryUsage())
  }

  /** @internal */
  static _fromNative(n: N.NativeMachine, outputs: Callbacks, handlers: Map<number, HostCallHandler>): Machine {
    return new Machine(n, outputs, handlers)
  }

  /** Load a static executable from a file. */
  static fromFile(file: string, opts: MachineOptions = {}): Machine {
    checkPath(file, 'file')
    const nopts = toNativeOptions(opts, file)
    return new Machine(
      wrap(() => native.NativeMachine.fromFile(path.resolve(file), nopts)),
      opts,
    )
  }

  /** Load a static executable from memory. */
  static fromBuffer(bytes: Uint8Array, opts: MachineOptions = {}): Machine {
    checkBytes(bytes, 'the program')
    const nopts = toNativeOptions(opts, opts?.exePath ?? '/guest')
    return new Machine(
      wrap(() => native.NativeMachine.fromBuffer(Buffer.from(bytes), nopts)),
      opts,
    )
  }

  /**
   * 'ready' (never run) | 'paused' (in kvmbox_pause; functions may be called) | 'busy' (an async
   * run/call is in progress) | 'closed' (finished — exit, fault, timeout, handler error — or
   * close() was called; its VM and memory are released).
   */
  get state(): MachineState {
    // Busy until the async operation's promise settles, even if the vCPU thread is done.
    if (this.#busyAsync) return 'busy'
    return this.#native.state
  }

  /** True once the guest finished (a machine with a snapshot can then be reset) or close() was called. */
  get closed(): boolean {
    const s = this.state
    return s === 'closed' || s === 'finished'
  }

  /**
   * What the last run or call cost — `wallNs` (wall-clock time), `exits` (VM exits: syscalls,
   * faults, the call return, timer kicks), `syscalls` (host calls included) — and
   * `pagesRestored`, the pages the reset before it copied back, and `pageTableCommits`, the
   * ring-0 stub runs that took page rights away (munmap, mprotect). Zeros before any run, and
   * for a machine that finished and released its VM.
   */
  get lastStats(): RunStats {
    return this.#native.lastStats
  }

  /** Guest memory, checked against what the guest itself may access. */
  get memory(): GuestMemory {
    return this.#memory
  }

  /**
   * Run the program on this thread until it exits (or kills itself with a signal), or pauses
   * in kvmbox_pause(); run() again after a pause resumes it. Throws a typed error for faults,
   * timeouts, handler errors and other failures (after which the machine is finished).
   */
  run(opts: RunOptions = {}): RunResult {
    checkKeys(opts, RUN_OPTIONS, 'run')
    const timeout = checkTimeout(opts.timeout)
    if (opts.signal !== undefined)
      throw new InvalidArgumentError('signal works with runAsync(); run() blocks this thread (use interrupt() from another thread)')
    this.#checkUsable()
    return this.#runResult(this.#enter(() => this.#native.run(timeout)))
  }

  /**
   * Like run(), on this machine's own thread: the event loop keeps going, handlers may be
   * async, and many machines can run at once.
   */
  async runAsync(opts: RunOptions = {}): Promise<RunResult> {
    checkKeys(opts, RUN_OPTIONS, 'run')
    const timeout = checkTimeout(opts.timeout)
    const signal = checkSignal(opts.signal)
    this.#checkUsable()
    const r = await this.#enterAsync(() => this.#native.runAsync(timeout, this.#asyncDispatcher(), this.#asyncOutput.stdout, this.#asyncOutput.stderr), signal)
    return this.#runResult(r.run!)
  }

  /** Like call(), on this machine's own thread (handlers may be async). */
  callAsync(target: string | Address, ...args: [...CallArg[]] | [...CallArg[], CallOptions]): Promise<number> {
    return this.#callAsync(target, args, false) as Promise<number>
  }

  /** Like callBigInt(), on this machine's own thread. */
  callBigIntAsync(target: string | Address, ...args: [...CallArg[]] | [...CallArg[], CallOptions]): Promise<bigint> {
    return this.#callAsync(target, args, true) as Promise<bigint>
  }

  #runResult(r: N.NativeRunResult): RunResult {
    if (r.status === 'error' && r.error) throw this.#failure(r.error, r.stdout, r.stderr)
    const base = { stdout: r.stdout, stderr: r.stderr, stdoutTruncated: r.stdoutTruncated, stderrTruncated: r.stderrTruncated }
    if (r.status === 'paused') return { status: 'paused', ...base }
    if (r.status === 'exited') this.#ended = `it exited with status ${r.exitCode ?? 0}`
    if (r.status === 'signaled') {
      const n = r.signal ?? 0
      this.#ended = `it was killed by ${signalName(n)}`
      return { status: 'signaled', signal: signalName(n), signalNumber: n, exitCode: r.exitCode ?? 128 + n, ...base }
    }
    return { status: 'exited', exitCode: r.exitCode ?? 0, ...base }
  }

  async #callAsync(target: string | Address, rawArgs: unknown[], asBigInt: boolean): Promise<number | bigint> {
    const { addr, args, opts } = this.#prepareCall(target, rawArgs)
    const r = await this.#enterAsync(
      () => this.#native.callAsync(addr, args, asBigInt, opts.timeout, this.#asyncDispatcher(), this.#asyncOutput.stdout, this.#asyncOutput.stderr),
      checkSignal(opts.signal),
    )
    if (r.error) {
      const out = this.#native.takeOutput()
      throw this.#failure(r.error, out.stdout, out.stderr)
    }
    return r.value as number | bigint
  }

  /**
   * Call a guest function while the guest is paused: by symbol name or address, with up to six
   * arguments (see {@link CallArg}) and an optional trailing `{ timeout }`. Returns rax as a
   * signed 64-bit integer converted to a number (exact up to ±2^53; use callBigInt for more).
   * Output written during the call goes to stdout/stderr callbacks, or is captured for
   * {@link Machine.takeOutput}. A fault, timeout, handler error or exit during the call
   * throws and finishes the machine.
   */
  call(target: string | Address, ...args: [...CallArg[]] | [...CallArg[], CallOptions]): number {
    return this.#call(target, args, false) as number
  }

  /** Like call(), returning rax as a signed 64-bit bigint. */
  callBigInt(target: string | Address, ...args: [...CallArg[]] | [...CallArg[], CallOptions]): bigint {
    return this.#call(target, args, true) as bigint
  }

  /**
   * A typed function bound to a guest symbol (resolved once): `vm.fn<(a: number, b: number) =>
   * number>('add')`. Its parameters must be {@link CallArg}s.
   */
  fn<F extends (...args: CallArgsOf<F>) => number>(name: string): F {
    checkString(name, 'the symbol name')
    const addr = this.#resolve(name)
    return ((...args: unknown[]) => this.#call(addr, args, false)) as unknown as F
  }

  /** Like {@link Machine.fn}, returning rax as a signed bigint. */
  fnBigInt<F extends (...args: CallArgsOf<F>) => bigint>(name: string): F {
    checkString(name, 'the symbol name')
    const addr = this.#resolve(name)
    return ((...args: unknown[]) => this.#call(addr, args, true)) as unknown as F
  }

  /** Like {@link Machine.fn}, calling with callAsync (on the machine's own thread). */
  fnAsync<F extends (...args: CallArgsOf<F>) => Promise<number>>(name: string): F {
    checkString(name, 'the symbol name')
    const addr = this.#resolve(name)
    return ((...args: unknown[]) => this.#callAsync(addr, args, false)) as unknown as F
  }

  /**
   * Handle syscall `nr` in TypeScript: a host-call number (HOSTCALL_FIRST…HOSTCALL_LAST) or a
   * Linux syscall number to override. Pass `null` to remove the handler. Unhandled host-call
   * numbers return -ENOSYS to the guest.
   */
  onSyscall(nr: number, handler: HostCallHandler | null): this {
    checkInteger(nr, 'syscall number', 0, HOSTCALL_LAST)
    if (handler === null) this.#handlers.delete(nr)
    else if (typeof handler === 'function') this.#handlers.set(nr, handler)
    else throw new InvalidArgumentError('handler must be a function or null')
    wrap(() => this.#native.intercept(nr, handler !== null))
    return this
  }

  /**
   * Make the next run() or call() (synchronous) wait for gdb to connect, then let gdb drive
   * it: `gdb prog -ex 'target remote :PORT'`. Breakpoints, single-step, registers (general,
   * rip, rflags, SSE), memory, Ctrl-C; detach lets the guest continue undebugged. Returns the
   * port (pass 0 to pick a free one).
   */
  debug(opts: { port: number; host?: string }): number {
    checkKeys(opts, ['port', 'host'], 'debug')
    if (opts === undefined) throw new InvalidArgumentError('debug() needs { port }')
    checkInteger(opts.port, 'port', 0, 65535)
    const host = opts.host === undefined ? '127.0.0.1' : checkPath(opts.host, 'host')
    return wrap(() => this.#native.debug(host, opts.port))
  }

  /** Output the guest wrote to captured ('pipe') streams during calls, emptied by this. */
  takeOutput(): { stdout: Buffer; stderr: Buffer } {
    return this.#native.takeOutput()
  }

  /**
   * Stop the run or call in progress — an async one on this machine's thread, or a
   * synchronous one on another thread (a fork in a pool worker) — within about a millisecond,
   * wherever the guest is: running, sleeping, blocked on input or output, or waiting for an
   * async host-call handler (whose context `signal` aborts). The operation rejects with an
   * {@link InterruptedError} and the machine is finished, as after a timeout (a fork can be
   * reset). Returns false, doing nothing, when nothing is in progress.
   */
  interrupt(): boolean {
    return this.#native.interrupt()
  }

  /** @internal This machine's id for `interruptMachine` from another thread. */
  get _interruptId(): number {
    return this.#native.interruptId
  }

  /**
   * Release the VM, its file descriptors and guest memory now (idempotent). An async run or
   * call in progress is interrupted first (it rejects with an {@link InterruptedError}).
   * Finished machines release their resources by themselves.
   */
  close(): void {
    if (this.#busy) throw new InvalidStateError('cannot close a machine from inside one of its own handlers or callbacks; close it after run()/call() returns')
    this.#native.close()
    this.#closedByUser = true
    this.#ended ??= 'close() was called'
  }

  /** `using vm = Machine.fromFile(…)`: close() at the end of the scope. */
  [Symbol.dispose](): void {
    if (!this.#busy) this.close()
  }

  /** Set by close(), which also releases the symbol table. */
  #closedByUser = false

  /** Address of a symbol in the program's ELF symbol table, if present (also after the guest finished; not after close()). */
  symbol(name: string): bigint | undefined {
    checkString(name, 'the symbol name')
    if (this.#closedByUser) throw new InvalidStateError('the machine was closed: its symbol table is released')
    return this.#native.symbol(name) ?? undefined
  }

  #checkUsable(): void {
    if (this.#busyAsync) throw new InvalidStateError('this machine is busy with an async run or call; wait for it to settle')
    if (this.#busy) throw new InvalidStateError('this machine is already running: calling it again from inside one of its own handlers is not supported')
    const state = this.state
    const why = this.#ended ?? 'it exited or failed'
    if (state === 'finished') throw new InvalidStateError(`the guest has finished: ${why}; reset() it to its snapshot to use it again`)
    if (state === 'closed') throw new InvalidStateError(`the machine is closed: ${why}`)
  }

  /** How the guest ended, for the messages of later calls ("it timed out after 100 ms"). */
  #ended: string | undefined

  #resolve(target: string | Address): number | bigint {
    if (typeof target === 'string') {
      let a = this.#resolved.get(target)
      if (a === undefined) {
        const big = this.#native.symbol(target)
        if (big === null || big === undefined) throw new InvalidArgumentError(`unknown symbol ${JSON.stringify(target)}`)
        a = Number(big)
        this.#resolved.set(target, a)
      }
      return a
    }
    return toAddr(target)
  }

  #prepareCall(target: string | Address, rawArgs: unknown[]) {
    this.#checkUsable()
    let opts: CallOptions = {}
    if (rawArgs.length > 0 && isCallOptions(rawArgs[rawArgs.length - 1])) opts = rawArgs.pop() as CallOptions
    checkKeys(opts, CALL_OPTIONS, 'call')
    checkTimeout(opts.timeout)
    checkSignal(opts.signal)
    if (rawArgs.length > 6) throw new InvalidArgumentError(`at most 6 arguments can be passed, got ${rawArgs.length}`)
    return { addr: this.#resolve(target), args: (rawArgs as CallArg[]).map(toNativeArg), opts }
  }

  #call(target: string | Address, rawArgs: unknown[], asBigInt: boolean): number | bigint {
    const { addr, args, opts } = this.#prepareCall(target, rawArgs)
    if (opts.signal !== undefined)
      throw new InvalidArgumentError('signal works with callAsync()/callBigIntAsync(); call() blocks this thread (use interrupt() from another thread)')
    return this.#enter(() => {
      try {
        return this.#native.call(addr, args, asBigInt, opts.timeout)
      } catch (e) {
        const rec = this.#native.takeLastError()
        if (!rec) throw e
        const out = this.#native.takeOutput()
        throw this.#failure(rec, out.stdout, out.stderr)
      }
    })
  }

  readonly #dispatch = (nr: number): number => {
    const handler = this.#handlers.get(nr)
    const r = this.#regs
    if (!handler) {
      r[6] = BigInt.asUintN(64, -38n) // ENOSYS
      return 0
    }
    try {
      const v = handler(new Context(this, nr, [r[0], r[1], r[2], r[3], r[4], r[5]], this.#op))
      if (v !== null && typeof v === 'object' && typeof (v as { then?: unknown }).then === 'function') {
        throw new InvalidStateError(`the handler for syscall ${nr} returned a Promise: async handlers need runAsync()/callAsync()`)
      }
      r[6] = toU64(v)
      return 0
    } catch (e) {
      this.#thrown = { value: e, fromHandler: true }
      return 1
    }
  }

  /** The dispatcher for an async operation, if any handler is registered (saves the binding a thread-safe function per operation otherwise). */
  #asyncDispatcher(): ((nr: number, ...a: bigint[]) => Promise<bigint>) | undefined {
    return this.#handlers.size > 0 ? this.#dispatchAsync : undefined
  }

  /** The async dispatcher: awaits the handler; a throw rejects (and is kept to re-throw). */
  readonly #dispatchAsync = async (nr: number, ...a: bigint[]): Promise<bigint> => {
    const handler = this.#handlers.get(nr)
    if (!handler) return BigInt.asUintN(64, -38n) // ENOSYS
    try {
      return toU64(await handler(new Context(this, nr, [a[0], a[1], a[2], a[3], a[4], a[5]], this.#op)))
    } catch (e) {
      this.#thrown = { value: e, fromHandler: true }
      throw e
    }
  }

  /** Output callbacks for async operations: a throw is kept (and re-thrown when the operation settles). */
  readonly #asyncOutput: { stdout?: (chunk: Buffer) => void; stderr?: (chunk: Buffer) => void } = {}

  /** Run an async native operation with the same bookkeeping as #enter (the caller checked #checkUsable). */
  async #enterAsync<T>(start: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    if (signal?.aborted) throw new InterruptedError('aborted before it started')
    this.#busyAsync = true
    this.#thrown = undefined
    const op = new OperationSignal()
    this.#op = op
    const onAbort = () => this.#native.interrupt()
    signal?.addEventListener('abort', onAbort, { once: true })
    let r: T
    try {
      r = await start()
    } catch (e) {
      throw this.#fromThrown() ?? translateNativeError(e)
    } finally {
      signal?.removeEventListener('abort', onAbort)
      this.#busyAsync = false
      // Handlers still running (a timeout or interrupt did not wait for them) learn it now.
      op.end()
    }
    // An output callback threw but the guest went on: report it now.
    const t = this.#thrown as { value: unknown; fromHandler: boolean } | undefined
    if (t && !t.fromHandler) {
      this.#thrown = undefined
      throw t.value
    }
    return r
  }

  /** The current operation, whose signal host-call contexts hand out. */
  #op = new OperationSignal()

  /** Output callbacks of sync runs/calls, held here (see the constructor). */
  readonly #syncOutput: { stdout?: (chunk: Buffer) => void; stderr?: (chunk: Buffer) => void } = {}

  static #output(weak: WeakRef<Machine>, stream: 'stdout' | 'stderr', chunk: Buffer): void {
    const self = weak.deref()
    if (self) self.#syncOutput[stream]?.(chunk)
  }

  /**
   * An output callback whose throw is kept on the machine, to be re-thrown when the run or
   * call ends; with `stop` (sync runs) the throw also stops the guest. Async operations let
   * the guest go on and report the first throw when they settle.
   */
  static #catchOutput(weak: WeakRef<Machine>, f: (chunk: Buffer) => void, stop: boolean): (chunk: Buffer) => void {
    return (chunk) => {
      try {
        f(chunk)
      } catch (e) {
        const self = weak.deref()
        if (self) self.#thrown ??= { value: e, fromHandler: false }
        if (stop) throw new Error('output callback threw')
      }
    }
  }

  /** Run `f` (a native run or call) with reentrancy and thrown-value bookkeeping. */
  #enter<T>(f: () => T): T {
    this.#busy = true
    this.#thrown = undefined
    const op = new OperationSignal()
    this.#op = op
    try {
      return f()
    } catch (e) {
      throw this.#fromThrown() ?? translateNativeError(e)
    } finally {
      this.#busy = false
      op.end()
    }
  }

  #takeThrown(): { value: unknown; fromHandler: boolean } | undefined {
    const t = this.#thrown
    this.#thrown = undefined
    return t
  }

  /** The error to throw for a value a callback threw during the last run/call, if any. */
  #fromThrown(): unknown {
    const t = this.#takeThrown()
    if (!t) return undefined
    return t.fromHandler ? new HostCallError(`a host-call handler threw: ${describe(t.value)}`, t.value) : t.value
  }

  #failure(rec: NativeErrorRecord, stdout: Buffer, stderr: Buffer): unknown {
    this.#ended = endedBecause(rec)
    const thrown = this.#fromThrown()
    if (thrown !== undefined) {
      if (thrown instanceof KvmboxError) {
        thrown.stdout = stdout
        thrown.stderr = stderr
      }
      return thrown
    }
    const err = fromRecord(rec)
    err.stdout = stdout
    err.stderr = stderr
    return err
  }
}

/** Why a machine ended, from the error that ended it. */
function endedBecause(rec: NativeErrorRecord): string {
  switch (rec.code) {
    case 'GUEST_FAULT':
      return `it faulted (${rec.vectorName ?? `vector ${rec.vector}`} at rip 0x${(rec.rip ?? 0n).toString(16)})`
    case 'TIMEOUT':
      return `it timed out after ${rec.timeoutMs} ms`
    case 'INTERRUPTED':
      return 'it was interrupted'
    case 'DEADLOCK':
      return 'all its threads deadlocked'
    case 'HOST_CALLBACK_ERROR':
      return 'a host-call handler or output callback failed'
    case 'GUEST_EXITED':
      return rec.signal ? `it was killed by ${signalName(rec.signal)} during a call` : `it exited with status ${rec.exitCode} during a call`
    default:
      return `it failed (${rec.message})`
  }
}

function describe(v: unknown): string {
  return v instanceof Error ? v.message : String(v)
}

/**
 * The AbortSignal of one run or call, made only if a handler asks for it (most never do, and
 * an operation must not pay for an AbortController and an Error it does not use).
 */
class OperationSignal {
  #controller: AbortController | undefined
  #ended = false
  get signal(): AbortSignal {
    this.#controller ??= new AbortController()
    if (this.#ended && !this.#controller.signal.aborted) this.#abort()
    return this.#controller.signal
  }
  end(): void {
    this.#ended = true
    if (this.#controller) this.#abort()
  }
  #abort(): void {
    this.#controller?.abort(new InterruptedError('the run or call this host call belongs to has ended'))
  }
}

class Context implements HostCallContext {
  readonly #op: OperationSignal
  constructor(
    readonly vm: Machine,
    readonly nr: number,
    readonly args: readonly [bigint, bigint, bigint, bigint, bigint, bigint],
    op: OperationSignal,
  ) {
    this.#op = op
  }
  get signal(): AbortSignal {
    return this.#op.signal
  }
  read(addr: Address, len: number): Buffer {
    return this.vm.memory.read(addr, len)
  }
  readString(addr: Address, max = 64 << 10): string {
    return this.vm.memory.readCString(addr, max)
  }
  write(addr: Address, bytes: Uint8Array | string): void {
    this.vm.memory.write(addr, bytes)
  }
}

/**
 * An immutable image of a paused machine (see {@link Machine.snapshot}). Forks share its memory
 * copy-on-write: a large initialized state costs its memory once, each fork only the pages it
 * writes.
 */
export class Snapshot {
  /** @internal */
  readonly _native: N.NativeSnapshot
  readonly #outputs: Callbacks
  readonly #handlers: Map<number, HostCallHandler>

  /** @internal */
  constructor(n: N.NativeSnapshot, outputs: Callbacks, handlers: Map<number, HostCallHandler>) {
    this._native = n
    this.#outputs = outputs
    this.#handlers = handlers
  }

  /**
   * A new machine paused where the snapshot was taken, sharing its memory copy-on-write. Its
   * VM comes from a pool created ahead of time when one is ready (see `Pool`). Output
   * callbacks and host-call handlers are the snapshot-taker's unless given here.
   */
  fork(opts: { stdout?: OutputOption; stderr?: OutputOption } = {}): Machine {
    checkKeys(opts, ['stdout', 'stderr'], 'fork')
    opts ??= {}
    const outputs = { stdout: opts.stdout ?? this.#outputs.stdout, stderr: opts.stderr ?? this.#outputs.stderr, trace: this.#outputs.trace }
    if (
      (typeof outputs.stdout === 'function') !== (typeof this.#outputs.stdout === 'function') ||
      (typeof outputs.stderr === 'function') !== (typeof this.#outputs.stderr === 'function')
    ) {
      throw new InvalidArgumentError('a fork can replace output callbacks, but not switch between callback and pipe/inherit modes')
    }
    const n = wrap(() => this._native.fork())
    return Machine._fromNative(n, outputs, new Map(this.#handlers))
  }

  /**
   * Write the snapshot to `path` (a file with a format version and a checksum; pages that
   * hold no data are not stored). Open host files are recorded by path and position.
   */
  save(path: string): void {
    checkPath(path, 'path')
    wrap(() => this._native.save(path))
  }

  /**
   * Load a snapshot written by save(). The file is checked completely first (not a snapshot,
   * another format version, truncated or corrupt → InvalidArgumentError). File access,
   * outputs and timeout come from `opts`, not from the file; so do the host-call handlers
   * (functions are not saved): `handlers: { [nr]: handler }` registers them on every fork.
   */
  static load(path: string, opts: LoadOptions = {}): Snapshot {
    checkPath(path, 'path')
    checkKeys(opts, LOAD_KEYS, 'load')
    const { handlers, ...machineOpts } = opts ?? {}
    const nopts = toNativeOptions(machineOpts, '/guest', LOAD_OPTIONS)
    const table = handlerTable(handlers)
    const n = wrap(() => native.NativeSnapshot.load(path, nopts))
    return new Snapshot(n, { stdout: machineOpts.stdout, stderr: machineOpts.stderr, trace: machineOpts.trace }, table)
  }

  /**
   * save() on a thread of its own, so the event loop keeps running while a large snapshot is
   * written (seconds for gigabytes); `onProgress(done, total)` reports bytes about every 16 MiB.
   */
  async saveAsync(path: string, opts: { onProgress?: (done: number, total: number) => void } = {}): Promise<void> {
    checkPath(path, 'path')
    checkKeys(opts, ['onProgress'], 'saveAsync')
    const onProgress = progressCallback(opts?.onProgress)
    const failed = await wrap(() => this._native.saveAsync(path, onProgress))
    if (failed) throw fromRecord(failed)
  }

  /**
   * load() on a thread of its own, so the event loop keeps running while a large snapshot is
   * read and checked; `onProgress(done, total)` reports file bytes about every 16 MiB.
   */
  static async loadAsync(path: string, opts: LoadOptions & { onProgress?: (done: number, total: number) => void } = {}): Promise<Snapshot> {
    checkPath(path, 'path')
    checkKeys(opts, [...LOAD_KEYS, 'onProgress'], 'load')
    const { handlers, onProgress, ...machineOpts } = opts ?? {}
    const nopts = toNativeOptions(machineOpts, '/guest', LOAD_OPTIONS)
    const table = handlerTable(handlers)
    const r = await wrap(() => native.NativeSnapshot.loadAsync(path, nopts, progressCallback(onProgress)))
    if (!(r instanceof native.NativeSnapshot)) throw fromRecord(r)
    return new Snapshot(r, { stdout: machineOpts.stdout, stderr: machineOpts.stderr, trace: machineOpts.trace }, table)
  }

  /**
   * Drop this handle's reference to the image (a large snapshot otherwise lives until garbage
   * collection): its memory is released once no fork uses it either. Forks already made keep
   * working; fork(), save() and the like on this handle throw InvalidStateError afterwards.
   * Idempotent.
   */
  close(): void {
    this._native.close()
  }

  /** `using snap = vm.snapshot()`: close() at the end of the scope. */
  [Symbol.dispose](): void {
    this.close()
  }

  /** @internal Register for worker threads of this process; returns an id. */
  _share(): number {
    return wrap(() => this._native.share())
  }

  /** @internal The snapshot shared under `id` by another thread. */
  static _fromShared(id: number): Snapshot {
    return new Snapshot(
      wrap(() => native.NativeSnapshot.fromShared(id)),
      {},
      new Map(),
    )
  }

  /** @internal */
  static _unshare(id: number): void {
    native.NativeSnapshot.unshare(id)
  }

  /** Guest memory size of machines made from this snapshot. */
  get memorySize(): number {
    return this._native.memorySize
  }

  /** Host memory the image occupies, shared by every fork. */
  get residentBytes(): number {
    return this._native.residentBytes
  }

  /** Address of a symbol in the program's ELF symbol table. */
  symbol(name: string): bigint | undefined {
    return this._native.symbol(checkString(name, 'the symbol name')) ?? undefined
  }
}

/**
 * What a dynamic executable's loader needs to read on this host — `ld.so`, `/etc/ld.so.cache`
 * and the library directories that exist — for `allowRead`:
 * `Machine.fromFile('/bin/ls', { allowRead: [...systemLibraries(), dir], args: ['ls', dir] })`.
 * Paths are checked where they lead, so merged-/usr aliases (`/lib` → `/usr/lib`) need no
 * entries of their own.
 */
export function systemLibraries(): string[] {
  return native.systemLibraries()
}

/** Keep about `n` blank VMs created ahead of time (on a background thread) for fast forks. */
export function setVmPoolSize(n: number): void {
  checkInteger(n, 'the VM pool size', 0, 1024)
  native.setVmPoolSize(n)
}

/**
 * Interrupt the run or call in progress on the machine with this id (`Machine._interruptId`),
 * from any thread of this process. @internal
 */
export function _interruptMachine(id: number): boolean {
  return native.interruptMachine(id)
}

/** Benchmark support: mean ns of one bare host → guest call round trip in a raw VM. */
export function measureCallFloor(iterations = 10000): number {
  checkInteger(iterations, 'iterations', 1, 10_000_000)
  return native.measureCallFloor(iterations)
}

/** Benchmark support: mean ns of one bare guest-syscall round trip (no emulation at all). */
export function measureSyscallFloor(iterations = 10000): number {
  checkInteger(iterations, 'iterations', 1, 10_000_000)
  return native.measureSyscallFloor(iterations)
}

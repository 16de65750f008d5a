/**
 * Typed errors. Every error kvmbox throws extends {@link KvmboxError} and carries a stable
 * `code` (the same strings the Rust core uses), so callers can branch on `instanceof` or `code`.
 */

import { constants as osConstants } from 'node:os'

import type * as N from '../native'

/**
 * The stable code of every error: the values of the binding's `ErrorCode` enum, which the Rust
 * side maps every core error to — one list, so the class table below must cover all of them.
 */
export type ErrorCode = `${N.ErrorCode}`

export class KvmboxError extends Error {
  readonly code: ErrorCode
  /** Output the guest produced before the failure (when it was captured with 'pipe'). */
  stdout?: Buffer
  stderr?: Buffer
  constructor(code: ErrorCode, message: string) {
    super(message)
    this.code = code
    this.name = new.target.name
  }
}

/** `/dev/kvm` is missing, not permitted, or lacks a capability kvmbox needs. */
export class KvmUnavailableError extends KvmboxError {
  constructor(message: string) {
    super('KVM_UNAVAILABLE', message)
  }
}

/** The program is not a loadable static x86-64 ELF executable. */
export class ElfError extends KvmboxError {
  constructor(message: string) {
    super('ELF_ERROR', message)
  }
}

/** A host file could not be read or written: a missing program, an unwritable snapshot path, … */
export class FileError extends KvmboxError {
  /** The OS error number (2 for ENOENT, 13 for EACCES, …). */
  readonly errno: number
  /** Its name, as Node spells it on system errors: 'ENOENT', 'EACCES', … */
  readonly syscallCode: string
  /** The file. */
  readonly path: string
  constructor(message: string, errno: number, path: string) {
    super('FILE_ERROR', message)
    this.errno = errno
    this.syscallCode = errnoName(errno)
    this.path = path
  }
}

function errnoName(errno: number): string {
  for (const [name, n] of Object.entries(osConstants.errno)) if (n === errno) return name
  return `E${errno}`
}

/** The guest raised a CPU exception (null dereference, ud2, divide by zero, …). */
export class GuestFaultError extends KvmboxError {
  /** x86 exception vector: 0 #DE, 6 #UD, 13 #GP, 14 #PF, … */
  readonly vector: number
  /** Mnemonic and name of the vector, e.g. "#PF page fault". */
  readonly vectorName: string
  /** The signal Linux would send for this fault ('SIGSEGV', 'SIGFPE', 'SIGILL', 'SIGTRAP', 'SIGBUS'), and its number. */
  readonly signal: string
  readonly signalNumber: number
  /** Guest address of the faulting instruction. */
  readonly rip: bigint
  /** Faulting address (CR2) for page faults, 0n otherwise. */
  readonly address: bigint
  /** Error code pushed by the CPU, where the vector has one. */
  readonly errorCode?: bigint
  constructor(message: string, vector: number, vectorName: string, rip: bigint, address: bigint, errorCode?: bigint, signalNumber = 11) {
    super('GUEST_FAULT', message)
    this.vector = vector
    this.vectorName = vectorName
    this.signalNumber = signalNumber
    this.signal = signalName(signalNumber)
    this.rip = rip
    this.address = address
    this.errorCode = errorCode
  }
}

/** The guest ran past its timeout and was stopped. */
export class TimeoutError extends KvmboxError {
  readonly timeoutMs: number
  constructor(message: string, timeoutMs: number) {
    super('TIMEOUT', message)
    this.timeoutMs = timeoutMs
  }
}

/** Guest memory is exhausted, or the host could not back it. */
export class OutOfMemoryError extends KvmboxError {
  constructor(message: string) {
    super('OUT_OF_MEMORY', message)
  }
}

/** Options kvmbox cannot honour (bad memory size, missing allowRead path, …). */
export class InvalidArgumentError extends KvmboxError {
  constructor(message: string) {
    super('INVALID_ARGUMENT', message)
  }
}

/** The machine cannot do this now (e.g. `run()` after the guest finished). */
export class InvalidStateError extends KvmboxError {
  constructor(message: string) {
    super('INVALID_STATE', message)
  }
}

/**
 * A host-call handler (vm.onSyscall) threw: the guest was stopped. `cause` is the thrown value.
 */
export class HostCallError extends KvmboxError {
  constructor(message: string, cause?: unknown) {
    super('HOST_CALLBACK_ERROR', message)
    if (cause !== undefined) (this as { cause?: unknown }).cause = cause
  }
}

/**
 * The guest process ended (exit, or killed itself with a signal) while a function was being
 * called. `signal` and `signalNumber` are as on a `signaled` run result ('SIGABRT' and 6).
 */
export class GuestExitedError extends KvmboxError {
  readonly exitCode: number
  readonly signal?: string
  readonly signalNumber?: number
  constructor(message: string, exitCode: number, signalNumber?: number) {
    super('GUEST_EXITED', message)
    this.exitCode = exitCode
    this.signalNumber = signalNumber
    this.signal = signalNumber === undefined ? undefined : signalName(signalNumber)
  }
}

/** The name of signal `n` as Node spells it ('SIGABRT' rather than its alias 'SIGIOT'). */
export function signalName(n: number): string {
  for (const [name, v] of Object.entries(osConstants.signals)) if (v === n) return name
  return `SIG${n}`
}

/**
 * The guest was stopped by `vm.interrupt()`, an AbortSignal, or `close()` while it ran. Its
 * `name` is 'AbortError', as for any aborted operation in Node.
 */
export class InterruptedError extends KvmboxError {
  constructor(message = 'the guest was interrupted') {
    super('INTERRUPTED', message)
    this.name = 'AbortError'
  }
}

/**
 * Every guest thread waits on a futex that nothing can wake (natively the process would hang
 * for ever): the run or call was stopped instead.
 */
export class DeadlockError extends KvmboxError {
  constructor(message: string) {
    super('DEADLOCK', message)
  }
}

/** A host-side failure the guest caused no part of (a bug, or KVM misbehaving). */
export class InternalError extends KvmboxError {
  constructor(message: string) {
    super('INTERNAL', message)
  }
}

/** Shape of the native layer's error record. */
export interface NativeErrorRecord {
  code: string
  message: string
  vector?: number
  vectorName?: string
  rip?: bigint
  address?: bigint
  errorCode?: bigint
  timeoutMs?: number
  exitCode?: number
  signal?: number
  errno?: number
  path?: string
}

/** The typed error for each code, from a native error record. */
const FROM_RECORD: Record<ErrorCode, (r: NativeErrorRecord) => KvmboxError> = {
  KVM_UNAVAILABLE: (r) => new KvmUnavailableError(r.message),
  ELF_ERROR: (r) => new ElfError(r.message),
  FILE_ERROR: (r) => new FileError(r.message, r.errno ?? 0, r.path ?? ''),
  GUEST_FAULT: (r) => new GuestFaultError(r.message, r.vector ?? -1, r.vectorName ?? '', r.rip ?? 0n, r.address ?? 0n, r.errorCode, r.signal),
  TIMEOUT: (r) => new TimeoutError(r.message, r.timeoutMs ?? 0),
  INTERRUPTED: (r) => new InterruptedError(r.message),
  DEADLOCK: (r) => new DeadlockError(r.message),
  OUT_OF_MEMORY: (r) => new OutOfMemoryError(r.message),
  INVALID_ARGUMENT: (r) => new InvalidArgumentError(r.message),
  INVALID_STATE: (r) => new InvalidStateError(r.message),
  HOST_CALLBACK_ERROR: (r) => new HostCallError(r.message),
  GUEST_EXITED: (r) => new GuestExitedError(r.message, r.exitCode ?? 0, r.signal),
  INTERNAL: (r) => new InternalError(r.message),
}

function isErrorCode(code: string): code is ErrorCode {
  return Object.hasOwn(FROM_RECORD, code)
}

/** Build the typed error for a native error record (unknown codes are internal errors). */
export function fromRecord(r: NativeErrorRecord): KvmboxError {
  return (isErrorCode(r.code) ? FROM_RECORD[r.code] : FROM_RECORD.INTERNAL)(r)
}

/** Re-throw an error thrown by the native layer as its typed class (others pass through). */
export function translateNativeError(e: unknown): unknown {
  if (e instanceof KvmboxError) return e
  const code = e instanceof Error ? (e as { code?: unknown }).code : undefined
  if (typeof code === 'string' && isErrorCode(code)) return fromRecord({ code, message: (e as Error).message })
  return e
}

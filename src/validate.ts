/**
 * Checks for what callers pass to the SDK's public methods: anything that is not what the
 * method takes becomes an {@link InvalidArgumentError} here, with a message that names it
 * safely (never a TypeError from deep inside, never a value converted into something else).
 */
import { InvalidArgumentError } from './errors'

/** A short, safe description of any value (symbols, null-prototype objects and all). */
export function show(v: unknown): string {
  if (typeof v === 'bigint') return `${v}n`
  if (typeof v === 'symbol') return v.toString()
  if (typeof v === 'function') return 'a function'
  if (v === null) return 'null'
  if (typeof v === 'object') return Array.isArray(v) ? 'an array' : 'an object'
  return String(v)
}

/** An options object (or nothing) whose keys are all known: a typo must not be ignored. */
export function checkKeys(opts: unknown, allowed: readonly string[], what: string): void {
  if (opts === undefined) return
  if (typeof opts !== 'object' || opts === null || Array.isArray(opts)) throw new InvalidArgumentError(`${what} options must be an object, got ${show(opts)}`)
  for (const k of Object.keys(opts)) {
    if (!allowed.includes(k)) throw new InvalidArgumentError(`unknown ${what} option ${JSON.stringify(k)} (known: ${allowed.join(', ')})`)
  }
}

export function checkString(v: unknown, what: string): string {
  if (typeof v !== 'string') throw new InvalidArgumentError(`${what} must be a string, got ${show(v)}`)
  return v
}

/** A string that may be handed to the native layer as a C string (no NUL). */
export function checkPath(v: unknown, what: string): string {
  const s = checkString(v, what)
  if (s.includes('\0')) throw new InvalidArgumentError(`${what} must not contain NUL characters`)
  return s
}

export function checkInteger(v: unknown, what: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) {
    throw new InvalidArgumentError(`${what} must be an integer from ${min} to ${max}, got ${show(v)}`)
  }
  return v
}

export function checkBytes(v: unknown, what: string): Uint8Array {
  if (!(v instanceof Uint8Array)) throw new InvalidArgumentError(`${what} must be a Uint8Array or Buffer, got ${show(v)}`)
  return v
}

/** A timeout in ms: a non-negative finite number (0 = none). */
export function checkTimeout(v: unknown, what = 'timeout'): number | undefined {
  if (v === undefined) return undefined
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
    throw new InvalidArgumentError(`${what} must be a non-negative finite number of milliseconds (0 = none), got ${show(v)}`)
  }
  return v
}

export function checkSignal(v: unknown): AbortSignal | undefined {
  if (v === undefined) return undefined
  if (!(v instanceof AbortSignal)) throw new InvalidArgumentError(`signal must be an AbortSignal, got ${show(v)}`)
  return v
}

// The public types, checked by `tsc -p __test__/types` (part of `npm test`): what a strict
// TypeScript project may write compiles, and what must not (`@ts-expect-error`) does not — if
// a line marked so compiles, tsc fails with "Unused '@ts-expect-error' directive".
import {
  type CallArg,
  type ErrorCode,
  FileError,
  GuestExitedError,
  GuestFaultError,
  type HostCallContext,
  InterruptedError,
  Machine,
  Pool,
  type PoolMachine,
  probe,
  type RemoteMachine,
  type RunResult,
  type Snapshot,
} from '../../dist'

declare const vm: Machine
declare const snap: Snapshot

// probe(): the backend is one of four names.
const backend: 'pvm' | 'vmx' | 'svm' | 'unknown' = probe().backend
// @ts-expect-error not a backend
const notBackend: 'kvm' = probe().backend

// Pools lend Machines in this thread and RemoteMachines with workers.
const local = new Pool(snap, { size: 2 })
void local.with((m) => m.call('add', 1, 2))
const remote = new Pool(snap, { workers: 2 })
void remote.with((m) => m.callAsync('add', 1, 2))
// @ts-expect-error a RemoteMachine has no synchronous call
void remote.with((m) => m.call('add', 1, 2))
const lent: Promise<RemoteMachine> = remote.acquire()
const either = new Pool<PoolMachine>(snap, { workers: 'auto' })
void either.with((m) => m.interrupt())
void local.with((m) => m.callAsync('add', 1, { signal: AbortSignal.timeout(10) }), { signal: new AbortController().signal })

// fn: parameters must be call arguments; bigint and async forms.
const add = vm.fn<(a: number, b: number) => number>('add')
const n: number = add(1, 2)
// @ts-expect-error a Date is not a call argument
vm.fn<(d: Date) => number>('f')
const big: bigint = vm.fnBigInt<(a: bigint) => bigint>('negate')(5n)
const later: Promise<number> = vm.fnAsync<(s: string) => Promise<number>>('str_len')('abc')
// @ts-expect-error fnAsync returns promises
vm.fnAsync<(s: string) => number>('str_len')
const arg: CallArg = Buffer.from('x')

// Options: known keys with their types.
Machine.fromFile('./prog', { timeout: 100, stdout: (c: Buffer) => void c, env: { A: 'b' } })
// @ts-expect-error unknown option (a typo must not silently mean something else)
Machine.fromFile('./prog', { timeoutMs: 100 })
// @ts-expect-error wrong type
Machine.fromFile('./prog', { memory: '64M' })
void vm.runAsync({ signal: AbortSignal.timeout(100) })
vm.call('add', 1, 2, { timeout: 5 })

// Results and errors.
declare const r: RunResult
if (r.status === 'signaled') {
  const s: string = r.signal
  const num: number = r.signalNumber
}
if (r.status === 'paused') {
  // @ts-expect-error a paused run has no exit code
  void r.exitCode
}
declare const e: unknown
if (e instanceof GuestFaultError) {
  const vector: number = e.vector
  const sig: string = e.signal
}
if (e instanceof GuestExitedError) {
  const s: string | undefined = e.signal
  const num: number | undefined = e.signalNumber
}
if (e instanceof FileError) {
  const errno: number = e.errno
  const code: string = e.syscallCode
}
const aborted: string = new InterruptedError().name
const code: ErrorCode = 'INTERRUPTED'
// @ts-expect-error not an error code
const notCode: ErrorCode = 'TIMED_OUT'

// Host-call contexts.
vm.onSyscall(0x10000, async (c: HostCallContext) => {
  c.signal.throwIfAborted()
  return c.args[0] + 1n
})
// @ts-expect-error handlers return integers, booleans or nothing
vm.onSyscall(0x10000, () => 'text')

// Disposal.
const d1: () => void = vm[Symbol.dispose]
const d2: () => void = snap[Symbol.dispose]
const d3: () => Promise<void> = local[Symbol.asyncDispose]
snap.close()

export { aborted, arg, backend, big, code, d1, d2, d3, later, lent, n, notBackend, notCode }

/**
 * The worker-thread side of `Pool` with `workers`: owns forks of a shared snapshot and runs
 * their calls synchronously on this thread (so each worker keeps one core busy without any
 * further thread hops).
 *
 * Protocol (kept small because every message costs main-thread time, which is what a busy
 * server runs out of first):
 * - `{ op: 'call', id, fork, target, args, asBigInt, timeout, arena? }` → `{ id, ok, value | error }`.
 *   Buffer arguments are not structured-cloned: the caller copies them into the fork's
 *   SharedArrayBuffer `arena` (shared, sent with every call that has buffers) and passes
 *   `{ at, len }`; the guest's writes land in the arena and the caller copies them back.
 *   The caller sends one fork's operations strictly in order, one call at a time.
 * - `{ op: 'reset', fork }` (no id, no reply): the pool's reset after each use. Messages are
 *   handled in order, so the fork's next call sees the reset; if a reset fails, the next
 *   request on that fork retries it and reports the error.
 * - `{ op: 'reset' | 'takeOutput', id, fork }` → `{ id, ok, value | error }`.
 */
import { parentPort, workerData } from 'node:worker_threads'

import { KvmboxError } from './errors'
import { type Machine, Snapshot } from './machine'

interface Init {
  shareId: number
  forks: number
  setup?: string
}

/** A buffer argument's place in the fork's arena. */
export interface ArenaSlice {
  at: number
  len: number
}

interface Request {
  op: 'call' | 'reset' | 'takeOutput'
  id?: number
  fork: number
  target?: string | number | bigint
  args?: unknown[]
  asBigInt?: boolean
  timeout?: number
  arena?: SharedArrayBuffer
}

/**
 * An error as plain data (structured clone keeps no classes). A KvmboxError's own fields are
 * the record `fromRecord()` rebuilds it from on the main thread, plus the output it carries.
 */
export function serializeError(e: unknown): Record<string, unknown> {
  if (e instanceof KvmboxError) {
    const { cause, ...fields } = e as KvmboxError & { cause?: unknown }
    return { ...fields, kvmbox: true, message: e.message, ...(cause === undefined ? {} : { cause: serializeError(cause) }) }
  }
  if (e instanceof Error) return { name: e.name, message: e.message, code: (e as { code?: unknown }).code }
  return { name: 'Error', message: String(e) }
}

function isArenaSlice(a: unknown): a is ArenaSlice {
  return typeof a === 'object' && a !== null && 'at' in a && 'len' in a
}

if (parentPort && workerData?.kvmboxPoolWorker) {
  const port = parentPort
  const init = workerData.kvmboxPoolWorker as Init
  const snap = Snapshot._fromShared(init.shareId)
  const forks: Machine[] = []
  const arenas: (SharedArrayBuffer | undefined)[] = []
  /** Forks whose background reset failed: their next request retries it first. */
  const resetFailed = new Set<number>()
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const setup: ((m: Machine) => void) | undefined = init.setup ? require(init.setup).setup : undefined
  for (let i = 0; i < init.forks; i++) {
    const m = snap.fork()
    setup?.(m)
    forks.push(m)
  }

  const handle = (req: Request): unknown => {
    const m = forks[req.fork]
    if (req.arena) arenas[req.fork] = req.arena
    if (resetFailed.has(req.fork)) {
      m.reset()
      resetFailed.delete(req.fork)
    }
    if (req.op === 'call') {
      const arena = arenas[req.fork]
      const args = (req.args ?? []).map((a) => (isArenaSlice(a) && arena ? Buffer.from(arena, a.at, a.len) : a))
      const full = (req.timeout !== undefined ? [...args, { timeout: req.timeout }] : args) as never[]
      return req.asBigInt ? m.callBigInt(req.target as string, ...full) : m.call(req.target as string, ...full)
    }
    if (req.op === 'reset') return m.reset()
    return m.takeOutput()
  }

  port.on('message', (req: Request) => {
    if (req.id === undefined) {
      // Background reset: nobody waits for it.
      try {
        forks[req.fork].reset()
      } catch {
        resetFailed.add(req.fork)
      }
      return
    }
    try {
      port.postMessage({ id: req.id, ok: true, value: handle(req) })
    } catch (e) {
      port.postMessage({ id: req.id, ok: false, error: serializeError(e) })
    }
  })
  // The forks' interrupt ids: the main thread interrupts a fork's call directly (this thread
  // is blocked in it and cannot read messages meanwhile).
  port.postMessage({ ready: true, interruptIds: forks.map((m) => m._interruptId) })
}

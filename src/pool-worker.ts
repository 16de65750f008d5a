/**
 * The worker-thread side of `Pool` with `workers`: owns forks of a shared snapshot and runs
 * their calls synchronously on this thread (so each worker keeps one core busy without any
 * further thread hops). Messages: { op: 'call' | 'reset' | 'takeOutput', id, fork, … }.
 */
import { parentPort, workerData } from 'node:worker_threads'

import { KvmboxError } from './errors'
import { Machine, Snapshot } from './machine'

interface Init {
  shareId: number
  forks: number
  setup?: string
}

interface Request {
  op: 'call' | 'reset' | 'takeOutput'
  id: number
  fork: number
  target?: string | number | bigint
  args?: unknown[]
  asBigInt?: boolean
  timeout?: number
}

/** An error as plain data (structured clone keeps no classes). */
export function serializeError(e: unknown): Record<string, unknown> {
  if (e instanceof Error) {
    const out: Record<string, unknown> = { name: e.name, message: e.message }
    for (const k of ['code', 'vector', 'vectorName', 'rip', 'address', 'errorCode', 'timeoutMs', 'exitCode', 'signal']) {
      if (k in e) out[k] = (e as unknown as Record<string, unknown>)[k]
    }
    if (e instanceof KvmboxError && e.cause !== undefined) out.cause = serializeError(e.cause)
    return out
  }
  return { name: 'Error', message: String(e) }
}

if (parentPort && workerData?.kvmboxPoolWorker) {
  const port = parentPort
  const init = workerData.kvmboxPoolWorker as Init
  const snap = Snapshot._fromShared(init.shareId)
  const forks: Machine[] = []
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const setup: ((m: Machine) => void) | undefined = init.setup ? require(init.setup).setup : undefined
  for (let i = 0; i < init.forks; i++) {
    const m = snap.fork()
    setup?.(m)
    forks.push(m)
  }
  port.on('message', (req: Request) => {
    const m = forks[req.fork]
    try {
      if (req.op === 'call') {
        const args = [...(req.args ?? [])]
        const full = (req.timeout !== undefined ? [...args, { timeout: req.timeout }] : args) as never[]
        const value = req.asBigInt ? m.callBigInt(req.target as string, ...full) : m.call(req.target as string, ...full)
        // Buffers are copied in and out: send back the ones the guest may have filled.
        const buffers = args.map((a) => (a instanceof Uint8Array ? a : undefined))
        port.postMessage({ id: req.id, ok: true, value, buffers })
      } else if (req.op === 'reset') {
        port.postMessage({ id: req.id, ok: true, value: m.reset() })
      } else {
        port.postMessage({ id: req.id, ok: true, value: m.takeOutput() })
      }
    } catch (e) {
      port.postMessage({ id: req.id, ok: false, error: serializeError(e) })
    }
  })
  port.postMessage({ ready: true })
}

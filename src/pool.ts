import * as os from 'node:os'
import * as path from 'node:path'
import { Worker } from 'node:worker_threads'

import type { NativeErrorRecord } from './errors'
import { fromRecord, InterruptedError, InvalidArgumentError, InvalidStateError } from './errors'
import type { Address, CallArg, CallOptions } from './machine'
import { _interruptMachine, isCallOptions, Machine, Snapshot, setVmPoolSize } from './machine'
import type { ArenaSlice } from './pool-worker'
import { checkKeys, checkSignal, show } from './validate'

export interface PoolOptions {
  /** Number of forks kept (default 4; with `workers`, at least one per worker). */
  size?: number
  /** Reset each fork to the snapshot after use, so nothing of one use is seen by the next (default true). */
  resetAfterUse?: boolean
  /**
   * Run the forks in this many worker threads, or `'auto'` for one per CPU
   * (`os.availableParallelism()`). Default 0: forks live on this thread and `pool.with` hands
   * out real Machines — measured faster on both workloads of `npm run bench:server`, because
   * each `callAsync` already runs on its fork's own vCPU thread, so guest work spreads over all
   * cores anyway. With workers, each worker thread owns an equal share of the forks — sharing
   * the snapshot's memory, not copying it — and runs their calls on its own core; `pool.with`
   * then hands out a {@link RemoteMachine}.
   */
  workers?: number | 'auto'
  /**
   * With `workers`: a module (absolute path) exporting `setup(machine)`, called in the worker
   * for every fork — the place to register host-call handlers (`machine.onSyscall`), since
   * functions cannot be sent to another thread.
   */
  workerSetup?: string
  /**
   * Without workers: called with every fork when the pool makes it (register host-call
   * handlers, output callbacks' state, …); what it does stays across the resets after each use.
   */
  setup?: (machine: Machine) => void
}

/** The part of a Machine a pool hands out: what works across threads (asynchronous). */
export interface PoolMachine {
  callAsync(target: string | Address, ...args: [...CallArg[]] | [...CallArg[], CallOptions]): Promise<number>
  callBigIntAsync(target: string | Address, ...args: [...CallArg[]] | [...CallArg[], CallOptions]): Promise<bigint>
  /** Stop the call in progress (it rejects with an InterruptedError); false if none is. */
  interrupt(): boolean
}

/** A fork living in a pool worker thread; calls are forwarded there. */
export class RemoteMachine implements PoolMachine {
  /** Shared with the worker: buffer arguments travel through it (see pool-worker.ts). */
  #arena: SharedArrayBuffer | undefined
  /**
   * Everything sent for this fork goes out in the order it was asked for, one call at a time
   * (calls share the arena): the last operation queued.
   */
  #tail: Promise<unknown> = Promise.resolve()

  /** @internal */
  constructor(
    private readonly worker: WorkerHandle,
    private readonly fork: number,
  ) {}

  callAsync(target: string | Address, ...args: [...CallArg[]] | [...CallArg[], CallOptions]): Promise<number> {
    return this.#call(target, args, false) as Promise<number>
  }

  callBigIntAsync(target: string | Address, ...args: [...CallArg[]] | [...CallArg[], CallOptions]): Promise<bigint> {
    return this.#call(target, args, true) as Promise<bigint>
  }

  /**
   * Stop this fork's call in progress (it rejects with an InterruptedError), directly from this
   * thread: the worker is busy running it. False if no call is running there right now (one
   * still queued behind other forks' work is not affected; abort its signal instead).
   */
  interrupt(): boolean {
    const id = this.worker.interruptIds[this.fork]
    return id !== undefined && _interruptMachine(id)
  }

  /** Reset the fork to the snapshot (the pool does this after each use). */
  reset(): Promise<number> {
    return this.#enqueue(() => this.worker.request({ op: 'reset', fork: this.fork })) as Promise<number>
  }

  /**
   * @internal Reset without waiting for the worker: posted after everything queued before it,
   * and the worker handles it before anything queued after it.
   */
  _resetInBackground(): void {
    void this.#enqueue(() => this.worker.post({ op: 'reset', fork: this.fork }))
  }

  /** Output written to captured streams during calls. */
  takeOutput(): Promise<{ stdout: Buffer; stderr: Buffer }> {
    return this.#enqueue(() => this.worker.request({ op: 'takeOutput', fork: this.fork })) as Promise<{ stdout: Buffer; stderr: Buffer }>
  }

  #call(target: string | Address, raw: unknown[], asBigInt: boolean): Promise<number | bigint> {
    return this.#enqueue(() => this.#callNow(target, raw, asBigInt))
  }

  /** Run `op` after every operation queued before it has finished. */
  #enqueue<T>(op: () => T | Promise<T>): Promise<T> {
    const run = this.#tail.then(op)
    this.#tail = run.catch(() => undefined)
    return run
  }

  /** `args` is this call's own array (a rest parameter), so it may be changed here. */
  async #callNow(target: string | Address, args: unknown[], asBigInt: boolean): Promise<number | bigint> {
    const opts: CallOptions = isCallOptions(args[args.length - 1]) ? (args.pop() as CallOptions) : {}
    checkKeys(opts, ['timeout', 'signal'], 'call')
    const { timeout } = opts
    const signal = checkSignal(opts.signal)
    if (signal?.aborted) throw new InterruptedError('aborted before it started')
    const onAbort = () => this.interrupt()
    signal?.addEventListener('abort', onAbort, { once: true })
    try {
      return await this.#send(target, args, asBigInt, timeout)
    } finally {
      signal?.removeEventListener('abort', onAbort)
    }
  }

  async #send(target: string | Address, args: unknown[], asBigInt: boolean, timeout: number | undefined): Promise<number | bigint> {
    // Buffers go through the fork's shared arena (one memcpy each way) rather than being
    // structured-cloned twice.
    const buffers = args.filter((a) => a instanceof Uint8Array) as Uint8Array[]
    const bytes = buffers.reduce((n, b) => n + b.length, 0)
    if (buffers.length > 0 && (!this.#arena || this.#arena.byteLength < bytes)) {
      this.#arena = new SharedArrayBuffer(Math.max(bytes, 2 * (this.#arena?.byteLength ?? 16 * 1024)))
    }
    const view = this.#arena ? new Uint8Array(this.#arena) : undefined
    let at = 0
    const sent = args.map((a) => {
      if (!(a instanceof Uint8Array)) return a
      view!.set(a, at)
      const slice: ArenaSlice = { at, len: a.length }
      at += a.length
      return slice
    })
    // The arena goes with every call that uses it (sharing, not copying: cheap), so the worker
    // can never be left with an older one.
    const msg: Record<string, unknown> = { op: 'call', fork: this.fork, target, args: sent, asBigInt, timeout }
    if (buffers.length > 0) msg.arena = this.#arena
    try {
      return (await this.worker.request(msg)) as number | bigint
    } finally {
      // The guest may have written into its buffers (also before a fault): copy them back.
      sent.forEach((s, i) => {
        const dst = args[i]
        if (dst instanceof Uint8Array) dst.set(view!.subarray((s as ArenaSlice).at, (s as ArenaSlice).at + dst.length))
      })
    }
  }
}

/** @internal One pool worker thread and its pending requests. */
class WorkerHandle {
  readonly worker: Worker
  readonly ready: Promise<void>
  /** The worker's forks' interrupt ids (see RemoteMachine.interrupt), once it is ready. */
  interruptIds: number[] = []
  #next = 1
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>()

  constructor(shareId: number, forks: number, setup?: string) {
    this.worker = new Worker(path.join(__dirname, 'pool-worker.js'), { workerData: { kvmboxPoolWorker: { shareId, forks, setup } } })
    // A pool nobody closed must not keep the process alive: the worker only holds it while
    // requests are pending (see request()).
    this.worker.unref()
    this.ready = new Promise((resolve, reject) => {
      const onMessage = (m: { ready?: boolean; interruptIds?: number[] }) => {
        if (m.ready) {
          this.interruptIds = m.interruptIds ?? []
          this.worker.off('message', onMessage)
          this.worker.off('error', reject)
          resolve()
        }
      }
      this.worker.on('message', onMessage)
      this.worker.once('error', reject)
    })
    this.worker.on('message', (m: { id?: number; ok: boolean; value?: unknown; error?: Record<string, unknown> }) => {
      if (m.id === undefined) return
      const p = this.#pending.get(m.id)
      if (!p) return
      this.#pending.delete(m.id)
      if (this.#pending.size === 0) this.worker.unref()
      if (m.ok) p.resolve(m.value)
      else p.reject(deserializeError(m.error ?? {}))
    })
    this.worker.on('error', (e) => {
      for (const p of this.#pending.values()) p.reject(e)
      this.#pending.clear()
    })
  }

  request(msg: Record<string, unknown>): Promise<unknown> {
    const id = this.#next++
    return new Promise((resolve, reject) => {
      if (this.#pending.size === 0) this.worker.ref()
      this.#pending.set(id, { resolve, reject })
      msg.id = id
      this.worker.postMessage(msg)
    })
  }

  /** A message that gets no reply. */
  post(msg: Record<string, unknown>): void {
    this.worker.postMessage(msg)
  }
}

function deserializeError(e: Record<string, unknown>): unknown {
  let err: Error
  if (e.kvmbox) {
    const k = fromRecord(e as unknown as NativeErrorRecord)
    if (e.stdout instanceof Uint8Array) k.stdout = Buffer.from(e.stdout.buffer, e.stdout.byteOffset, e.stdout.byteLength)
    if (e.stderr instanceof Uint8Array) k.stderr = Buffer.from(e.stderr.buffer, e.stderr.byteOffset, e.stderr.byteLength)
    err = k
  } else {
    err = new Error(String(e.message))
    err.name = String(e.name)
    if (e.code !== undefined) (err as { code?: unknown }).code = e.code
  }
  if (e.cause) (err as { cause?: unknown }).cause = deserializeError(e.cause as Record<string, unknown>)
  return err
}

/**
 * A fixed set of forks of one snapshot, handed out one use at a time:
 *
 * ```ts
 * const pool = new Pool(snap, { size: 8 })
 * const out = await pool.with((m) => m.callAsync('handle', request))
 * ```
 *
 * After each use the fork is reset to the snapshot (microseconds; only the pages the use
 * wrote are copied back), including after a fault or timeout. Waiters are served in order.
 * With `workers`, forks live in worker threads (one core each) and uses get a RemoteMachine.
 */
class PoolImpl<M extends PoolMachine = Machine> {
  readonly #snapshot: Snapshot
  readonly #resetAfterUse: boolean
  readonly #idle: M[] = []
  readonly #all: M[] = []
  readonly #waiters: { resolve: (m: M) => void; reject: (e: unknown) => void }[] = []
  readonly #workers: WorkerHandle[] = []
  #shareId: number | undefined
  #closed = false
  /** Resolves once every worker has created its forks (immediately without workers). */
  readonly ready: Promise<void>

  constructor(snapshot: Snapshot, opts: PoolOptions = {}) {
    if (!(snapshot instanceof Snapshot)) throw new InvalidArgumentError(`a Pool needs a Snapshot, got ${show(snapshot)}`)
    checkKeys(opts, ['size', 'resetAfterUse', 'workers', 'workerSetup', 'setup'], 'pool')
    opts ??= {}
    if (opts.resetAfterUse !== undefined && typeof opts.resetAfterUse !== 'boolean') throw new InvalidArgumentError('resetAfterUse must be a boolean')
    if (opts.workerSetup !== undefined && (typeof opts.workerSetup !== 'string' || !path.isAbsolute(opts.workerSetup))) {
      throw new InvalidArgumentError('workerSetup must be an absolute path')
    }
    const workers = opts.workers === 'auto' ? os.availableParallelism() : (opts.workers ?? 0)
    if (!Number.isSafeInteger(workers) || workers < 0 || workers > 256)
      throw new InvalidArgumentError(`workers must be an integer from 0 to 256 or 'auto', got ${show(workers)}`)
    if (opts.size !== undefined && (!Number.isSafeInteger(opts.size) || opts.size < 1 || opts.size > 4096)) {
      throw new InvalidArgumentError(`pool size must be an integer from 1 to 4096, got ${show(opts.size)}`)
    }
    const size = Math.max(opts.size ?? 4, workers)
    if (opts.setup !== undefined && typeof opts.setup !== 'function') throw new InvalidArgumentError('setup must be a function')
    if (opts.setup !== undefined && workers > 0)
      throw new InvalidArgumentError('setup runs in this thread; with workers, use workerSetup (a module each worker loads)')
    this.#snapshot = snapshot
    this.#resetAfterUse = opts.resetAfterUse ?? true
    if (workers === 0) {
      for (let i = 0; i < size; i++) {
        const fork = snapshot.fork()
        opts.setup?.(fork)
        const m = fork as unknown as M
        this.#all.push(m)
        this.#idle.push(m)
      }
      // Later forks of any snapshot find a blank VM ready.
      setVmPoolSize(Math.min(size, 8))
      this.ready = Promise.resolve()
      return
    }
    this.#shareId = snapshot._share()
    for (let w = 0; w < workers; w++) {
      const forks = Math.floor(size / workers) + (w < size % workers ? 1 : 0)
      const handle = new WorkerHandle(this.#shareId, forks, opts.workerSetup)
      this.#workers.push(handle)
      for (let f = 0; f < forks; f++) this.#all.push(new RemoteMachine(handle, f) as unknown as M)
    }
    // Interleave workers so consecutive uses land on different threads.
    const byWorker = this.#workers.map((h) => this.#all.filter((m) => (m as unknown as { worker: WorkerHandle }).worker === h))
    for (let i = 0; byWorker.some((l) => i < l.length); i++) for (const l of byWorker) if (i < l.length) this.#idle.unshift(l[i])
    this.ready = Promise.all(this.#workers.map((h) => h.ready)).then(() => undefined)
  }

  /** Forks currently free. */
  get available(): number {
    return this.#idle.length
  }

  get size(): number {
    return this.#all.length
  }

  /**
   * Take a fork (waiting for one to be free). Give it back with release(). Aborting `signal`
   * while waiting rejects with an InterruptedError.
   */
  async acquire(opts: { signal?: AbortSignal } = {}): Promise<M> {
    checkKeys(opts, ['signal'], 'acquire')
    const signal = checkSignal(opts?.signal)
    if (this.#closed) throw new InvalidStateError('the pool is closed')
    if (signal?.aborted) throw new InterruptedError('aborted before a fork was free')
    await this.ready
    const m = this.#idle.pop()
    if (m) return m
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: (fork: M) => {
          signal?.removeEventListener('abort', onAbort)
          resolve(fork)
        },
        reject,
      }
      const onAbort = () => {
        const i = this.#waiters.indexOf(waiter)
        if (i >= 0) this.#waiters.splice(i, 1)
        reject(new InterruptedError('aborted while waiting for a fork'))
      }
      signal?.addEventListener('abort', onAbort, { once: true })
      this.#waiters.push(waiter)
    })
  }

  /**
   * Return a fork taken with acquire(); it is reset first unless resetAfterUse is false.
   * Throws at once for a machine that is not the pool's. The fork is back when this returns
   * (the promise is already settled): a fork on this thread is reset synchronously; a fork in
   * a worker is reset there in the background, ahead of its next operation.
   */
  release(m: M): Promise<void> {
    if (!this.#all.includes(m)) throw new InvalidArgumentError('this machine does not belong to the pool')
    if (this.#closed) {
      if (m instanceof Machine) m.close()
      return Promise.resolve()
    }
    if (this.#resetAfterUse && m instanceof RemoteMachine) m._resetInBackground()
    else if (this.#resetAfterUse) (m as unknown as Machine).reset()
    this.#handBack(m)
    return Promise.resolve()
  }

  #handBack(m: M): void {
    const next = this.#waiters.shift()
    if (next) next.resolve(m)
    else this.#idle.push(m)
  }

  /**
   * Run `fn` with a fork, then reset and release it (also when `fn` throws). Aborting `signal`
   * rejects a wait for a fork, and interrupts the fork's call in progress (which then rejects
   * with an InterruptedError).
   */
  async with<T>(fn: (m: M) => T | Promise<T>, opts: { signal?: AbortSignal } = {}): Promise<T> {
    if (typeof fn !== 'function') throw new InvalidArgumentError(`pool.with() takes a function, got ${show(fn)}`)
    checkKeys(opts, ['signal'], 'pool.with')
    const m = await this.acquire(opts)
    const signal = opts?.signal
    const onAbort = () => m.interrupt()
    signal?.addEventListener('abort', onAbort, { once: true })
    try {
      return await fn(m)
    } finally {
      signal?.removeEventListener('abort', onAbort)
      await this.release(m)
    }
  }

  /** Close every fork (and worker), reject waiting and future acquires. */
  close(): void {
    this.#closed = true
    for (const m of this.#idle) if (m instanceof Machine) m.close()
    this.#idle.length = 0
    for (const w of this.#waiters.splice(0)) w.reject(new InvalidStateError('the pool was closed'))
    for (const h of this.#workers) void h.worker.terminate()
    if (this.#shareId !== undefined) Snapshot._unshare(this.#shareId)
  }

  get snapshot(): Snapshot {
    return this.#snapshot
  }

  /** `using pool = new Pool(…)`: close() at the end of the scope. */
  [Symbol.dispose](): void {
    this.close()
  }

  /** `await using pool = new Pool(…)`: close() at the end of the scope, after its workers have exited. */
  async [Symbol.asyncDispose](): Promise<void> {
    const exits = this.#workers.map((h) => new Promise((r) => h.worker.once('exit', r)))
    this.close()
    await Promise.all(exits)
  }
}

/**
 * How `new Pool(…)` types the forks it lends: real {@link Machine}s when they live in this
 * thread, {@link RemoteMachine}s (async calls only) with `workers` — so
 * `new Pool(snap, { workers: 2 }).with((m) => m.call(…))` does not compile.
 */
export interface PoolConstructor {
  /** Forks in this thread: `pool.with` lends Machines. */
  new (snapshot: Snapshot, opts?: PoolOptions & { workers?: 0 }): Pool<Machine>
  /** Forks in worker threads: `pool.with` lends RemoteMachines. */
  new (snapshot: Snapshot, opts: PoolOptions & { workers: number | 'auto' }): Pool<RemoteMachine>
  /** Explicitly typed, e.g. `new Pool<PoolMachine>(snap, { workers })` for code that serves either kind. */
  new <M extends PoolMachine>(snapshot: Snapshot, opts?: PoolOptions): Pool<M>
  readonly prototype: Pool<PoolMachine>
}

/** A fixed set of forks of one snapshot, lent one use at a time (see {@link PoolConstructor}). */
export type Pool<M extends PoolMachine = Machine> = PoolImpl<M>
export const Pool: PoolConstructor = PoolImpl as unknown as PoolConstructor

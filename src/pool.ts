import { InvalidArgumentError, InvalidStateError } from './errors'
import { Machine, Snapshot, setVmPoolSize } from './machine'

export interface PoolOptions {
  /** Number of forks kept (default 4). */
  size?: number
  /** Reset each fork to the snapshot after use, so nothing of one use is seen by the next (default true). */
  resetAfterUse?: boolean
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
 */
export class Pool {
  readonly #snapshot: Snapshot
  readonly #resetAfterUse: boolean
  readonly #idle: Machine[] = []
  readonly #all: Machine[] = []
  readonly #waiters: { resolve: (m: Machine) => void; reject: (e: unknown) => void }[] = []
  #closed = false

  constructor(snapshot: Snapshot, opts: PoolOptions = {}) {
    const size = opts.size ?? 4
    if (!Number.isInteger(size) || size < 1) throw new InvalidArgumentError(`pool size must be a positive integer, got ${size}`)
    this.#snapshot = snapshot
    this.#resetAfterUse = opts.resetAfterUse ?? true
    for (let i = 0; i < size; i++) {
      const m = snapshot.fork()
      this.#all.push(m)
      this.#idle.push(m)
    }
    // Later forks of any snapshot find a blank VM ready.
    setVmPoolSize(Math.min(size, 8))
  }

  /** Forks currently free. */
  get available(): number {
    return this.#idle.length
  }

  get size(): number {
    return this.#all.length
  }

  /** Take a fork (waiting for one to be free). Give it back with release(). */
  acquire(): Promise<Machine> {
    if (this.#closed) return Promise.reject(new InvalidStateError('the pool is closed'))
    const m = this.#idle.pop()
    if (m) return Promise.resolve(m)
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }))
  }

  /** Return a fork taken with acquire(); it is reset first unless resetAfterUse is false. */
  release(m: Machine): void {
    if (!this.#all.includes(m)) throw new InvalidArgumentError('this machine does not belong to the pool')
    if (this.#closed) {
      m.close()
      return
    }
    if (this.#resetAfterUse) m.reset()
    const next = this.#waiters.shift()
    if (next) next.resolve(m)
    else this.#idle.push(m)
  }

  /** Run `fn` with a fork, then reset and release it (also when `fn` throws). */
  async with<T>(fn: (m: Machine) => T | Promise<T>): Promise<T> {
    const m = await this.acquire()
    try {
      return await fn(m)
    } finally {
      this.release(m)
    }
  }

  /** Close every fork, reject waiting and future acquires. Forks in use close when released. */
  close(): void {
    this.#closed = true
    for (const m of this.#idle) m.close()
    this.#idle.length = 0
    for (const w of this.#waiters.splice(0)) w.reject(new InvalidStateError('the pool was closed'))
  }

  get snapshot(): Snapshot {
    return this.#snapshot
  }
}

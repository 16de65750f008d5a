// Loads the napi-rs binding (native/index.js) so that a missing or unloadable prebuilt binary
// gives an error naming what is missing — the platform, and the package that should have
// provided the binary — instead of the generated loader's generic "Cannot find native binding".
// Importing kvmbox never throws for it: probe() reports it (available: false, error), and
// anything that needs the binary throws it.
import fs = require('node:fs')
import path = require('node:path')

/**
 * The platforms a prebuilt binary is published for (package.json `napi.targets`), by napi-rs
 * platform id → the npm package carrying it. kvmbox drives x86-64 guests with KVM, so only
 * x86-64 Linux hosts can ever run it.
 */
const PREBUILT: Record<string, string> = {
  'linux-x64-gnu': 'kvmbox-linux-x64-gnu',
}

const NATIVE_DIR = path.join(__dirname, '..', 'native')

function isMusl(): boolean {
  try {
    if (fs.readFileSync('/usr/bin/ldd', 'utf8').includes('musl')) return true
  } catch {
    // no ldd: ask the process report below
  }
  const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined
  return !report?.header?.glibcVersionRuntime
}

/** napi-rs platform id of this host, e.g. "linux-x64-gnu", "darwin-arm64". */
function platformId(): string {
  const id = `${process.platform}-${process.arch}`
  if (process.platform !== 'linux') return id
  return `${id}-${isMusl() ? 'musl' : 'gnu'}`
}

/** Messages of an error and its `cause` chain (the napi-rs loader chains every attempt). */
function messages(e: unknown): string[] {
  const out: string[] = []
  for (let c = e as { message?: unknown; cause?: unknown } | undefined; c && out.length < 32; c = c.cause as typeof c) {
    out.push(String(c.message ?? c).split('\n')[0]) // first line: not Node's "Require stack:" list
  }
  return out
}

function installed(pkg: string): boolean {
  try {
    require.resolve(`${pkg}/package.json`, { paths: [NATIVE_DIR] })
    return true
  } catch {
    return false
  }
}

function loadError(e: unknown): Error {
  const id = platformId()
  const pkg = PREBUILT[id]
  const supported = Object.keys(PREBUILT).join(', ')
  // The loader's attempts, innermost last. The interesting one is the attempt that found a file
  // but could not load it (a dlopen error, or the package's missing main file: it names the
  // package's path) — not the plain "Cannot find module 'x'" of what is simply absent.
  const tried = messages(e).filter((m) => !m.startsWith('Cannot find native binding'))
  const failure = tried.find((m) => (pkg !== undefined && m.includes(pkg) && !m.includes(`'${pkg}'`)) || !m.startsWith('Cannot find module'))
  const checkout = fs.existsSync(path.join(NATIVE_DIR, '..', 'crates', 'kvmbox-node'))
  let message: string
  if (process.env.NAPI_RS_NATIVE_LIBRARY_PATH) {
    message =
      `kvmbox: could not load the native binding from NAPI_RS_NATIVE_LIBRARY_PATH=${process.env.NAPI_RS_NATIVE_LIBRARY_PATH}` +
      (tried.length ? `: ${tried[tried.length - 1]}` : '')
  } else if (pkg === undefined) {
    message =
      `kvmbox: no prebuilt native binary for this platform (${id}). kvmbox runs only on x86-64 Linux ` +
      `with glibc and KVM; prebuilt binaries exist for: ${supported} (package ${Object.values(PREBUILT).join(', ')}).`
  } else if (!installed(pkg)) {
    message =
      `kvmbox: the prebuilt native binary for ${id} is missing: package ${pkg} (an optional dependency ` +
      `of kvmbox) is not installed. Install it with kvmbox, without --omit=optional / --no-optional; if ` +
      `npm skipped it anyway, delete node_modules and package-lock.json and install again ` +
      `(https://github.com/npm/cli/issues/4828).` +
      (checkout ? ` In a kvmbox checkout, build it instead: npm run build:native.` : '')
  } else {
    message = `kvmbox: the prebuilt native binary for ${id} (package ${pkg}) is installed but failed to load${failure ? `: ${failure}` : '.'}`
  }
  const error = new Error(message)
  error.cause = e
  return error
}

/** Why the binding could not be loaded, if it could not. */
export let loadFailure: Error | undefined

/**
 * The binding, or — when it cannot be loaded — a stand-in whose every member throws the
 * descriptive error (so `import 'kvmbox'` works and `probe()` can report it).
 */
export function loadNative<T extends object>(): T {
  try {
    return require('../native') as T
  } catch (e) {
    loadFailure = loadError(e)
    const failure = loadFailure
    return new Proxy({} as T, {
      get() {
        throw failure
      },
    })
  }
}

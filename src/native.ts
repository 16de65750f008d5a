// Typed handle on the napi-rs generated loader (native/index.js + native/index.d.ts,
// produced by `npm run build:native`). `../native` resolves from both src/ and dist/. A missing
// or unloadable prebuilt binary does not make this import throw (see ./load-native).
import type NativeModule = require('../native')

import { loadNative } from './load-native'

const native = loadNative<typeof NativeModule>()
export = native

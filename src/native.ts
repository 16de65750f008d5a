// Typed handle on the napi-rs generated loader (native/index.js + native/index.d.ts,
// produced by `npm run build:native`). `../native` resolves from both src/ and dist/.
import './load-native'; // a missing/unloadable prebuilt binary: an error naming the platform and package
import native = require('../native');

export = native;

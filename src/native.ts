// Typed handle on the napi-rs generated loader (native/index.js + native/index.d.ts,
// produced by `npm run build:native`). `../native` resolves from both src/ and dist/.
import native = require('../native');

export = native;

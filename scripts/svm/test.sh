#!/usr/bin/env bash
# `npm run test:svm`: the core's Rust tests (unit tests, incl. the exit decoder and the backend
# probe; integration tests: runs, calls, host calls, snapshots/forks/resets, faults, timeouts,
# seccomp, gdb single-steps and Ctrl-C through the remote protocol) and the `run`/`call`
# examples, all built static, on a real AMD-SVM /dev/kvm: QEMU's TCG emulator boots a Debian
# kernel that loads kvm_amd (scripts/svm/rig.sh). One boot runs everything; a failure anywhere
# fails the command.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
TARGET=x86_64-unknown-linux-gnu
OUT=$ROOT/target/svm
BUILD=$OUT/$TARGET/release

bash scripts/svm/rig.sh setup

echo "== test:svm: building the core's tests and examples static"
# The explicit --target keeps build scripts and proc macros dynamic; a target dir of its own
# keeps the RUSTFLAGS change from rebuilding the main build.
export RUSTFLAGS='-C target-feature=+crt-static'
cargo=(cargo --quiet)
tests=$("${cargo[@]}" test --release -p kvmbox --target "$TARGET" --target-dir "$OUT" --no-run --message-format=json |
  grep '"test":true' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p')
"${cargo[@]}" build --release -p kvmbox --target "$TARGET" --target-dir "$OUT" --example run --example call
unset RUSTFLAGS
[ -n "$tests" ] || { echo "test:svm: cargo reported no test executables" >&2; exit 1; }

# The guest has no compiler: the integration tests' guests are built here (as tests/machine.rs
# would), and the tests find them through KVMBOX_TEST_GUEST_BIN.
GUESTS=$OUT/guests
mkdir -p "$GUESTS"
for name in hello exit faults files calls threads signals threadpool pagerights fswrite clocks; do
  gcc -O2 -static -o "$GUESTS/$name" "__test__/guests/$name.c" -lm
done

files=(-f "$GUESTS" -f "$OUT/$TARGET/tmp" -f "$ROOT/__test__/guests" -f "$ROOT/crates/kvmbox/Cargo.toml" -f "$BUILD/examples/run" -f "$BUILD/examples/call")
# Every step runs even after a failure (one boot shows everything); the status says if any failed.
script="failed=; cd $ROOT/crates/kvmbox"
step() { script+="; echo '== test:svm: $1'; ${*:2} || failed=\"\$failed $1\""; }
for t in $tests; do
  files+=(-f "$t")
  step "$(basename "$t")" "$t" --test-threads=1
done
step "example run" "$BUILD/examples/run" "$GUESTS/hello"
step "example call" "$BUILD/examples/call" "$GUESTS/calls"
script+='; if [ -n "$failed" ]; then echo "test:svm: FAILED:$failed"; exit 1; fi; echo "test:svm: all passed"'

echo "== test:svm: booting the SVM rig"
bash scripts/svm/rig.sh run -t 1200 "${files[@]}" -e KVMBOX_TEST_GUEST_BIN="$GUESTS" -- sh -c "$script"

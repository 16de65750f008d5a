#!/usr/bin/env bash
# Fuzz the ELF loader, snapshot-file loading and the syscall emulation with cargo-fuzz
# (libFuzzer + AddressSanitizer), SECONDS each (default 30). Seeds: the built test guests, a
# saved snapshot, and for syscalls a few hand-made sequences; the syscall target fires its
# input at a paused calls-musl guest (KVM needed). Needs `npm run build` and
# `npm run build:guests` first. Crashes land in crates/kvmbox/fuzz/artifacts/ and fail the run.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install -q cargo-fuzz --locked
fuzz=crates/kvmbox/fuzz
mkdir -p "$fuzz/corpus/elf" "$fuzz/corpus/snapshot_file" "$fuzz/corpus/syscalls"
cp __test__/guests/build/hello-musl __test__/guests/build/exit-musl __test__/guests/build/hello-pie "$fuzz/corpus/elf/"
node -e "
const { Machine } = require('./dist');
const vm = Machine.fromFile('__test__/guests/build/calls-musl', { memory: 8 << 20 });
vm.run();
vm.snapshot().save('$fuzz/corpus/snapshot_file/calls-musl.kvmsnap');"
# Syscall seeds: write(1, <stack>, 16); openat(AT_FDCWD, <symbol>, 0); mmap(0, 8192, 3, 0x22, -1, 0).
printf '\x01\x00\x00\x01\x03\x00\x00\x00\x00\x10\x00\x00\x00\x00\x00\x00' > "$fuzz/corpus/syscalls/write"
printf '\x01\x01\x00\x9c\x03\x05\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00' > "$fuzz/corpus/syscalls/openat"
printf '\x09\x00\x00\x00\x09\x00\x00\x20\x00\x00\x00\x00\x00\x00\x00\x03\x00\x22\x00\xff\x00\x00' > "$fuzz/corpus/syscalls/mmap"
export KVMBOX_FUZZ_GUEST="$PWD/__test__/guests/build/calls-musl" KVMBOX_FUZZ_ALLOW="$PWD/__test__/guests"
cd crates/kvmbox
# cargo-fuzz needs nightly-only flags; the stable toolchain accepts them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
for target in elf snapshot_file syscalls; do
  echo "== fuzz $target for ${seconds}s"
  cargo fuzz run -O "$target" "fuzz/corpus/$target" -- -max_total_time="$seconds" -rss_limit_mb=4096 -max_len=1048576 2>&1 | grep -E "^Done|ERROR|panicked|SUMMARY" || true
  if ls fuzz/artifacts/"$target"/crash-* >/dev/null 2>&1; then
    echo "fuzz $target found crashes:"; ls fuzz/artifacts/"$target"/; exit 1
  fi
done

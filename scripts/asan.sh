#!/usr/bin/env bash
# The core crate's tests (real guests on KVM: runs, calls, snapshots, forks, resets, debugging,
# seccomp) built with AddressSanitizer, which checks the unsafe parts — guest-memory access,
# KVM structures, the reaper, the timer — for out-of-bounds accesses, use-after-free and leaks.
# AddressSanitizer needs nightly flags; the stable toolchain accepts them with RUSTC_BOOTSTRAP.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1
export RUSTFLAGS="-Zsanitizer=address"
export RUSTDOCFLAGS="-Zsanitizer=address"
export ASAN_OPTIONS="detect_leaks=1"
# An explicit --target keeps the sanitizer away from build scripts and proc macros.
cargo test --release -p kvmbox --target x86_64-unknown-linux-gnu --target-dir target/asan --tests "$@"

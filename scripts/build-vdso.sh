#!/usr/bin/env bash
# Rebuilds crates/kvmbox/vdso/vdso.so from vdso.c and vdso.lds (the result is checked in, so
# building kvmbox needs no C compiler). Run after changing either; the core's unit tests check
# the image (one read+execute segment, no relocations, the symbols glibc, musl and Go look up).
set -euo pipefail
cd "$(dirname "$0")/../crates/kvmbox/vdso"
gcc -O2 -fPIC -nostdlib -shared -fno-stack-protector -fno-asynchronous-unwind-tables -fno-builtin \
  -fcf-protection=none -mno-sse -mno-mmx -mgeneral-regs-only \
  -Wl,-T,vdso.lds -Wl,--hash-style=both -Wl,-soname=linux-vdso.so.1 -Wl,--build-id=none \
  -Wl,-z,max-page-size=4096 -Wl,-z,norelro -Wl,--no-undefined \
  -o vdso.so vdso.c
echo "vdso.so: $(stat -c %s vdso.so) bytes"

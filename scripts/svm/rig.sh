#!/usr/bin/env bash
# SVM rig: run commands against a real AMD-SVM /dev/kvm on a machine whose own /dev/kvm is not
# SVM (e.g. PVM) or that has none. QEMU's TCG emulator implements SVM with nested paging, so a
# stock Debian kernel booted in `qemu-system-x86_64 -accel tcg -cpu max` loads kvm_amd and gives
# its userspace a /dev/kvm backed by SVM. No VMX: TCG does not emulate it.
#
#   rig.sh setup
#       Idempotent. Installs qemu-system-x86, busybox-static and cpio when missing (one
#       `apt-get update` at most), fetches the kernel package that linux-image-amd64 depends on
#       with `apt-get download` and unpacks it (dpkg-deb -x) into $KVMBOX_SVM_DIR/kernels/PKG;
#       $KVMBOX_SVM_DIR/kernel points at it. Skips the download when that package is unpacked.
#       Also unpacks the ELF kernel from the bzImage (kernel/vmlinux), which QEMU boots through
#       its PVH entry: that saves the ~4 s the bzImage spends decompressing itself under TCG.
#       Needs root (or sudo) only for installing packages.
#
#   rig.sh run [-t TIMEOUT] [-m MB] [-f HOSTPATH[:GUESTPATH]]... [-e VAR=VALUE]... -- COMMAND...
#       Builds an initramfs (busybox, kvm_amd and the modules it depends on, the -f files),
#       boots it and runs COMMAND in the guest as root, cwd /, stdin /dev/null, with the -e
#       variables exported. Prints the console; exits with COMMAND's status, 124 on timeout,
#       125 when there is no result (kvm_amd did not load or /dev/kvm is missing: the rig says
#       so; or the guest crashed), 2 on a usage error or when setup is missing.
#       -t TIMEOUT  wall-clock limit for the whole boot, as for timeout(1) (default 600)
#       -m MB       guest memory (default 2048; nested VMs live inside it)
#       -f HOSTPATH[:GUESTPATH]  copy a file or directory (recursively, mtimes kept) to
#                   GUESTPATH, by default the same absolute path as on the host, so binaries that
#                   baked in absolute paths find their files. The libraries (ldd) of dynamic
#                   executables among them are copied too.
#       -e VAR=VALUE  export VAR in COMMAND's environment (PATH, HOME=/root are preset)
#       COMMAND is run as its words (exec); for a snippet use sh -c '...'. Commands available in
#       the guest are busybox's applets plus what -f brings.
#       The command's output lies between "=== kvmbox-svm: command start ===" and
#       "=== kvmbox-svm: command exited rc=N ===".
#
# Environment: KVMBOX_SVM_DIR (cache; default ~/.cache/kvmbox-svm), KVMBOX_SVM_CPU (QEMU -cpu,
# default max), KVMBOX_SVM_SMP (default 1), KVMBOX_SVM_KVM_AMD (kvm_amd parameters, e.g. npt=0),
# KVMBOX_SVM_KEEP=1 (keep the run's work directory: initramfs, console.log).
#
# Example, the core's unit tests (static, so the guest needs no libraries; the explicit --target
# keeps proc macros and build scripts dynamic):
#   RUSTFLAGS='-C target-feature=+crt-static' cargo test --release -p kvmbox \
#     --target x86_64-unknown-linux-gnu --target-dir target/svm --no-run
#   scripts/svm/rig.sh run -f target/svm/x86_64-unknown-linux-gnu/release/deps/kvmbox-HASH \
#     -- "$PWD"/target/svm/x86_64-unknown-linux-gnu/release/deps/kvmbox-HASH --test-threads=1
# The integration tests (deps/machine-HASH) compile their guests with gcc, which the guest lacks:
# compile them on the host first into target/svm/x86_64-unknown-linux-gnu/tmp/guests (as
# tests/machine.rs does: gcc -O2 -static -o tmp/guests/NAME __test__/guests/NAME.c -lm) and pass
# -f target/svm/x86_64-unknown-linux-gnu/tmp -f __test__/guests/calls.c, plus an empty directory
# as crates/kvmbox (-f /some/empty/dir:$PWD/crates/kvmbox): the tests find __test__ through
# crates/kvmbox/../../, which resolves only if that directory exists.
set -euo pipefail

PROG=${0##*/}
DIR=${KVMBOX_SVM_DIR:-$HOME/.cache/kvmbox-svm}
PACKAGES=(qemu-system-x86 busybox-static cpio)

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { local rc=$1; shift; log "$*"; exit "$rc"; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

# ---------------------------------------------------------------- setup

APT_UPDATED=
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else die 1 "needs root: $*"; fi; }
apt_update_once() {
  [ -z "$APT_UPDATED" ] || return 0
  log "apt-get update"
  as_root apt-get update -qq >&2
  APT_UPDATED=1
}
pkg_installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }
install_missing() {
  local p missing=()
  for p in "$@"; do pkg_installed "$p" || missing+=("$p"); done
  [ ${#missing[@]} -gt 0 ] || return 0
  apt_update_once
  log "installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}
# The versioned kernel package that linux-image-amd64 depends on, e.g. linux-image-6.1.0-57-amd64.
kernel_package() {
  apt-cache depends linux-image-amd64 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n1
}

cmd_setup() {
  [ $# -eq 0 ] || die 2 "setup takes no arguments"
  install_missing "${PACKAGES[@]}"
  mkdir -p "$DIR/kernels"

  local pkg; pkg=$(kernel_package)
  if [ -z "$pkg" ] && [ -e "$DIR/kernel/boot" ]; then
    log "apt knows no linux-image-amd64; keeping the unpacked $(readlink "$DIR/kernel")"
  else
    if [ -z "$pkg" ]; then apt_update_once; pkg=$(kernel_package); fi
    [ -n "$pkg" ] || die 1 "apt-cache finds no dependency of linux-image-amd64"
    local dest=$DIR/kernels/$pkg
    if compgen -G "$dest/boot/vmlinuz-*" >/dev/null; then
      log "$pkg already unpacked in $dest"
    else
      local tmp; tmp=$(mktemp -d "$DIR/.download.XXXXXX")
      # The package lists may be older than the mirror (a 404): update once and try again.
      # APT::Sandbox::User=root: as root, the download would otherwise warn that _apt cannot
      # write the directory.
      if ! (cd "$tmp" && apt-get download -o APT::Sandbox::User=root -q "$pkg" >&2); then
        [ -z "$APT_UPDATED" ] || die 1 "apt-get download $pkg failed"
        apt_update_once
        pkg=$(kernel_package); dest=$DIR/kernels/$pkg
        (cd "$tmp" && apt-get download -o APT::Sandbox::User=root -q "$pkg" >&2) || die 1 "apt-get download $pkg failed"
      fi
      log "unpacking $(cd "$tmp" && echo *.deb)"
      dpkg-deb -x "$tmp"/*.deb "$tmp/root"
      rm -rf "$dest"; mv "$tmp/root" "$dest"; rm -rf "$tmp"
    fi
    ln -sfn "kernels/$pkg" "$DIR/kernel"
    local old; for old in "$DIR"/kernels/*; do [ "$old" = "$dest" ] || rm -rf "$old"; done
  fi

  # Compressed modules (newer Debian kernels ship .ko.xz) are decompressed on the host by `run`.
  local k; k=$(find_kernel)
  local moddir=${k#* }
  if [ -n "$(find "$moddir" -name '*.ko.xz' -print -quit)" ]; then install_missing xz-utils; fi
  if [ -n "$(find "$moddir" -name '*.ko.zst' -print -quit)" ]; then install_missing zstd; fi
  extract_vmlinux "$(compgen -G "$DIR/kernel/boot/vmlinuz-*" | head -n1)"
  log "ready: kernel $(find_kernel | cut -d' ' -f1), modules in $moddir"
}

# Under TCG, the bzImage's own decompressor takes about 4 s of every boot. The kernel inside it
# is an ELF with a PVH entry point (CONFIG_PVH), which QEMU boots directly from -kernel: unpack
# it once, to $DIR/kernel/vmlinux. `run` falls back to the bzImage when it is absent.
extract_vmlinux() {
  local vmlinuz=$1 out=$DIR/kernel/vmlinux config=${1/\/vmlinuz-//config-}
  [ ! -s "$out" ] || return 0
  grep -qx 'CONFIG_PVH=y' "$config" 2>/dev/null || { log "no CONFIG_PVH: booting the bzImage"; return 0; }
  local magic unpack
  case $(grep -oE '^CONFIG_KERNEL_(GZIP|BZIP2|LZMA|XZ|LZO|LZ4|ZSTD)=y' "$config") in
    CONFIG_KERNEL_XZ=y) magic=$'\xfd7zXZ'; unpack='xz -dc --single-stream'; install_missing xz-utils ;;
    CONFIG_KERNEL_ZSTD=y) magic=$'\x28\xb5\x2f\xfd'; unpack='zstd -dc'; install_missing zstd ;;
    CONFIG_KERNEL_GZIP=y) magic=$'\x1f\x8b\x08'; unpack='gzip -dc' ;;
    *) log "unknown kernel compression: booting the bzImage"; return 0 ;;
  esac
  local off
  for off in $(LC_ALL=C grep -obUaF "$magic" "$vmlinuz" | cut -d: -f1 | head -n 5); do
    # Ignore the status: after the payload comes the rest of the bzImage, which some
    # decompressors call trailing garbage.
    tail -c +$((off + 1)) "$vmlinuz" | $unpack >"$out.tmp" 2>/dev/null || true
    if is_elf "$out.tmp"; then mv "$out.tmp" "$out"; log "unpacked the ELF kernel to $out"; return 0; fi
  done
  rm -f "$out.tmp"
  log "could not unpack the ELF kernel from $vmlinuz: booting the bzImage"
}

# Prints "KERNEL MODDIR" of the unpacked kernel (KERNEL: the ELF vmlinux if unpacked, else the bzImage).
find_kernel() {
  local vmlinuz kver m
  vmlinuz=$(compgen -G "$DIR/kernel/boot/vmlinuz-*" | head -n1) ||
    die 2 "no kernel unpacked in $DIR/kernel: run '$PROG setup' first"
  kver=${vmlinuz##*/vmlinuz-}
  [ ! -s "$DIR/kernel/vmlinux" ] || vmlinuz=$DIR/kernel/vmlinux
  for m in "$DIR/kernel/lib/modules/$kver" "$DIR/kernel/usr/lib/modules/$kver"; do
    [ -d "$m" ] && { echo "$vmlinuz $m"; return; }
  done
  die 2 "no modules for $kver under $DIR/kernel"
}

# ---------------------------------------------------------------- run

WORK=           # this run's work directory
ROOT=           # the initramfs tree being built, in it
MODDIR=         # the kernel's lib/modules/KVER
MODINDEX=       # every module file under MODDIR, relative
MODS=()         # modules in load order (dependencies first)
declare -A MOD_SEEN=()

# Adds module $1 (and first what it depends on, read from its .modinfo) to the initramfs.
add_module() {
  local name=${1//-/_} path out deps d
  [ -z "${MOD_SEEN[$name]:-}" ] || return 0
  MOD_SEEN[$name]=1
  path=$(grep -E "/${name//_/[-_]}\.ko(\.xz|\.zst|\.gz)?\$" <<<"$MODINDEX" | head -n1) ||
    die 2 "module $name not found under $MODDIR"
  out=$ROOT/rig/modules/$name.ko
  case $path in
    *.ko) cp "$MODDIR/$path" "$out" ;;
    *.ko.xz) xz -dc "$MODDIR/$path" >"$out" ;;
    *.ko.zst) zstd -qdc "$MODDIR/$path" >"$out" ;;
    *.ko.gz) gzip -dc "$MODDIR/$path" >"$out" ;;
  esac
  deps=$(tr '\0' '\n' <"$out" | sed -n 's/^depends=//p'); deps=${deps%%$'\n'*}
  for d in ${deps//,/ }; do add_module "$d"; done
  MODS+=("$name")
}

is_elf() { [ "$(head -c4 -- "$1" 2>/dev/null | od -An -c | tr -d ' ')" = '177ELF' ]; }

# Copies the shared libraries (and loader) of the dynamic executables under host path $1 to the
# same paths in the initramfs.
add_libraries() {
  local f l
  while IFS= read -r -d '' f; do
    is_elf "$f" || continue
    for l in $(ldd -- "$f" 2>/dev/null | grep -o '/[^ ]*' || true); do
      [ -e "$ROOT$l" ] && continue
      mkdir -p "$ROOT${l%/*}"
      cp -L -- "$l" "$ROOT$l"
    done
  done < <(find -H "$1" -type f -perm /111 -print0)
}

# Single-quotes $1 for sh.
shq() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

cmd_run() {
  local tmo=600 mem=2048 files=() envs=() o OPTIND=1
  while getopts ':t:m:f:e:h' o; do
    case $o in
      t) tmo=$OPTARG ;;
      m) mem=$OPTARG ;;
      f) files+=("$OPTARG") ;;
      e) envs+=("$OPTARG") ;;
      h) usage; exit 0 ;;
      :) die 2 "-$OPTARG needs a value (try $PROG -h)" ;;
      *) die 2 "unknown option -$OPTARG (try $PROG -h)" ;;
    esac
  done
  shift $((OPTIND - 1))
  [ $# -gt 0 ] || die 2 "no COMMAND (usage: $PROG run [options] -- COMMAND...)"
  [[ $tmo =~ ^[0-9]+(\.[0-9]+)?[smhd]?$ ]] || die 2 "bad -t $tmo"
  [[ $mem =~ ^[0-9]+$ ]] || die 2 "bad -m $mem"
  local e; for e in "${envs[@]}"; do [[ $e =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die 2 "bad -e $e (VAR=VALUE)"; done

  local k vmlinuz; k=$(find_kernel); vmlinuz=${k%% *}; MODDIR=${k#* }
  local busybox=${KVMBOX_SVM_BUSYBOX:-/bin/busybox}
  [ -x "$busybox" ] || busybox=$(command -v busybox) || die 2 "no busybox: run '$PROG setup' first"
  local t; for t in qemu-system-x86_64 cpio; do command -v $t >/dev/null || die 2 "no $t: run '$PROG setup' first"; done

  WORK=$(mktemp -d "${TMPDIR:-/tmp}/kvmbox-svm.XXXXXX")
  local work=$WORK
  if [ "${KVMBOX_SVM_KEEP:-}" = 1 ]; then log "work directory $work"; else trap 'rm -rf "$WORK"' EXIT; fi
  ROOT=$work/root
  mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,root,rig/modules}
  cp "$busybox" "$ROOT/bin/busybox"
  add_libraries "$busybox"

  MODINDEX=$(cd "$MODDIR" && find . -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst' -o -name '*.ko.gz')
  add_module kvm_amd

  local spec host guest
  for spec in "${files[@]}"; do
    host=${spec%%:*}; guest=
    [[ $spec != *:* ]] || guest=${spec#*:}
    [ -e "$host" ] || die 2 "-f $spec: no such file or directory: $host"
    host=$(realpath -s -- "$host")      # absolute, symlinks kept: the path as the caller sees it
    guest=$(realpath -s -m -- "/${guest:-$host}")
    case $guest in
      / | /init | /rig | /rig/* | /proc | /proc/* | /sys | /sys/* | /dev | /dev/*) die 2 "-f $spec: $guest is the rig's" ;;
    esac
    if [ -d "$host" ]; then
      mkdir -p "$ROOT$guest"
      cp -a -H -- "$host/." "$ROOT$guest/"
    else
      mkdir -p "$ROOT${guest%/*}"
      cp -a -H -- "$host" "$ROOT$guest"
    fi
    add_libraries "$host"
  done

  {
    echo 'cd / || exit 125'
    for e in "${envs[@]}"; do echo "export ${e%%=*}=$(shq "${e#*=}")"; done
    printf 'exec'; for e in "$@"; do printf ' %s' "$(shq "$e")"; done; echo
  } >"$ROOT/rig/command"

  cat >"$ROOT/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# /tmp stays the initramfs's own (writable; -f files may live there, e.g. a CI clone in /tmp)
mkdir -p /dev/shm /dev/pts /tmp && mount -t tmpfs tmpfs /dev/shm && mount -t devpts devpts /dev/pts
ifconfig lo 127.0.0.1 up  # loopback only (QEMU runs with -nic none): tests talk to local servers
fail() {
  dmesg | tail -n 15 | sed 's/^/dmesg: /'
  echo "=== kvmbox-svm: FAILED: \$* ==="
  poweroff -f; sleep 10
}
echo "kvmbox-svm: guest kernel \$(uname -r),\$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2), \$(nproc) cpu, \$(awk '/MemTotal/ {print int(\$2/1024)}' /proc/meminfo) MB"
grep -qw svm /proc/cpuinfo || fail "the guest CPU has no svm flag"
for m in ${MODS[*]}; do
  params=; [ \$m = kvm_amd ] && params="${KVMBOX_SVM_KVM_AMD:-}"
  insmod /rig/modules/\$m.ko \$params || fail "insmod \$m \$params failed"
done
i=0; while [ ! -c /dev/kvm ] && [ \$i -lt 50 ]; do sleep 0.1; i=\$((i + 1)); done
[ -c /dev/kvm ] || fail "no /dev/kvm after loading kvm_amd"
p=; for x in npt nested nrips avic vgif vls; do
  [ -r /sys/module/kvm_amd/parameters/\$x ] && p="\$p \$x=\$(cat /sys/module/kvm_amd/parameters/\$x)"
done
echo "kvmbox-svm: kvm_amd loaded (${MODS[*]}):\$p; uptime \$(cut -d' ' -f1 /proc/uptime) s"
echo "=== kvmbox-svm: command start ==="
sh /rig/command </dev/null
rc=\$?
echo "=== kvmbox-svm: command exited rc=\$rc ==="
echo "kvmbox-svm: uptime \$(cut -d' ' -f1 /proc/uptime) s"
poweroff -f; sleep 10
EOF
  chmod 755 "$ROOT/init"

  # Uncompressed: QEMU loads it straight into guest memory, and decompressing it under TCG
  # would cost more than the copy.
  (cd "$ROOT" && find . -print0 | cpio --null -o -H newc -R 0:0 --quiet) >"$work/initrd.cpio"

  local qemu=(qemu-system-x86_64 -accel tcg -cpu "${KVMBOX_SVM_CPU:-max}" -smp "${KVMBOX_SVM_SMP:-1}" -m "$mem"
    -nographic -no-reboot -nic none -kernel "$vmlinuz" -initrd "$work/initrd.cpio"
    -append "console=ttyS0 quiet panic=-1")
  local t0 qrc; t0=$(date +%s.%N)
  set +e
  timeout -k 10 "$tmo" "${qemu[@]}" </dev/null 2>&1 | sed -u -e 's/\r$//; s/\x1bc//g; s/\x1b\[[0-9;?]*[A-Za-z]//g' -e '/^SeaBIOS (version /d; /^\[ *[0-9.]*\] reboot: Power down$/d' \
    -e '/^Booting from ROM\.\.\.\?$/d; s/^Booting from ROM\.\.\.\?//' | tee "$work/console.log"
  qrc=${PIPESTATUS[0]}
  set -e
  local wall; wall=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  local size; size=$(du -m "$work/initrd.cpio" | cut -f1)

  local rc failed
  rc=$(sed -n 's/.*=== kvmbox-svm: command exited rc=\([0-9]*\) ===.*/\1/p' "$work/console.log" | tail -n1)
  failed=$(sed -n 's/.*=== kvmbox-svm: FAILED: \(.*\) ===.*/\1/p' "$work/console.log" | tail -n1)
  if [ -n "$rc" ]; then
    log "command exited $rc (wall $wall s, initramfs $size MB)"
    exit "$rc"
  elif [ -n "$failed" ]; then
    log "FAILED: $failed (wall $wall s)"
    exit 125
  elif [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
    log "timed out after $tmo (wall $wall s)"
    exit 124
  else
    log "no result from the guest (qemu exit $qrc, wall $wall s): it crashed or the command never ran"
    exit 125
  fi
}

case ${1:-} in
  setup) shift; cmd_setup "$@" ;;
  run) shift; cmd_run "$@" ;;
  -h | --help | help) usage ;;
  *) usage >&2; exit 2 ;;
esac

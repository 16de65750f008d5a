#!/usr/bin/env bash
# Installs what the test suite needs beyond Node and Rust, so `npm test` passes on a fresh
# Debian/Ubuntu machine with no manual step: compilers for the test guests (gcc, g++, musl-gcc),
# gdb for the debugger tests, bash-static (a real static program that installs signal
# handlers) for the signal tests, Go (the go tool builds the Go test guest; its static gofmt
# is run as a guest too) for the Go tests, and the distribution's dynamic interpreters the
# dynamic-executable tests run (python3, perl, luajit, lua5.4; /bin/ls and /bin/cat are always
# there). Installs only what is missing; as root it uses apt-get, as anyone else it says what
# to install and fails.
set -euo pipefail

need=()
command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v musl-gcc >/dev/null 2>&1 || need+=(musl-tools)
command -v gdb >/dev/null 2>&1 || need+=(gdb)
command -v bash-static >/dev/null 2>&1 || need+=(bash-static)
command -v go >/dev/null 2>&1 || need+=(golang-go)
# The distribution's own builds, by path: a python3 earlier in PATH (pyenv, venv) is not it.
[ -x /usr/bin/python3 ] || need+=(python3)
[ -x /usr/bin/perl ] || need+=(perl)
[ -x /usr/bin/luajit ] || need+=(luajit)
[ -x /usr/bin/lua5.4 ] || need+=(lua5.4)
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "test-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  exit 0
fi
echo "test-deps: the tests need: ${need[*]}" >&2
echo "test-deps: install them (Debian/Ubuntu: sudo apt-get install ${need[*]}) and run npm test again" >&2
exit 1

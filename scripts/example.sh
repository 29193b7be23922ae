#!/usr/bin/env bash
# Builds vmshim and runs the bundled cgo example (tests/programs/ex6.go: C.puts, then a 1 s
# sleep) under it. The report is printed on stderr; the trace is left in target/example/.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v go >/dev/null; then
  echo "installing Go (Debian's golang-go)" >&2
  apt-get install -y golang-go >/dev/null
fi
cargo build --release --workspace
mkdir -p target/example
GO111MODULE=off go build -o target/example/ex6 tests/programs/ex6.go
cd target/example
exec ../release/vmshim run --out ex6.trace -- ./ex6

#!/bin/bash
# Issue 13: every record of every trace under DIR (searched recursively; files that start with
# the trace magic) decodes and re-encodes with trace/'s encoders to the same bytes.
# Usage: bash scripts/reencode.sh DIR
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
cd "$(dirname "$0")/.."
exec cargo run -q --release -p vmshim-trace --example reencode -- "$1"

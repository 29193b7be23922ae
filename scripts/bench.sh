#!/bin/sh
# The benchmark of issue 5 in one command: builds what it needs, then runs every workload bare,
# under vmshim and under the tools people use instead (strace -f -k, ltrace -f, heaptrack,
# massif --pages-as-heap), interleaved, and prints one table of medians and ratios to bare.
# Arguments go to scripts/bench.py (--rounds N, --quick for a smoke run).
set -eu
cd "$(dirname "$0")/.."
exec python3 scripts/bench.py --anchors "$@"

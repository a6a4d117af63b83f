#!/usr/bin/env bash
# The measurement sitting behind "Figures now" in docs/PERFORMANCE.md: one release build,
# the standard runs in one order, summaries on stdout (the JSON lines are dropped). About
# five minutes on the 2-core dev machine. Needs mosquitto (apt-get install mosquitto).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p quiver-server -p quiver-bench
bench=./target/release/quiver-bench
run() { echo "### $*"; "$bench" "$@" 2>&1 | grep -v '^{'; }
echo "build $(git rev-parse --short HEAD) $(date -u +%FT%H:%MZ)"
run fsync   # the disk now: P=1 latency follows it
run pairs --pairs 50 --messages 4000 --size 100 --window 64 --compare mqtt --runs 5
run pairs --pairs 1 --messages 3000 --size 100 --window 1 --compare mqtt --runs 3
for _ in 1 2; do run offline --messages 100000; done
run offline --messages 1000000 --restart
run expire
run idle --connections 2000
run idle --connections 50000 --one-socket
run stalled --messages 100000
run fanin --senders 50 --messages 400
run fsync
echo "end $(date -u +%FT%H:%MZ)"

#!/usr/bin/env bash
# Starts a private redis-server and a 3-node Quiver mesh on loopback, in the foreground;
# Ctrl-C stops them all. Data (certificates, sled, Redis snapshot) stays in $QUIVER_MESH_DIR
# (default ./mesh-data), so a second run finds the same accounts and inboxes.
#
#   node  quic            https           mesh
#   n1    127.0.0.1:4431  127.0.0.1:8441  127.0.0.1:5431
#   n2    127.0.0.1:4432  127.0.0.1:8442  127.0.0.1:5432
#   n3    127.0.0.1:4433  127.0.0.1:8443  127.0.0.1:5433
#   redis 127.0.0.1:6390
#
# Clients trust $QUIVER_MESH_DIR/ca/ca.pem (the cluster CA also signs the nodes' client-facing
# certificates). Needs redis-server on the PATH (apt-get install redis-server).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mkdir -p "${QUIVER_MESH_DIR:-mesh-data}" && cd "${QUIVER_MESH_DIR:-mesh-data}" && pwd)
redis_port=6390

cargo build --release -q -p quiver-server -p quiver-certs
bin=./target/release

if [ ! -f "$dir/ca/ca.pem" ]; then
  "$bin/quiver-certs" ca --out "$dir/ca" --name "Quiver mesh CA" >/dev/null
fi
for n in 1 2 3; do
  if [ ! -f "$dir/n$n/certs/node.pem" ]; then
    "$bin/quiver-certs" node --ca "$dir/ca" --ca-name "Quiver mesh CA" --name "n$n" \
      --out "$dir/n$n/certs" >/dev/null
  fi
done

pids=()
stop() {
  trap - INT TERM EXIT
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

mkdir -p "$dir/redis"
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$dir/redis" --save 10 1 \
  --appendonly no --logfile "$dir/redis/redis.log" &
pids+=($!)
until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.1; done

for n in 1 2 3; do
  # One malloc arena: about 10 KiB less per idle connection (docs/PERFORMANCE.md).
  MALLOC_ARENA_MAX=${MALLOC_ARENA_MAX:-1} "$bin/quiver-server" --node-id "n$n" --data-dir "$dir/n$n" \
    --quic-addr "127.0.0.1:443$n" --http-addr "127.0.0.1:844$n" \
    --redis-url "redis://127.0.0.1:$redis_port" --mesh-addr "127.0.0.1:543$n" \
    --cluster-ca "$dir/ca/ca.pem" \
    --cert "$dir/n$n/certs/node.pem" --key "$dir/n$n/certs/node.key" \
    --log "${QUIVER_LOG:-info}" >>"$dir/n$n.log" 2>&1 &
  pids+=($!)
done
echo "mesh up: logs in $dir/n*.log; clients trust $dir/ca/ca.pem; Ctrl-C stops"
wait

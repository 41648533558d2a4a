#!/usr/bin/env bash
# Consensus alone, side by side on this machine: asonnino/hotstuff's local benchmark (4 nodes,
# 4 clients, 512-byte transactions, info logging) and `kaon bench consensus` at the same rates,
# one after the other for each rate. Usage:
#   benches/compare-hotstuff.sh [RATE ...]        (default 1000 10000 50000 70000 100000)
# Env: HOTSTUFF_DIR (checkout; cloned from GitHub when absent), DURATION (seconds, default 20),
# KAON (the kaon binary; default: built here in release). Needs python3 and tmux (the
# HotStuff harness runs its nodes in tmux sessions and kills the tmux server when done).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
hs=${HOTSTUFF_DIR:-/var/tmp/hotstuff}
duration=${DURATION:-20}
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(1000 10000 50000 70000 100000)
export ROCKSDB_LIB_DIR=${ROCKSDB_LIB_DIR:-/usr/lib/x86_64-linux-gnu}
[ -d "$hs" ] || git clone -q https://github.com/asonnino/hotstuff "$hs"
# HotStuff's harness links its binaries from its own target/ (and rebuilds them there).
(cd "$hs" && CARGO_TARGET_DIR="$hs/target" cargo build --quiet --release --features benchmark)
if [ -z "${KAON:-}" ]; then
  (cd "$here" && cargo build --quiet --release)
  KAON=${CARGO_TARGET_DIR:-$here/target}/release/kaon
fi
# The harness's local benchmark with the parameters of its fabfile's `local` task.
cat > "$hs/benchmark/kaon_compare.py" <<'PY'
import sys
from benchmark.local import LocalBench
rate, duration = int(sys.argv[1]), int(sys.argv[2])
bench = {"faults": 0, "nodes": 4, "rate": rate, "tx_size": 512, "duration": duration}
node = {"consensus": {"timeout_delay": 1000, "sync_retry_delay": 10000},
        "mempool": {"gc_depth": 50, "sync_retry_delay": 5000, "sync_retry_nodes": 3,
                    "batch_size": 15000, "max_batch_delay": 10}}
print(LocalBench(bench, node).run(debug=False).result())
PY
echo "hotstuff $(git -C "$hs" rev-parse --short HEAD), kaon $(git -C "$here" rev-parse --short HEAD), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
for rate in "${rates[@]}"; do
  # The harness now and then fails to parse a run's logs (an AssertionError): one more try.
  for try in 1 2; do
    if out=$(cd "$hs/benchmark" && CARGO_TARGET_DIR="$hs/target" python3 kaon_compare.py "$rate" "$duration" 2>&1); then
      break
    fi
    echo "hotstuff $rate: try $try failed: $(echo "$out" | grep -m1 -E "rror")"
  done
  echo "$out" | grep -E "Consensus TPS|Consensus latency|End-to-end TPS|End-to-end latency|rror" |
    sed "s/^/hotstuff $rate: /"
  "$KAON" bench consensus --nodes 4 --tx-size 512 --rate "$rate" --duration "$duration" |
    tail -1 | sed "s/^/kaon $rate: /"
done

#!/usr/bin/env bash
# Regions are independent: one region pinned to one core, then two regions side by side, each
# pinned to a core of its own (taskset). Each region is a whole `kaon devnet` (4 CNs, 2 RNs,
# EVM, no JSON-RPC; the second is region 1001000) offered the same steady load; the last line
# is the aggregate ratio of committed transfers per second. Usage:
#   benches/regions.sh [TPS] [SECONDS] [ROUNDS]   (defaults 1000 20 3)
# Env: KAON (the kaon binary; default: built here in release). Needs two cores or more.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
tps=${1:-1000}
seconds=${2:-20}
rounds=${3:-3}
export ROCKSDB_LIB_DIR=${ROCKSDB_LIB_DIR:-/usr/lib/x86_64-linux-gnu}
if [ -z "${KAON:-}" ]; then
  (cd "$here" && cargo build --quiet --release --bin kaon)
  KAON=${CARGO_TARGET_DIR:-$here/target}/release/kaon
fi
[ "$(nproc)" -ge 2 ] || { echo "regions: needs two cores, this machine has $(nproc)" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# One region on core $1, its summary line to $2 (extra devnet flags after).
region() {
  local core=$1 summary=$2
  shift 2
  taskset -c "$core" "$KAON" devnet --tps "$tps" --duration "$seconds" --no-rpc \
    --load-accounts 512 "$@" | grep '^summary:' > "$summary"
}
# Committed transfers per second from a summary line (`… committed in S s (N/s), …`).
rate() { sed -n 's/.*committed in [0-9.]* s (\([0-9]*\)\/s).*/\1/p' "$1"; }

for round in $(seq "$rounds"); do
  region 0 "$out/one"
  region 0 "$out/a" &
  region 1 "$out/b" --chain-id 1001001 &
  wait
  one=$(rate "$out/one") a=$(rate "$out/a") b=$(rate "$out/b")
  echo "round $round: one region on one core $one/s; two regions on two cores $a/s + $b/s = $((a + b))/s"
  awk -v one="$one" -v two="$((a + b))" -v r="$round" \
    'BEGIN { printf "regions: round %d aggregate %.2fx one region\n", r, two / one }'
done

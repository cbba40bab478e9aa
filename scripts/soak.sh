#!/usr/bin/env bash
# Soak test: one node and the echo backend under steady load for a bounded
# time, printing the node's RSS and goroutine count over time (from /metrics)
# so leaks and unbounded growth show. Not part of `make test` (it takes
# minutes); run it by hand and compare the first and last rows.
#
#   scripts/soak.sh [DURATION_SECONDS=600] [CONNS=50] [INFLIGHT=5]
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-600}
conns=${2:-50}
inflight=${3:-5}
port=${PORT:-18190}
node="soak-$$"

scripts/ensure-rabbitmq.sh
go build -o bin/piped . && go build -o bin/echo-backend ./examples/echo-backend && go build -o bin/loadgen ./tools/loadgen

PIPED_LOG_LEVEL=warn bin/piped --port "$port" --nodeId "$node" >"bin/soak-node.log" 2>&1 &
node_pid=$!
bin/echo-backend --nodes "$node" --log-level warn >"bin/soak-echo.log" 2>&1 &
echo_pid=$!
cleanup() {
	kill "$load_pid" 2>/dev/null || true
	kill -TERM "$node_pid" "$echo_pid" 2>/dev/null || true
	wait "$node_pid" "$echo_pid" 2>/dev/null || true
	# The soak node's queues and exchanges: its id is used once.
	bin/loadgen cleanup --node "$node" || true
}
trap cleanup EXIT
for _ in $(seq 100); do
	curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
	sleep 0.2
done

# Load in rounds of 60 s so connections also come and go.
(
	end=$((SECONDS + duration))
	while [ "$SECONDS" -lt "$end" ]; do
		bin/loadgen calls --url "ws://127.0.0.1:$port" --conns "$conns" --inflight "$inflight" --duration 60s || true
	done
) &
load_pid=$!

printf '%8s %10s %11s %12s %12s\n' elapsed_s rss_mib goroutines calls_total connections
start=$SECONDS
while [ $((SECONDS - start)) -le "$duration" ]; do
	m=$(curl -fs "http://127.0.0.1:$port/metrics" || true)
	rss=$(awk '/^process_resident_memory_bytes /{printf "%.1f", $2/1048576}' <<<"$m")
	gor=$(awk '/^go_goroutines /{print $2}' <<<"$m")
	calls=$(awk '/^piped_calls_total /{printf "%d", $2}' <<<"$m")
	c=$(awk '/^piped_connections /{print $2}' <<<"$m")
	printf '%8d %10s %11s %12s %12s\n' $((SECONDS - start)) "$rss" "$gor" "$calls" "$c"
	sleep 10
done

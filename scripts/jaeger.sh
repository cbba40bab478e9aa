#!/usr/bin/env bash
# jaeger.sh: a local Jaeger all-in-one for seeing Piped's traces, and for the
# tracing end-to-end test (test/tracing).
#
#   scripts/jaeger.sh build    build bin/jaeger from tools/jaeger (pinned there),
#                              if it is missing or older than tools/jaeger/go.mod;
#                              about 5 minutes on 2 cores with a cold module cache;
#                              the build's output goes to bin/jaeger-build.log
#                              (its path and last lines are printed if it fails)
#   scripts/jaeger.sh start    start bin/jaeger in the background unless a Jaeger
#                              already answers on :16686; logs to bin/jaeger.log;
#                              waits until its query API answers
#   scripts/jaeger.sh stop     stop the Jaeger that `start` started
#   scripts/jaeger.sh status   say whether a Jaeger answers
#
# Jaeger takes no arguments here: OTLP on 127.0.0.1:4317 (gRPC) and :4318
# (HTTP), UI and query API on http://localhost:16686, traces kept in memory.
# Point the node and backends at it with
#   OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=bin/jaeger
LOG=bin/jaeger.log
BUILD_LOG=bin/jaeger-build.log
PIDFILE=bin/jaeger.pid
QUERY=${JAEGER_QUERY_URL:-http://127.0.0.1:16686}
WAIT_SECONDS=${JAEGER_WAIT_SECONDS:-60}

say() { echo "jaeger: $*"; }
fail() {
	echo "jaeger: $*" >&2
	exit 1
}

answers() { curl -fsS -o /dev/null --max-time 2 "$QUERY/api/services" 2>/dev/null; }

# The pid in $PIDFILE, when that process is still our bin/jaeger.
our_pid() {
	local pid
	[[ -f $PIDFILE ]] || return 1
	pid=$(<"$PIDFILE")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "bin/jaeger" || return 1
	echo "$pid"
}

build() {
	if [[ -x $BIN && ! tools/jaeger/go.mod -nt $BIN ]]; then
		say "$BIN is up to date"
		return
	fi
	command -v go >/dev/null || fail "go is not on PATH"
	mkdir -p bin
	say "building $BIN from tools/jaeger (about 5 minutes with a cold module cache; output in $BUILD_LOG)"
	local tmp
	tmp="$PWD/bin/.jaeger.$$"
	# Into a temporary file, then renamed: a half-written bin/jaeger is never seen.
	# The output (hundreds of "go: downloading" lines on a cold cache) goes to
	# the log, which is shown only when the build fails.
	if ! (cd tools/jaeger && go build -o "$tmp" github.com/jaegertracing/jaeger/cmd/jaeger) >"$BUILD_LOG" 2>&1; then
		rm -f "$tmp"
		echo "jaeger: last lines of $BUILD_LOG:" >&2
		tail -n 20 "$BUILD_LOG" >&2 || true
		fail "go build of Jaeger failed; the whole output is in $BUILD_LOG"
	fi
	mv -f "$tmp" "$BIN"
	say "built $BIN"
}

start() {
	if answers; then
		say "a Jaeger already answers on $QUERY; not starting another"
		return
	fi
	[[ -x $BIN ]] || fail "$BIN is missing: run scripts/jaeger.sh build first"
	say "starting $BIN (log: $LOG)"
	nohup setsid "$PWD/$BIN" >"$LOG" 2>&1 </dev/null &
	echo $! >"$PIDFILE"
	local i
	for ((i = 0; i < WAIT_SECONDS * 10; i++)); do
		if answers; then
			say "ready: UI $QUERY, OTLP gRPC 127.0.0.1:4317, OTLP HTTP 127.0.0.1:4318"
			return
		fi
		if ! our_pid >/dev/null; then
			tail -n 20 "$LOG" >&2 || true
			rm -f "$PIDFILE"
			fail "Jaeger exited before it answered (see $LOG)"
		fi
		sleep 0.1
	done
	fail "Jaeger did not answer on $QUERY within ${WAIT_SECONDS}s (see $LOG)"
}

stop() {
	local pid i
	if ! pid=$(our_pid); then
		rm -f "$PIDFILE"
		if answers; then
			say "a Jaeger answers on $QUERY but was not started by this script; leaving it"
		else
			say "not running"
		fi
		return
	fi
	kill -TERM "$pid"
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		say "pid $pid did not stop within 10s; killing it"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$PIDFILE"
	say "stopped (pid $pid)"
}

status() {
	if answers; then
		say "answering on $QUERY"
	else
		say "not answering on $QUERY"
		return 1
	fi
}

case ${1:-} in
build) build ;;
start) start ;;
stop) stop ;;
status) status ;;
*)
	echo "usage: scripts/jaeger.sh build|start|stop|status" >&2
	exit 2
	;;
esac

#!/usr/bin/env bash
# demo.sh: run Piped locally, one node and the example echo backend, against a
# local RabbitMQ (started or installed by scripts/ensure-rabbitmq.sh if need
# be), serve the browser client's demo page (client/demo.html), and print how
# to talk to it. Ctrl-C stops them all.
#
#   ./scripts/demo.sh            (or: make demo)
#   PORT=9090 DEMO_PORT=9091 NODE_ID=7 ./scripts/demo.sh
#
# PIPED_AMQP_URL, if set, points the node and the backend at another broker
# (both read it from the environment).
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-8080}
DEMO_PORT=${DEMO_PORT:-8090} # the demo page's static server
NODE_ID=${NODE_ID:-1}
TOKEN=${TOKEN:-demo-token}
READY_TIMEOUT=${READY_TIMEOUT:-60}

say() { echo "demo: $*"; }

# shellcheck disable=SC2016 # $1 is the inner shell's
if timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$PORT" 2>/dev/null; then
	say "port $PORT is already in use; choose another: PORT=8081 $0"
	exit 1
fi
# shellcheck disable=SC2016 # $1 is the inner shell's
if timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$DEMO_PORT" 2>/dev/null; then
	say "port $DEMO_PORT (the demo page) is already in use; choose another: DEMO_PORT=8091 $0"
	exit 1
fi

./scripts/ensure-rabbitmq.sh

say "building bin/piped, bin/echo-backend and bin/servedir"
mkdir -p bin
go build -o bin/piped .
go build -o bin/echo-backend ./examples/echo-backend
go build -o bin/servedir ./tools/servedir

# Children, stopped (SIGTERM, then SIGKILL after 30s) whenever this script
# exits: Ctrl-C, an error, or one of them dying.
pids=()
names=()
# shellcheck disable=SC2317 # called by the trap
stop_children() {
	trap - EXIT INT TERM
	local pid i
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for ((i = 0; i < 300; i++)); do
		local alive=0
		for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
		((alive)) || break
		sleep 0.1
	done
	for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	say "stopped"
}
trap stop_children EXIT
trap 'echo; exit 130' INT TERM

# start NAME CMD...: runs CMD in the background, its output prefixed with
# [NAME]. Ctrl-C is kept away from CMD (setsid) and from the prefixing sed
# (whose death would kill CMD with SIGPIPE): this script's trap stops CMD,
# and sed ends with CMD's output.
start() {
	local name=$1
	shift
	setsid "$@" > >(trap '' INT && exec sed -u "s/^/[$name] /") 2>&1 &
	pids+=($!)
	names+=("$name")
}

start echo-backend bin/echo-backend --nodes "$NODE_ID"
start piped bin/piped --port "$PORT" --nodeId "$NODE_ID"
start demo-page bin/servedir --addr "127.0.0.1:$DEMO_PORT" --dir client

# died: the name of a child that has exited, if any.
died() {
	local i
	for i in "${!pids[@]}"; do
		if ! kill -0 "${pids[i]}" 2>/dev/null; then
			echo "${names[i]}"
			return 0
		fi
	done
	return 1
}

ready() {
	curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/readyz" 2>/dev/null && return 0
	command -v curl >/dev/null && return 1
	# No curl: a bare HTTP/1.0 request.
	# shellcheck disable=SC2016 # $1 is the inner shell's
	timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf "GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n" >&3 && head -n 1 <&3 | grep -q " 200 "' _ "$PORT" 2>/dev/null
}

say "waiting for http://localhost:$PORT/readyz (up to ${READY_TIMEOUT}s)"
start_time=$SECONDS
while true; do
	if name=$(died); then
		say "$name exited before the node was ready (is port $PORT free? is the broker up?)"
		exit 1
	fi
	ready && break
	if ((SECONDS - start_time >= READY_TIMEOUT)); then
		say "the node was not ready within ${READY_TIMEOUT}s"
		exit 1
	fi
	sleep 0.2
done

url="ws://localhost:$PORT/api/$TOKEN"
page="http://localhost:$DEMO_PORT/demo.html?ws=ws://localhost:$PORT&token=$TOKEN"
cat <<EOF

==============================================================================
 Piped node $NODE_ID is ready on port $PORT; the echo backend answers its calls.

 Open the browser client's demo page (client/demo.html, using client/piped.js):

   $page

 Or talk to it by hand (every call comes back as a result with its own payload):

   /usr/bin/python3 -m websockets $url
     then type: {"id":1,"method":"hello","payload":{"a":1}}
     (Debian: apt-get install python3-websockets)

   node --experimental-websocket -e 'const ws = new WebSocket("$url"); ws.onmessage = e => { console.log(e.data); ws.close() }; ws.onopen = () => ws.send(JSON.stringify({id: 1, method: "hello", payload: {a: 1}}))'
     (Node.js 20; drop the flag on Node.js 22+, or use the npm package ws)

   in a browser console:
     ws = new WebSocket("$url"); ws.onmessage = e => console.log(e.data); ws.onopen = () => ws.send(JSON.stringify({id:1, method:"hello", payload:{a:1}}))

 Push an event to every connection of the token, on every node:

   bin/echo-backend event --token $TOKEN --event hi --payload '{"text":"hello"}'

 Methods the echo backend treats specially: sleep {"ms":N}, silent (no
 answer), garbage (a malformed message first), event {"event":"name","payload":{}}.

 Health: curl localhost:$PORT/healthz   curl localhost:$PORT/readyz
 Ctrl-C stops the node, the backend and the demo page's server.
==============================================================================

EOF

# Run until Ctrl-C, or until either child exits.
set +e
wait -n "${pids[@]}"
status=$?
set -e
say "$(died || echo "a child") exited (status $status); stopping the other"
exit 1

#!/usr/bin/env bash
# ensure-rabbitmq.sh: make sure a RabbitMQ broker answers, for the tests and
# the demo. Idempotent; safe to run any number of times.
#
#   1. If the broker port answers, that is all (and, for a local broker, check
#      that the guest/guest user works, as Debian sets it up).
#   2. Else, if rabbitmq-server is installed, start it (rabbitmq-server
#      -detached, as root) and wait for it, up to RABBITMQ_WAIT_SECONDS (90).
#   3. Else, as root with apt-get, install Debian's rabbitmq-server and start it.
#   4. Else say what to do, and exit 1.
#
# The broker is 127.0.0.1:5672 unless PIPED_AMQP_URL names another one: then
# it is only checked, never started or installed here.
#
# The last line printed says what was done.
set -euo pipefail

WAIT_SECONDS=${RABBITMQ_WAIT_SECONDS:-90}
HOST=127.0.0.1
PORT=5672

say() { echo "ensure-rabbitmq: $*"; }
fail() {
	echo "ensure-rabbitmq: $*" >&2
	exit 1
}

# Broker address from PIPED_AMQP_URL: amqp[s]://[user[:pass]@]host[:port][/vhost]
if [[ -n ${PIPED_AMQP_URL:-} ]]; then
	rest=${PIPED_AMQP_URL#*://}
	rest=${rest%%/*}
	rest=${rest##*@}
	if [[ $rest == \[*\]* ]]; then # [ipv6]:port
		HOST=${rest%%]*}
		HOST=${HOST#[}
		rest=${rest#*]}
		PORT=${rest#:}
	else
		HOST=${rest%%:*}
		PORT=${rest#"$HOST"}
		PORT=${PORT#:}
	fi
	if [[ -z $PORT ]]; then
		if [[ $PIPED_AMQP_URL == amqps://* ]]; then PORT=5671; else PORT=5672; fi
	fi
	HOST=${HOST:-127.0.0.1}
fi

local_broker() { [[ $PORT == 5672 && ($HOST == 127.0.0.1 || $HOST == localhost || $HOST == ::1) ]]; }

port_open() {
	timeout 3 bash -c "exec 3<>'/dev/tcp/$HOST/$PORT'" 2>/dev/null
}

is_root() { [[ $(id -u) -eq 0 ]]; }

# be32 N: N as 4 big-endian bytes, written in printf's \x notation.
be32() { printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 >> 24 & 255)) $(($1 >> 16 & 255)) $(($1 >> 8 & 255)) $(($1 & 255)); }

# amqp_login_ok USER PASS: true when USER/PASS can open vhost "/" on the
# broker, found by a bare AMQP 0-9-1 handshake over bash's /dev/tcp (fast, and
# needs neither root nor rabbitmqctl).
amqp_login_ok() {
	local u=$1 p=$2 out pid hex i resp=$((2 + ${#1} + ${#2}))
	out=$(mktemp -t ensure-rabbitmq-amqp.XXXXXX)
	(
		exec 3<>"/dev/tcp/$HOST/$PORT" || exit 1
		{
			printf 'AMQP\x00\x00\x09\x01'
			# connection.start-ok: no client properties, PLAIN "\0user\0pass", locale en_US
			printf "\x01\x00\x00$(be32 $((24 + resp)))\x00\x0a\x00\x0b\x00\x00\x00\x00\x05PLAIN$(be32 $resp)\x00%s\x00%s\x05en_US\xce" "$u" "$p"
			# connection.tune-ok: channel-max 1, frame-max 4096, no heartbeat
			printf '\x01\x00\x00\x00\x00\x00\x0c\x00\x0a\x00\x1f\x00\x01\x00\x00\x10\x00\x00\x00\xce'
			# connection.open "/"
			printf '\x01\x00\x00\x00\x00\x00\x08\x00\x0a\x00\x28\x01/\x00\x00\xce'
			# connection.close 200
			printf '\x01\x00\x00\x00\x00\x00\x0b\x00\x0a\x00\x32\x00\xc8\x00\x00\x00\x00\x00\xce'
		} >&3
		exec cat <&3
	) >"$out" 2>/dev/null &
	pid=$!
	# Wait (up to 10s) for the broker's close-ok (our close) or close (a
	# refusal), or for it to hang up.
	for ((i = 0; i < 100; i++)); do
		hex=$(od -An -v -tx1 "$out" | tr -d ' \n')
		[[ $hex == *000a0033ce* || $hex == *000a0032* ]] && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	hex=$(od -An -v -tx1 "$out" | tr -d ' \n')
	rm -f "$out"
	# connection.open-ok on channel 0
	[[ $hex == *01000000000005000a002900ce* ]]
}

# check_guest makes sure guest/guest can open vhost / from localhost (the
# Debian default, which the tests and the demo use), repairing it with
# rabbitmqctl (as root) if not. It sets GUEST_NOTE for the summary line.
GUEST_NOTE=""
check_guest() {
	if amqp_login_ok guest guest; then
		GUEST_NOTE="guest/guest ok"
		return
	fi
	if ! command -v rabbitmqctl >/dev/null || ! is_root; then
		fail "RabbitMQ answers on $HOST:$PORT but refuses guest/guest on vhost /; as root: rabbitmqctl add_user guest guest; rabbitmqctl set_permissions -p / guest '.*' '.*' '.*'"
	fi
	if rabbitmqctl -q list_users 2>/dev/null | awk '$1 == "guest" { found = 1 } END { exit !found }'; then
		rabbitmqctl -q change_password guest guest >/dev/null || fail "could not reset the guest user's password"
	else
		rabbitmqctl -q add_user guest guest >/dev/null || fail "could not add the guest user"
		rabbitmqctl -q set_user_tags guest administrator >/dev/null || fail "could not tag the guest user"
	fi
	rabbitmqctl -q set_permissions -p / guest '.*' '.*' '.*' >/dev/null || fail "could not give guest permissions on /"
	amqp_login_ok guest guest || fail "guest/guest still cannot log in after repair (is guest kept off loopback by loopback_users?)"
	GUEST_NOTE="repaired the guest/guest user"
}

# wait_for_broker waits for the port, then for the RabbitMQ application.
wait_for_broker() {
	local start=$SECONDS
	until port_open; do
		if ((SECONDS - start >= WAIT_SECONDS)); then
			echo "ensure-rabbitmq: RabbitMQ did not answer on $HOST:$PORT within ${WAIT_SECONDS}s; see /var/log/rabbitmq/" >&2
			tail -n 20 /var/log/rabbitmq/startup_err /var/log/rabbitmq/startup_log 2>/dev/null >&2 || true
			exit 1
		fi
		sleep 1
	done
	if command -v rabbitmqctl >/dev/null && is_root; then
		local left=$((WAIT_SECONDS - (SECONDS - start)))
		((left > 5)) || left=5
		timeout "$left" rabbitmqctl -q await_startup >/dev/null 2>&1 || fail "RabbitMQ answers on $HOST:$PORT but 'rabbitmqctl await_startup' failed"
	fi
}

booting() { pgrep -f -- '-s rabbit boot' >/dev/null 2>&1; }

start_broker() {
	if booting; then
		say "RabbitMQ is already starting; waiting up to ${WAIT_SECONDS}s"
	else
		is_root || fail "rabbitmq-server is installed but not running, and only root can start it here: run 'sudo rabbitmq-server -detached' (or 'sudo $0')"
		say "starting rabbitmq-server -detached (takes 10-15s)"
		rabbitmq-server -detached || fail "'rabbitmq-server -detached' failed; see /var/log/rabbitmq/"
	fi
	wait_for_broker
}

if port_open; then
	if local_broker; then
		check_guest
		say "RabbitMQ already answering on $HOST:$PORT; nothing to start ($GUEST_NOTE)"
	else
		say "RabbitMQ already answering on $HOST:$PORT (from PIPED_AMQP_URL); nothing to start"
	fi
	exit 0
fi

if ! local_broker; then
	fail "nothing answers on $HOST:$PORT (from PIPED_AMQP_URL); start that broker, or unset PIPED_AMQP_URL to use a local one"
fi

if command -v rabbitmq-server >/dev/null; then
	start=$SECONDS
	start_broker
	check_guest
	say "started the installed rabbitmq-server; answering on $HOST:$PORT after $((SECONDS - start))s ($GUEST_NOTE)"
	exit 0
fi

if is_root && command -v apt-get >/dev/null; then
	start=$SECONDS
	apt_log=$(mktemp -t ensure-rabbitmq-apt.XXXXXX)
	say "installing rabbitmq-server with apt-get (log: $apt_log)"
	if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y rabbitmq-server; } >"$apt_log" 2>&1; then
		tail -n 30 "$apt_log" >&2
		fail "apt-get install rabbitmq-server failed (full log: $apt_log)"
	fi
	# The package's postinst may have started it already.
	if port_open; then wait_for_broker; else start_broker; fi
	check_guest
	say "installed rabbitmq-server with apt-get and started it; answering on $HOST:$PORT after $((SECONDS - start))s ($GUEST_NOTE)"
	exit 0
fi

cat >&2 <<EOF
ensure-rabbitmq: no RabbitMQ answers on $HOST:$PORT, rabbitmq-server is not installed, and it cannot be installed here (needs root and apt-get).
Do one of:
  - install and start it:  sudo apt-get install -y rabbitmq-server && sudo rabbitmq-server -detached
    (or run this script again as root: sudo $0)
  - or point PIPED_AMQP_URL at a running broker, e.g.
      export PIPED_AMQP_URL=amqp://guest:guest@broker.example:5672/
EOF
exit 1

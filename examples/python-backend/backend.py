#!/usr/bin/python3
"""An example Piped backend in Python, with pika (Debian's python3-pika).

It consumes the calls of one or more Piped nodes from queue-out-{id} and
answers each with its own payload, like examples/echo-backend:

    /usr/bin/python3 backend.py --nodes 1,2

    call    {"id":1,"method":"hello","token":"T","payload":{"a":1}}
    result  {"type": "result", "token": "T", "id": 1, "method": "hello", "payload": {"a": 1}}

to exchange-in-{id}, with the call's correlation_id copied. Two methods are
special:

    event   payload {"event": "name", "payload": {...}}: first publish
            {"type":"event","token":T,"event":"name","payload":{...}} to the
            mass exchange (every connection of the token, on every node),
            then answer as usual
    silent  never answer (the node times the call out)

The result is written with json.dumps and its defaults, as most Python
backends do, so an id comes back in Python's spelling: "é-1" as "\\u00e9-1",
1.50e3 as 1500.0. The node matches ids by value, so that is fine. Integers
of any size survive exactly (Python's int has no limit).

Tracing: the call's AMQP header traceparent is continued without an SDK:
the result (and the event) carry a traceparent with the same trace id and
flags and a new span id, and the call's tracestate. See docs/tracing.md.

Options (environment variables in brackets):

    --amqp-url URL      [AMQP_URL, PIPED_AMQP_URL] amqp://guest:guest@localhost:5672/
    --nodes 1,2         [NODES] the node ids to serve
    --mass-exchange X   [MASS_EXCHANGE] exchange-mass
    --no-correlation-id do not copy correlation_id (act like a backend
                        written for the original Piped)
    --queue-out-prefix, --exchange-in-prefix  queue-out-, exchange-in-

It stops cleanly on SIGTERM or SIGINT: the call in hand is answered, the
consumers are cancelled, and whatever was delivered but not answered goes
back to the queue for another backend.
"""

import argparse
import json
import logging
import os
import re
import secrets
import signal
import sys
import time

import pika
import pika.exceptions

log = logging.getLogger("python-backend")

PREFETCH = 64  # calls in hand at once, per channel
POLL_SECONDS = 0.2  # how often the loop looks at the stop flag
MAX_BACKOFF_SECONDS = 10.0

# W3C trace context: version-traceid-spanid-flags, lowercase hex.
TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")

stopping = False


def on_signal(signum, _frame):
    global stopping
    stopping = True
    log.info("got signal %d: stopping", signum)


def header_text(headers, name):
    """A header as text: pika gives AMQP long strings as str or bytes."""
    v = (headers or {}).get(name)
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    return v if isinstance(v, str) else None


def continue_trace(headers):
    """The trace headers for what a call makes us publish: the call's trace
    id and flags with a span id of our own (the span "handling the call").
    Returns (headers, trace_id, parent_span_id, span_id); without a valid
    traceparent on the call there is nothing to continue: ({}, None, None, None).
    """
    m = TRACEPARENT.match(header_text(headers, "traceparent") or "")
    if not m or m.group(1) == "ff" or set(m.group(2)) == {"0"} or set(m.group(3)) == {"0"}:
        return {}, None, None, None
    if m.group(1) == "00" and m.group(5):
        return {}, None, None, None  # version 00 has exactly four fields
    trace_id, parent, flags = m.group(2), m.group(3), m.group(4)
    span = secrets.token_hex(8)
    while span == "0" * 16:
        span = secrets.token_hex(8)
    out = {"traceparent": f"00-{trace_id}-{span}-{flags}"}
    state = header_text(headers, "tracestate")
    if state:
        out["tracestate"] = state
    return out, trace_id, parent, span


class Backend:
    def __init__(self, args):
        self.args = args
        self.nodes = args.nodes
        self.consumed = False  # whether the current session got to consuming

    def declare(self, ch):
        """Declares what we use exactly as the node does (durable, no
        arguments), so that either may start first."""
        for node in self.nodes:
            ch.queue_declare(queue=self.args.queue_out_prefix + node, durable=True)
            ch.exchange_declare(exchange=self.args.exchange_in_prefix + node, exchange_type="fanout", durable=True)
        ch.exchange_declare(exchange=self.args.mass_exchange, exchange_type="fanout", durable=True)

    def session(self):
        """One broker connection: consume until asked to stop or the
        connection fails (then pika raises)."""
        params = pika.URLParameters(self.args.amqp_url)
        params.client_properties = {"connection_name": "piped-python-backend"}
        conn = pika.BlockingConnection(params)
        try:
            ch = conn.channel()
            ch.confirm_delivery()  # basic_publish waits for the broker's confirm
            ch.basic_qos(prefetch_count=PREFETCH)
            self.declare(ch)
            tags = []
            for node in self.nodes:
                tags.append(ch.basic_consume(
                    queue=self.args.queue_out_prefix + node,
                    on_message_callback=lambda ch, d, p, b, node=node: self.on_call(ch, node, d, p, b)))
            log.info("consuming %s", ", ".join(self.args.queue_out_prefix + n for n in self.nodes))
            self.consumed = True
            while not stopping:
                conn.process_data_events(time_limit=POLL_SECONDS)
            for tag in tags:
                ch.basic_cancel(tag)  # unacked calls go back to the queue when we close
        finally:
            if conn.is_open:
                conn.close()

    def run(self):
        backoff = 0.1
        while not stopping:
            self.consumed = False
            try:
                self.session()
                return
            except (pika.exceptions.AMQPConnectionError, pika.exceptions.ConnectionClosed,
                    pika.exceptions.StreamLostError, pika.exceptions.ChannelClosedByBroker) as e:
                # A lost connection, a channel the broker closed (a publish
                # to an exchange that was deleted, a declaration that
                # conflicts): start over, declaring again, as the node does.
                # Unacked calls went back to the queue with the connection.
                if self.consumed:
                    backoff = 0.1  # it worked for a while: start the backoff again
                log.warning("broker session ended (%r); reconnecting in %.1fs", e, backoff)
            deadline = time.monotonic() + backoff
            while not stopping and time.monotonic() < deadline:
                time.sleep(min(POLL_SECONDS, backoff))
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    def on_call(self, ch, node, deliver, props, body):
        """Handles one delivery. Whatever it holds, the delivery is acked or
        (only when the broker refused the answer) requeued, and the process
        goes on: a message that cannot be handled is logged and dropped,
        never requeued (it would come back forever) and never fatal."""
        try:
            self.handle(ch, node, deliver, props, body)
        except pika.exceptions.AMQPError:
            raise  # the session ended: the reconnect loop takes over
        except Exception as e:  # noqa: BLE001 - one bad message must not stop the backend
            log.warning("dropping a message that could not be handled (node %s, %d bytes): %s",
                        node, len(body), type(e).__name__)
            ch.basic_ack(deliver.delivery_tag)

    def handle(self, ch, node, deliver, props, body):
        try:
            call = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than Python recurses
            call = None
        if not isinstance(call, dict) or not isinstance(call.get("method"), str) or not isinstance(call.get("token"), str):
            # Never requeue what cannot be read: it would come back forever.
            log.warning("dropping a message that is not a call (node %s, %d bytes)", node, len(body))
            ch.basic_ack(deliver.delivery_tag)
            return
        method, token = call["method"], call["token"]
        headers, trace_id, parent, span = continue_trace(props.headers)
        # The log names the trace, never the token.
        log.info("call node=%s method=%s correlation_id=%s trace_id=%s parent_span=%s span=%s",
                 node, method, props.correlation_id, trace_id or "-", parent or "-", span or "-")

        if method == "silent":
            ch.basic_ack(deliver.delivery_tag)
            return

        try:
            self.answer(ch, node, call, props, headers)
        except pika.exceptions.NackError:
            log.warning("the broker refused (nacked) an answer; the call goes back to the queue")
            ch.basic_nack(deliver.delivery_tag, requeue=True)
            return
        ch.basic_ack(deliver.delivery_tag)  # after the broker confirmed the answer

    def answer(self, ch, node, call, props, headers):
        """Publishes the answer to call (and, for method "event", the event
        first), waiting for the broker's confirm of each."""
        method, token = call["method"], call["token"]
        if method == "event":
            p = call.get("payload")
            if isinstance(p, dict) and isinstance(p.get("event"), str) and p["event"]:
                event = {"type": "event", "token": token, "event": p["event"]}
                if "payload" in p:
                    event["payload"] = p["payload"]
                ch.basic_publish(
                    exchange=self.args.mass_exchange, routing_key="", body=json.dumps(event),
                    properties=pika.BasicProperties(content_type="application/json", headers=headers))
            else:
                log.warning("event call without payload.event: answering without publishing")

        result = {"type": "result", "token": token}
        if call.get("id") is not None:  # no id in the call: none in the result
            result["id"] = call["id"]
        result["method"] = method
        if "payload" in call:
            result["payload"] = call["payload"]
        ch.basic_publish(
            exchange=self.args.exchange_in_prefix + node, routing_key="", body=json.dumps(result),
            properties=pika.BasicProperties(
                content_type="application/json",
                correlation_id=None if self.args.no_correlation_id else props.correlation_id,
                headers=headers))


def main():
    env = os.environ.get
    ap = argparse.ArgumentParser(description="Example Piped backend (Python, pika): echoes every call.")
    ap.add_argument("--amqp-url", default=env("AMQP_URL") or env("PIPED_AMQP_URL") or "amqp://guest:guest@localhost:5672/")
    ap.add_argument("--nodes", default=env("NODES") or "1", help="comma-separated node ids")
    ap.add_argument("--mass-exchange", default=env("MASS_EXCHANGE") or "exchange-mass")
    ap.add_argument("--no-correlation-id", action="store_true", help="do not copy correlation_id")
    ap.add_argument("--queue-out-prefix", default="queue-out-")
    ap.add_argument("--exchange-in-prefix", default="exchange-in-")
    args = ap.parse_args()
    args.nodes = [n.strip() for n in args.nodes.split(",") if n.strip()]
    if not args.nodes or len(set(args.nodes)) != len(args.nodes):
        ap.error("--nodes: empty or repeated node ids")

    logging.basicConfig(stream=sys.stdout, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pika").setLevel(logging.WARNING)  # pika says a lot at INFO
    sys.stdout.reconfigure(line_buffering=True)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    Backend(args).run()
    log.info("stopped")


if __name__ == "__main__":
    main()

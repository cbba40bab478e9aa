#!/usr/bin/env node
// A Piped backend in Node.js with amqplib: it answers every call that the
// Piped nodes publish with the call's own payload, like the Go echo backend
// (examples/echo-backend), and knows one special method:
//
//   event   payload {"event": "name", "payload": {...}}: publish that event to
//           every connection of the caller's token (through the mass
//           exchange), then answer.
//
//   node backend.js [--amqp-url URL] [--nodes 1,2] [--mass-exchange NAME]
//                   [--queue-out-prefix P] [--exchange-in-prefix P] [--log-level debug|info]
//
// The protocol (docs/protocol.md): a call arrives on queue-out-{node} as
//   {"id":…,"method":"…","token":"…","payload":{…}}
// with the AMQP properties correlation_id and reply_to and the header
// traceparent; the answer goes to exchange-in-{node} as
//   {"id":…,"type":"result","token":"…","method":"…","payload":{…}}
// with the same correlation_id, and an event goes to exchange-mass as
//   {"type":"event","event":"…","token":"…","payload":{…}}.
//
// Ids beyond 2^53: JSON.parse turns 12345678901234567890 into the float
// 12345678901234567000, and Node 20's JSON.parse gives a reviver no `source`
// text (newer V8 versions do). So this backend never re-encodes what it copies:
// rawMembers() below cuts the raw JSON text of the call's "id" and "payload"
// out of the body and the answer carries those exact bytes. JSON.parse is
// still used to validate the body and to read the strings it needs (method,
// token, the event's name).
'use strict';

const crypto = require('node:crypto');
const { parseArgs } = require('node:util');
const amqp = require('amqplib');

const usage = `usage: node backend.js [--amqp-url URL] [--nodes 1,2] [--mass-exchange NAME]
                       [--queue-out-prefix P] [--exchange-in-prefix P] [--log-level debug|info]

  --amqp-url            broker; default $AMQP_URL, else $PIPED_AMQP_URL, else amqp://guest:guest@localhost:5672/
  --nodes               comma-separated ids of the nodes to serve; default $NODE_IDS, else 1
  --mass-exchange       exchange for events (default exchange-mass)
  --queue-out-prefix    prefix of the queues to consume (default queue-out-)
  --exchange-in-prefix  prefix of the exchanges answers go to (default exchange-in-)
  --log-level           info (default) or debug: debug logs a line for every call answered`;

// Consumer prefetch: at most this many calls are being handled at once.
const prefetch = 64;
// On SIGTERM, how long the calls being answered may take before the
// connection is closed anyway (the broker then requeues what is unacked).
const drainTimeoutMs = 5000;

function main() {
  let opts;
  try {
    ({ values: opts } = parseArgs({
      options: {
        'amqp-url': { type: 'string', default: process.env.AMQP_URL || process.env.PIPED_AMQP_URL || 'amqp://guest:guest@localhost:5672/' },
        nodes: { type: 'string', default: process.env.NODE_IDS || '1' },
        'mass-exchange': { type: 'string', default: 'exchange-mass' },
        'queue-out-prefix': { type: 'string', default: 'queue-out-' },
        'exchange-in-prefix': { type: 'string', default: 'exchange-in-' },
        'log-level': { type: 'string', default: 'info' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    console.error(`node-backend: ${err.message}\n${usage}`);
    process.exit(2);
  }
  if (opts.help) {
    console.log(usage);
    return;
  }
  const nodes = [...new Set(opts.nodes.split(',').map((s) => s.trim()).filter(Boolean))];
  if (nodes.length === 0 || !['debug', 'info'].includes(opts['log-level'])) {
    console.error(`node-backend: need at least one node id and --log-level debug or info\n${usage}`);
    process.exit(2);
  }
  const backend = new Backend({
    url: opts['amqp-url'],
    nodes,
    mass: opts['mass-exchange'],
    queueOutPrefix: opts['queue-out-prefix'],
    exchangeInPrefix: opts['exchange-in-prefix'],
    debug: opts['log-level'] === 'debug',
  });
  for (const sig of ['SIGTERM', 'SIGINT']) {
    process.once(sig, () => backend.stop(sig));
  }
  backend.start().catch((err) => {
    log('error', 'node-backend: failed', { err: err.message });
    process.exit(1);
  });
}

class Backend {
  constructor(cfg) {
    this.cfg = cfg;
    this.conn = null;
    this.ch = null; // one confirm channel: consumes the calls and publishes the answers
    this.tags = []; // consumer tags, cancelled on stop
    this.inFlight = new Set(); // promises of the calls being handled
    this.consuming = false; // start() got as far as consuming
    this.stopping = false; // a signal came: stop() was called
  }

  // start connects, declares what the backend uses and consumes the calls of
  // every node. A broker connection that fails later ends the process with
  // exit code 1, for its supervisor to restart it.
  async start() {
    const { cfg } = this;
    this.conn = await amqp.connect(cfg.url, { clientProperties: { connection_name: 'piped-node-backend' } });
    this.conn.on('error', (err) => log('error', 'node-backend: broker connection error', { err: err.message }));
    this.conn.on('close', () => {
      if (!this.stopping) {
        log('error', 'node-backend: broker connection closed; exiting');
        process.exit(1);
      }
    });
    this.ch = await this.conn.createConfirmChannel();
    this.ch.on('error', (err) => log('error', 'node-backend: channel error', { err: err.message }));
    this.ch.on('close', () => {
      if (!this.stopping) {
        log('error', 'node-backend: channel closed; exiting');
        process.exit(1);
      }
    });
    await this.ch.prefetch(prefetch);
    // Declared exactly as the node declares them, so that either may start
    // first (routing/topology.go): a durable queue with no arguments, durable
    // fanout exchanges.
    for (const node of cfg.nodes) {
      await this.ch.assertQueue(cfg.queueOutPrefix + node, { durable: true, autoDelete: false, exclusive: false });
      await this.ch.assertExchange(cfg.exchangeInPrefix + node, 'fanout', { durable: true, autoDelete: false });
    }
    await this.ch.assertExchange(cfg.mass, 'fanout', { durable: true, autoDelete: false });
    for (const node of cfg.nodes) {
      const queue = cfg.queueOutPrefix + node;
      const { consumerTag } = await this.ch.consume(queue, (msg) => {
        if (msg === null) {
          // The broker cancelled the consumer (the queue was deleted).
          if (!this.stopping) {
            log('error', 'node-backend: consumer cancelled by the broker; exiting', { queue });
            process.exit(1);
          }
          return;
        }
        const p = this.handle(node, msg).finally(() => this.inFlight.delete(p));
        this.inFlight.add(p);
      });
      this.tags.push(consumerTag);
    }
    this.consuming = true;
    if (this.stopping) {
      await this.drain(); // a signal came while connecting
      return;
    }
    log('info', 'node-backend: consuming', { queues: cfg.nodes.map((n) => cfg.queueOutPrefix + n).join(','), mass: cfg.mass });
  }

  // stop stops the backend on a signal: see drain. When start() is still
  // connecting, it drains as soon as it has a channel.
  stop(signal) {
    if (this.stopping) return;
    this.stopping = true;
    log('info', 'node-backend: stopping', { signal, in_flight: this.inFlight.size });
    if (this.consuming) this.drain();
  }

  // drain stops consuming, lets the calls being handled be answered (for at
  // most drainTimeoutMs) and closes the connection; the broker requeues any
  // call still unacked, for another backend. With nothing left to do, the
  // process then exits 0.
  async drain() {
    try {
      for (const tag of this.tags) await this.ch.cancel(tag);
      await Promise.race([
        Promise.allSettled([...this.inFlight]),
        new Promise((resolve) => setTimeout(resolve, drainTimeoutMs).unref()),
      ]);
      await this.ch.close();
      await this.conn.close();
    } catch (err) {
      log('warn', 'node-backend: closing the broker connection', { err: err.message });
    }
    log('info', 'node-backend: stopped');
    process.exitCode = 0;
  }

  // handle answers one call of node, and acks it once the broker confirmed
  // the answer. What is not a call is logged and dropped (acked: requeueing
  // it would bring it back forever); it never ends the process.
  async handle(node, msg) {
    const { cfg, ch } = this;
    const text = msg.content.toString('utf8');
    let call;
    try {
      call = JSON.parse(text);
    } catch {
      call = null;
    }
    if (call === null || typeof call !== 'object' || Array.isArray(call) || typeof call.method !== 'string' || typeof call.token !== 'string') {
      // Not its body: it may hold a token.
      log('warn', 'node-backend: dropping a message that is not a call', { node, bytes: msg.content.length, correlation_id: msg.properties.correlationId });
      ch.ack(msg);
      return;
    }
    const raw = rawMembers(text); // the exact JSON text of "id" and "payload"
    const correlationId = msg.properties.correlationId;
    const span = continueTrace(msg.properties.headers); // null when the call carries no valid traceparent
    const fields = { node, method: call.method, correlation_id: correlationId, token_hash: tokenHash(call.token) };
    if (span) Object.assign(fields, { trace_id: span.traceId, span_id: span.spanId, parent_span_id: span.parentId });
    try {
      if (call.method === 'event') {
        const p = raw.has('payload') ? rawMembers(raw.get('payload')) : new Map();
        const name = call.payload && call.payload.event;
        if (typeof name === 'string' && name !== '') {
          // The event is a message of its own, published under a child of
          // the call's span (a "publish" span in OpenTelemetry's terms).
          const child = span && { ...span, parentId: span.spanId, spanId: newSpanId() };
          await this.publish(cfg.mass, eventBody(name, call.token, p.get('payload')), { headers: traceHeaders(child) });
          fields.event = name;
          if (child) fields.event_span_id = child.spanId;
        } else {
          log('warn', 'node-backend: event call without payload.event; answering without publishing', fields);
        }
      }
      await this.publish(cfg.exchangeInPrefix + node, resultBody(raw.get('id'), call.token, call.method, raw.get('payload')), {
        correlationId, // the node hands the answer to the exact connection that made the call
        headers: traceHeaders(span),
      });
      ch.ack(msg);
      if (cfg.debug) log('debug', 'node-backend: answered', fields);
    } catch (err) {
      if (!err || !err.requeue) {
        // Not the broker's doing (a call this code cannot answer): drop it.
        // Requeueing would bring it back forever; exiting would stop every call.
        log('warn', 'node-backend: dropping a call that could not be answered', { ...fields, err: String(err && err.message) });
        try {
          ch.ack(msg);
        } catch {
          // The channel is gone.
        }
        return;
      }
      // The publish was nacked or the channel is closing: give the call back.
      log('warn', 'node-backend: answering failed; requeueing the call', { ...fields, err: err.message });
      try {
        ch.nack(msg, false, true);
      } catch {
        // The channel is gone; the broker requeues the call itself.
      }
    }
  }

  // publish publishes body to exchange (routing key "", fanout) and resolves
  // once the broker confirmed it.
  publish(exchange, body, props) {
    return new Promise((resolve, reject) => {
      this.ch.publish(exchange, '', Buffer.from(body, 'utf8'), { contentType: 'application/json', ...props }, (err) =>
        err ? reject(Object.assign(err instanceof Error ? err : new Error(`broker nacked the publish to ${exchange}`), { requeue: true })) : resolve());
    });
  }
}

// resultBody is the answer to a call, with its id and payload as the exact
// JSON text the call had (undefined: left out, as the call had none).
function resultBody(rawID, token, method, rawPayload) {
  let b = '{';
  if (rawID !== undefined) b += `"id":${rawID},`;
  b += `"type":"result","token":${JSON.stringify(token)},"method":${JSON.stringify(method)}`;
  if (rawPayload !== undefined) b += `,"payload":${rawPayload}`;
  return b + '}';
}

// eventBody is an event for every connection of token, on every node.
function eventBody(name, token, rawPayload) {
  let b = `{"type":"event","event":${JSON.stringify(name)},"token":${JSON.stringify(token)}`;
  if (rawPayload !== undefined) b += `,"payload":${rawPayload}`;
  return b + '}';
}

// rawMembers returns the raw JSON text of each top-level member of the JSON
// object in text, by (unescaped) name; when a name occurs twice the last one
// wins, as with JSON.parse. text must be valid JSON (JSON.parse accepted it);
// for anything but an object the map is empty.
function rawMembers(text) {
  const members = new Map();
  let i = skipSpace(text, 0);
  if (text[i] !== '{') return members;
  i = skipSpace(text, i + 1);
  while (text[i] === '"') {
    const nameEnd = endOfString(text, i);
    const name = JSON.parse(text.slice(i, nameEnd));
    const start = skipSpace(text, skipSpace(text, nameEnd) + 1); // past the ':'
    const end = endOfValue(text, start);
    members.set(name, text.slice(start, end));
    i = skipSpace(text, end);
    if (text[i] !== ',') break;
    i = skipSpace(text, i + 1);
  }
  return members;
}

function skipSpace(s, i) {
  while (s[i] === ' ' || s[i] === '\t' || s[i] === '\n' || s[i] === '\r') i++;
  return i;
}

// endOfString returns the index just past the JSON string starting at s[i].
function endOfString(s, i) {
  for (i++; s[i] !== '"'; i++) {
    if (s[i] === '\\') i++;
  }
  return i + 1;
}

// endOfValue returns the index just past the JSON value starting at s[i].
function endOfValue(s, i) {
  const c = s[i];
  if (c === '"') return endOfString(s, i);
  if (c === '{' || c === '[') {
    for (let depth = 0; ; i++) {
      const d = s[i];
      if (d === '"') i = endOfString(s, i) - 1;
      else if (d === '{' || d === '[') depth++;
      else if ((d === '}' || d === ']') && --depth === 0) return i + 1;
    }
  }
  while (i < s.length && !',}] \t\n\r'.includes(s[i])) i++; // a number, true, false or null
  return i;
}

// W3C trace context (https://www.w3.org/TR/trace-context/): version,
// trace id, parent span id, flags.
const traceparentRE = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;

// continueTrace reads the call's traceparent (and tracestate) header and
// returns the backend's span for the call: the same trace id, a new span id,
// the call's span as parent. null when there is no valid traceparent.
function continueTrace(headers) {
  const tp = headerString(headers, 'traceparent');
  const m = tp && traceparentRE.exec(tp.trim());
  if (!m || m[1] === 'ff' || (m[1] === '00' && m[5] !== undefined) || /^0+$/.test(m[2]) || /^0+$/.test(m[3])) return null;
  return {
    traceId: m[2],
    parentId: m[3],
    spanId: newSpanId(),
    sampled: (parseInt(m[4], 16) & 1) === 1,
    tracestate: headerString(headers, 'tracestate'),
  };
}

// traceHeaders returns the AMQP headers that carry span's context.
function traceHeaders(span) {
  if (!span) return {};
  const h = { traceparent: `00-${span.traceId}-${span.spanId}-${span.sampled ? '01' : '00'}` };
  if (span.tracestate) h.tracestate = span.tracestate;
  return h;
}

function headerString(headers, name) {
  const v = headers && headers[name];
  if (typeof v === 'string') return v;
  if (Buffer.isBuffer(v)) return v.toString('utf8');
  return undefined;
}

function newSpanId() {
  for (;;) {
    const id = crypto.randomBytes(8).toString('hex');
    if (id !== '0000000000000000') return id;
  }
}

// tokenHash names a token in logs without writing it: the first 12 hex
// digits of its SHA-256, as the node's logs and spans do.
function tokenHash(token) {
  return crypto.createHash('sha256').update(token).digest('hex').slice(0, 12);
}

// log writes one line "time=… level=… msg=… key=value …" to stdout.
function log(level, msg, fields = {}) {
  let line = `time=${new Date().toISOString()} level=${level.toUpperCase()} msg=${JSON.stringify(msg)}`;
  for (const [k, v] of Object.entries(fields)) {
    if (v === undefined) continue;
    const s = String(v);
    line += ` ${k}=${/^[\w.:/,+-]+$/.test(s) ? s : JSON.stringify(s)}`;
  }
  process.stdout.write(line + '\n');
}

if (require.main === module) {
  main();
}

module.exports = { rawMembers, resultBody, eventBody, continueTrace };

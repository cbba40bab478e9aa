// Unit tests of client/piped.js against a fake WebSocket, with mocked timers:
//   node --test client/test/
// (test/integration/browser_test.go runs them, so `make test` does.)
import { test, mock } from "node:test";
import assert from "node:assert/strict";

import { Piped, PipedError, buildURL, connect } from "../piped.js";

// FakeSocket records what the client does; the test plays the node.
class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.sent = [];
    this.closedWith = null;
    FakeSocket.all.push(this);
  }
  static last() {
    return FakeSocket.all[FakeSocket.all.length - 1];
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close(code, reason) {
    this.closedWith = { code, reason };
  }
  // The node's side.
  open() {
    this.onopen?.({});
  }
  frame(obj) {
    this.onmessage?.({ data: typeof obj === "string" ? obj : JSON.stringify(obj) });
  }
  end(code, reason = "") {
    this.onclose?.({ code, reason, wasClean: code !== 1006 });
  }
}

// setup makes a client on a fake socket with mocked timers and returns it
// with a log of its lifecycle events.
async function setup(t, options = {}) {
  FakeSocket.all = [];
  t.mock.timers.enable({ apis: ["setTimeout", "Date"] });
  t.mock.method(Math, "random", () => 0.5);
  const p = new Piped({ url: "ws://node:8080", token: "tok", WebSocket: FakeSocket, idPrefix: "x.", ...options });
  const log = [];
  for (const name of ["open", "close", "reconnecting", "error", "result"]) {
    p.on(name, (...args) => log.push([name, ...args]));
  }
  await flush();
  return { p, log, ws: FakeSocket.last() };
}

// flush lets the client's promise chains (the token) run.
async function flush() {
  for (let i = 0; i < 5; i++) await Promise.resolve();
}

async function rejection(promise) {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  assert.fail("the promise resolved");
}

test("buildURL", () => {
  for (const [base, token, want] of [
    ["ws://h:1", "a b", "ws://h:1/api/a%20b"],
    ["ws://h:1/", "t", "ws://h:1/api/t"],
    ["wss://h/api", "t", "wss://h/api/t"],
    ["wss://h/api/", "t", "wss://h/api/t"],
    ["wss://h/p/api/{token}/x", "a+b", "wss://h/p/api/a%2Bb/x"],
    ["ws://h/api/fixed", undefined, "ws://h/api/fixed"],
    ["https://h/", "t", "wss://h/api/t"],
    ["http://h:8080", "t", "ws://h:8080/api/t"],
  ]) {
    assert.equal(buildURL(base, token), want, `${base} ${token}`);
  }
});

test("a call resolves with its result's payload; ids are a counter with a prefix", async (t) => {
  const { p, ws } = await setup(t);
  assert.equal(ws.url, "ws://node:8080/api/tok");
  const first = p.call("hello", { a: 1 }); // waits for the open
  assert.equal(ws.sent.length, 0);
  ws.open();
  assert.equal(p.state, "open");
  const second = p.call("hello", { a: 2 });
  assert.deepEqual(ws.sent, [
    { id: "x.1", method: "hello", payload: { a: 1 } },
    { id: "x.2", method: "hello", payload: { a: 2 } },
  ]);
  ws.frame({ type: "result", id: "x.2", method: "hello", payload: { a: 2 } });
  ws.frame({ type: "result", id: "x.1", method: "hello", payload: { a: 1 } });
  assert.deepEqual(await first, { a: 1 });
  assert.deepEqual(await second, { a: 2 });
});

test("error frames reject with their code; unknown ids go to handlers", async (t) => {
  const { p, ws, log } = await setup(t);
  ws.open();
  const call = p.call("$x");
  ws.frame({ type: "error", id: "x.1", error: { code: "bad_request", message: "methods starting with $ are reserved" } });
  const err = await rejection(call);
  assert.ok(err instanceof PipedError);
  assert.equal(err.code, "bad_request");
  assert.equal(err.method, "$x");
  assert.equal(err.sent, true);
  ws.frame({ type: "error", error: { code: "bad_request", message: "invalid JSON" } });
  ws.frame({ type: "result", id: "other.7", payload: 1 });
  assert.deepEqual(
    log.filter(([n]) => n === "error" || n === "result").map(([n, a]) => [n, n === "error" ? a.code : a]),
    [["error", "bad_request"], ["result", 1]],
  );
});

test("events reach their name's handlers and the catch-all", async (t) => {
  const { p, ws } = await setup(t);
  ws.open();
  const got = [];
  const off = p.on("balance", (payload) => got.push(["balance", payload]));
  p.on("event", (name, payload) => got.push(["event", name, payload]));
  p.on("close", () => got.push(["close handler"]));
  ws.frame({ type: "event", event: "balance", payload: { b: 1 } });
  ws.frame({ type: "event", event: "close", payload: {} }); // a lifecycle name: catch-all only
  off();
  ws.frame({ type: "event", event: "balance", payload: { b: 2 } });
  assert.deepEqual(got, [
    ["balance", { b: 1 }],
    ["event", "balance", { b: 1 }],
    ["event", "close", {}],
    ["event", "balance", { b: 2 }],
  ]);
});

test("call ping resolves with the node's pong", async (t) => {
  const { p, ws } = await setup(t);
  ws.open();
  const got = [];
  p.on("event", (name) => got.push(name));
  const ping = p.call("ping");
  ws.frame({ type: "event", event: "pong", id: "x.1" });
  assert.equal(await ping, undefined);
  ws.frame({ type: "event", event: "pong" }); // without an id: an event like any other
  assert.deepEqual(got, ["pong"]);
});

test("timeouts: a sent call gets timeout, a waiting one disconnected", async (t) => {
  const { p, ws } = await setup(t, { timeout: 1000 });
  const waiting = p.call("a");
  t.mock.timers.tick(1000);
  let err = await rejection(waiting);
  assert.deepEqual([err.code, err.sent], ["disconnected", false]);
  ws.open();
  assert.equal(ws.sent.length, 0, "the expired call must not be sent on open");
  const sent = p.call("b", undefined, { timeout: 50 });
  t.mock.timers.tick(50);
  err = await rejection(sent);
  assert.deepEqual([err.code, err.sent], ["timeout", true]);
  ws.frame({ type: "result", id: err.id, payload: 1 }); // late: not a call any more
});

test("whenDisconnected fail, queueLimit and payload size", async (t) => {
  const { p } = await setup(t, { queueLimit: 1, maxFrameBytes: 100 });
  let err = await rejection(p.call("a", {}, { whenDisconnected: "fail" }));
  assert.equal(err.code, "disconnected");
  p.call("b").catch(() => {});
  err = await rejection(p.call("c"));
  assert.equal(err.code, "queue_full");
  err = await rejection(p.call("d", { s: "é".repeat(50) }));
  assert.equal(err.code, "payload_too_large");
});

// Which close codes reconnect: every code after an open connection.
test("close codes", async (t) => {
  for (const [code, reconnect, tokenFn] of [
    [1001, true],
    [1005, true],
    [1006, true],
    [1009, true],
    [1011, true],
    [1012, true],
    [1013, true],
    [4008, true],
    [1000, false],
    [1008, false],
    [4001, false],
    [4321, false],
    [4003, false],
    [4003, true, true],
  ]) {
    await t.test(`${code}${tokenFn ? " with a token function" : ""}`, async (t) => {
      const { p, ws, log } = await setup(t, tokenFn ? { token: () => "fresh" } : {});
      ws.open();
      const inflight = p.call("m");
      ws.end(code, "why");
      const err = await rejection(inflight);
      assert.equal(err.code, "disconnected"); // in flight: its outcome is unknown
      assert.equal(err.sent, true);
      const close = log.find(([n]) => n === "close")[1];
      assert.equal(close.code, code);
      assert.equal(close.willReconnect, reconnect);
      assert.equal(p.state, reconnect ? "reconnecting" : "closed");
      if (!reconnect) {
        assert.equal((await rejection(p.call("after"))).code, "closed");
        return;
      }
      const [, info] = log.find(([n]) => n === "reconnecting");
      assert.equal(info.delay, 250); // random 0.5 of minDelay
      t.mock.timers.tick(250);
      await flush();
      assert.equal(FakeSocket.all.length, 2);
      assert.equal(FakeSocket.last().url, `ws://node:8080/api/${tokenFn ? "fresh" : "tok"}`);
    });
  }
});

test("backoff grows with full jitter up to maxDelay; give up after maxFailedOpens", async (t) => {
  const { p, log } = await setup(t, { minDelay: 100, maxDelay: 1000, maxFailedOpens: 6 });
  for (let i = 0; i < 6; i++) {
    FakeSocket.last().end(1006);
    if (p.state === "closed") break;
    const [, info] = log.filter(([n]) => n === "reconnecting").at(-1);
    t.mock.timers.tick(info.delay);
    await flush();
  }
  const delays = log.filter(([n]) => n === "reconnecting").map(([, i]) => i.delay);
  assert.deepEqual(delays, [50, 100, 200, 400, 500]); // half of min(maxDelay, minDelay*2^n)
  const last = log.filter(([n]) => n === "close").at(-1)[1];
  assert.deepEqual([last.willReconnect, last.gaveUp, last.opened], [false, true, false]);
  assert.equal(p.state, "closed");
});

test("a stable connection resets the backoff, a short one does not", async (t) => {
  const { ws, log } = await setup(t, { minDelay: 100, stableAfter: 1000 });
  ws.open();
  ws.end(1012); // at once: attempt 0
  t.mock.timers.tick(50);
  await flush();
  FakeSocket.last().open();
  FakeSocket.last().end(1012); // short: attempt 1
  t.mock.timers.tick(100);
  await flush();
  FakeSocket.last().open();
  t.mock.timers.tick(1000);
  FakeSocket.last().end(1012); // stable: back to attempt 0
  const delays = log.filter(([n]) => n === "reconnecting").map(([, i]) => i.delay);
  assert.deepEqual(delays, [50, 100, 50]);
  assert.deepEqual(log.filter(([n]) => n === "open").map(([, i]) => i.reconnect), [false, true, true]);
});

test("close rejects everything and stops", async (t) => {
  const { p, ws, log } = await setup(t);
  ws.open();
  const pending = p.call("a");
  p.close();
  assert.equal((await rejection(pending)).code, "closed");
  assert.deepEqual(ws.closedWith, { code: 1000, reason: "" });
  ws.end(1000); // the socket's own close event after close(): ignored
  assert.equal(log.filter(([n]) => n === "close").length, 1);
  assert.equal(p.state, "closed");
});

test("connect and a failing token function", async (t) => {
  FakeSocket.all = [];
  t.mock.timers.enable({ apis: ["setTimeout", "Date"] });
  const p = connect("ws://h", () => Promise.reject(new Error("login expired")), { WebSocket: FakeSocket, maxFailedOpens: 1 });
  const errors = [];
  p.on("error", (e) => errors.push(e.code));
  await flush();
  assert.deepEqual(errors, ["token_failed"]);
  assert.equal(p.state, "closed");
  assert.equal(FakeSocket.all.length, 0);
});

test("a WebSocket constructor that throws counts as a failed attempt; a bad URL throws at once", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout", "Date"] });
  class Throwing {
    constructor() {
      throw new Error("blocked");
    }
  }
  const p = new Piped({ url: "ws://h", token: "t", WebSocket: Throwing, maxFailedOpens: 1 });
  const seen = [];
  p.on("error", (e) => seen.push(e.code));
  p.on("close", (i) => seen.push(`close ${i.code} ${i.gaveUp}`));
  await flush();
  assert.deepEqual(seen, ["connect_failed", "close 1006 true"]);
  assert.equal(p.state, "closed");
  assert.throws(() => new Piped({ url: "no url", token: "t", WebSocket: FakeSocket }), TypeError);
});

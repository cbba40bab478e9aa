// piped.js: a small, dependency-free browser client for Piped.
//
//   import { connect } from "./piped.js";
//   const piped = connect("wss://example.com", token);
//   const article = await piped.call("get-article", { articleId: 1 });
//   piped.on("balance-changed", (payload) => render(payload));
//
// It is one ES module with no imports; piped.d.ts declares its types and
// README.md (beside it) documents every option, error code and close code.
// The wire protocol is docs/protocol.md.

/** Names of the client's own events; a backend event of one of these names reaches only "event" handlers. */
export const LIFECYCLE_EVENTS = Object.freeze(["open", "close", "reconnecting", "error", "event", "result"]);

/** The defaults of every option (README.md, "Options"). */
export const DEFAULTS = Object.freeze({
  // Call timeout in ms, waiting for the connection included. Longer than the
  // node's requests.timeout (30s), so that the node's own timeout error, when
  // there is one, arrives first.
  timeout: 35000,
  whenDisconnected: "wait", // or "fail"
  queueLimit: 100, // calls waiting for a connection at most
  minDelay: 500, // ms: the first reconnect waits up to this long (full jitter)
  maxDelay: 30000, // ms: no reconnect waits longer
  maxFailedOpens: 10, // attempts in a row that never open before the client gives up
  stableAfter: 5000, // ms: a connection open this long resets the backoff
  maxFrameBytes: 65536, // the node's ws.max_message_bytes: larger calls are refused locally
});

// Close codes after which the client does not reconnect by itself
// (README.md, "Close codes"). 4003 is in the list unless the token is a
// function, which gives a fresh token. Every other 4000-4999 code is a
// backend's disconnect and stops too, except 4008.
const STOP_CODES = new Set([1000, 1008, 3000, 3003, 4001, 4003]);

/**
 * PipedError is what a call rejects with and what "error" handlers get.
 * code is the node's error code ("bad_request", "timeout", …) or one of the
 * client's own: "timeout", "disconnected", "closed", "queue_full",
 * "payload_too_large", "token_failed", "connect_failed", "bad_frame". sent says whether the call reached
 * the socket (if it did, the backend may have carried it out).
 */
export class PipedError extends Error {
  constructor(code, message, details = {}) {
    super(message);
    this.name = "PipedError";
    this.code = code;
    this.id = details.id;
    this.method = details.method;
    this.sent = details.sent ?? false;
    this.closeCode = details.closeCode;
    this.frame = details.frame;
  }
}

/** connect(url, token, options) is new Piped({...options, url, token}). */
export function connect(url, token, options = {}) {
  return new Piped({ ...options, url, token });
}

/**
 * Piped is one logical connection to Piped: it opens a WebSocket at once,
 * reconnects after abnormal closes and matches results with calls. It is
 * meant to live as long as the page (or the session): close() ends it.
 */
export class Piped {
  constructor(urlOrOptions, options = {}) {
    const opts = typeof urlOrOptions === "string" ? { ...options, url: urlOrOptions } : { ...urlOrOptions };
    if (typeof opts.url !== "string" || opts.url === "") {
      throw new TypeError("piped: url is required");
    }
    for (const key of Object.keys(DEFAULTS)) {
      if (opts[key] === undefined) opts[key] = DEFAULTS[key];
    }
    if (opts.whenDisconnected !== "wait" && opts.whenDisconnected !== "fail") {
      throw new TypeError(`piped: whenDisconnected must be "wait" or "fail", got ${opts.whenDisconnected}`);
    }
    buildURL(opts.url, "t"); // throws now for a URL that can never work
    this.options = opts;
    this._WebSocket = opts.WebSocket ?? globalThis.WebSocket;
    if (typeof this._WebSocket !== "function") {
      throw new TypeError("piped: no WebSocket: pass options.WebSocket");
    }

    // Set at construction.
    this._idPrefix = opts.idPrefix ?? Math.random().toString(36).slice(2, 8) + ".";
    this._handlers = new Map(); // event name -> Set of handlers

    // Connection state, changed only by _open, _onOpen, _onClose and close.
    this._state = "connecting"; // "connecting" | "open" | "reconnecting" | "closed"
    this._ws = null;
    this._opened = false; // whether the current socket opened
    this._openedAt = 0; // when it did
    this._attempt = 0; // reconnects since the last stable connection (backoff exponent)
    this._failedOpens = 0; // attempts in a row that never opened
    this._retryTimer = null;

    // Calls: every call not yet settled is in _calls (id -> call); those not
    // yet written to a socket are also in _queue, in order.
    this._nextID = 1;
    this._calls = new Map();
    this._queue = [];

    this._open();
  }

  /** "connecting", "open", "reconnecting" or "closed". */
  get state() {
    return this._state;
  }

  /**
   * call sends method with payload and resolves with the result's payload,
   * or rejects with a PipedError. options: timeout (ms), whenDisconnected
   * ("wait" or "fail"), traceparent, tracestate.
   */
  call(method, payload, options = {}) {
    if (typeof method !== "string") {
      return Promise.reject(new TypeError("piped: method must be a string"));
    }
    const id = this._idPrefix + this._nextID++;
    const frame = { id, method };
    if (payload !== undefined && payload !== null) frame.payload = payload;
    if (options.traceparent !== undefined) frame.traceparent = options.traceparent;
    if (options.tracestate !== undefined) frame.tracestate = options.tracestate;
    let text;
    try {
      text = JSON.stringify(frame);
    } catch (err) {
      return Promise.reject(err);
    }
    const fail = (code, message) => Promise.reject(new PipedError(code, message, { id, method }));
    if (this._state === "closed") {
      return fail("closed", "piped: the client is closed");
    }
    const size = byteLength(text);
    if (size > this.options.maxFrameBytes) {
      return fail("payload_too_large", `piped: the call is ${size} bytes; the node takes at most ${this.options.maxFrameBytes} (ws.max_message_bytes)`);
    }
    const open = this._state === "open";
    const mode = options.whenDisconnected ?? this.options.whenDisconnected;
    if (!open && mode === "fail") {
      return fail("disconnected", "piped: not connected");
    }
    if (!open && this._queue.length >= this.options.queueLimit) {
      return fail("queue_full", `piped: ${this._queue.length} calls already wait for a connection (queueLimit)`);
    }
    const timeout = options.timeout ?? this.options.timeout;
    return new Promise((resolve, reject) => {
      const c = { id, method, text, sent: false, resolve, reject, timer: null };
      c.timer = setTimeout(() => {
        if (c.sent) {
          this._settle(c, new PipedError("timeout", `piped: no answer within ${timeout}ms`, { id, method, sent: true }));
        } else {
          this._settle(c, new PipedError("disconnected", `piped: not connected within ${timeout}ms`, { id, method }));
        }
      }, timeout);
      this._calls.set(id, c);
      if (open) {
        this._send(c);
      } else {
        this._queue.push(c);
      }
    });
  }

  /** on adds handler for event name and returns a function that removes it. */
  on(name, handler) {
    if (typeof handler !== "function") throw new TypeError("piped: handler must be a function");
    let set = this._handlers.get(name);
    if (!set) this._handlers.set(name, (set = new Set()));
    set.add(handler);
    return () => this.off(name, handler);
  }

  /** off removes handler for event name (all of the name's handlers without one). */
  off(name, handler) {
    if (handler === undefined) {
      this._handlers.delete(name);
    } else {
      this._handlers.get(name)?.delete(handler);
    }
  }

  /**
   * close ends the client: no more reconnects, waiting and pending calls are
   * rejected with "closed", and the socket is closed with code (1000) and
   * reason. A "close" event follows at once. Closing twice does nothing.
   */
  close(code = 1000, reason = "") {
    if (this._state === "closed") return;
    const ws = this._ws;
    const opened = this._opened;
    this._stop();
    if (ws) {
      try {
        ws.close(code, reason);
      } catch {
        ws.close();
      }
    }
    this._emit("close", { code, reason, wasClean: true, opened, willReconnect: false, byClient: true });
  }

  // _open starts one connection attempt.
  async _open() {
    let url;
    try {
      url = buildURL(this.options.url, await this._token());
    } catch (err) {
      if (this._state === "closed") return;
      this._emit("error", new PipedError("token_failed", `piped: no token: ${err?.message ?? err}`));
      this._failedOpens++;
      this._afterClose({ code: 1006, reason: "no token", wasClean: false }, false);
      return;
    }
    if (this._state === "closed") return; // closed while the token was fetched
    let ws;
    try {
      ws = new this._WebSocket(url);
    } catch (err) {
      this._emit("error", new PipedError("connect_failed", `piped: WebSocket: ${err?.message ?? err}`));
      this._failedOpens++;
      this._afterClose({ code: 1006, reason: "WebSocket constructor failed", wasClean: false }, false);
      return;
    }
    this._ws = ws;
    this._opened = false;
    ws.onopen = () => this._ws === ws && this._onOpen();
    ws.onmessage = (ev) => this._ws === ws && this._onMessage(ev.data);
    ws.onclose = (ev) => this._ws === ws && this._onClose(ev);
    ws.onerror = () => {}; // a close event always follows, with the code
  }

  async _token() {
    const t = this.options.token;
    return typeof t === "function" ? t() : t;
  }

  _onOpen() {
    this._state = "open";
    this._opened = true;
    this._openedAt = Date.now();
    this._failedOpens = 0;
    const queued = this._queue;
    this._queue = [];
    for (const c of queued) {
      if (this._calls.get(c.id) === c) this._send(c);
    }
    this._emit("open", { reconnect: this._attempt > 0 });
  }

  _send(c) {
    c.sent = true;
    this._ws.send(c.text);
  }

  _onMessage(data) {
    let f;
    try {
      f = JSON.parse(data);
    } catch {
      this._emit("error", new PipedError("bad_frame", "piped: the node sent a frame that is not JSON"));
      return;
    }
    if (f === null || typeof f !== "object") return;
    const c = typeof f.id === "string" ? this._calls.get(f.id) : undefined;
    const mine = c !== undefined && c.sent;
    switch (f.type) {
      case "result":
        if (mine) {
          this._settle(c, null, f.payload);
        } else {
          this._emit("result", f.payload, f);
        }
        break;
      case "error": {
        const e = f.error ?? {};
        const err = new PipedError(String(e.code ?? "unknown"), String(e.message ?? ""), {
          id: f.id,
          method: c?.method,
          sent: true,
          frame: f,
        });
        if (mine) {
          this._settle(c, err);
        } else {
          this._emit("error", err);
        }
        break;
      }
      case "event":
        if (mine && f.event === "pong") {
          this._settle(c, null, f.payload); // call("ping"): the node answers it itself
          break;
        }
        if (typeof f.event === "string" && !LIFECYCLE_EVENTS.includes(f.event)) {
          this._emit(f.event, f.payload, f);
        }
        this._emit("event", f.event, f.payload, f);
        break;
    }
  }

  _onClose(ev) {
    const opened = this._opened;
    const stable = opened && Date.now() - this._openedAt >= this.options.stableAfter;
    this._ws = null;
    if (!opened) this._failedOpens++;
    if (stable) this._attempt = 0;
    // Calls written to this socket have no answer and never will.
    for (const c of [...this._calls.values()]) {
      if (c.sent) {
        this._settle(c, new PipedError("disconnected", `piped: the connection closed (${ev.code}) before the answer came`, {
          id: c.id,
          method: c.method,
          sent: true,
          closeCode: ev.code,
        }));
      }
    }
    this._afterClose(ev, opened);
  }

  // _afterClose decides whether to reconnect after a close (or a failed
  // attempt) and emits "close", then "reconnecting" or nothing.
  _afterClose(ev, opened) {
    const willReconnect = this._shouldReconnect(ev.code, opened);
    const info = { code: ev.code, reason: ev.reason ?? "", wasClean: !!ev.wasClean, opened, willReconnect };
    if (!willReconnect) {
      if (!opened && this._failedOpens >= this.options.maxFailedOpens) info.gaveUp = true;
      this._stop(ev.code);
      this._emit("close", info);
      return;
    }
    const cap = Math.min(this.options.maxDelay, this.options.minDelay * 2 ** this._attempt);
    const delay = Math.floor(Math.random() * cap); // full jitter
    this._attempt++;
    this._state = "reconnecting";
    this._emit("close", info);
    this._emit("reconnecting", { attempt: this._attempt, delay, code: ev.code });
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      if (this._state === "reconnecting") this._open();
    }, delay);
  }

  _shouldReconnect(code, opened) {
    if (!opened) {
      // 1006 before open: refused (401, 403, 503), reset (draining) or
      // unreachable; the browser does not say which.
      return this._failedOpens < this.options.maxFailedOpens;
    }
    if (code === 4003) return typeof this.options.token === "function";
    if (STOP_CODES.has(code)) return false;
    if (code >= 4000 && code <= 4999) return code === 4008;
    return true;
  }

  // _stop makes the client closed: no retry, and every call not settled is
  // rejected with "closed".
  _stop(closeCode) {
    this._state = "closed";
    this._ws = null;
    if (this._retryTimer !== null) {
      clearTimeout(this._retryTimer);
      this._retryTimer = null;
    }
    this._queue = [];
    for (const c of [...this._calls.values()]) {
      this._settle(c, new PipedError("closed", "piped: the client is closed", { id: c.id, method: c.method, sent: c.sent, closeCode }));
    }
  }

  // _settle takes c out of the table and resolves (err null) or rejects it; once.
  _settle(c, err, payload) {
    if (this._calls.get(c.id) !== c) return;
    this._calls.delete(c.id);
    clearTimeout(c.timer);
    if (err) {
      c.reject(err);
    } else {
      c.resolve(payload);
    }
  }

  _emit(name, ...args) {
    const set = this._handlers.get(name);
    if (!set) return;
    for (const h of [...set]) {
      try {
        h(...args);
      } catch (err) {
        // A handler's bug must not break the client: report it, asynchronously.
        setTimeout(() => {
          throw err;
        });
      }
    }
  }
}

// buildURL returns the WebSocket URL for base and token: "{token}" in base
// is replaced by it, otherwise "/api/{token}" is appended (no token: base is
// used as it is). http(s) and relative URLs become ws(s) ones.
export function buildURL(base, token) {
  let url = base;
  if (token !== undefined && token !== null) {
    const t = encodeURIComponent(String(token));
    if (url.includes("{token}")) {
      url = url.replace("{token}", t);
    } else {
      url = url.replace(/\/+$/, "");
      url += (url.endsWith("/api") ? "/" : "/api/") + t;
    }
  }
  if (!/^wss?:\/\//i.test(url)) {
    const loc = globalThis.location?.href;
    const u = loc ? new URL(url, loc) : new URL(url);
    if (u.protocol === "http:") u.protocol = "ws:";
    if (u.protocol === "https:") u.protocol = "wss:";
    url = u.href;
  }
  return url;
}

// byteLength is the length of s in UTF-8.
function byteLength(s) {
  return new TextEncoder().encode(s).length;
}

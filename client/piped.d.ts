// Type declarations for piped.js, the browser client for Piped (README.md
// beside this file documents the behaviour).

/** A token, or a function that gives one (called before every connection attempt). */
export type TokenSource = string | (() => string | Promise<string>);

export type WhenDisconnected = "wait" | "fail";

export type State = "connecting" | "open" | "reconnecting" | "closed";

export interface PipedOptions {
  /**
   * ws(s):// (or http(s)://, or relative to the page) URL of Piped. With a
   * token, "{token}" in it is replaced by the token, else "/api/{token}" is
   * appended; without one, the URL is used as it is.
   */
  url: string;
  token?: TokenSource;
  /** Default call timeout in ms, waiting for a connection included (35000). */
  timeout?: number;
  /** What a call made while not connected does by default ("wait"). */
  whenDisconnected?: WhenDisconnected;
  /** Calls that may wait for a connection at once (100). */
  queueLimit?: number;
  /** Backoff base in ms: reconnect n waits random(0, min(maxDelay, minDelay·2ⁿ)) (500). */
  minDelay?: number;
  /** Longest wait before a reconnect, in ms (30000). */
  maxDelay?: number;
  /** Connection attempts in a row that never open before the client gives up (10). */
  maxFailedOpens?: number;
  /** A connection open this long (ms) resets the backoff (5000). */
  stableAfter?: number;
  /** Calls larger than this (bytes of JSON) are refused locally: the node's ws.max_message_bytes (65536). */
  maxFrameBytes?: number;
  /** Prefix of the generated call ids (random, e.g. "k3x9q2."). */
  idPrefix?: string;
  /** WebSocket constructor (globalThis.WebSocket). */
  WebSocket?: new (url: string) => WebSocket;
}

export interface CallOptions {
  /** ms until the call is rejected: "disconnected" if it was never sent, else "timeout". */
  timeout?: number;
  whenDisconnected?: WhenDisconnected;
  /** W3C trace context for the call (the node continues this trace). */
  traceparent?: string;
  tracestate?: string;
}

/** Codes the client itself gives; the node's are in docs/protocol.md ("Error codes"). */
export type LocalErrorCode =
  | "timeout"
  | "disconnected"
  | "closed"
  | "queue_full"
  | "payload_too_large"
  | "token_failed"
  | "connect_failed"
  | "bad_frame";

/** The node's error codes (docs/protocol.md). */
export type NodeErrorCode =
  | "bad_request"
  | "too_many_requests"
  | "unknown_method"
  | "payload_too_large"
  | "unavailable"
  | "unroutable"
  | "timeout"
  | "shutting_down"
  | "internal";

export class PipedError extends Error {
  name: "PipedError";
  code: LocalErrorCode | NodeErrorCode | (string & {});
  /** The call's id, when the error is about a call. */
  id?: string | number;
  method?: string;
  /** Whether the call was written to a socket: if so, the backend may have carried it out. */
  sent: boolean;
  /** The close code, for "disconnected" and "closed" after a close. */
  closeCode?: number;
  /** The node's error frame, for the node's codes. */
  frame?: ServerFrame;
}

export interface ServerFrame {
  type: "result" | "event" | "error";
  id?: string | number;
  method?: string;
  event?: string;
  payload?: unknown;
  error?: { code: string; message: string };
  [member: string]: unknown;
}

export interface OpenInfo {
  /** false for the first connection, true after a reconnect. */
  reconnect: boolean;
}

export interface CloseInfo {
  code: number;
  reason: string;
  wasClean: boolean;
  /** Whether the socket had opened (false: the attempt failed before open). */
  opened: boolean;
  willReconnect: boolean;
  /** Set when the client stopped after maxFailedOpens failed attempts. */
  gaveUp?: boolean;
  /** Set when close() was called. */
  byClient?: boolean;
}

export interface ReconnectingInfo {
  /** Reconnects since the last stable connection, from 1. */
  attempt: number;
  /** ms until the attempt. */
  delay: number;
  code: number;
}

export interface LifecycleHandlers {
  open: (info: OpenInfo) => void;
  close: (info: CloseInfo) => void;
  reconnecting: (info: ReconnectingInfo) => void;
  /** Error frames for no call of this client, and the client's own errors (token_failed, connect_failed, bad_frame). */
  error: (err: PipedError) => void;
  /** Every event from the node, whatever its name. */
  event: (name: string, payload: unknown, frame: ServerFrame) => void;
  /** Results for no waiting call of this client. */
  result: (payload: unknown, frame: ServerFrame) => void;
}

export const LIFECYCLE_EVENTS: readonly (keyof LifecycleHandlers)[];
export const DEFAULTS: Readonly<Required<Omit<PipedOptions, "url" | "token" | "idPrefix" | "WebSocket">>>;

export class Piped {
  constructor(url: string, options?: Omit<PipedOptions, "url">);
  constructor(options: PipedOptions);
  readonly state: State;
  readonly options: PipedOptions;
  /** Resolves with the result's payload; rejects with a PipedError. */
  call<T = unknown>(method: string, payload?: unknown, options?: CallOptions): Promise<T>;
  /** Returns a function that removes the handler. */
  on<K extends keyof LifecycleHandlers>(name: K, handler: LifecycleHandlers[K]): () => void;
  /** A backend event by name (names in LIFECYCLE_EVENTS reach only "event" handlers). */
  on(name: string, handler: (payload: unknown, frame: ServerFrame) => void): () => void;
  off(name: string, handler?: (...args: any[]) => void): void;
  close(code?: number, reason?: string): void;
}

export function connect(url: string, token?: TokenSource, options?: Omit<PipedOptions, "url" | "token">): Piped;

export function buildURL(base: string, token?: string | null): string;

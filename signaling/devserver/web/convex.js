// Connvo's functions, as the page calls them: one-off calls over HTTP (Convex's /api/run) and
// subscriptions over Convex's sync protocol (one WebSocket; results pushed as they change), as
// the bots' signaling/sync.py speaks it, with its numbers (in seconds).

import { MAX_ANSWER_BYTES, MAX_CHUNKS, SYNC_BACKOFF, SYNC_HEALTHY, SYNC_INACTIVE, SYNC_OPEN_TIMEOUT } from "./convention.js";

/** A call that failed: `code` is Convex's error code (FORBIDDEN, VALIDATION_ERROR, ...),
 * NETWORK when the server could not be reached, SERVER_ERROR for a fault of the server. */
export class ConnvoError extends Error {
  constructor(path, code, message) {
    super(message);
    this.path = path;
    this.code = code;
  }
}

export class Convex {
  constructor(token) {
    this.token = token;
  }

  /** Runs a function over HTTP; answers its value or throws ConnvoError. `keepalive` lets a
   * call outlive the page (leaving on unload). */
  async call(path, args = {}, { keepalive = false } = {}) {
    let response;
    try {
      response = await fetch(`/api/run/${path}`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${this.token}` },
        body: JSON.stringify({ args }),
        keepalive,
      });
    } catch {
      throw new ConnvoError(path, "NETWORK", "The server cannot be reached.");
    }
    let body;
    try {
      body = await response.json();
    } catch {
      throw new ConnvoError(path, "SERVER_ERROR", `The server answered ${response.status}.`);
    }
    if (body?.status === "success") return body.value;
    const code = body?.errorData?.code ?? (response.status === 401 ? "UNAUTHORIZED" : "SERVER_ERROR");
    throw new ConnvoError(path, code, String(body?.errorData?.message ?? body?.errorMessage ?? ""));
  }
}

const ZERO_VERSION = { querySet: 0, identity: 0, ts: "AAAAAAAAAAA=" };

/** Subscriptions over the sync protocol, as convex-js speaks it: Connect, Authenticate,
 * ModifyQuerySet; Transitions carry new results. The socket is reopened with backoff
 * (SYNC_BACKOFF, doubling; starting over after a socket up for SYNC_HEALTHY) and every
 * subscription is added again. `live` says whether results are being pushed right now; while not, callers poll. */
export class Sync {
  constructor(token, { onLive = () => {}, onRefused = () => {} } = {}) {
    this.token = token;
    this.onLive = onLive;
    this.onRefused = onRefused;
    this.subs = new Map();
    this.nextId = 0;
    this.sessionId = randomId();
    this.connections = 0;
    this.attempt = 0;
    this.closed = false;
    this.live = false;
    this.ws = null;
  }

  /** Calls `onValue(value)` with each result, `onError(ConnvoError)` on a failure; answers a
   * function that ends the subscription. */
  subscribe(path, args, onValue, onError = () => {}) {
    const sub = { id: this.nextId++, path, args, onValue, onError };
    this.subs.set(sub.id, sub);
    if (this.live) this.#modify([add(sub)]);
    return () => {
      this.subs.delete(sub.id);
      if (this.live) this.#modify([{ type: "Remove", queryId: sub.id }]);
    };
  }

  open() {
    if (this.closed || this.ws) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/api/sync`);
    this.ws = ws;
    this.version = { ...ZERO_VERSION };
    this.querySet = 0;
    this.chunks = [];
    this.chunkBytes = 0;
    this.openedAt = Date.now();
    this.watchdog = setTimeout(() => ws.close(), 1000 * SYNC_OPEN_TIMEOUT);
    ws.onopen = () => this.#hello(ws);
    ws.onmessage = (e) => this.#receive(ws, e.data);
    ws.onclose = () => this.#lost(ws);
    ws.onerror = () => ws.close();
  }

  close() {
    this.closed = true;
    clearTimeout(this.retry);
    clearTimeout(this.watchdog);
    this.ws?.close();
    this.#setLive(false);
  }

  #hello(ws) {
    const reason = this.connections ? "Reconnect" : "InitialConnect";
    ws.send(JSON.stringify({
      type: "Connect",
      sessionId: this.sessionId,
      connectionCount: this.connections++,
      lastCloseReason: reason,
      clientTs: Date.now(),
    }));
    ws.send(JSON.stringify({ type: "Authenticate", tokenType: "User", value: this.token, baseVersion: 0 }));
    this.#modify([...this.subs.values()].map(add));
    this.#setLive(true);
    this.#feedWatchdog(ws);
  }

  #modify(modifications) {
    if (!modifications.length) return;
    const base = this.querySet++;
    this.ws.send(JSON.stringify({ type: "ModifyQuerySet", baseVersion: base, newVersion: this.querySet, modifications }));
  }

  #receive(ws, data) {
    if (ws !== this.ws) return;
    this.#feedWatchdog(ws);
    try {
      const message = JSON.parse(data);
      if (message.type === "Transition") this.#transition(message);
      else if (message.type === "TransitionChunk") this.#chunk(message);
      else if (message.type === "AuthError") {
        this.close();
        this.onRefused(new ConnvoError("sync", "UNAUTHORIZED", String(message.error ?? "")));
      } else if (message.type === "FatalError") throw new Error(String(message.error));
    } catch (e) {
      console.warn("sync: reopening the socket:", e);
      ws.close();
    }
  }

  /** A transition too large for one message comes in parts, in order. */
  #chunk({ partNumber, totalParts, chunk }) {
    if (partNumber !== this.chunks.length || !(partNumber < totalParts && totalParts <= MAX_CHUNKS)) throw new Error("chunk out of order");
    this.chunks.push(String(chunk));
    this.chunkBytes += String(chunk).length;
    if (this.chunkBytes > MAX_ANSWER_BYTES) throw new Error("transition too large");
    if (partNumber === totalParts - 1) {
      const whole = this.chunks.join("");
      this.chunks = [];
      this.chunkBytes = 0;
      this.#transition(JSON.parse(whole));
    }
  }

  /** Only the last result of each query counts: one transition may carry several. */
  #transition({ startVersion, endVersion, modifications }) {
    if (!sameVersion(startVersion, this.version)) throw new Error("a transition from another version");
    this.version = endVersion;
    const last = new Map();
    for (const change of modifications ?? []) last.set(change.queryId, change);
    for (const [queryId, change] of last) {
      const sub = this.subs.get(queryId);
      if (!sub) continue;
      if (change.type === "QueryUpdated") sub.onValue(change.value);
      else if (change.type === "QueryFailed") {
        sub.onError(new ConnvoError(sub.path, change.errorData?.code ?? "SERVER_ERROR", String(change.errorMessage ?? "")));
      }
    }
  }

  #feedWatchdog(ws) {
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(() => ws.close(), 1000 * SYNC_INACTIVE); // the server pings every 15 s
  }

  #lost(ws) {
    if (ws !== this.ws) return;
    this.ws = null;
    clearTimeout(this.watchdog);
    this.#setLive(false);
    if (this.closed) return;
    if (Date.now() - this.openedAt > 1000 * SYNC_HEALTHY) this.attempt = 0;
    const [first, longest] = SYNC_BACKOFF;
    const delay = 1000 * Math.min(longest, first * 2 ** this.attempt++) * (0.5 + Math.random() / 2);
    this.retry = setTimeout(() => this.open(), delay);
  }

  #setLive(live) {
    if (live === this.live) return;
    this.live = live;
    this.onLive(live);
  }
}

function sameVersion(a, b) {
  return a?.querySet === b?.querySet && a?.identity === b?.identity && a?.ts === b?.ts;
}

/** 32 random hex digits. (crypto.randomUUID exists only on secure pages; a page opened over
 * plain http from another machine can still see and hear a meeting.) */
export function randomId() {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

function add(sub) {
  const cut = sub.path.lastIndexOf("/");
  return { type: "Add", queryId: sub.id, udfPath: `${sub.path.slice(0, cut)}:${sub.path.slice(cut + 1)}`, args: [sub.args] };
}

// The README's mesh convention, as a browser speaks it: join, look, who offers, reading
// signals, discovery, recovery, health, chat, leave. The bots speak the same (agent/mesh.py);
// names here follow theirs. One remote participant is a Peer (peer.js).

import {
  DEAD_AFTER, DISCOVERY_INTERVAL, FN, MAX_CANDIDATE, MAX_CHAT_TEXT, MAX_EARLY_CANDIDATES, MAX_EARLY_SESSIONS, MAX_MLINES,
  MAX_SDP, MAX_STALE, POLL_FAST, POLL_IDLE, QUALITY_INTERVAL, REMEMBERED_SIGNALS, SIGNAL_PAGE, STALE_RETRY, STALE_RETRY_MAX,
} from "./convention.js"; // the bots' own numbers (times in seconds), served by the dev backend
import { randomId } from "./convex.js";
import { chatFits, Peer } from "./peer.js";

const ENDS_THE_MEETING = new Set(["UNAUTHORIZED", "FORBIDDEN"]);

export const REPLACED = "You joined this meeting from another tab or device, so this one has left it.";

/** Something the page refuses or cannot do, said as a sentence for the person. */
export class Refusal extends Error {}

/** The person's own media: what every connection sends, by label (audio, camera, screen).
 * The page sets it; the mesh only reads it. */
export class LocalMedia {
  audio = null;
  camera = null;
  screen = null;
}

/** One meeting, joined. Events: "peer" (a Peer came or changed), "peerleft", "chat", "state"
 * (the connection summary), "ended" ({reason} or {error}: this side has left). */
export class Mesh extends EventTarget {
  constructor({ convex, sync, meetingId, me, media, relayOnly = false }) {
    super();
    Object.assign(this, { convex, sync, meetingId, me, media, relayOnly });
    this.peers = new Map(); // userId -> Peer
    this.sessions = new Map(); // sessionId -> active session, from the last list
    this.names = new Map(); // userId -> display name
    this.stale = new Map(); // sessions that never answered -> {next, delay}: when to try again
    this.staleRetry = 1000 * STALE_RETRY; // ms
    this.early = new Map(); // "user session" -> candidates that came before their description
    this.seen = new Set(); // signal ids handled
    this.unmarked = []; // handled, not yet marked processed
    this.queue = Promise.resolve();
    this.timers = [];
    this.pushedState = "connecting";
    this.pushBroken = false;
    this.clockOffset = 0; // the backend's clock minus ours, from our session's createdAt
    this.reachable = true;
    this.joined = false;
    this.left = false;
  }

  // --- join and leave -----------------------------------------------------------------------

  async join() {
    const args = { meetingId: this.meetingId };
    const room = await this.convex.call(FN.initializeWebRTCRoom, args);
    if (room.provider !== "webrtc") {
      const name = room.provider === "getstream" ? "GetStream" : room.provider;
      throw new Refusal(`This meeting runs on ${name}, not on the webrtc mesh: join it from Connvo's app.`);
    }
    this.features = room.features;
    this.iceServers = room.iceServers ?? [];
    await this.convex.call(FN.joinMeeting, args);
    this.sessionId = randomId();
    const asked = Date.now();
    await this.convex.call(FN.createWebRTCSession, { ...args, sessionId: this.sessionId });
    const answered = Date.now();
    const sessions = await this.convex.call(FN.getActiveSessions, args);
    const mine = sessions.find((s) => s.sessionId === this.sessionId);
    if (mine) this.clockOffset = mine.createdAt - (asked + answered) / 2;
    const others = new Set(sessions.map((s) => s.userId).filter((u) => u !== this.me.userId));
    if (others.size + 1 > this.features.maxParticipants) {
      await this.leave();
      throw new Refusal(`This meeting is full: it takes ${this.features.maxParticipants} participants.`);
    }
    await this.#discover(sessions);
    if (this.left) throw new Refusal(REPLACED);
    this.joined = true;
    this.#startReading();
    this.timers.push(setInterval(() => this.#serial(() => this.#checkHealth()), 1000 * QUALITY_INTERVAL));
  }

  /** Close the connections, then the session, then leave the meeting: only once joined, and
   * not when replaced (the user is still in the meeting, from elsewhere). */
  async leave({ replaced = false } = {}) {
    if (this.left) return;
    this.left = true;
    this.timers.forEach(clearTimeout); // clears intervals too
    clearTimeout(this.pollTimer);
    this.unsubscribe?.forEach((u) => u());
    for (const peer of [...this.peers.values()]) this.#drop(peer, "we left");
    if (this.sessionId) await this.#quietly(FN.closeSession, { meetingId: this.meetingId, sessionId: this.sessionId });
    if (this.joined && !replaced) await this.#quietly(FN.leaveMeeting, { meetingId: this.meetingId });
  }

  /** Leaving as the page goes away: calls that outlive it. */
  leaveOnUnload() {
    if (this.left || !this.sessionId) return;
    this.left = true;
    const args = { meetingId: this.meetingId, sessionId: this.sessionId };
    this.convex.call(FN.closeSession, args, { keepalive: true }).catch(() => {});
    if (this.joined) this.convex.call(FN.leaveMeeting, { meetingId: this.meetingId }, { keepalive: true }).catch(() => {});
  }

  /** This side leaves on its own (replaced, refused): said by "ended" once joined, by the
   * join's exception before. */
  async #end(detail) {
    if (this.left) return;
    await this.leave({ replaced: detail.reason === REPLACED });
    if (this.joined) this.#emit("ended", detail);
  }

  // --- reading signals and sessions ---------------------------------------------------------

  /** Pushed over the sync socket; polled while it is down or a subscription failed. */
  #startReading() {
    const args = { meetingId: this.meetingId };
    const pushed = (handle) => (value) => {
      this.pushBroken = false;
      this.#reach(true);
      this.#serial(() => handle(value));
    };
    const failed = (error) => {
      if (ENDS_THE_MEETING.has(error.code)) this.#end({ error });
      else this.pushBroken = true;
    };
    this.unsubscribe = [
      this.sync.subscribe(FN.getPendingSignals, args, pushed((s) => this.#handleAll(s)), failed),
      this.sync.subscribe(FN.getActiveSessions, args, pushed((s) => this.#discover(s)), failed),
    ];
    const poll = async () => {
      let delay = 1000 * POLL_IDLE;
      if (!this.sync.live || this.pushBroken) {
        try {
          const signals = await this.convex.call(FN.getPendingSignals, args);
          this.#reach(true);
          await this.#serial(() => this.#handleAll(signals));
          if (signals.length >= SIGNAL_PAGE) delay = 0;
          else if ([...this.peers.values()].some((p) => p.awaitingSignals)) delay = 1000 * POLL_FAST;
        } catch (e) {
          if (ENDS_THE_MEETING.has(e.code)) return this.#end({ error: e });
          this.#reach(false, e);
          console.warn("reading signals failed:", e.message);
        }
      }
      if (!this.left) this.pollTimer = setTimeout(poll, delay);
    };
    poll();
    this.timers.push(setInterval(async () => {
      if ((this.sync.live && !this.pushBroken) || this.left) return;
      try {
        const sessions = await this.convex.call(FN.getActiveSessions, args);
        await this.#serial(() => this.#discover(sessions));
      } catch (e) {
        console.warn("reading sessions failed:", e.message);
      }
    }, 1000 * DISCOVERY_INTERVAL));
  }

  /** "server" events: the backend stopped or started answering (the connections with the
   * others go on meanwhile, but nobody new can join and nothing is reported). */
  #reach(ok, error = null) {
    if (ok === this.reachable) return;
    this.reachable = ok;
    this.#emit("server", { ok, error });
  }

  /** Everything that touches the peers runs one step at a time, in arrival order. */
  #serial(step) {
    this.queue = this.queue.then(() => (this.left ? undefined : step())).catch((e) => console.warn("mesh:", e));
    return this.queue;
  }

  /** In order, never twice; then the batch is marked processed (a failed mark is retried with
   * the next result). */
  async #handleAll(signals) {
    if (!Array.isArray(signals)) return;
    for (const signal of signals) {
      if (typeof signal?._id !== "string" || this.seen.has(signal._id)) continue;
      this.seen.add(signal._id);
      if (this.seen.size > REMEMBERED_SIGNALS) this.seen.delete(this.seen.values().next().value);
      try {
        await this.#onSignal(signal);
      } catch (e) {
        console.warn("a signal was refused:", e.message);
      }
      this.unmarked.push(signal._id);
      if (this.left) return;
    }
    if (!this.unmarked.length) return;
    const signalIds = this.unmarked;
    this.unmarked = [];
    try {
      await this.convex.call(FN.markSignalsProcessed, { signalIds });
    } catch (e) {
      console.warn("marking signals processed failed:", e.message);
      this.unmarked.push(...signalIds);
    }
  }

  async #onSignal({ fromUserId: user, sessionId: session, type, data, timestamp }) {
    if (user === this.me.userId || typeof user !== "string" || typeof session !== "string" || !data) return;
    if (type === "ice") return this.#candidate(user, session, data);
    checkSdp(data.sdp);
    const peer = data.type === "offer" ? await this.#peerForOffer(user, session) : this.#current(user, session);
    if (peer && !this.left) await this.#negotiate(peer, data, timestamp);
  }

  /** Now, by the backend's clock (as signals are stamped). */
  serverNow() {
    return Date.now() + this.clockOffset;
  }

  /** An offer is proof of life: even a stale session comes back with one. A session of
   * another user is never taken on, and an older session of a known user is a process on its
   * way out, which must not take the user's place back. */
  async #peerForOffer(user, session) {
    const current = this.#current(user, session);
    if (current) return current;
    if (!this.sessions.has(session)) {
      const sessions = await this.convex.call(FN.getActiveSessions, { meetingId: this.meetingId });
      this.sessions = new Map(sessions.map((s) => [s.sessionId, s]));
    }
    const owner = this.sessions.get(session);
    if (owner && owner.userId !== user) return null;
    const old = this.peers.get(user);
    if (old) {
      const before = this.sessions.get(old.sessionId);
      if (!owner || (before && !later(owner, before))) return null;
      this.#drop(old, "rejoined");
    }
    this.stale.delete(session);
    return this.#add(user, session);
  }

  /** A description that fails leaves no half-built peer behind. */
  async #negotiate(peer, description, timestamp) {
    try {
      await peer.handleDescription(description, timestamp);
    } catch (e) {
      if (peer.state !== "connected") this.#drop(peer, "negotiation failed");
      throw e;
    }
    const key = `${peer.userId} ${peer.sessionId}`;
    const held = this.early.get(key) ?? [];
    this.early.delete(key);
    for (const candidate of held) await peer.addCandidate(candidate);
  }

  async #candidate(user, session, candidate) {
    const peer = this.#current(user, session);
    if (typeof candidate.candidate !== "string" || candidate.candidate.length > MAX_CANDIDATE) return;
    if (peer?.hasRemote) return peer.addCandidate(candidate);
    const key = `${user} ${session}`;
    const held = this.early.get(key) ?? [];
    this.early.delete(key); // re-inserted last: the oldest sessions go first
    if (held.length < MAX_EARLY_CANDIDATES) held.push(candidate);
    this.early.set(key, held);
    while (this.early.size > MAX_EARLY_SESSIONS) this.early.delete(this.early.keys().next().value);
  }

  #current(user, session) {
    const peer = this.peers.get(user);
    return peer?.sessionId === session ? peer : null;
  }

  // --- discovery ----------------------------------------------------------------------------

  /** Offer to every session this one should offer to, forget peers that left, close older
   * sessions of our own user, and give way to a newer one. */
  async #discover(sessions) {
    if (!Array.isArray(sessions) || this.left) return;
    this.sessions = new Map(sessions.map((s) => [s.sessionId, s]));
    this.mine = this.sessions.get(this.sessionId) ?? this.mine;
    for (const s of sessions) if (typeof s.user?.displayName === "string") this.names.set(s.userId, s.user.displayName);
    const own = sessions.filter((s) => s.userId === this.me.userId && s.sessionId !== this.sessionId);
    if (own.some((s) => this.#isNewer(s))) return this.#end({ reason: REPLACED });
    for (const s of own) await this.#quietly(FN.closeSession, { meetingId: this.meetingId, sessionId: s.sessionId });
    for (const peer of [...this.peers.values()]) {
      // A peer still connecting may have a session newer than this list; any other has left.
      const connecting = peer.state === "new" || peer.state === "connecting";
      if (!this.sessions.has(peer.sessionId) && !connecting) this.#drop(peer, "left");
    }
    for (const s of sessions) {
      if (this.left) return;
      if (s.userId === this.me.userId) continue;
      const known = this.peers.get(s.userId);
      if (known?.sessionId === s.sessionId || this.#isStale(s.sessionId) || this.#isNewer(s)) continue;
      if (known) this.#drop(known, "rejoined");
      await this.#add(s.userId, s.sessionId).offer();
    }
  }

  #isNewer(other) {
    return !!this.mine && later(other, this.mine);
  }

  // --- what peers report --------------------------------------------------------------------

  #add(userId, sessionId) {
    const peer = new Peer(this, userId, sessionId);
    this.peers.set(userId, peer);
    this.#emit("peer", { peer });
    return peer;
  }

  #drop(peer, reason) {
    if (this.peers.get(peer.userId) === peer) this.peers.delete(peer.userId);
    peer.close();
    this.#emit("peerleft", { peer, reason });
    this.#pushState();
  }

  /** A peer's connection changed. A peer already replaced or dropped may still report (its
   * timers and events outlive it): that must not touch its successor. */
  transition(peer, state) {
    if (this.peers.get(peer.userId) !== peer) return;
    if (state === "connected") {
      peer.aliveAt = Date.now();
      this.stale.delete(peer.sessionId);
    } else if (state === "no_answer") {
      this.#rememberStale(peer);
      this.#drop(peer, "no answer");
      return;
    } else if (state === "failed") this.#serial(() => this.#recover(peer));
    this.#emit("peer", { peer });
    this.#pushState();
  }

  /** Given up for a while, not for good: after an outage longer than the answer timeout,
   * the offerer's retry is what brings the pair back (the other side never offers). */
  #rememberStale(peer) {
    const before = this.stale.get(peer.sessionId);
    const delay = before ? Math.min(2 * before.delay, 1000 * STALE_RETRY_MAX) : this.staleRetry;
    this.stale.delete(peer.sessionId); // re-inserted last: the oldest go first
    this.stale.set(peer.sessionId, { next: Date.now() + delay, delay });
    if (this.stale.size > MAX_STALE) this.stale.delete(this.stale.keys().next().value);
  }

  #isStale(session) {
    return (this.stale.get(session)?.next ?? 0) > Date.now();
  }

  /** Report the ICE failure; the offerer of the pair offers anew when a retry is recommended.
   * The report marks the whole session failed, so its real state is pushed again after. */
  async #recover(peer) {
    const answer = await this.#quietly(FN.handleConnectionFailure, {
      meetingId: this.meetingId, sessionId: this.sessionId, errorType: "ice_failed", errorDetails: `peer ${peer.userId}`,
    });
    if (answer) this.pushedState = "failed";
    const retry = answer?.retryRecommended ?? true; // a backend that cannot take the report must not stop the retry
    if (retry && peer.offerer && this.peers.get(peer.userId) === peer) await peer.offer();
    this.#pushState();
  }

  #pushState() {
    const states = new Set([...this.peers.values()].map((p) => p.state));
    const state = ["connected", "disconnected"].find((s) => states.has(s)) ?? "connecting";
    this.#emit("state", { state });
    if (state === this.pushedState || this.left) return;
    this.pushedState = state;
    this.#quietly(FN.updateSessionState, { meetingId: this.meetingId, sessionId: this.sessionId, state });
  }

  // --- health -------------------------------------------------------------------------------

  /** Measure every connected peer, report the worst to the backend, and drop peers silent
   * for DEAD_AFTER: a participant that died leaves no signal, and its session may stay. */
  async #checkHealth() {
    const now = Date.now();
    const measured = [];
    for (const peer of [...this.peers.values()]) {
      if (peer.state === "connected") {
        const quality = await peer.measure().catch(() => null);
        if (quality) measured.push(quality);
        if (peer.flowing || !peer.carriesMedia) peer.aliveAt = now;
      }
      if (now - peer.aliveAt > 1000 * DEAD_AFTER) {
        if (!peer.announced) this.#rememberStale(peer);
        this.#drop(peer, "unreachable");
      }
    }
    const due = [...this.stale].some(([session, { next }]) => next <= now && this.sessions.has(session));
    if (due) await this.#discover([...this.sessions.values()]); // a retry is due: nothing else wakes it
    if (!measured.length || this.left) return;
    const worst = (key, digits) => round(Math.max(...measured.map((q) => q[key])), digits);
    const stats = {
      bitrate: Math.round(measured.reduce((n, q) => n + q.bitrate, 0)),
      packetLoss: worst("packetLoss", 3),
      latency: worst("latency", 1),
      jitter: worst("jitter", 1),
    };
    await this.#quietly(FN.monitorConnectionQuality, { meetingId: this.meetingId, sessionId: this.sessionId, stats });
  }

  // --- what the page asks -------------------------------------------------------------------

  /** Sends to every peer; answers the message as shown locally. */
  sendChat(text) {
    if (!this.features?.chat) throw new Refusal("Chat is off in this meeting.");
    if (!chatFits(text)) throw new Refusal(`A message holds at most ${MAX_CHAT_TEXT / 1024} KiB.`);
    const message = { type: "chat", id: randomId(), from: this.me.userId, text, ts: Date.now() };
    for (const peer of this.peers.values()) peer.sendChat(message);
    return message;
  }

  /** The person turned a device on or off, or started or stopped sharing. */
  async sendTrack(label) {
    for (const peer of [...this.peers.values()]) await peer.sendTrack(label);
  }

  // --- for peers ----------------------------------------------------------------------------

  /** Sends a peer's description or candidate to its user. */
  send(peer, path, payload) {
    return this.#quietly(path, { meetingId: this.meetingId, sessionId: this.sessionId, targetUserId: peer.userId, ...payload });
  }

  chatReceived(peer, message) {
    this.#emit("chat", { peer, message });
  }

  peerChanged(peer) {
    if (this.peers.get(peer.userId) === peer) this.#emit("peer", { peer });
  }

  // --- helpers ------------------------------------------------------------------------------

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /** A call whose failure is logged, not thrown: answers its value, undefined if it failed. */
  async #quietly(path, args) {
    try {
      return await this.convex.call(path, args);
    } catch (e) {
      console.warn(`${path} failed:`, e.message);
    }
  }
}

/** Sessions are ordered by createdAt, ties by sessionId; the later one offers. */
function later(a, b) {
  return a.createdAt > b.createdAt || (a.createdAt === b.createdAt && a.sessionId > b.sessionId);
}

/** Refuses, before anything is built, an SDP no participant sends. */
function checkSdp(sdp) {
  if (typeof sdp !== "string") throw new Error("a description without SDP");
  if (sdp.length > MAX_SDP) throw new Error(`an SDP of ${sdp.length} bytes`);
  const mlines = sdp.split("\nm=").length - 1;
  if (mlines < 1 || mlines > MAX_MLINES) throw new Error(`an SDP with ${mlines} m-lines`);
}

function round(x, digits) {
  return Number.isFinite(x) ? Number(x.toFixed(digits)) : 0;
}

// The README's mesh convention, as a browser speaks it: join, look, who offers, descriptions in
// the fixed m-line order, trickled ICE, reading signals, chat, health, leave. The bots speak the
// same (agent/mesh.py, agent/peer.py); names here follow theirs.

import { ConnvoError, FN, randomId } from "./convex.js";

const ANSWER_TIMEOUT = 10_000; // an offer or answer not connected by then: a stale session
const DEAD_AFTER = 15_000; // not connected, or nothing arriving, for this long: gone
const HEALTH_EVERY = 5_000;
const DISCOVER_EVERY = 3_000; // when the session list is not pushed
const POLL_FAST = 100;
const POLL_IDLE = 1_000;
const PAGE = 50;
const MAX_SDP = 64 * 1024;
const MAX_MLINES = 8;
const MAX_CANDIDATE = 1024;
const MAX_EARLY_SESSIONS = 32;
const MAX_EARLY_CANDIDATES = 64;
const MAX_REMEMBERED = 4096;
export const MAX_CHAT = 16 * 1024; // bytes of UTF-8 text
const MAX_CHAT_WIRE = 6 * MAX_CHAT + 1024;
const MAX_OUTBOX = 64;

/** A join that cannot go on, with a sentence for the person. */
export class JoinError extends Error {}

/** The person's own media: what every connection sends. Tracks may be null (no device, off). */
export class LocalMedia {
  constructor() {
    this.audio = null;
    this.camera = null;
    this.screen = null;
  }
}

const encoder = new TextEncoder();

/** One meeting, joined: emits "peer" (a Peer came or changed), "peerleft", "chat", "state"
 * (connection summary), "ended" (with a sentence: replaced, left). */
export class Mesh extends EventTarget {
  constructor({ convex, sync, meetingId, me, media, relayOnly = false }) {
    super();
    this.convex = convex;
    this.sync = sync;
    this.meetingId = meetingId;
    this.me = me; // { userId, name }
    this.media = media;
    this.relayOnly = relayOnly;
    this.peers = new Map(); // userId -> Peer
    this.sessions = new Map(); // sessionId -> active session, from the last list
    this.names = new Map(); // userId -> display name
    this.stale = new Set();
    this.early = new Map(); // "user session" -> [candidate]
    this.seen = new Map(); // signal id -> marked processed
    this.unmarked = [];
    this.queue = Promise.resolve();
    this.timers = [];
    this.pushedState = "connecting";
    this.left = false;
  }

  // --- join and leave ------------------------------------------------------------------------

  async join() {
    const room = await this.#call(FN.initializeRoom, { meetingId: this.meetingId });
    if (room.provider !== "webrtc") {
      throw new JoinError(`This meeting runs on ${room.provider === "getstream" ? "GetStream" : room.provider}, not on the webrtc mesh: join it from Connvo's app.`);
    }
    this.features = room.features;
    this.iceServers = room.iceServers ?? [];
    await this.#call(FN.joinMeeting, { meetingId: this.meetingId });
    this.sessionId = randomId();
    await this.#call(FN.createSession, { meetingId: this.meetingId, sessionId: this.sessionId });
    const sessions = await this.#call(FN.activeSessions, { meetingId: this.meetingId });
    const users = new Set(sessions.map((s) => s.userId).filter((u) => u !== this.me.userId));
    if (users.size + 1 > this.features.maxParticipants) {
      await this.#quietly(FN.closeSession, { meetingId: this.meetingId, sessionId: this.sessionId });
      throw new JoinError(`This meeting is full: it takes ${this.features.maxParticipants} participants.`);
    }
    await this.#discover(sessions);
    this.#startReading();
    this.timers.push(setInterval(() => this.#serial(() => this.#checkHealth()), HEALTH_EVERY));
  }

  /** Close the connections, then the session, then leave the meeting (not when replaced: the
   * user is still in it, from elsewhere). */
  async leave({ replaced = false } = {}) {
    if (this.left) return;
    this.left = true;
    this.timers.forEach(clearInterval);
    this.timers.forEach(clearTimeout);
    this.unsubscribe?.forEach((u) => u());
    for (const peer of [...this.peers.values()]) this.#drop(peer, "we left");
    if (this.sessionId) await this.#quietly(FN.closeSession, { meetingId: this.meetingId, sessionId: this.sessionId });
    if (!replaced) await this.#quietly(FN.leaveMeeting, { meetingId: this.meetingId });
  }

  /** Leaving as the page goes away: calls that outlive it. */
  leaveOnUnload() {
    if (this.left || !this.sessionId) return;
    this.left = true;
    const args = { meetingId: this.meetingId, sessionId: this.sessionId };
    this.convex.call(FN.closeSession, args, { keepalive: true }).catch(() => {});
    this.convex.call(FN.leaveMeeting, { meetingId: this.meetingId }, { keepalive: true }).catch(() => {});
  }

  // --- reading signals and sessions -----------------------------------------------------------

  #startReading() {
    const args = { meetingId: this.meetingId };
    this.unsubscribe = [
      this.sync.subscribe(FN.pendingSignals, args, (signals) => this.#serial(() => this.#handleAll(signals))),
      this.sync.subscribe(FN.activeSessions, args, (sessions) => this.#serial(() => this.#discover(sessions))),
    ];
    const poll = async () => {
      if (this.left) return;
      let delay = POLL_IDLE;
      if (!this.sync.live) {
        try {
          const signals = await this.#call(FN.pendingSignals, args);
          await this.#serial(() => this.#handleAll(signals));
          if (signals.length >= PAGE || this.#busy()) delay = signals.length >= PAGE ? 0 : POLL_FAST;
        } catch (e) {
          console.warn("reading signals failed:", e.message);
        }
      }
      this.pollTimer = setTimeout(poll, delay);
      this.timers.push(this.pollTimer);
    };
    poll();
    this.timers.push(setInterval(async () => {
      if (this.sync.live || this.left) return;
      try {
        const sessions = await this.#call(FN.activeSessions, args);
        await this.#serial(() => this.#discover(sessions));
      } catch (e) {
        console.warn("reading sessions failed:", e.message);
      }
    }, DISCOVER_EVERY));
  }

  /** Everything that touches the peers runs one step at a time, in arrival order. */
  #serial(step) {
    this.queue = this.queue.then(() => (this.left ? undefined : step())).catch((e) => console.warn("mesh:", e));
    return this.queue;
  }

  async #handleAll(signals) {
    if (!Array.isArray(signals)) return;
    for (const signal of signals) {
      if (this.seen.has(signal?._id)) continue;
      this.#remember(signal._id);
      try {
        await this.#onSignal(signal);
      } catch (e) {
        console.warn("a signal was refused:", e.message);
      }
      this.unmarked.push(signal._id);
    }
    if (!this.unmarked.length) return;
    const ids = this.unmarked;
    this.unmarked = [];
    try {
      await this.#call(FN.markProcessed, { signalIds: ids });
    } catch {
      this.unmarked.push(...ids); // retried with the next result
    }
  }

  #remember(id) {
    this.seen.set(id, true);
    if (this.seen.size > MAX_REMEMBERED) this.seen.delete(this.seen.keys().next().value);
  }

  async #onSignal({ fromUserId: user, sessionId: session, type, data }) {
    if (user === this.me.userId || typeof user !== "string" || typeof session !== "string" || !data) return;
    if (type === "ice") return this.#candidate(user, session, data);
    checkSdp(data.sdp);
    let peer;
    if (data.type === "offer") peer = await this.#peerForOffer(user, session);
    else peer = this.#current(user, session);
    if (peer) await this.#negotiate(peer, data);
  }

  async #peerForOffer(user, session) {
    const current = this.#current(user, session);
    if (current) return current;
    if (!this.sessions.has(session)) {
      const sessions = await this.#call(FN.activeSessions, { meetingId: this.meetingId });
      this.sessions = new Map(sessions.map((s) => [s.sessionId, s]));
    }
    const owner = this.sessions.get(session);
    if (owner && owner.userId !== user) return null; // claims another user's session
    const old = this.peers.get(user);
    if (old) {
      const before = this.sessions.get(old.sessionId);
      if (!owner || (before && !later(owner, before))) return null; // a process on its way out
      this.#drop(old, "rejoined");
    }
    this.stale.delete(session);
    return this.#add(user, session);
  }

  async #negotiate(peer, description) {
    try {
      await peer.handleDescription(description);
    } catch (e) {
      if (peer.state !== "connected") this.#drop(peer, "negotiation failed");
      throw e;
    }
    const key = `${peer.userId} ${peer.sessionId}`;
    for (const candidate of this.early.get(key) ?? []) await peer.addCandidate(candidate);
    this.early.delete(key);
  }

  async #candidate(user, session, candidate) {
    const peer = this.#current(user, session);
    if (peer?.hasRemote) return peer.addCandidate(candidate);
    if (typeof candidate.candidate !== "string" || candidate.candidate.length > MAX_CANDIDATE) return;
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

  // --- discovery ------------------------------------------------------------------------------

  async #discover(sessions) {
    if (!Array.isArray(sessions) || this.left) return;
    this.sessions = new Map(sessions.map((s) => [s.sessionId, s]));
    this.mine = this.sessions.get(this.sessionId) ?? this.mine;
    for (const s of sessions) if (s.user?.displayName) this.names.set(s.userId, s.user.displayName);
    const own = sessions.filter((s) => s.userId === this.me.userId && s.sessionId !== this.sessionId);
    if (own.some((s) => this.#isNewer(s))) {
      await this.leave({ replaced: true });
      this.#emit("ended", { reason: "You joined this meeting from another tab or device, so this one has left it." });
      return;
    }
    for (const s of own) await this.#quietly(FN.closeSession, { meetingId: this.meetingId, sessionId: s.sessionId });
    for (const peer of [...this.peers.values()]) {
      // A peer still connecting may have a session newer than this list; any other has left.
      const connecting = peer.state === "new" || peer.state === "connecting";
      if (!this.sessions.has(peer.sessionId) && !connecting) this.#drop(peer, "left");
    }
    for (const s of sessions) {
      if (s.userId === this.me.userId) continue;
      const known = this.peers.get(s.userId);
      if (known?.sessionId === s.sessionId || this.stale.has(s.sessionId) || this.#isNewer(s)) continue;
      if (known) this.#drop(known, "rejoined");
      await this.#add(s.userId, s.sessionId).offer();
    }
  }

  #isNewer(other) {
    return !!this.mine && later(other, this.mine);
  }

  // --- what peers report ----------------------------------------------------------------------

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

  /** From a Peer: its connection changed. */
  transition(peer, state) {
    if (this.peers.get(peer.userId) !== peer) return;
    if (state === "connected") peer.aliveAt = Date.now();
    else if (state === "no_answer") {
      this.#remember_stale(peer);
      this.#drop(peer, "no answer");
      return;
    } else if (state === "failed") this.#serial(() => this.#recover(peer));
    this.#emit("peer", { peer });
    this.#pushState();
  }

  #remember_stale(peer) {
    this.stale.add(peer.sessionId);
    if (this.stale.size > 1024) this.stale.delete(this.stale.values().next().value);
  }

  async #recover(peer) {
    let retry = true;
    try {
      const answer = await this.#call(FN.reportFailure, {
        meetingId: this.meetingId, sessionId: this.sessionId, errorType: "ice_failed", errorDetails: `peer ${peer.userId}`,
      });
      retry = answer.retryRecommended;
      this.pushedState = "failed"; // the report marks the session failed: push the real state again
    } catch (e) {
      console.warn("reporting the ICE failure failed; restarting anyway:", e.message);
    }
    if (retry && peer.offerer && this.peers.get(peer.userId) === peer) await peer.offer();
    this.#pushState();
  }

  #pushState() {
    const states = new Set([...this.peers.values()].map((p) => p.state));
    const state = ["connected", "disconnected"].find((s) => states.has(s)) ?? "connecting";
    this.#emit("state", { state });
    if (state === this.pushedState || this.left) return;
    this.pushedState = state;
    this.#quietly(FN.updateState, { meetingId: this.meetingId, sessionId: this.sessionId, state });
  }

  #busy() {
    return [...this.peers.values()].some((p) => p.negotiating);
  }

  // --- health ---------------------------------------------------------------------------------

  async #checkHealth() {
    const now = Date.now();
    const measured = [];
    for (const peer of [...this.peers.values()]) {
      if (peer.state === "connected") {
        const quality = await peer.measure();
        if (quality) measured.push(quality);
        if (peer.flowing) peer.aliveAt = now;
      }
      if (now - peer.aliveAt > DEAD_AFTER) {
        if (!peer.announced) this.#remember_stale(peer);
        this.#drop(peer, "unreachable");
      }
    }
    if (!measured.length) return;
    const stats = {
      bitrate: Math.round(measured.reduce((n, q) => n + q.bitrate, 0)),
      packetLoss: round(Math.max(...measured.map((q) => q.packetLoss)), 3),
      latency: round(Math.max(...measured.map((q) => q.latency)), 1),
      jitter: round(Math.max(...measured.map((q) => q.jitter)), 1),
    };
    await this.#quietly(FN.reportQuality, { meetingId: this.meetingId, sessionId: this.sessionId, stats });
  }

  // --- chat -----------------------------------------------------------------------------------

  /** Sends to every peer; answers the message as shown locally. */
  sendChat(text) {
    if (!this.features?.chat) throw new JoinError("Chat is off in this meeting.");
    if (encoder.encode(text).length > MAX_CHAT) throw new JoinError(`A message holds at most ${MAX_CHAT / 1024} KiB.`);
    const message = { type: "chat", id: randomId(), from: this.me.userId, text, ts: Date.now() };
    for (const peer of this.peers.values()) peer.sendChat(message);
    return message;
  }

  // --- media ----------------------------------------------------------------------------------

  /** The person turned a device on or off, or started or stopped sharing. */
  async replaceTrack(label, track) {
    this.media[label] = track;
    for (const peer of this.peers.values()) await peer.replaceTrack(label, track);
  }

  // --- helpers ---------------------------------------------------------------------------------

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  async #call(path, args) {
    return this.convex.call(path, args);
  }

  async #quietly(path, args) {
    try {
      return await this.convex.call(path, args);
    } catch (e) {
      if (!(e instanceof ConnvoError)) throw e;
      console.warn(`${path} failed:`, e.message);
    }
  }

  /** For a Peer: sends its description or candidate to its user. */
  send(peer, path, payload) {
    return this.#quietly(path, { meetingId: this.meetingId, sessionId: this.sessionId, targetUserId: peer.userId, ...payload });
  }

  chatReceived(peer, message) {
    this.#emit("chat", { peer, message });
  }

  peerChanged(peer) {
    this.#emit("peer", { peer });
  }
}

/** Sessions are ordered by createdAt, ties by sessionId; the later one offers. */
function later(a, b) {
  return a.createdAt > b.createdAt || (a.createdAt === b.createdAt && a.sessionId > b.sessionId);
}

function checkSdp(sdp) {
  if (typeof sdp !== "string") throw new Error("a description without SDP");
  if (sdp.length > MAX_SDP) throw new Error(`an SDP of ${sdp.length} bytes`);
  const mlines = sdp.split("\nm=").length - 1;
  if (mlines < 1 || mlines > MAX_MLINES) throw new Error(`an SDP with ${mlines} m-lines`);
}

function round(x, digits) {
  return Number.isFinite(x) ? Number(x.toFixed(digits)) : 0;
}

const LAYOUT = { audio: ["audio"], video: ["camera", "screen"] };

/** One remote participant: its RTCPeerConnection, the negotiation, its chat channel, its
 * tracks. An offer on a negotiated connection replaces it, as the bots do (aiortc cannot
 * restart ICE in place). */
export class Peer {
  constructor(mesh, userId, sessionId) {
    this.mesh = mesh;
    this.userId = userId;
    this.sessionId = sessionId;
    this.polite = mesh.me.userId < userId;
    this.pc = null;
    this.channel = null;
    this.outbox = [];
    this.state = "new";
    this.offerer = false;
    this.announced = false;
    this.aliveAt = Date.now();
    this.streams = { camera: new MediaStream(), screen: new MediaStream(), audio: new MediaStream() };
    this.quality = null;
    this.flowing = true;
    this.lastSample = null;
  }

  get name() {
    return this.mesh.names.get(this.userId) ?? this.userId;
  }

  get negotiating() {
    return !["connected", "closed", "failed"].includes(this.state);
  }

  get hasRemote() {
    return !!this.pc?.remoteDescription;
  }

  async offer() {
    this.offerer = true;
    const pc = this.#fresh();
    const { features } = this.mesh;
    const labels = features.screenSharing ? ["audio", "camera", "screen"] : ["audio", "camera"];
    for (const label of labels) {
      const track = this.mesh.media[label];
      const kind = label === "audio" ? "audio" : "video";
      const transceiver = pc.addTransceiver(track ?? kind, { direction: "sendrecv" });
      transceiver.label = label;
    }
    if (features.chat) this.#wireChannel(pc.createDataChannel("chat", { ordered: true }));
    await pc.setLocalDescription();
    await this.mesh.send(this, FN.sendDescription, { description: { type: "offer", sdp: pc.localDescription.sdp } });
    this.#startAnswerTimer();
  }

  async handleDescription(description) {
    if (description.type === "offer") return this.#answer(description);
    if (description.type !== "answer" || this.pc?.signalingState !== "have-local-offer") return;
    await this.pc.setRemoteDescription({ type: "answer", sdp: description.sdp });
  }

  async #answer(offer) {
    if (this.pc?.signalingState === "have-local-offer" && !this.polite) return; // glare: ours wins
    this.offerer = false;
    const pc = this.#fresh();
    await pc.setRemoteDescription({ type: "offer", sdp: offer.sdp });
    const seen = { audio: 0, video: 0 };
    for (const transceiver of pc.getTransceivers()) {
      const kind = transceiver.receiver.track.kind;
      transceiver.label = LAYOUT[kind]?.[seen[kind]++];
      if (!transceiver.label || (transceiver.label === "screen" && !this.mesh.features.screenSharing)) {
        transceiver.direction = "inactive"; // past the layout
        continue;
      }
      await transceiver.sender.replaceTrack(this.mesh.media[transceiver.label] ?? null);
      transceiver.direction = "sendrecv";
    }
    await pc.setLocalDescription();
    await this.mesh.send(this, FN.sendDescription, { description: { type: "answer", sdp: pc.localDescription.sdp } });
    this.#startAnswerTimer();
  }

  async addCandidate(candidate) {
    if (!this.pc) return;
    try {
      if (!candidate.candidate) await this.pc.addIceCandidate();
      else {
        const { sdpMid = null, sdpMLineIndex = null } = candidate;
        await this.pc.addIceCandidate({ candidate: candidate.candidate, sdpMid, sdpMLineIndex: sdpMid === null && sdpMLineIndex === null ? 0 : sdpMLineIndex });
      }
    } catch (e) {
      console.debug("candidate refused:", e.message);
    }
  }

  async replaceTrack(label, track) {
    const transceiver = this.pc?.getTransceivers().find((t) => t.label === label && !t.stopped);
    if (transceiver && transceiver.direction !== "inactive") await transceiver.sender.replaceTrack(track);
  }

  #fresh() {
    this.#closeConnection();
    const config = { iceServers: this.mesh.iceServers, iceTransportPolicy: this.mesh.relayOnly ? "relay" : "all", bundlePolicy: "max-bundle" };
    const pc = new RTCPeerConnection(config);
    this.pc = pc;
    this.state = "new";
    this.lastSample = null;
    pc.onicecandidate = ({ candidate }) => {
      if (pc !== this.pc) return;
      const data = candidate
        ? { candidate: candidate.candidate, sdpMid: candidate.sdpMid, sdpMLineIndex: candidate.sdpMLineIndex }
        : { candidate: "", sdpMid: "0", sdpMLineIndex: 0 };
      this.mesh.send(this, FN.sendCandidate, { candidate: data });
    };
    pc.onconnectionstatechange = () => {
      if (pc !== this.pc || pc.connectionState === this.state) return;
      this.state = pc.connectionState;
      if (this.state === "connected") {
        this.announced = true;
        clearTimeout(this.answerTimer);
      }
      this.mesh.transition(this, this.state);
    };
    pc.ontrack = ({ track, transceiver }) => {
      if (pc !== this.pc) return;
      const label = transceiver.label ?? (track.kind === "audio" ? "audio" : "camera");
      const stream = new MediaStream([track]);
      this.streams[label] = stream;
      track.onmute = track.onunmute = () => this.mesh.peerChanged(this);
      this.mesh.peerChanged(this);
    };
    pc.ondatachannel = ({ channel }) => {
      if (channel.label === "chat" && this.mesh.features.chat && !this.channel) this.#wireChannel(channel);
      else channel.close();
    };
    return pc;
  }

  #startAnswerTimer() {
    clearTimeout(this.answerTimer);
    this.answerTimer = setTimeout(() => this.mesh.transition(this, "no_answer"), ANSWER_TIMEOUT);
  }

  #closeConnection() {
    clearTimeout(this.answerTimer);
    const pc = this.pc;
    this.pc = null;
    this.channel = null;
    pc?.close();
  }

  close() {
    this.#closeConnection();
    this.state = "closed";
  }

  /** Quality since the last measure, in monitorConnectionQuality's units; null the first
   * time. Also notes whether anything arrived (a silent peer is dropped). */
  async measure() {
    if (!this.pc) return null;
    const report = await this.pc.getStats();
    let bytes = 0, received = 0, lost = 0, jitter = 0, rtt = 0, decoded = 0;
    report.forEach((s) => {
      if (s.type === "transport") bytes += s.bytesReceived ?? 0;
      if (s.type === "inbound-rtp") {
        received += s.packetsReceived ?? 0;
        lost += Math.max(0, s.packetsLost ?? 0);
        jitter = Math.max(jitter, 1000 * (s.jitter ?? 0));
        decoded += s.framesDecoded ?? 0;
      }
      if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") rtt = Math.max(rtt, 1000 * (s.currentRoundTripTime ?? 0));
    });
    const sample = { at: performance.now(), bytes, received, lost, jitter, rtt, decoded };
    const before = this.lastSample;
    this.lastSample = sample;
    if (!before) return null;
    this.flowing = sample.bytes > before.bytes;
    const seconds = Math.max((sample.at - before.at) / 1000, 1e-3);
    const total = sample.received - before.received + sample.lost - before.lost;
    this.quality = {
      bitrate: (8 * (sample.bytes - before.bytes)) / seconds,
      packetLoss: total > 0 ? (100 * (sample.lost - before.lost)) / total : 0,
      latency: sample.rtt,
      jitter: sample.jitter,
      framesDecoded: sample.decoded,
    };
    this.mesh.peerChanged(this);
    return this.quality;
  }

  // --- chat -----------------------------------------------------------------------------------

  #wireChannel(channel) {
    this.channel = channel;
    this.chatDropped = 0;
    channel.onopen = () => {
      const outbox = this.outbox;
      this.outbox = [];
      outbox.forEach((m) => this.sendChat(m));
    };
    channel.onmessage = ({ data }) => {
      const message = decodeChat(data);
      if (!message) {
        this.chatDropped++;
        return;
      }
      this.mesh.chatReceived(this, message);
    };
  }

  sendChat(message) {
    if (this.channel?.readyState !== "open") {
      this.outbox = [...this.outbox.slice(-(MAX_OUTBOX - 1)), message];
      return;
    }
    try {
      this.channel.send(JSON.stringify(message));
    } catch (e) {
      console.warn("chat not sent:", e.message);
    }
  }
}

/** A received chat message, or null for anything that is not one (binary, oversized, not
 * JSON, not of the shape). The sender is the connection's user, never the body's `from`. */
function decodeChat(data) {
  if (typeof data !== "string" || data.length > MAX_CHAT_WIRE) return null;
  let body;
  try {
    body = JSON.parse(data);
  } catch {
    return null;
  }
  if (body?.type !== "chat" || typeof body.text !== "string" || typeof body.id !== "string") return null;
  if (encoder.encode(body.text).length > MAX_CHAT) return null;
  return { id: body.id, text: body.text, ts: Number.isFinite(body.ts) ? body.ts : Date.now() };
}

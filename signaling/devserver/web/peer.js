// One remote participant: its RTCPeerConnection, the negotiation with it, its chat channel and
// its tracks (agent/peer.py is the bots' side). An offer on a negotiated connection replaces
// it, as the bots do: aiortc cannot restart ICE in place.

import { ANSWER_TIMEOUT, CHAT_BURST, CHAT_OUTBOX, CHAT_RATE, FN, MAX_CHAT_ID, MAX_CHAT_TEXT, MAX_CHAT_WIRE, TRICKLE_WINDOW } from "./convention.js";

const LAYOUT = { audio: ["audio"], video: ["camera", "screen"] };
const encoder = new TextEncoder();

export class Peer {
  constructor(mesh, userId, sessionId) {
    this.mesh = mesh;
    this.userId = userId;
    this.sessionId = sessionId;
    this.polite = mesh.me.userId < userId;
    this.pc = null;
    this.channel = null;
    this.outbox = [];
    this.sending = Promise.resolve();
    this.state = "new";
    this.offerer = false;
    this.announced = false;
    this.aliveAt = Date.now();
    this.describedAt = 0;
    this.streams = { audio: new MediaStream(), camera: new MediaStream(), screen: new MediaStream() };
    this.quality = null;
    this.chatDropped = 0; // over the chat budget, or not chat
    this.chatBudget = new Budget();
  }

  get name() {
    return this.mesh.names.get(this.userId) ?? this.userId;
  }

  get negotiating() {
    return !["connected", "closed", "failed"].includes(this.state);
  }

  /** An answer or trickled candidates are due: worth polling fast for. */
  get awaitingSignals() {
    if (!this.pc || !this.negotiating) return false;
    return Date.now() - this.describedAt < 1000 * TRICKLE_WINDOW || this.pc.signalingState === "have-local-offer";
  }

  get hasRemote() {
    return !!this.pc?.remoteDescription;
  }

  /** RTP or RTCP flows both ways whenever an m-line is active in either direction. */
  get carriesMedia() {
    return !!this.pc?.getTransceivers().some((t) => t.currentDirection && t.currentDirection !== "inactive");
  }

  // --- negotiation --------------------------------------------------------------------------

  /** Audio always flows (the microphone, or silence without one); the camera and screen
   * m-lines are sendrecv even while off, so turning them on needs no new offer (which would
   * replace the connection). */
  async offer() {
    this.offerer = true;
    const pc = this.#fresh();
    const { features, media } = this.mesh;
    for (const label of features.screenSharing ? ["audio", "camera", "screen"] : ["audio", "camera"]) {
      const transceiver = pc.addTransceiver(media[label] ?? (label === "audio" ? "audio" : "video"), { direction: "sendrecv" });
      transceiver.label = label;
    }
    if (features.chat) this.#wireChannel(pc.createDataChannel("chat", { ordered: true }));
    this.offeredAt = this.mesh.serverNow();
    await pc.setLocalDescription();
    if (pc !== this.pc) return; // replaced or closed meanwhile
    this.#signal(FN.exchangeSessionDescription, { description: { type: "offer", sdp: pc.localDescription.sdp } });
    this.#startAnswerTimer();
  }

  /** Answers are addressed to the user, not the session: two tabs of one user offering at
   * once both read both answers. One stored before our offer went out answers the other tab. */
  async handleDescription(description, timestamp) {
    this.describedAt = Date.now();
    if (description.type === "offer") return this.#answer(description);
    if (description.type !== "answer" || this.pc?.signalingState !== "have-local-offer") return;
    if (timestamp < this.offeredAt) return console.debug("an answer to another tab's offer, ignored");
    await this.pc.setRemoteDescription({ type: "answer", sdp: description.sdp });
  }

  async #answer(offer) {
    if (this.pc?.signalingState === "have-local-offer" && !this.polite) return; // glare: ours stands
    this.offerer = false;
    const pc = this.#fresh();
    await pc.setRemoteDescription({ type: "offer", sdp: offer.sdp });
    const seen = { audio: 0, video: 0 };
    for (const transceiver of pc.getTransceivers()) {
      const kind = transceiver.receiver.track.kind;
      const label = LAYOUT[kind]?.[seen[kind]++];
      if (!label || (label === "screen" && !this.mesh.features.screenSharing)) {
        transceiver.direction = "inactive"; // past the layout
        continue;
      }
      transceiver.label = label;
      await transceiver.sender.replaceTrack(this.mesh.media[label] ?? null);
      transceiver.direction = "sendrecv";
    }
    await pc.setLocalDescription();
    if (pc !== this.pc) return;
    this.#signal(FN.exchangeSessionDescription, { description: { type: "answer", sdp: pc.localDescription.sdp } });
    this.#startAnswerTimer();
  }

  async addCandidate({ candidate, sdpMid = null, sdpMLineIndex = null }) {
    if (!this.pc) return;
    try {
      if (!candidate) await this.pc.addIceCandidate(); // the end of candidates
      else if (sdpMid === null && sdpMLineIndex === null) await this.pc.addIceCandidate({ candidate, sdpMLineIndex: 0 });
      else await this.pc.addIceCandidate({ candidate, sdpMid, sdpMLineIndex });
    } catch (e) {
      console.debug("candidate refused:", e.message);
    }
  }

  /** Sends what the person's media now holds for `label` (a device turned on or off). */
  async sendTrack(label) {
    const transceiver = this.pc?.getTransceivers().find((t) => t.label === label);
    if (transceiver && transceiver.direction !== "inactive") await transceiver.sender.replaceTrack(this.mesh.media[label] ?? null);
  }

  /** Descriptions and candidates reach the other side in the order they were made: an
   * end-of-candidates stored before the last candidate would make aiortc refuse it. */
  #signal(path, payload) {
    this.sending = this.sending.then(() => this.mesh.send(this, path, payload));
  }

  #fresh() {
    this.#closeConnection();
    const { iceServers, relayOnly } = this.mesh;
    const pc = new RTCPeerConnection({ iceServers, iceTransportPolicy: relayOnly ? "relay" : "all", bundlePolicy: "max-bundle" });
    this.pc = pc;
    this.state = "new";
    this.lastSample = null;
    this.flowing = true;
    pc.onicecandidate = ({ candidate: c }) => {
      // Firefox also ends each transport with an empty candidate: one end, the null, is sent
      if (pc !== this.pc || c?.candidate === "") return;
      const candidate = c ? { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex } : { candidate: "", sdpMid: "0", sdpMLineIndex: 0 };
      this.#signal(FN.exchangeICECandidate, { candidate });
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
      this.streams[transceiver.label ?? (track.kind === "audio" ? "audio" : "camera")] = new MediaStream([track]);
      track.onmute = track.onunmute = () => pc === this.pc && this.mesh.peerChanged(this);
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
    this.answerTimer = setTimeout(() => this.mesh.transition(this, "no_answer"), 1000 * ANSWER_TIMEOUT);
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

  // --- quality ------------------------------------------------------------------------------

  /** Quality since the last measure in monitorConnectionQuality's units (bits/s, %, ms), as
   * agent/quality.py measures it; null the first time. Notes whether anything arrived. */
  async measure() {
    const pc = this.pc;
    if (!pc) return null;
    const report = await pc.getStats();
    const sample = { at: performance.now(), bytes: 0, received: 0, lost: 0, jitter: 0, rtt: 0, pairRtt: 0 };
    report.forEach((s) => {
      // Firefox counts bytes on the selected candidate pair only, not on the transport
      if (s.type === "transport") sample.bytes += s.bytesReceived ?? report.get(s.selectedCandidatePairId)?.bytesReceived ?? 0;
      else if (s.type === "inbound-rtp") {
        sample.received += s.packetsReceived ?? 0;
        sample.lost += Math.max(0, s.packetsLost ?? 0);
        sample.jitter = Math.max(sample.jitter, 1000 * (s.jitter ?? 0));
      } else if (s.type === "remote-inbound-rtp") sample.rtt = Math.max(sample.rtt, 1000 * (s.roundTripTime ?? 0));
      else if (s.type === "candidate-pair" && s.nominated) sample.pairRtt = Math.max(sample.pairRtt, 1000 * (s.currentRoundTripTime ?? 0));
    });
    if (pc !== this.pc) return null;
    const before = this.lastSample;
    this.lastSample = sample;
    if (!before) return null;
    this.flowing = sample.bytes > before.bytes;
    const seconds = Math.max((sample.at - before.at) / 1000, 1e-3);
    const lost = sample.lost - before.lost;
    const total = sample.received - before.received + lost;
    this.quality = {
      bitrate: (8 * (sample.bytes - before.bytes)) / seconds,
      packetLoss: total > 0 ? (100 * lost) / total : 0,
      latency: sample.rtt || sample.pairRtt, // RTCP's when the other side sends media
      jitter: sample.jitter,
    };
    this.mesh.peerChanged(this);
    return this.quality;
  }

  // --- chat ---------------------------------------------------------------------------------

  #wireChannel(channel) {
    this.channel = channel;
    channel.onopen = () => {
      const outbox = this.outbox;
      this.outbox = [];
      outbox.forEach((m) => this.sendChat(m));
    };
    channel.onmessage = ({ data }) => {
      const message = this.chatBudget.take() ? decodeChat(data) : null;
      if (message) this.mesh.chatReceived(this, message);
      else this.chatDropped++;
    };
  }

  /** Sends now, or once the channel opens. Never throws: a channel closing under us loses
   * this peer's copy, not the other peers'. */
  sendChat(message) {
    if (this.channel?.readyState !== "open") {
      this.outbox = [...this.outbox.slice(-(CHAT_OUTBOX - 1)), message];
      return;
    }
    try {
      this.channel.send(JSON.stringify(message));
    } catch (e) {
      console.warn("chat not sent:", e.message);
    }
  }
}

/** The messages one participant may have read: CHAT_BURST at once, then CHAT_RATE a second
 * (agent/chat.py's Budget). A flood costs its sender messages, never this page its time. */
class Budget {
  tokens = CHAT_BURST;
  at = performance.now();

  take() {
    const now = performance.now();
    this.tokens = Math.min(CHAT_BURST, this.tokens + ((now - this.at) / 1000) * CHAT_RATE);
    this.at = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

/** A received chat message, or null for anything that is not one, by the rules of
 * agent/chat.py: text, not binary; JSON of type chat; text within MAX_CHAT_TEXT; `ts` a number and
 * `id` a short string when given. The sender is the connection's user, never the body's `from`. */
export function decodeChat(data) {
  if (typeof data !== "string" || data.length > MAX_CHAT_WIRE) return null;
  let body;
  try {
    body = JSON.parse(data);
  } catch {
    return null;
  }
  const { type, text, ts = Date.now(), id = "" } = body ?? {};
  if (type !== "chat" || typeof text !== "string" || encoder.encode(text).length > MAX_CHAT_TEXT) return null;
  if (typeof ts !== "number" || !Number.isFinite(ts) || typeof id !== "string" || id.length > MAX_CHAT_ID) return null;
  return { id, text, ts };
}

export function chatFits(text) {
  return encoder.encode(text).length <= MAX_CHAT_TEXT;
}

// The meeting page: a lobby with a preview, then the grid, the controls and the chat of one
// meeting. The mesh itself is in mesh.js; this file shows it and takes the person's input.

import { FN, MAX_CHAT_TEXT } from "./convention.js";
import { Convex, ConnvoError, Sync } from "./convex.js";
import { LocalMedia, Mesh, Refusal } from "./mesh.js";
import { forget, sentence, signedIn } from "./session.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const media = new LocalMedia();
const tiles = new Map(); // "self", a userId, or either + " screen" -> tile
const MAX_MESSAGES = 500;
const VIDEO = { width: 640, height: 360 };
let meetingId = null;
let me = null;
let mesh = null;
let sync = null;
let devices = null; // the camera and microphone being opened
let audioContext = null;
let micOn = true;
let camOn = true;
let paintShare = () => {};
let paintCamera = () => {};
let cameraAsks = 0; // the camera requests so far: only the last one's track is kept

function show(section) {
  for (const id of ["lobby", "room", "left"]) $(id).hidden = id !== section;
}

function fail(error) {
  console.warn(error);
  $("error-text").textContent = sentence(error);
  $("error").hidden = false;
  if (error instanceof ConnvoError && error.code === "UNAUTHORIZED") {
    forget();
    $("sign-in-again").href = `/?next=${encodeURIComponent(location.pathname + location.search)}`;
    $("sign-in-again").hidden = false;
  }
}

// --- devices ------------------------------------------------------------------------------

/** Opens what the switches ask for; without a device (or on a page that is not secure) the
 * person still joins, sees and hears. */
async function openDevices() {
  if (!navigator.mediaDevices) {
    $("lobby-note").textContent = "Camera and microphone work only on a secure page (https, or http://127.0.0.1 and localhost): you can still join, see and hear the others.";
    return;
  }
  const asked = ++cameraAsks;
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: camOn && VIDEO });
    media.audio = stream.getAudioTracks()[0] ?? null;
    if (media.audio) media.audio.enabled = micOn;
    keepCamera(stream.getVideoTracks()[0] ?? null, asked);
  } catch (e) {
    $("lobby-note").textContent = `No camera or microphone (${e.name}): you can still join, see and hear the others.`;
    camOn = false;
    paintCamera();
  }
  showSelf();
}

/** A camera track that arrived: kept only if it is still the last one asked for and the
 * camera is still wanted. Devices can take a second to open, and the person may have turned
 * the camera off meanwhile: nothing is then sent, and the device is released. */
function keepCamera(track, asked) {
  if (asked !== cameraAsks || !camOn) {
    track?.stop();
    return false;
  }
  media.camera = track;
  return true;
}

function releaseDevices() {
  for (const label of ["audio", "camera", "screen"]) {
    media[label]?.stop();
    media[label] = null;
  }
}

/** Audio always flows to every peer: silence without a microphone, so that a peer that sends
 * nothing either still hears from us, and neither side takes the other for dead. (A
 * destination with nothing playing into it sends no packets: a muted tone does.) */
function silence() {
  const tone = audioContext.createOscillator();
  const mute = audioContext.createGain();
  const out = audioContext.createMediaStreamDestination();
  mute.gain.value = 0;
  tone.connect(mute).connect(out);
  tone.start();
  return out.stream.getAudioTracks()[0];
}

function showSelf() {
  const video = mesh ? tiles.get("self")?.video : $("preview");
  if (video) video.srcObject = media.camera ? new MediaStream([media.camera]) : null;
  tiles.get("self")?.el.classList.toggle("off", !media.camera);
}

async function setMic(on) {
  micOn = on;
  if (media.audio) media.audio.enabled = on;
}

/** Camera off releases the device, as meeting apps do; on asks for it again. */
async function setCamera(on) {
  camOn = on;
  const asked = ++cameraAsks;
  media.camera?.stop();
  media.camera = null;
  if (on && navigator.mediaDevices) {
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ video: VIDEO });
      if (!keepCamera(stream.getVideoTracks()[0], asked)) return;
    } catch (e) {
      if (asked !== cameraAsks) return;
      camOn = false;
      fail(new Refusal(`The camera cannot be opened (${e.name}).`));
    }
  } else if (on) {
    camOn = false; // no devices on this page
  }
  await mesh?.sendTrack("camera");
  showSelf();
}

async function setSharing(on) {
  media.screen?.stop();
  media.screen = null;
  removeTile("self screen");
  if (on) {
    try {
      const stream = await navigator.mediaDevices.getDisplayMedia({ video: true });
      media.screen = stream.getVideoTracks()[0];
      media.screen.onended = () => setSharing(false).then(paintShare);
      const shown = tile("self screen", `${me.name} (presenting)`, "screen");
      shown.video.muted = true;
      shown.video.srcObject = stream;
    } catch (e) {
      if (e.name !== "NotAllowedError") fail(new Refusal(`The screen cannot be shared (${e.name}).`));
    }
  }
  await mesh?.sendTrack("screen");
}

/** Wires an on/off button; answers the function that paints it again (after a change made
 * elsewhere, e.g. the browser's own "Stop sharing"). */
function toggle(button, flip, isOn, onText, offText) {
  const paint = () => {
    button.textContent = isOn() ? onText : offText;
    button.classList.toggle("on", isOn());
    button.setAttribute("aria-pressed", String(isOn()));
  };
  button.onclick = async () => {
    await flip();
    paint();
  };
  paint();
  return paint;
}

// --- joining and leaving ------------------------------------------------------------------

function lobby() {
  $("who").textContent = `Signed in as ${me.name}`;
  show("lobby");
  toggle($("lobby-mic"), () => setMic(!micOn), () => micOn, "Microphone on", "Microphone off");
  paintCamera = toggle($("lobby-cam"), () => setCamera(!camOn), () => camOn, "Camera on", "Camera off");
  $("join").onclick = join;
  devices = openDevices();
}

async function join() {
  if (mesh) return; // a second click while joining
  $("error").hidden = true;
  $("join").disabled = true;
  audioContext ??= new AudioContext();
  await devices;
  media.audio ??= silence();
  const convex = new Convex(me.token);
  sync = new Sync(me.token, { onRefused: (error) => end({ error }) });
  sync.open();
  mesh = new Mesh({ convex, sync, meetingId, me, media, relayOnly: params.get("ice") === "relay" });
  window.connvo = { mesh };
  mesh.addEventListener("peer", ({ detail }) => renderPeer(detail.peer));
  mesh.addEventListener("peerleft", ({ detail }) => removePeer(detail.peer));
  mesh.addEventListener("chat", ({ detail }) => addMessage(detail.peer.name, detail.message.text, detail.message.ts));
  mesh.addEventListener("state", ({ detail }) => {
    const n = mesh?.peers.size ?? 0;
    $("status").textContent = `${n} other${n === 1 ? "" : "s"} · ${detail.state}`;
  });
  mesh.addEventListener("ended", ({ detail }) => end(detail));
  mesh.addEventListener("server", ({ detail }) => {
    $("server-note").hidden = detail.ok;
    if (!detail.ok) $("server-note").textContent = `${sentence(detail.error)} The others still see and hear you; reconnecting…`;
  });
  try {
    await mesh.join();
  } catch (e) {
    await teardown();
    $("join").disabled = false;
    devices = openDevices();
    fail(e);
    return;
  }
  enterRoom();
}

function enterRoom() {
  show("room");
  const { features } = mesh;
  $("chat").hidden = !features.chat;
  $("chat-toggle").hidden = !features.chat;
  $("share").hidden = !features.screenSharing;
  $("status").textContent = "waiting for others";
  const self = tile("self", `${me.name} (you)`);
  self.video.muted = true;
  self.el.classList.add("self");
  showSelf();
  speaking(self, new MediaStream([media.audio]));
  toggle($("mic"), () => setMic(!micOn), () => micOn, "Mute", "Unmute");
  paintCamera = toggle($("cam"), () => setCamera(!camOn), () => camOn, "Camera off", "Camera on");
  paintShare = toggle($("share"), () => setSharing(!media.screen), () => !!media.screen, "Stop presenting", "Present screen");
  $("chat-toggle").onclick = () => ($("chat").hidden = !$("chat").hidden);
  $("leave").onclick = () => end({ reason: "You left the meeting." });
}

// The shortcuts of Google Meet: Ctrl+D the microphone, Ctrl+E the camera.
addEventListener("keydown", (e) => {
  const button = (e.ctrlKey || e.metaKey) && { d: $("mic"), e: $("cam") }[e.key.toLowerCase()];
  if (!button || !mesh?.joined) return;
  e.preventDefault();
  button.click();
});

/** Whatever ended the meeting for this page (Leave, another tab, a refused sign-in): leave,
 * release the devices, say why. */
async function end({ reason, error }) {
  await teardown();
  for (const key of [...tiles.keys()]) removeTile(key);
  $("messages").replaceChildren();
  $("left-reason").textContent = reason ?? "You are no longer in the meeting.";
  show("left");
  if (error) fail(error);
}

async function teardown() {
  const current = mesh;
  mesh = null;
  $("server-note").hidden = true;
  await current?.leave();
  sync?.close();
  sync = null;
  releaseDevices();
}

$("rejoin").onclick = () => {
  $("error").hidden = true;
  show("lobby");
  $("join").disabled = false;
  devices = openDevices();
  join();
};

addEventListener("pagehide", () => mesh?.leaveOnUnload());

// --- the grid -----------------------------------------------------------------------------

function tile(key, name, kind = "person") {
  let t = tiles.get(key);
  if (t) return t;
  const el = $("tile").content.firstElementChild.cloneNode(true);
  el.classList.add(kind);
  t = { el, video: el.querySelector("video") };
  el.dataset.key = key;
  el.querySelector(".name").textContent = name;
  el.querySelector(".avatar").textContent = (name.trim()[0] ?? "?").toUpperCase();
  $("grid").append(el);
  tiles.set(key, t);
  return t;
}

function renderPeer(peer) {
  if (mesh?.peers.get(peer.userId) !== peer) return; // gone before its news arrived
  if (!peer.announced) return; // shown once connected: a retry of a dead session shows nothing
  const t = tile(peer.userId, peer.name);
  t.el.querySelector(".name").textContent = peer.name;
  t.el.dataset.state = peer.state;
  t.el.querySelector(".state").textContent = peer.state === "connected" ? "" : peer.state;
  const { camera, audio, screen } = peer.streams;
  if (t.video.srcObject !== camera) t.video.srcObject = camera;
  const video = camera.getVideoTracks()[0];
  t.el.classList.toggle("off", !video || video.muted);
  if (audio.getAudioTracks().length && t.audioStream !== audio) {
    t.audioStream = audio;
    t.audio ??= t.el.appendChild(Object.assign(document.createElement("audio"), { autoplay: true }));
    t.audio.srcObject = audio;
    speaking(t, audio);
  }
  const q = peer.quality;
  t.el.querySelector(".stats").textContent = q && peer.state === "connected"
    ? `RTT ${Math.round(q.latency)} ms · loss ${q.packetLoss.toFixed(1)}% · ${Math.round(q.bitrate / 1000)} kbps`
    : "";
  const shared = screen.getVideoTracks()[0];
  if (shared && !shared.muted) {
    const s = tile(`${peer.userId} screen`, `${peer.name} (presenting)`, "screen");
    if (s.video.srcObject !== screen) s.video.srcObject = screen;
  } else removeTile(`${peer.userId} screen`);
}

function removePeer(peer) {
  if (mesh?.peers.has(peer.userId)) return; // replaced by a newer connection of the same user
  removeTile(peer.userId);
  removeTile(`${peer.userId} screen`);
}

function removeTile(key) {
  const t = tiles.get(key);
  if (!t) return;
  t.meter?.disconnect();
  t.el.remove();
  tiles.delete(key);
}

/** A ring around a tile while its audio is above a speaking level. */
function speaking(t, stream) {
  t.meter?.disconnect();
  t.analyser = audioContext.createAnalyser();
  t.analyser.fftSize = 512;
  t.meter = audioContext.createMediaStreamSource(stream);
  t.meter.connect(t.analyser);
}

const samples = new Float32Array(512);
setInterval(() => {
  for (const t of tiles.values()) {
    if (!t.analyser) continue;
    t.analyser.getFloatTimeDomainData(samples);
    const rms = Math.sqrt(samples.reduce((n, x) => n + x * x, 0) / samples.length);
    t.el.classList.toggle("speaking", rms > 0.02);
  }
}, 150);

// --- chat ---------------------------------------------------------------------------------

$("chat-form").onsubmit = (e) => {
  e.preventDefault();
  const text = $("chat-text").value;
  if (!text.trim() || !mesh) return;
  try {
    const message = mesh.sendChat(text);
    addMessage("You", text, message.ts);
    $("chat-text").value = "";
    $("chat-note").textContent = "";
  } catch (error) {
    $("chat-note").textContent = error instanceof Refusal ? error.message : String(error);
  }
};
$("chat-text").maxLength = MAX_CHAT_TEXT;

/** Shown as text only; the oldest go past MAX_MESSAGES (a flood must not fill the memory). */
function addMessage(from, text, ts) {
  const item = document.createElement("li");
  const head = document.createElement("b");
  head.textContent = from;
  const time = document.createElement("time");
  const when = new Date(ts);
  time.textContent = Number.isNaN(when.getTime()) ? "" : when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const body = document.createElement("p");
  body.textContent = text;
  item.append(head, " ", time, body);
  $("messages").append(item);
  while ($("messages").childElementCount > MAX_MESSAGES) $("messages").firstElementChild.remove();
  item.scrollIntoView({ block: "end" });
}

// --- start --------------------------------------------------------------------------------

async function start() {
  try {
    meetingId = decodeURIComponent(location.pathname.split("/").pop());
  } catch {
    fail(new Refusal("This link does not lead to a meeting."));
    return;
  }
  me = signedIn(location.pathname + location.search);
  if (!me) return;
  lobby();
  try {
    const meeting = await new Convex(me.token).call(FN.getMeeting, { meetingId });
    if (meeting?.title) {
      $("title").textContent = meeting.title;
      document.title = `${meeting.title} · connvo`;
    }
  } catch (e) {
    fail(e);
    if (e instanceof ConnvoError && e.code !== "NETWORK") $("lobby").hidden = true;
  }
}

start();

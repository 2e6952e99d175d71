// The meeting page: a lobby with a preview, then the grid, the controls and the chat of one
// meeting. The mesh itself is in mesh.js; this file only shows it and takes the person's input.

import { Convex, ConnvoError, Sync } from "./convex.js";
import { JoinError, LocalMedia, MAX_CHAT, Mesh } from "./mesh.js";
import { signedIn, sentence } from "./session.js";

const $ = (id) => document.getElementById(id);
const meetingId = decodeURIComponent(location.pathname.split("/").pop());
const params = new URLSearchParams(location.search);
const me = signedIn(`/meet/${encodeURIComponent(meetingId)}${location.search}`);
const media = new LocalMedia();
const tiles = new Map(); // key ("self", userId, userId + " screen") -> tile
let mesh = null;
let sync = null;
let devices = null; // the camera and microphone being opened
let paintShare = () => {};
let audioContext = null;
let micOn = true;
let camOn = true;

function show(section) {
  for (const id of ["lobby", "room", "left"]) $(id).hidden = id !== section;
}

function fail(error) {
  console.warn(error);
  $("error").textContent = sentence(error);
  $("error").hidden = false;
}

// --- the lobby ----------------------------------------------------------------------------------

function lobby() {
  $("who").textContent = `Signed in as ${me.name}`;
  show("lobby");
  toggle($("lobby-mic"), () => setMic(!micOn), () => micOn, "Microphone on", "Microphone off");
  toggle($("lobby-cam"), () => setCamera(!camOn), () => camOn, "Camera on", "Camera off");
  $("join").onclick = join;
  devices = openDevices();
}

async function openDevices() {
  if (!navigator.mediaDevices) {
    $("lobby-note").textContent = "Camera and microphone work only on a secure page (https, or http://127.0.0.1 and localhost): you can still join, see and hear the others.";
    return;
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 360 } });
    media.audio = stream.getAudioTracks()[0] ?? null;
    media.camera = stream.getVideoTracks()[0] ?? null;
    $("preview").srcObject = stream;
  } catch (e) {
    $("lobby-note").textContent = `No camera or microphone (${e.name}): you can still join, see and hear the others.`;
  }
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

async function setMic(on) {
  micOn = on;
  if (media.audio) media.audio.enabled = on;
}

/** Camera off releases the device, as meeting apps do; on asks for it again. */
async function setCamera(on) {
  camOn = on;
  if (!on) {
    media.camera?.stop();
    await mesh?.replaceTrack("camera", null);
    media.camera = null;
  } else {
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 360 } });
      media.camera = stream.getVideoTracks()[0];
      await mesh?.replaceTrack("camera", media.camera);
    } catch (e) {
      camOn = false;
      fail(new JoinError(`The camera cannot be opened (${e.name}).`));
    }
  }
  const preview = mesh ? tiles.get("self")?.video : $("preview");
  if (preview) preview.srcObject = media.camera ? new MediaStream([media.camera]) : null;
  tiles.get("self")?.el.classList.toggle("off", !media.camera);
}

// --- joining and leaving ----------------------------------------------------------------------

async function join() {
  $("error").hidden = true;
  $("join").disabled = true;
  audioContext ??= new AudioContext();
  await devices;
  const convex = new Convex(me.token);
  sync = new Sync(me.token, { onRefused: fail });
  sync.open();
  mesh = new Mesh({ convex, sync, meetingId, me, media, relayOnly: params.get("ice") === "relay" });
  window.connvo = { mesh };
  mesh.addEventListener("peer", ({ detail }) => renderPeer(detail.peer));
  mesh.addEventListener("peerleft", ({ detail }) => removePeer(detail.peer));
  mesh.addEventListener("chat", ({ detail }) => addMessage(detail.peer.name, detail.message.text, detail.message.ts));
  mesh.addEventListener("state", ({ detail }) => ($("status").textContent = `${mesh.peers.size} other${mesh.peers.size === 1 ? "" : "s"} · ${detail.state}`));
  mesh.addEventListener("ended", ({ detail }) => ended(detail.reason));
  try {
    await mesh.join();
  } catch (e) {
    await mesh.leave();
    sync.close();
    mesh = null;
    $("join").disabled = false;
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
  self.video.srcObject = media.camera ? new MediaStream([media.camera]) : null;
  self.el.classList.add("self");
  self.el.classList.toggle("off", !media.camera);
  if (media.audio) speaking(self, new MediaStream([media.audio]));
  toggle($("mic"), () => setMic(!micOn), () => micOn, "Mute", "Unmute");
  toggle($("cam"), () => setCamera(!camOn), () => camOn, "Camera off", "Camera on");
  paintShare = toggle($("share"), () => setSharing(!media.screen), () => !!media.screen, "Stop presenting", "Present screen");
  $("chat-toggle").onclick = () => ($("chat").hidden = !$("chat").hidden);
  // The shortcuts of Google Meet: Ctrl+D the microphone, Ctrl+E the camera.
  onkeydown = (e) => {
    const button = (e.ctrlKey || e.metaKey) && { d: $("mic"), e: $("cam") }[e.key.toLowerCase()];
    if (!button || !mesh) return;
    e.preventDefault();
    button.click();
  };
  $("leave").onclick = () => leave("You left the meeting.");
}

async function setSharing(on) {
  if (!on) {
    media.screen?.stop();
    await mesh?.replaceTrack("screen", null);
    removeTile(`self screen`);
    return;
  }
  try {
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: true });
    const track = stream.getVideoTracks()[0];
    track.onended = () => setSharing(false).then(paintShare);
    await mesh.replaceTrack("screen", track);
    const shown = tile("self screen", `${me.name} (presenting)`, "screen");
    shown.video.muted = true;
    shown.video.srcObject = stream;
  } catch (e) {
    if (e.name !== "NotAllowedError") fail(new JoinError(`The screen cannot be shared (${e.name}).`));
  }
}

async function leave(reason) {
  const current = mesh;
  mesh = null;
  media.screen?.stop();
  media.screen = null;
  if (current) await current.leave();
  sync?.close();
  ended(reason);
}

function ended(reason) {
  for (const key of [...tiles.keys()]) removeTile(key);
  $("messages").replaceChildren();
  $("left-reason").textContent = reason;
  show("left");
  $("rejoin").onclick = () => {
    show("lobby");
    $("join").disabled = false;
    join();
  };
}

addEventListener("pagehide", () => mesh?.leaveOnUnload());

// --- the grid ---------------------------------------------------------------------------------

function tile(key, name, kind = "person") {
  let t = tiles.get(key);
  if (t) return t;
  const el = $("tile").content.firstElementChild.cloneNode(true);
  el.classList.add(kind);
  t = { el, video: el.querySelector("video"), audio: null, meter: null };
  el.dataset.key = key;
  el.querySelector(".name").textContent = name;
  el.querySelector(".avatar").textContent = (name.trim()[0] ?? "?").toUpperCase();
  $("grid").append(el);
  tiles.set(key, t);
  return t;
}

function renderPeer(peer) {
  if (!mesh) return;
  const t = tile(peer.userId, peer.name);
  t.el.querySelector(".name").textContent = peer.name;
  t.el.dataset.state = peer.state;
  t.el.querySelector(".state").textContent = peer.state === "connected" ? "" : peer.state;
  const camera = peer.streams.camera;
  if (t.video.srcObject !== camera) t.video.srcObject = camera;
  const video = camera.getVideoTracks()[0];
  t.el.classList.toggle("off", !video || video.muted);
  const audio = peer.streams.audio;
  if (audio.getAudioTracks().length && t.audioStream !== audio) {
    t.audioStream = audio;
    t.audio ??= Object.assign(document.createElement("audio"), { autoplay: true });
    t.audio.srcObject = audio;
    t.el.append(t.audio);
    speaking(t, audio);
  }
  const q = peer.quality;
  t.el.querySelector(".stats").textContent = q && peer.state === "connected"
    ? `RTT ${Math.round(q.latency)} ms · loss ${q.packetLoss.toFixed(1)}% · ${Math.round(q.bitrate / 1000)} kbps`
    : "";
  const screen = peer.streams.screen.getVideoTracks()[0];
  if (screen && !screen.muted) {
    const s = tile(`${peer.userId} screen`, `${peer.name} (presenting)`, "screen");
    if (s.video.srcObject !== peer.streams.screen) s.video.srcObject = peer.streams.screen;
  } else removeTile(`${peer.userId} screen`);
}

function removePeer(peer) {
  if (mesh?.peers.get(peer.userId)) return; // replaced by a newer connection of the same user
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
  if (!audioContext) return;
  t.meter?.disconnect();
  const analyser = audioContext.createAnalyser();
  analyser.fftSize = 512;
  t.meter = audioContext.createMediaStreamSource(stream);
  t.meter.connect(analyser);
  t.analyser = analyser;
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

// --- chat -------------------------------------------------------------------------------------

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
    $("chat-note").textContent = error instanceof JoinError ? error.message : String(error);
  }
};
$("chat-text").maxLength = MAX_CHAT;

function addMessage(from, text, ts) {
  const item = document.createElement("li");
  const head = document.createElement("b");
  head.textContent = from;
  const time = document.createElement("time");
  time.textContent = new Date(ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const body = document.createElement("p");
  body.textContent = text;
  item.append(head, " ", time, body);
  $("messages").append(item);
  item.scrollIntoView({ block: "end" });
}

// --- start ------------------------------------------------------------------------------------

async function start() {
  if (!me) return;
  lobby();
  try {
    const meeting = await new Convex(me.token).call("meetings/queries/getMeeting", { meetingId });
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

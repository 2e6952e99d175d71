// The list of one's meetings: sign in, create and start a meeting, start one, invite by name.

import { FN } from "./convention.js";
import { Convex } from "./convex.js";
import { forget, remember, sentence, stored } from "./session.js";

const $ = (id) => document.getElementById(id);
const next = new URLSearchParams(location.search).get("next");

function fail(error) {
  $("error").textContent = typeof error === "string" ? error : sentence(error);
  $("error").hidden = false;
}

$("sign-in-form").onsubmit = async (e) => {
  e.preventDefault();
  $("error").hidden = true;
  let response;
  try {
    response = await fetch("/dev/signin", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ name: $("name").value }) });
  } catch {
    fail("The server cannot be reached: is connvo-agent serve still running?");
    return;
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    fail(body.error ?? `The server answered ${response.status}.`);
    return;
  }
  remember(body);
  // Only a path of this site: never a link elsewhere.
  if (next?.startsWith("/meet/")) location.assign(next);
  else show(body);
};

$("sign-out").onclick = () => {
  forget();
  location.assign("/");
};

async function show(me) {
  $("sign-in").hidden = true;
  $("meetings").hidden = false;
  $("sign-out").hidden = false;
  $("who").textContent = `Signed in as ${me.name}`;
  $("bot-command").textContent = [
    `HOST=${location.origin}`,
    "BOT=$(connvo-agent token --data DIR --user bot1)   # DIR: the --data of connvo-agent serve",
    "CONNVO_TOKEN=$BOT connvo-agent join --url $HOST --meeting MEETING_ID --send audio,video --echo --duration 300",
  ].join("\n");
  const convex = new Convex(me.token);
  $("create-form").onsubmit = async (e) => {
    e.preventDefault();
    try {
      const { meetingId } = await convex.call(FN.createMeeting, { title: $("meeting-title").value });
      await convex.call(FN.startMeeting, { meetingId });
      $("meeting-title").value = "";
      await list(convex);
    } catch (error) {
      fail(error);
    }
  };
  await list(convex);
}

async function list(convex) {
  let meetings;
  try {
    meetings = await convex.call(FN.myMeetings);
  } catch (error) {
    fail(error);
    if (error.code === "UNAUTHORIZED") forget();
    return;
  }
  $("empty").hidden = meetings.length > 0;
  $("list").replaceChildren(...meetings.map((m) => row(convex, m)));
}

function row(convex, meeting) {
  const tr = $("row").content.firstElementChild.cloneNode(true);
  tr.dataset.meetingId = meeting.meetingId;
  tr.querySelector(".title").textContent = meeting.title;
  tr.querySelector(".state").textContent = meeting.state;
  tr.querySelector(".role").textContent = meeting.role;
  tr.querySelector(".count").textContent = meeting.participantCount;
  const join = tr.querySelector(".join");
  join.href = `/meet/${encodeURIComponent(meeting.meetingId)}`;
  join.hidden = meeting.state !== "active";
  const host = meeting.role === "host";
  const start = tr.querySelector(".start");
  start.hidden = !host || meeting.state !== "scheduled";
  start.onclick = async () => {
    try {
      await convex.call(FN.startMeeting, { meetingId: meeting.meetingId });
      await list(convex);
    } catch (error) {
      fail(error);
    }
  };
  const invite = tr.querySelector(".invite");
  invite.hidden = !host;
  invite.onsubmit = async (e) => {
    e.preventDefault();
    const input = invite.querySelector("input");
    try {
      await convex.call(FN.invite, { meetingId: meeting.meetingId, name: input.value.trim() });
      input.value = "";
      await list(convex);
    } catch (error) {
      fail(error);
    }
  };
  return tr;
}

const me = stored();
if (me) show(me);
else $("sign-in").hidden = false;

// Who is signed in (kept in this browser's localStorage), and every error as a sentence.

import { ConnvoError } from "./convex.js";
import { Refusal } from "./mesh.js";

const KEY = "connvo.session";

/** The signed-in person ({token, userId, name}), or null. */
export function stored() {
  try {
    const me = JSON.parse(localStorage.getItem(KEY));
    if (me?.token && me?.userId && me?.name) return me;
  } catch {
    // a damaged entry: sign in again
  }
  return null;
}

/** The signed-in person, or null after sending them to sign in and come back to `next`. */
export function signedIn(next) {
  const me = stored();
  if (!me) location.assign(`/?next=${encodeURIComponent(next)}`);
  return me;
}

export function remember(me) {
  localStorage.setItem(KEY, JSON.stringify(me));
}

export function forget() {
  localStorage.removeItem(KEY);
}

/** What went wrong, for a person: never a code or a stack alone. */
export function sentence(error) {
  if (error instanceof Refusal) return error.message;
  if (!(error instanceof ConnvoError)) return `Something went wrong: ${error?.message ?? error}`;
  const message = error.message.toLowerCase();
  switch (error.code) {
    case "NETWORK":
      return "The server cannot be reached: is connvo-agent serve still running?";
    case "UNAUTHORIZED":
      return "Your sign-in is no longer valid: sign in again.";
    case "FORBIDDEN":
      return "You are not a participant of this meeting: ask its host to invite you.";
    case "NOT_FOUND":
      return "This meeting does not exist.";
    case "INSUFFICIENT_PERMISSIONS":
      return "Only the meeting's host can do that.";
    case "MEETING_NOT_ACTIVE":
      return "This meeting is not active: it has not started yet, or it has ended.";
    case "VALIDATION_ERROR":
      if (message.includes("inactive") || message.includes("not active")) {
        return "This meeting is not active: it has not started yet, or it has ended.";
      }
      if (message.includes("meetingid")) return "This link does not lead to a meeting.";
      return `The server refused: ${error.message}`;
    default:
      return `The server failed (${error.code}): ${error.message || "no details"}`;
  }
}

"""Chat on the wire: the JSON text messages of the `chat` data channel, and their limits.

Whatever a remote sends, reading it never raises: a message that is binary, oversized, not
JSON, nested too deep or not a chat message is dropped and counted by the caller, and so is one
past the sender's `Budget`. Sending past `MAX_TEXT` raises `ChatTooLarge` before anything is
sent. The limit sits far below the 256 KiB SCTP message size of aiortc and browsers, so a
message we accept always fits on the wire.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc import rtcsctptransport

from agent.errors import ChatTooLarge, InvalidChat
from agent.events import ChatMessage
from signaling import convention

log = logging.getLogger(__name__)

MAX_TEXT = convention.MAX_CHAT_TEXT
"""Bytes of UTF-8 text in one chat message."""
MAX_WIRE = convention.MAX_CHAT_WIRE
"""Characters of one message as received: the text escaped by JSON (at worst `\\u0000` for each
byte), plus its envelope."""
BURST = convention.CHAT_BURST
RATE = convention.CHAT_RATE


class Budget:
    """The messages one remote may have read: `burst` at once, then `rate` a second (a token
    bucket). Reading is bounded work per unit of time however fast the remote sends, so a flood
    costs its sender messages, never our loop its time for media and ICE."""

    def __init__(self, rate: float = RATE, burst: int = BURST) -> None:
        self._rate, self._burst = rate, burst
        self._tokens = float(burst)
        self._at = time.monotonic()

    def take(self) -> bool:
        """Whether one more message may be read now."""
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


def check_text(text: str) -> None:
    """Raises ChatTooLarge past MAX_TEXT, InvalidChat for text that is not Unicode (a lone
    surrogate, e.g. from undecodable command-line bytes), which no channel can carry."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidChat("chat text must be valid Unicode (it holds a lone surrogate)") from None
    if size > MAX_TEXT:
        raise ChatTooLarge(size, MAX_TEXT)


def new_chat(sender: str, text: str) -> ChatMessage:
    """A message to send (see `check_text` for what is refused)."""
    check_text(text)
    return ChatMessage(id=uuid.uuid4().hex, sender=sender, text=text, ts=time.time() * 1000)


def encode(message: ChatMessage) -> str:
    return json.dumps(
        {
            "type": "chat",
            "id": message.id,
            "from": message.sender,
            "text": message.text,
            "ts": message.ts,
        },
        ensure_ascii=False,
    )


def decode(data: object, sender: str) -> ChatMessage | None:
    """The chat message in `data` from the peer `sender`, or None for anything else.

    The sender is the connection's, never the claim in the body."""
    if not isinstance(data, str) or len(data) > MAX_WIRE:
        return None
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(body, dict) or body.get("type") != "chat":
        return None
    text, ts = body.get("text"), body.get("ts", time.time() * 1000)
    if not isinstance(text, str):
        return None
    try:
        check_text(text)
    except InvalidChat:
        return None
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        return None
    message_id = body.get("id", "")
    if not isinstance(message_id, str) or len(message_id) > convention.MAX_CHAT_ID:
        return None
    return ChatMessage(id=message_id, sender=sender, text=text, ts=float(ts))


Receive = Callable[[Any, int, int, bytes], Awaitable[None]]


def guarded_receive(original: Receive) -> Receive:
    """aiortc's data-channel receive path, made safe against what a remote sends: a string
    message that is not UTF-8 is handed on as bytes (which `decode` drops), and anything else
    that raises (a malformed channel open) is logged instead of ending the connection.
    Installed by agent.aiortc_patches."""

    async def receive(self: Any, stream_id: int, pp_id: int, data: bytes) -> None:
        channel = self._data_channels.get(stream_id)
        if pp_id == rtcsctptransport.WEBRTC_STRING and channel is not None:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                channel.emit("message", bytes(data))
                return
        try:
            await original(self, stream_id, pp_id, data)
        except Exception as e:
            log.warning("a data-channel message from the remote was rejected: %r", e)

    return receive

"""Why a join was refused or an action is not allowed. Texts are written for the person at the
command line: they name the meeting, the flag or the limit, never a token."""

from __future__ import annotations

from signaling.errors import ConnvoError


class AgentError(ConnvoError):
    """Base of the agent's own refusals."""


class FeatureDisabled(AgentError):
    def __init__(self, flag: str, action: str) -> None:
        self.flag = flag
        super().__init__(
            f"{action} needs the room's `{flag}` feature, which is off for this meeting"
        )


class MeetingFull(AgentError):
    def __init__(self, meeting_id: str, present: int, limit: int) -> None:
        self.present, self.limit = present, limit
        super().__init__(
            f"meeting {meeting_id} is full: {present} participants present, "
            f"features.maxParticipants is {limit}"
        )


class UnsupportedProvider(AgentError):
    def __init__(self, provider: str) -> None:
        self.provider = provider
        super().__init__(
            f"the room uses the {provider!r} provider (an SFU); connvo-agent joins only "
            "'webrtc' mesh rooms so far"
        )


class InvalidChat(AgentError):
    """Chat text no channel can carry."""


class ChatTooLarge(InvalidChat):
    def __init__(self, size: int, limit: int) -> None:
        self.size, self.limit = size, limit
        super().__init__(
            f"a chat message of {size} bytes is over the {limit}-byte limit (agent.chat.MAX_TEXT)"
        )


class Replaced(AgentError):
    """A newer session of the same user joined (a restarted process): this one left."""

    exit_code = 3

    def __init__(self) -> None:
        super().__init__("replaced by a newer session of this user")


class EngineUnavailable(AgentError):
    """A speech engine that cannot start (a model not found or not loadable, an option it cannot
    honour): the text names the option, and the worker stops before it joins."""

"""One definition of the mesh convention's numbers and of the function paths, read by both sides:
the bots take theirs from `signaling.convention`, and the meeting page imports the same ones from
the module the dev backend makes of it (`/web/convention.js`), copying none.

In the convention, times are floats (seconds; the page works in ms) and limits are ints."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
from conftest import Backend

from agent import chat, mesh, peer, pump
from agent.pump import PollSettings
from agent.room import RoomSettings
from signaling import convention
from signaling.devserver.handlers import ENDPOINTS
from signaling.devserver.pages import PAGES

SHARED = {name: value for name, value in vars(convention).items() if name.isupper()}
PATHS = {path.rsplit("/", 1)[-1]: path for path in ENDPOINTS}
SCRIPTS = sorted(PAGES.glob("*.js"))
UNITS = re.compile(r"\b(?:1000|100|8) \* (?=[\w(])|/ (?:1000|1024)\b")
"""ms per s, percent, bits per byte, s per ms, bytes per KiB: factors, not values."""
NUMBER = re.compile(r"(?<![\w.$])\d[\d_]*(?:\.\d+)?(?:e-?\d+)?(?![\w.])")
PATH = re.compile(r"""(["'`])(?!(?:application|text|image|audio|video)/)[A-Za-z_]\w*(?:/\w+)+\1""")
"""A string shaped like a function path (`module/function`, `dir/module/fn`), not a media type."""


def code(script: str) -> str:
    """The script without its comments."""
    return re.sub(r"//.*", "", re.sub(r"/\*.*?\*/", "", script, flags=re.S))


def page_values() -> set[float]:
    """Every shared value as the page would write it: times in ms, limits as they are."""
    values: set[float] = set()
    for value in SHARED.values():
        for one in value if isinstance(value, tuple) else (value,):
            values.add(round(1000 * one) if isinstance(one, float) else one)
    return values


def _value(literal: str) -> float:
    return float(literal.replace("_", ""))


async def served(backend: Backend) -> dict[str, Any]:
    async with httpx.AsyncClient(trust_env=False) as client:
        answer = await client.get(f"{backend.url}/web/convention.js")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/javascript")
    assert "default-src 'self'" in answer.headers["content-security-policy"]
    found = re.findall(r"^export const (\w+) = (.+);$", answer.text, flags=re.M)
    return {name: json.loads(value) for name, value in found}


async def test_the_page_is_served_exactly_the_python_values(backend: Backend) -> None:
    as_json = {name: list(v) if isinstance(v, tuple) else v for name, v in SHARED.items()}
    assert len(PATHS) == len(ENDPOINTS), "two functions of one name: FN cannot tell them apart"
    assert await served(backend) == {**as_json, "FN": PATHS}


def test_the_page_imports_only_what_is_served() -> None:
    for script in SCRIPTS:
        text = script.read_text()
        for names in re.findall(r'import \{([^}]*)\} from "\./convention\.js"', text):
            imported = {name.strip() for name in names.split(",") if name.strip()}
            assert imported <= {*SHARED, "FN"}, f"{script.name}: {imported - {*SHARED, 'FN'}}"
        called = set(re.findall(r"\bFN\.(\w+)", text))
        assert called <= PATHS.keys(), f"{script.name} calls {called - PATHS.keys()}"


def test_the_page_copies_no_path_and_no_number_of_the_convention() -> None:
    shared = page_values()
    for script in SCRIPTS:
        text = code(script.read_text())
        paths = [m.group() for m in PATH.finditer(text)]
        assert not paths, f"{script.name} spells function paths: import FN instead: {paths}"
        numbers = [
            n for n in NUMBER.findall(UNITS.sub(" ", text)) if float(n.replace("_", "")) in shared
        ]
        assert not numbers, f"{script.name} copies the convention's numbers: {numbers}"


def test_the_bots_take_their_defaults_from_the_convention() -> None:
    room, poll = RoomSettings(), PollSettings()
    bots = {
        "POLL_FAST": poll.fast,
        "POLL_IDLE": poll.idle,
        "SIGNAL_PAGE": pump.PAGE,
        "REMEMBERED_SIGNALS": pump.REMEMBER,
        "TRICKLE_WINDOW": peer.TRICKLE_WINDOW,
        "DISCOVERY_INTERVAL": room.discovery_interval,
        "ANSWER_TIMEOUT": room.answer_timeout,
        "STALE_RETRY": room.stale_retry,
        "STALE_RETRY_MAX": mesh.MAX_STALE_RETRY,
        "MAX_STALE": mesh.MAX_STALE,
        "MAX_SDP": peer.MAX_SDP,
        "MAX_MLINES": peer.MAX_MLINES,
        "MAX_CANDIDATE": mesh.MAX_CANDIDATE,
        "MAX_EARLY_SESSIONS": mesh.MAX_EARLY_SESSIONS,
        "MAX_EARLY_CANDIDATES": mesh.MAX_EARLY_CANDIDATES,
        "MAX_CHAT_TEXT": chat.MAX_TEXT,
        "MAX_CHAT_WIRE": chat.MAX_WIRE,
        "CHAT_OUTBOX": peer.MAX_OUTBOX,
        "CHAT_BURST": chat.BURST,
        "CHAT_RATE": chat.RATE,
        "QUALITY_INTERVAL": room.quality_interval,
        "DEAD_AFTER": room.dead_after,
    }
    assert bots == {name: SHARED[name] for name in bots}

"""Both sides of the wire against the published contract (docs/contract/connvo-openapi.yaml, kept
in the repository so the suite runs the same in any clone): a full meeting through the typed
client, every request it sends and every answer the dev backend gives checked with the OpenAPI
3.0 schemas, every function of the contract used."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import Backend
from openapi_schema_validator import OAS30Validator

from signaling import errors as e
from signaling.api import ConnvoAPI
from signaling.client import HttpxTransport
from signaling.functions import FUNCTIONS
from signaling.models import TranscriptChunkArgs

CONTRACT = Path(__file__).parents[1] / "docs/contract/connvo-openapi.yaml"


@dataclass(frozen=True)
class Exchange:
    path: str
    request: Any
    status: int
    answer: Any


class Recorder:
    """Keeps every request and answer that passes through its httpx client."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []
        self.http = httpx.AsyncClient(
            trust_env=False, timeout=10, event_hooks={"response": [self._keep]}
        )

    async def _keep(self, response: httpx.Response) -> None:
        await response.aread()
        sent = json.loads(response.request.content)
        self.exchanges.append(
            Exchange(response.request.url.path, sent, response.status_code, response.json())
        )

    def api(self, url: str, token: str | None) -> ConnvoAPI:
        return ConnvoAPI(url, token, http=HttpxTransport(self.http))


class Contract:
    def __init__(self, path: Path) -> None:
        spec = yaml.safe_load(path.read_text())
        self.paths: dict[str, Any] = spec["paths"]
        self._schemas: dict[str, Any] = spec["components"]["schemas"]

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        ref = schema.get("$ref")
        return self._schemas[ref.rsplit("/", 1)[-1]] if ref else schema

    def problems(self, exchange: Exchange) -> list[str]:
        """What in this exchange breaks the contract (nothing for dev/* functions)."""
        operation = self.paths.get(exchange.path, {}).get("post")
        if operation is None:
            return [] if exchange.path.startswith("/api/run/dev/") else ["not in the contract"]
        request = operation["requestBody"]["content"]["application/json"]["schema"]
        found = [f"request: {p}" for p in self._check(request, exchange.request)]
        answer = operation["responses"].get(str(exchange.status))
        if answer is None:
            return [*found, f"HTTP {exchange.status} is not a published answer"]
        schema = answer["content"]["application/json"]["schema"]
        return found + [f"answer: {p}" for p in self._check(schema, exchange.answer)]

    def _check(self, schema: dict[str, Any], instance: Any) -> list[str]:
        validator = OAS30Validator(self._resolve(schema))
        return [
            f"{'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
            for error in validator.iter_errors(instance)
        ]


async def _meeting_through_every_function(backend: Backend, recorder: Recorder) -> None:
    """One meeting from creation to its end, using each function of the contract at least once,
    plus a few refusals, since error answers are part of the contract too."""
    url = backend.url
    host_token, _ = backend.user(backend.unique("contract-host"), admin=True)
    guest_token, guest_id = backend.user(backend.unique("contract-guest"))
    outsider_token, _ = backend.user(backend.unique("contract-outsider"))
    host, guest = recorder.api(url, host_token), recorder.api(url, guest_token)
    outsider, anonymous = recorder.api(url, outsider_token), recorder.api(url, None)

    assert await anonymous.current_user() is None
    me = await host.current_user()
    assert me is not None
    created = await host.create_meeting(
        "Contract",
        description="every function",
        duration=60_000,
        meetingType="small-group",
        maxParticipants=3,
        transcriptionEnabled=True,
        recordingEnabled=False,
    )
    meeting = created.meetingId
    await host.add_participant(meeting, guest_id, "participant")
    with pytest.raises(e.Forbidden):
        await outsider.get_meeting(meeting)
    with pytest.raises(e.InvalidArgs):
        await guest.create_session(meeting, "early")  # the meeting has not started
    await host.start_meeting(meeting)
    await host.join_meeting(meeting)
    await guest.join_meeting(meeting)
    await guest.get_meeting(meeting)
    await guest.meeting_participants(meeting)
    await guest.connection_info(meeting)

    await host.initialize_room(meeting)
    await guest.initialize_room(meeting, max_participants=3)
    await host.initialize_room(meeting, max_participants=6)  # admin + large: getstream's shape
    await host.configure_dev_room(meeting, provider="webrtc")
    room = await host.initialize_room(meeting)
    assert room.provider == "webrtc"
    await host.create_session(meeting, "host-session")
    await guest.create_session(meeting, "guest-session")
    await host.send_description(meeting, "host-session", {"type": "offer", "sdp": "v=0"}, guest_id)
    candidate = {
        "candidate": "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
        "usernameFragment": "abcd",
    }
    await host.send_candidate(meeting, "host-session", candidate, guest_id)
    signals = await guest.pending_signals(meeting, session_id="host-session")
    assert len(signals) == 2
    await guest.pending_signals(meeting, last_signal_id=signals[0].id)
    await guest.mark_processed([s.id for s in signals])
    await guest.update_session_state(meeting, "guest-session", "connected", {"peers": 1})
    await host.active_sessions(meeting)
    await guest.report_quality(
        meeting, "guest-session", {"bitrate": 64_000, "packetLoss": 1, "latency": 40, "jitter": 5}
    )
    await guest.access_token(meeting, session_id="guest-session")
    await host.access_token(meeting)
    await host.report_failure(meeting, "host-session", "ice_failed", "no candidate pair")

    first = await guest.ingest_transcript(
        TranscriptChunkArgs(
            meetingId=meeting,
            text="hello",
            confidence=0.9,
            startTime=1_700_000_000_000,
            endTime=1_700_000_001_000,
            speakerId=guest_id,
            language="en",
            isInterim=False,
        )
    )
    await guest.ingest_transcript(
        TranscriptChunkArgs(
            meetingId=meeting,
            text="again",
            confidence=0.8,
            startTime=1_700_000_002_000,
            endTime=1_700_000_003_000,
        )
    )
    await host.transcript_chunks(meeting)
    await host.transcript_chunks(meeting, from_sequence=first.sequence, limit=10)
    await guest.close_session(meeting, "guest-session")
    await guest.leave_meeting(meeting)
    await host.end_meeting(meeting)
    late = TranscriptChunkArgs(
        meetingId=meeting, text="late", confidence=0.9, startTime=1, endTime=2
    )
    with pytest.raises(e.MeetingNotActive):
        await guest.ingest_transcript(late)


async def test_every_request_and_answer_matches_the_contract(backend: Backend) -> None:
    contract = Contract(CONTRACT)  # a missing file fails here, loudly: never a skip
    recorder = Recorder()
    try:
        await _meeting_through_every_function(backend, recorder)
    finally:
        await recorder.http.aclose()

    problems = [
        f"{x.path} (HTTP {x.status}): {problem}"
        for x in recorder.exchanges
        for problem in contract.problems(x)
    ]
    assert not problems, "\n".join(problems)
    assert all(x.status in (200, 400) for x in recorder.exchanges)
    answered = {x.path for x in recorder.exchanges if x.status == 200}
    unused = sorted(set(contract.paths) - answered)
    assert not unused, f"functions of the contract the scenario never ran: {unused}"


def test_the_catalogue_holds_exactly_the_functions_of_the_contract() -> None:
    published = {path.removeprefix("/api/run/") for path in Contract(CONTRACT).paths}
    assert set(FUNCTIONS) == published

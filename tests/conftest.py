"""Shared fixtures: one dev backend per test session, and meetings set up through the API.

    def test_x(backend):
        token, user_id = backend.user("alice")

    async def test_y(backend):
        meeting = await backend.meeting(3, chat=False)   # host + 2, started, chat off
        room = await meeting.host.api.initialize_room(meeting.id)

Every `meeting()` gets fresh users, so tests sharing the session's backend never read each
other's signals.

Markers (registered in pyproject.toml) say what a test needs beyond Python; `scripts/test.sh
--fast` leaves those tests out. A test that uses `turn_backend` is marked `turn` here; one that
starts coturn, Chromium or espeak-ng without its marker fails (tests/lanes.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCPeerConnection
from lanes import running
from turnserver import Turn, relayed_backend

from signaling.api import ConnvoAPI
from signaling.client import RetryPolicy
from signaling.devserver import DevServer
from signaling.models import Role


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Before -m selects: whatever uses the shared coturn is a `turn` test."""
    for item in items:
        if "turn_backend" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.turn)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    running[:] = [item]  # before its fixtures are set up, module-scoped ones included


@dataclass
class Member:
    name: str
    token: str = field(repr=False)
    user_id: str
    api: ConnvoAPI


@dataclass
class Meeting:
    """A meeting and its members; members[0] is the host."""

    id: str
    members: list[Member]

    @property
    def host(self) -> Member:
        return self.members[0]

    @property
    def guests(self) -> list[Member]:
        return self.members[1:]

    def __getitem__(self, index: int) -> Member:
        return self.members[index]


class Backend:
    """A running dev backend and helpers to populate it."""

    def __init__(self, server: DevServer) -> None:
        self.server = server
        self._serial = itertools.count(1)

    @property
    def url(self) -> str:
        return self.server.url

    def user(self, name: str, *, admin: bool = False) -> tuple[str, str]:
        """(token, userId) of `name`, provisioned on first use."""
        token = self.server.token(name, admin=admin)
        return token, self.server.user_id(name)

    def unique(self, prefix: str = "user") -> str:
        return f"{prefix}{next(self._serial)}"

    def api(self, token: str | None, *, retry: RetryPolicy | None = None) -> ConnvoAPI:
        return ConnvoAPI(self.url, token, **({"retry": retry} if retry else {}))

    def member(self, name: str | None = None, *, admin: bool = False) -> Member:
        name = name or self.unique()
        token, user_id = self.user(name, admin=admin)
        return Member(name, token, user_id, self.api(token))

    async def meeting(
        self,
        n_users: int = 2,
        *,
        roles: Sequence[Role] = (),
        admin_host: bool = False,
        start: bool = True,
        title: str = "test meeting",
        **room_overrides: Any,
    ) -> Meeting:
        """A meeting of `n_users` fresh users: the first hosts, the others join with `roles`
        (default participant); started unless `start=False`; `room_overrides` go to
        dev/configureRoom (chat, recording, transcription, screenSharing, maxParticipants,
        provider)."""
        tag = self.unique("m")
        members = [self.member(f"{tag}-host", admin=admin_host)]
        members += [self.member(f"{tag}-guest{i}") for i in range(1, n_users)]
        host = members[0].api
        created = await host.create_meeting(title)
        for i, guest in enumerate(members[1:]):
            role = roles[i] if i < len(roles) else "participant"
            await host.add_participant(created.meetingId, guest.user_id, role)
        if room_overrides:
            await host.configure_dev_room(created.meetingId, **room_overrides)
        if start:
            await host.start_meeting(created.meetingId)
        return Meeting(created.meetingId, members)


@pytest.fixture(scope="session")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    with DevServer(tmp_path_factory.mktemp("devserver")) as server:
        yield server


@pytest.fixture(scope="session")
def backend(dev_server: DevServer) -> Backend:
    return Backend(dev_server)


@pytest.fixture(scope="session")
def turn_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Turn, Backend]]:
    """A real coturn on loopback and a dev backend whose rooms hand it out (with an access log),
    one for the session: its tests make fresh meetings and users, and one that freezes coturn
    (SIGSTOP, tests/test_outage.py) lets it go again. Marks its users `turn`."""
    workdir: Path = tmp_path_factory.mktemp("relayed")
    with relayed_backend(workdir, access_log=True) as (turn, server):
        yield turn, Backend(server)


async def answer_to_another_offer() -> dict[str, str]:
    """A real answer, laid out as a mesh connection's (audio, camera, screen, chat), to an offer
    that is not the one being tested: sent as a participant's, it fits that participant's
    connection and cannot connect it."""
    offerer, answerer = RTCPeerConnection(), RTCPeerConnection()
    try:
        for kind in ("audio", "video", "video"):
            offerer.addTransceiver(kind)
        offerer.createDataChannel("chat")
        await offerer.setLocalDescription(await offerer.createOffer())
        await answerer.setRemoteDescription(offerer.localDescription)
        await answerer.setLocalDescription(await answerer.createAnswer())
        return {"type": "answer", "sdp": answerer.localDescription.sdp}
    finally:
        await offerer.close()
        await answerer.close()

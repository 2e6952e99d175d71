"""Ids are opaque: the commands take ids of the form convex-test hands out ("10004;meetings"),
from the user and in the deployment's answers, end to end."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator

import pytest
from conftest import Backend
from test_cli import connvo_agent

from signaling.devserver import DevServer
from signaling.ids import file_part


@pytest.fixture(scope="module")
def convex_test(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    with DevServer(tmp_path_factory.mktemp("convex-test-ids"), ids="convex-test") as server:
        yield Backend(server)


def _cli_meeting(backend: Backend, member, meeting_id: str) -> tuple[str, ...]:
    return ("--url", backend.url, "--token", member.token, "--meeting", meeting_id)


@pytest.mark.slow
async def test_join_record_and_transcribe_take_convex_test_ids(convex_test: Backend, tmp_path):
    meeting = await convex_test.meeting(3, recording=True)
    assert re.fullmatch(r"\d+;meetings", meeting.id)
    assert all(re.fullmatch(r"\d+;users", m.user_id) for m in meeting.members)
    loopback = ("--ice-address", "127.0.0.1")
    stay, outstay = ("--duration", "6"), ("--duration", "9")  # the others outstay the guest
    host, guest, worker = meeting.members
    out = tmp_path / "recording"
    spool = tmp_path / "spool.jsonl"
    joined, _, recorded = await asyncio.gather(
        connvo_agent(
            "join",
            *_cli_meeting(convex_test, guest, meeting.id),
            *loopback,
            *stay,
            "--send",
            "audio,video",
            "--json",
        ),
        connvo_agent(
            "join",
            *_cli_meeting(convex_test, host, meeting.id),
            *loopback,
            *outstay,
            "--send",
            "audio,video",
        ),
        connvo_agent(
            "record",
            *_cli_meeting(convex_test, worker, meeting.id),
            *loopback,
            *outstay,
            "--out",
            str(out),
        ),
    )
    code, stdout, err = joined
    assert code == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["ok"] and summary["meetingId"] == meeting.id
    assert set(summary["peers"]) == {host.user_id, worker.user_id}
    assert summary["video_frames_received"] > 0
    assert recorded[0] == 0, recorded[2]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["meetingId"] == meeting.id
    files = {f["userId"]: f["file"] for f in manifest["files"]}
    assert set(files) == {host.user_id, guest.user_id}
    for user, name in files.items():
        assert name.startswith(file_part(user) + "_") and ";" not in name
        assert (out / name).stat().st_size > 0

    transcribed = await connvo_agent(
        "transcribe",
        *_cli_meeting(convex_test, worker, meeting.id),
        "--ice-address",
        "127.0.0.1",
        "--duration",
        "1",
        "--spool",
        str(spool),
        "--quiet",
    )
    assert transcribed[0] == 0, transcribed[2]


async def test_an_id_the_deployment_does_not_know_is_its_answer_in_one_line(
    convex_test: Backend,
):
    meeting = await convex_test.meeting(1)
    for unknown in ("99999;meetings", "10001;users", "jd7f3k2q9x"):
        code, _, err = await connvo_agent(
            "join", *_cli_meeting(convex_test, meeting.host, unknown), "--duration", "1"
        )
        assert code == 2 and len(err.splitlines()) == 1, err
        assert err.startswith(f"connvo-agent join: --meeting {unknown}: "), err


def test_file_names_from_ids_never_meet_or_escape():
    names = {file_part(v) for v in ("a;b", "a-b", "a b", "../a", ".a", "a")}
    assert len(names) == 6
    assert all("/" not in n and not n.startswith(".") for n in names)
    assert file_part("usr_0123abc") == "usr_0123abc"

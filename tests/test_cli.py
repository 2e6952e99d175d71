"""`connvo-agent` as a user runs it: real processes, real backend, loopback ICE."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_fork import run_forked
from conftest import Backend
from test_room import room

from agent.bot import BotOptions
from agent.media.sources import Outgoing
from agent.room import JoinTarget
from agent.workers.recorder import RecordOptions
from agent.workers.transcriber import TranscriberOptions


async def connvo_agent(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """The CLI in a child process; `env` replaces the environment when given."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    return process.returncode, out.decode(), err.decode()


async def test_join_prints_events_and_ends_with_a_json_summary(backend: Backend):
    meeting = await backend.meeting(2)
    partner = room(meeting, 0, outgoing=Outgoing.synthetic())
    async with partner:
        code, out, err = await connvo_agent(
            "join",
            "--url",
            backend.url,
            "--token",
            meeting[1].token,
            "--meeting",
            meeting.id,
            "--send",
            "audio,video",
            "--chat",
            "hello from the cli",
            "--duration",
            "4",
            "--ice-address",
            "127.0.0.1",
            "--poll-fast",
            "0.05",
            "--json",
        )
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["userId"] == meeting[1].user_id
    assert summary["peers"] == [meeting[0].user_id]
    assert summary["chat_sent"] == 1
    assert summary["audio_frames_received"] > 0 and summary["video_frames_received"] > 0
    assert summary["join_ms"] > 0
    assert f"participant joined: {meeting[0].user_id}" in out
    assert meeting[1].token not in out + err


async def test_bad_token_is_one_clear_line_and_exit_code_2(backend: Backend):
    meeting = await backend.meeting(1)
    code, out, err = await connvo_agent(
        "join",
        "--url",
        backend.url,
        "--token",
        "secret-but-wrong",
        "--meeting",
        meeting.id,
    )
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("connvo-agent join: ") and "UNAUTHORIZED" in err and "--token" in err
    assert "Traceback" not in err and "secret-but-wrong" not in err + out


async def test_an_unknown_meeting_is_one_line_naming_it(backend: Backend):
    meeting = await backend.meeting(1)
    unknowns = ("nosuchmeeting", "mtg_00000000000000000000000000")
    record = ("record", "--url", backend.url, "--out", "unused")
    env = {**os.environ, "CONNVO_TOKEN": meeting.host.token}
    runs = await asyncio.to_thread(run_forked, [(*record, "--meeting", u) for u in unknowns], env)
    for unknown, (code, out, err) in zip(unknowns, runs, strict=True):
        assert code == 2 and len(err.splitlines()) == 1, err
        assert err.startswith(f"connvo-agent record: --meeting {unknown}: "), err
        assert "Traceback" not in err and meeting.host.token not in out + err
    assert not Path("unused").exists()


TOKEN = "tok-secret-123"
LONG_TOKEN = "eyJ" + "x" * 170  # as long as a dev token
URL = "http://127.0.0.1:9"
MEETING = ("--token", TOKEN, "--meeting", "m")
JOIN = ("join", "--url", URL, *MEETING)
LOAD = ("load", "--url", URL, "--host-token", TOKEN)

# Each bad input, as a careless user would type it, and what its one line must name. {tmp} is
# a directory holding "text" (not media, not PEM, one token) and nothing else; {free} is a port
# where nothing listens.
BAD_INPUTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "port out of range": (
        ("join", "--url", "http://127.0.0.1:99999", *MEETING),
        ("--url", "http://127.0.0.1:99999"),
    ),
    "unclosed IPv6": (("join", "--url", "http://[::1", *MEETING), ("--url", "http://[::1")),
    "ftp": (("record", "--url", "ftp://example.com", *MEETING, "--out", "{tmp}/r"), ("ftp://",)),
    "no scheme": (("transcribe", "--url", "localhost:8787", *MEETING), ("localhost:8787",)),
    "no host": (("join", "--url", "http://", *MEETING), ("--url", "no host")),
    "port 0": (("join", "--url", "http://127.0.0.1:0", *MEETING), ("--url", "port 0")),
    "user in URL": (("join", "--url", f"http://u:{TOKEN}@h", *MEETING), ("--url", "no user")),
    "space in host": (("join", "--url", "http://exa mple.com", *MEETING), ("'exa mple.com'",)),
    "load ftp": (("load", "--url", "ftp://x", "--tokens", "{tmp}/text"), ("--url", "ftp://x")),
    "refused": (
        ("join", "--url", "http://127.0.0.1:{free}", *MEETING),
        ("--url http://127.0.0.1:{free}", "cannot connect"),
    ),
    "no token": (("join", "--url", URL, "--meeting", "m"), ("--token", "$CONNVO_TOKEN")),
    "empty token": (("join", "--url", URL, "--token", "", "--meeting", "m"), ("--token",)),
    "Bearer token": (
        ("join", "--url", URL, "--token", f"Bearer {TOKEN}", "--meeting", "m"),
        ("--token",),
    ),
    "token without --token": (("join", "--url", URL, TOKEN, "--meeting", "m"), ("not shown",)),
    "token as --url": (("join", "--url", LONG_TOKEN, *MEETING), ("--url", "not shown")),
    "token as --meeting": (
        ("join", "--url", URL, "--token", TOKEN, "--meeting", LONG_TOKEN),
        ("--meeting", "not shown"),
    ),
    "unknown option": ((*JOIN, "--frobnicate"), ("--frobnicate",)),
    "empty meeting": (("join", "--url", URL, "--token", TOKEN, "--meeting", ""), ("--meeting",)),
    "meeting with a newline": (
        ("join", "--url", URL, "--token", TOKEN, "--meeting", "m\nx"),
        ("--meeting", "control characters"),
    ),
    "absurd meeting": (
        ("join", "--url", URL, "--token", TOKEN, "--meeting", "m/" * 200),
        ("--meeting", "longer than 256"),
    ),
    "send": ((*JOIN, "--send", "audio,vidoe"), ("--send", "vidoe")),
    "play missing": ((*JOIN, "--play", "{tmp}/missing.mp4"), ("--play", "missing.mp4")),
    "play text": ((*JOIN, "--play", "{tmp}/text"), ("--play", "text", "Invalid data")),
    "play a directory": ((*JOIN, "--play", "{tmp}"), ("--play", "not a file")),
    "chat too long": ((*JOIN, "--chat", "x" * 20_000), ("--chat", "16384")),
    "negative duration": ((*JOIN, "--duration", "-1"), ("--duration", "-1")),
    "zero duration": (("demo", "--duration", "0"), ("--duration", "'0'")),
    "word duration": (
        ("record", "--url", URL, *MEETING, "--out", "{tmp}/r", "--duration", "ten"),
        ("--duration", "ten"),
    ),
    "nan duration": (
        ("transcribe", "--url", URL, *MEETING, "--duration", "nan"),
        ("--duration", "nan"),
    ),
    "poll": ((*JOIN, "--poll-fast", "-0.1"), ("--poll-fast", "-0.1")),
    "ice address": ((*JOIN, "--ice-address", "localhost"), ("--ice-address", "localhost")),
    "foreign ice address": ((*JOIN, "--ice-address", "192.0.2.1"), ("--ice-address", "192.0.2.1")),
    "ca missing": ((*JOIN, "--ca-file", "{tmp}/ca.pem"), ("--ca-file", "ca.pem")),
    "ca not PEM": ((*JOIN, "--ca-file", "{tmp}/text"), ("--ca-file", "text")),
    "out is a file": (
        ("record", "--url", URL, *MEETING, "--out", "{tmp}/text"),
        ("--out", "not a directory"),
    ),
    "engine": (
        ("transcribe", "--url", URL, *MEETING, "--engine", "whisperish"),
        ("--engine", "whisperish", "pocketsphinx"),
    ),
    "language": (("transcribe", "--url", URL, *MEETING, "--language", ""), ("--language",)),
    "spool is a directory": (
        ("transcribe", "--url", URL, *MEETING, "--spool", "{tmp}"),
        ("--spool", "not a file"),
    ),
    "tokens missing": ((*LOAD, "--tokens", "{tmp}/tokens"), ("--tokens", "tokens")),
    "too few tokens": ((*LOAD, "--tokens", "{tmp}/text"), ("--tokens", "4 tokens")),
    "url without tokens": (LOAD, ("--url", "--tokens")),
    "tokens without url": (("load", "--tokens", "{tmp}/text"), ("--tokens", "--url")),
    "no meetings": (("load", "--meetings", "0"), ("--meetings", "'0'")),
    "negative participants": (("load", "--participants", "-1"), ("--participants", "-1")),
    "video size": (("load", "--video-size", "640*480"), ("--video-size", "640*480")),
    "min success": (("load", "--min-success", "101"), ("--min-success", "101")),
    "workers": (("load", "--workers", "many"), ("--workers", "many")),
    "load ice address": (("load", "--ice-address", "127.0.0.1,here"), ("--ice-address", "here")),
    "relay share without url": (("load", "--relay-share", "10"), ("--relay-share", "--url")),
    "placement": (("load", "--placement", "scatter"), ("--placement", "scatter")),
    "lonely demo": (("demo", "--participants", "1"), ("--participants", "'1'")),
    "stages spread": (
        ("load", "--stage", "5s:4", "--placement", "spread"),
        ("--stage", "--placement pack"),
    ),
    "serve port": (("serve", "--port", "99999"), ("--port", "99999")),
    "stun url": (("serve", "--stun-url", "http://stun.example"), ("--stun-url", "stun:")),
    "token data": (("token", "--data", "{tmp}/text", "--user", "a"), ("--data", "text")),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class BadRun:
    """One case of BAD_INPUTS run: its {tmp} and {free}, and what the CLI did."""

    tmp: Path
    port: int
    code: int
    out: str
    err: str

    def fill(self, text: str) -> str:
        return text.replace("{tmp}", str(self.tmp)).replace("{free}", str(self.port))


@pytest.fixture(scope="module")
def bad_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Every selected case of BAD_INPUTS run, each in a process of its own forked from one that
    imported the CLI once (tests/cli_fork.py): fifty starts of `python -m agent` were half of
    test_cli's time, nearly all of it imports."""
    test = test_every_bad_input_is_one_line_and_exit_code_2.__name__
    cases = [
        item.callspec.params["case"]
        for item in request.session.items
        if getattr(item, "originalname", None) == test and item.module is request.module
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONNVO_", "SSL_CERT"))}
    runs = []
    for _ in cases:
        tmp = tmp_path_factory.mktemp("bad")
        (tmp / "text").write_text("not-media-nor-pem-nor-enough-tokens\n")
        runs.append(BadRun(tmp, free_port(), 0, "", ""))
    arg_lists = [[r.fill(a) for a in BAD_INPUTS[c][0]] for c, r in zip(cases, runs, strict=True)]
    done = run_forked(arg_lists, env)
    return {
        case: BadRun(run.tmp, run.port, *result)
        for case, run, result in zip(cases, runs, done, strict=True)
    }


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_every_bad_input_is_one_line_and_exit_code_2(case: str, bad_runs: dict[str, BadRun]):
    args, named = BAD_INPUTS[case]
    run = bad_runs[case]
    lines = run.err.splitlines()
    assert run.code == 2, (run.code, run.err)
    assert len(lines) == 1 and lines[0].strip(), run.err
    assert lines[0].startswith(f"connvo-agent {args[0]}: "), run.err
    for text in map(run.fill, named):
        assert text in lines[0], (text, run.err)
    out, err = run.out, run.err
    assert "Traceback" not in out + err and TOKEN not in out + err and LONG_TOKEN not in err
    assert not (run.tmp / "r").exists()  # nothing started


async def test_demo_json_reports_every_bot_ok():
    code, out, err = await connvo_agent("demo", "--participants", "3", "--duration", "2", "--json")
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["ok"] is True and report["meetingId"]
    assert len(report["participants"]) == 3
    for bot in report["participants"]:
        assert set(bot) == {
            "userId",
            "peers_connected",
            "chat_sent",
            "chat_received",
            "audio_frames_received",
            "video_frames_received",
            "join_ms",
        }
        assert bot["peers_connected"] == 2 and bot["chat_received"] == 2


def test_options_never_show_their_token():
    target = JoinTarget("http://x", "tok-secret", "m")
    for options in (
        BotOptions(target),
        TranscriberOptions(target),
        RecordOptions(target, out=Path("out")),
    ):
        assert "tok-secret" not in repr(options)

"""`connvo-agent record`: every participant of a meeting to files."""

from __future__ import annotations

import argparse

from agent.cli import values
from agent.cli.options import meeting_options, target
from agent.cli.running import fill, run_async

HELP = "record every participant of a meeting to files"


def arguments(p: argparse.ArgumentParser) -> None:
    meeting_options(p)
    p.add_argument(
        "--out",
        required=True,
        type=values.writable_dir,
        metavar="DIR",
        help="files + manifest.json",
    )
    p.add_argument(
        "--format",
        choices=["mkv", "ts"],
        default="mkv",
        help="mkv (default): what each participant sent (VP8 or H.264, Opus), copied into "
        "Matroska (.webm for VP8 + Opus) without decoding it, about a quarter of ts's CPU; ts: "
        "transcoded to h264 + AAC in MPEG-TS, the same codecs in every file",
    )
    p.add_argument(
        "--mix",
        action="store_true",
        help="also write the meeting's mixed audio (AAC in MPEG-TS; with mkv, audio is "
        "decoded for the mix only)",
    )


def run(args: argparse.Namespace) -> int:
    from agent.workers.recorder import RecordOptions, run_recorder

    return run_async(run_recorder(fill(RecordOptions, args, target=target(args))))

"""`connvo-agent transcribe`: every participant of a meeting, as transcript chunks posted to it."""

from __future__ import annotations

import argparse
import sys

from agent.cli import values
from agent.cli.options import meeting_options, target
from agent.cli.running import fill, run_async

HELP = "transcribe every participant of a meeting"


def arguments(p: argparse.ArgumentParser) -> None:
    meeting_options(p)
    p.add_argument(
        "--engine",
        type=values.engine,
        default="pocketsphinx",
        metavar="NAME",
        help="default pocketsphinx",
    )
    p.add_argument(
        "--model",
        metavar="NAME|DIR",
        help="faster-whisper: a size (tiny.en, base.en, small, large-v3...; default base.en, "
        "fetched once into the Hugging Face cache) or a CTranslate2 model directory",
    )
    p.add_argument(
        "--device", choices=["cpu", "cuda", "auto"], default="auto", help="faster-whisper"
    )
    p.add_argument(
        "--compute-type",
        metavar="TYPE",
        help="faster-whisper: int8, float16, int8_float16... (default: the model's)",
    )
    p.add_argument(
        "--language",
        type=values.language,
        default="en",
        help="what the speakers speak (faster-whisper decodes it), or auto to detect it",
    )
    p.add_argument(
        "--workers",
        type=values.count(1, 64),
        metavar="N",
        help="engine processes (default 2; see the README for how many)",
    )
    p.add_argument(
        "--spool",
        type=values.writable_file,
        metavar="FILE",
        help="chunks not yet accepted (default: ~/.local/state/connvo-agent/transcripts-ID.jsonl)",
    )
    p.add_argument("--quiet", action="store_true", help="do not print each chunk")


def run(args: argparse.Namespace) -> int:
    from agent.workers.transcriber import TranscriberOptions, run_transcriber

    left = run_async(run_transcriber(fill(TranscriberOptions, args, target=target(args))))
    if left:  # kept safe, but not delivered: a run that says nothing would read as done
        print(
            f"connvo-agent transcribe: {left} chunks left in the spool for the next start",
            file=sys.stderr,
        )
    return 1 if left else 0

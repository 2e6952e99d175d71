"""`connvo-agent transcribe`: a receive-only participant that turns every remote participant's
speech into transcript chunks.

Per audio track: frames -> Segmenter (resample, VAD, timeline) -> utterances -> the engine, in
worker processes -> chunks -> the spool -> the poster. Reading frames never waits on
recognition (a queue sits between them), so a slow engine delays chunks but loses no audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from agent.events import Event, TrackReceived
from agent.media.sources import Outgoing
from agent.media.tracks import RemoteTrack
from agent.room import JoinRequest, JoinTarget, Room
from agent.workers.engines import EnginePool, Transcript, engine_named
from agent.workers.poster import Poster
from agent.workers.spool import Spool
from agent.workers.utterances import Segmenter, Utterance
from signaling.api import ConnvoAPI
from signaling.client import NO_RETRY

log = logging.getLogger(__name__)

Submit = Callable[[str, Utterance, Transcript], None]


def request() -> JoinRequest:
    """Receive-only audio, no chat; asks for `transcription`, so a room without it refuses."""
    return JoinRequest(
        outgoing=Outgoing(), transcribe=True, receive=frozenset({"audio"}), chat=False
    )


@dataclass(frozen=True)
class TranscriberOptions:
    target: JoinTarget
    engine: str = "pocketsphinx"
    language: str = "en"
    spool: Path | None = None
    duration: float | None = None
    drain: float = 5.0
    """Seconds that stopping spends posting what is left; the rest waits for the next start."""
    workers: int = 2
    quiet: bool = False

    def spool_path(self) -> Path:
        if self.spool is not None:
            return self.spool
        state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
        return state / "connvo-agent" / f"transcripts-{self.target.meeting_id}.jsonl"


class Listener:
    """One remote audio track: reads frames, cuts utterances, transcribes them in order."""

    def __init__(self, user_id: str, track: RemoteTrack, pool: EnginePool, submit: Submit) -> None:
        self.user_id = user_id
        self._track = track
        self._pool = pool
        self._submit = submit
        self._segmenter = Segmenter(pool.engine.sample_rate)
        self._utterances: asyncio.Queue[Utterance | None] = asyncio.Queue()
        self._ended = False
        self._reader = asyncio.create_task(self._read(), name=f"listen {user_id}")
        self._writer = asyncio.create_task(self._write(), name=f"transcribe {user_id}")

    async def _read(self) -> None:
        async for frame in self._track.frames():
            for utterance in self._segmenter.feed(frame):
                self._utterances.put_nowait(utterance)
        self._end()

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            for utterance in self._segmenter.flush():
                self._utterances.put_nowait(utterance)
            self._utterances.put_nowait(None)

    async def _write(self) -> None:
        while (utterance := await self._utterances.get()) is not None:
            try:
                transcript = await self._pool.transcribe(utterance.pcm)
            except Exception:
                log.exception("the engine failed on %s's utterance", self.user_id)
                continue
            if transcript.text:
                self._submit(self.user_id, utterance, transcript)

    async def close(self, timeout: float) -> None:
        """Stops reading; speech already heard is still transcribed, for up to `timeout` s."""
        self._reader.cancel()
        await asyncio.wait([self._reader])
        self._end()
        _, late = await asyncio.wait([self._writer], timeout=timeout)
        for task in late:
            task.cancel()
            log.warning("%s: stopped before the last utterances were transcribed", self.user_id)


class Transcriber:
    def __init__(
        self, room: Room, pool: EnginePool, poster: Poster, language: str, quiet: bool = False
    ) -> None:
        self.room = room
        self.pool = pool
        self.poster = poster
        self.language = language
        self.quiet = quiet
        self.listeners: list[Listener] = []

    async def listen(self, events: AsyncIterator[Event]) -> None:
        async for event in events:
            if isinstance(event, TrackReceived) and event.track.kind == "audio":
                listener = Listener(event.user_id, event.track, self.pool, self._chunk)
                self.listeners.append(listener)

    def _chunk(self, speaker: str, utterance: Utterance, transcript: Transcript) -> None:
        chunk = {
            "meetingId": self.room.meeting_id,
            "speakerId": speaker,
            "text": transcript.text,
            "confidence": transcript.confidence,
            "startTime": utterance.start_ms,
            "endTime": utterance.end_ms,
            "language": self.language,
        }
        chunk_id = self.poster.submit(chunk)
        if not self.quiet:
            print(
                f"#{chunk_id} {speaker} [{utterance.start_ms}-{utterance.end_ms}] "
                f"({transcript.confidence:.2f}) {transcript.text}",
                flush=True,
            )

    async def stop(self, timeout: float) -> None:
        await asyncio.gather(*(listener.close(timeout) for listener in self.listeners))


async def run_transcriber(options: TranscriberOptions) -> int:
    """Joins, transcribes until `duration` or a cancel, then drains; answers chunks left over."""
    engine = engine_named(options.engine)
    spool = Spool(options.spool_path())
    pool = EnginePool(engine, options.workers)
    target = options.target
    poster = Poster(ConnvoAPI(target.url, target.token, retry=NO_RETRY), spool)
    room = target.room(request())
    try:
        events = room.events()
        await asyncio.gather(room.join(), pool.warm_up())
        poster.start()
        transcriber = Transcriber(room, pool, poster, options.language, options.quiet)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(options.duration):
                    await transcriber.listen(events)
        finally:
            await transcriber.stop(options.drain)
            await room.leave()
            left = await poster.stop(options.drain)
            if left:
                log.warning("%d chunks left in %s for the next start", left, spool.path)
        return left
    finally:
        pool.close()
        spool.close()

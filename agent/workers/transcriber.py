"""`connvo-agent transcribe`: a receive-only participant that turns every remote participant's
speech into transcript chunks.

Per audio track: frames -> Segmenter (resample, VAD, timeline) -> utterances -> Backlog -> the
engine, in worker processes -> chunks -> the spool -> the poster.

No audio is dropped between the track and the recognizer. The reader takes every frame the
track received (`frames(maxsize=0)`: no drop-oldest queue) and only runs the VAD, cheap next to
recognition, so it keeps pace with the network even with the CPU busy. Recognition may fall
behind; its utterances then wait in a Backlog, in memory up to BACKLOG_MEMORY bytes of audio and
in a temporary file past that, so a slow engine costs latency and disk, never audio or RAM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import av

from agent.errors import Replaced
from agent.events import Event, TrackReceived
from agent.media.sources import Outgoing
from agent.media.tracks import RemoteTrack
from agent.room import JoinRequest, JoinTarget, Room
from agent.workers.engines import EngineOptions, EnginePool, Transcript, engine_named
from agent.workers.poster import PER_MINUTE, Poster
from agent.workers.spool import Spool
from agent.workers.utterances import Segmenter, Utterance
from signaling import ids
from signaling.api import ConnvoAPI
from signaling.client import NO_RETRY
from signaling.models import TranscriptChunkArgs as Chunk

log = logging.getLogger(__name__)

Submit = Callable[[str, Utterance, Transcript], None]

BACKLOG_MEMORY = 16 * 2**20
"""Bytes of utterance audio held in memory for the engine (about 8 minutes at 16 kHz s16)."""


def request() -> JoinRequest:
    """Receive-only audio, no chat; asks for `transcription`, so a room without it refuses."""
    return JoinRequest(
        outgoing=Outgoing(), transcribe=True, receive=frozenset({"audio"}), chat=False
    )


@dataclass(frozen=True)
class TranscriberOptions:
    target: JoinTarget
    engine: str = "pocketsphinx"
    model: str | None = None
    device: str = "auto"
    compute_type: str = "default"
    language: str = "en"
    """A language tag, or "auto": the engine detects it."""
    spool: Path | None = None
    duration: float | None = None
    drain: float = 5.0
    """Seconds that stopping spends posting what is left; the rest waits for the next start."""
    workers: int = 2
    quiet: bool = False
    per_minute: int = PER_MINUTE
    """Chunks the backend takes per minute from this user; learnt anew from a refusal."""

    def engine_options(self) -> EngineOptions:
        """The cores shared among the worker processes, one thread at least each."""
        return EngineOptions(
            model=self.model,
            device=self.device,
            compute_type=self.compute_type,
            language=None if self.language == "auto" else self.language.split("-")[0],
            threads=max(1, (os.cpu_count() or 1) // self.workers),
        )

    def spool_path(self) -> Path:
        if self.spool is not None:
            return self.spool
        state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
        return state / "connvo-agent" / f"transcripts-{ids.file_part(self.target.meeting_id)}.jsonl"


@dataclass(frozen=True)
class _OnDisk:
    offset: int
    size: int
    start_ms: int
    end_ms: int


class Backlog:
    """Utterances waiting for the engine, oldest first: their audio in memory up to `memory`
    bytes, in a temporary file past that. Never drops one and never blocks the reader."""

    def __init__(self, memory: int = BACKLOG_MEMORY) -> None:
        self._queue: asyncio.Queue[Utterance | _OnDisk | None] = asyncio.Queue()
        self._memory = memory
        self._held = 0
        self._file: IO[bytes] | None = None
        self.spilled = 0
        """Utterances that waited on disk."""

    def put(self, utterance: Utterance) -> None:
        size = len(utterance.pcm)
        if self._held + size <= self._memory:
            self._held += size
            self._queue.put_nowait(utterance)
            return
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="connvo-utterances-")  # noqa: SIM115 (close())
        offset = self._file.seek(0, os.SEEK_END)
        self._file.write(utterance.pcm)
        self.spilled += 1
        self._queue.put_nowait(_OnDisk(offset, size, utterance.start_ms, utterance.end_ms))

    def end(self) -> None:
        self._queue.put_nowait(None)

    async def get(self) -> Utterance | None:
        """The oldest utterance; None once `end()` was called and all before it were taken."""
        item = await self._queue.get()
        if item is None:
            return None
        if isinstance(item, Utterance):
            self._held -= len(item.pcm)
            return item
        assert self._file is not None
        self._file.seek(item.offset)
        pcm = self._file.read(item.size)
        if self._queue.empty():  # nothing else waits on disk: give the space back
            self._file.truncate(0)
        return Utterance(pcm, item.start_ms, item.end_ms)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class Listener:
    """One remote audio track: reads every frame, cuts utterances, transcribes them in order."""

    def __init__(self, user_id: str, track: RemoteTrack, pool: EnginePool, submit: Submit) -> None:
        self.user_id = user_id
        self._track = track
        self._pool = pool
        self._submit = submit
        self._segmenter = Segmenter(pool.engine.sample_rate)
        self.backlog = Backlog()
        self.frames = 0
        """Frames read from the track and fed to the VAD."""
        self._ended = False
        self._reader = asyncio.create_task(self._read(), name=f"listen {user_id}")
        self._writer = asyncio.create_task(self._write(), name=f"transcribe {user_id}")

    @property
    def unread(self) -> int:
        """Frames the track received that the VAD has not seen (yet): 0 once the reader ended."""
        return self._track.frames_received - self.frames

    async def _read(self) -> None:
        async for frame in self._track.frames(maxsize=0):
            self.frames += 1
            if not isinstance(frame, av.AudioFrame):  # Transcriber.listen hands audio tracks only
                raise TypeError(f"a listener got a {type(frame).__name__}")
            for utterance in self._segmenter.feed(frame):
                self.backlog.put(utterance)
        self._end()

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            for utterance in self._segmenter.flush():
                self.backlog.put(utterance)
            self.backlog.end()

    async def _write(self) -> None:
        try:
            while (utterance := await self.backlog.get()) is not None:
                try:
                    transcript = await self._pool.transcribe(utterance.pcm)
                except Exception:
                    log.exception("the engine failed on %s's utterance", self.user_id)
                    continue
                if transcript.text:
                    self._submit(self.user_id, utterance, transcript)
        finally:
            self.backlog.close()

    async def close(self, timeout: float) -> None:
        """Stops the track; every frame it received is still read and its speech transcribed,
        for up to `timeout` s."""
        await self._track.stop()
        _, late = await asyncio.wait([self._reader, self._writer], timeout=timeout)
        for task in late:
            task.cancel()
        if late:
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
        start, end = times(utterance, transcript)
        chunk = Chunk(
            meetingId=self.room.meeting_id,
            speakerId=speaker,
            text=transcript.text,
            confidence=transcript.confidence,
            startTime=start,
            endTime=end,
            language=transcript.language if self.language == "auto" else self.language,
        )
        chunk_id = self.poster.submit(chunk)
        if not self.quiet:
            print(
                f"#{chunk_id} {speaker} [{start}-{end}] "
                f"({transcript.confidence:.2f}) {transcript.text}",
                flush=True,
            )

    async def stop(self, timeout: float) -> None:
        await asyncio.gather(*(listener.close(timeout) for listener in self.listeners))


def times(utterance: Utterance, transcript: Transcript) -> tuple[int, int]:
    """The utterance's epoch-ms span, narrowed to its words where the engine timed them."""
    start, end = utterance.start_ms, utterance.end_ms
    if transcript.span is not None:
        first, last = (utterance.start_ms + round(1000 * s) for s in transcript.span)
        if start <= first < last <= end:
            return first, last
    return start, end


async def run_transcriber(options: TranscriberOptions) -> int:
    """Loads the engine in its processes, then joins, transcribes until `duration` or a cancel,
    and drains; answers chunks left over. An engine that cannot start stops it before joining."""
    pool = EnginePool(engine_named(options.engine, options.engine_options()), options.workers)
    try:
        await pool.warm_up()
        return await _transcribe(options, pool)
    finally:
        pool.close()


async def _transcribe(options: TranscriberOptions, pool: EnginePool) -> int:
    spool = Spool(options.spool_path())
    target = options.target
    api = ConnvoAPI(target.url, target.token, ca_file=target.ca_file, retry=NO_RETRY)
    poster = Poster(api, spool, per_minute=options.per_minute)
    room = target.room(request())
    try:
        events = room.events()
        await room.join()
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
        if room.stats().replaced:
            raise Replaced()
        return left
    finally:
        spool.close()

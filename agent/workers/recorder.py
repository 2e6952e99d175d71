"""`connvo-agent record`: a receive-only participant that writes one file per remote participant's
join, a `manifest.json`, and optionally the mixed audio of the whole meeting.

A join is a (userId, sessionId): a rejoin is a new session, so a new file. A renegotiated
connection of the same session (an ICE restart) brings new tracks that continue the same file;
a file closes when its participant leaves, or when its tracks ended and none came back within
GRACE. A screen share goes to its own video-only file (`..._screen.ts`): neither MPEG-TS nor
Matroska can add a stream to a file already written, and a share may start at any time.

Two formats: `mkv` (the default) copies what the senders encoded into Matroska, never decoding
it (agent.workers.matroska); `ts` transcodes to h264 and AAC in MPEG-TS (agent.workers.files),
at several times the CPU, for whoever needs one codec in every file.

Every frame is read (`frames(maxsize=0)`) and handed to its file without waiting, so the reader
keeps pace with the network; each file's queue is bounded in bytes per kind (files.py),
and what an encoder too far behind has to give up is counted, logged and in the manifest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import Replaced
from agent.events import ParticipantLeft, TrackReceived
from agent.media.sources import Outgoing
from agent.media.tracks import RemoteTrack
from agent.room import JoinRequest, JoinTarget, Room
from agent.workers import manifest
from agent.workers.files import ParticipantFile, Recording, TsFile
from agent.workers.matroska import MkvFile
from agent.workers.mixer import Mixer
from signaling import ids

log = logging.getLogger(__name__)

GRACE = 3.0
"""Seconds a session's file stays open after its tracks ended, for a renegotiation to resume it."""
MANIFEST_INTERVAL = 2.0
FORMATS = {"mkv": MkvFile, "ts": TsFile}
SUFFIXES = {"mkv": (".mkv", ".webm"), "ts": (".ts",)}

Key = tuple[str, str, str]  # userId, sessionId, "camera" (audio + camera) or "screen"


def request(format: str = "mkv") -> JoinRequest:
    """Receive-only, no chat; asks for `recording`, so a room with the flag off refuses the join.
    Media is decoded only for `ts`."""
    return JoinRequest(
        outgoing=Outgoing(),
        record=True,
        receive=frozenset({"audio", "video"}),
        chat=False,
        encoded=format == "mkv",
    )


@dataclass
class _Join:
    kinds: set[str] = field(default_factory=set)
    readers: set[asyncio.Task[None]] = field(default_factory=set)
    file: ParticipantFile | None = None
    closing: asyncio.TimerHandle | None = None


class Recorder:
    def __init__(self, room: Room, out: Path, *, mix: bool = False, format: str = "mkv") -> None:
        """`room` joined with `request(format)`: `mkv` needs its frames as received."""
        if format not in FORMATS:
            raise ValueError(f"format {format!r}: not one of {', '.join(FORMATS)}")
        if room.request.encoded != (format == "mkv"):
            raise ValueError(f"format {format!r} needs a room joined with request({format!r})")
        self.room = room
        self.out = out
        self.mix = mix
        self.format = format
        self.files: list[Recording] = []
        self._joins: dict[Key, _Join] = {}
        self._mixer: Mixer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing: set[asyncio.Task[Any]] = set()
        self._ending = False
        self._started = 0.0
        self._ended: float | None = None

    async def run(self, duration: float | None = None) -> list[dict[str, Any]]:
        """Records until `duration` passes or the task is cancelled; answers the manifest's files.
        A room whose `recording` flag is off fails the join (FeatureDisabled), writing nothing."""
        events = self.room.events()
        async with self.room:
            self._begin()
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(duration):
                        async for event in events:
                            self._on(event)
            finally:
                await self._end()
        return [f.describe() for f in self.files]

    def _begin(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self._started = time.time()
        if self.mix:
            path = self._path(f"meeting_{manifest.stamp(self._started)}", (".ts",))
            self._mixer = Mixer(path, time.monotonic())
            self.files.append(self._mixer)
        self._write_manifest()
        self._spawn(self._keep_manifest())

    async def _end(self) -> None:
        self._ending = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        closes = [*self._closing, *(self._close(key) for key in list(self._joins))]
        await asyncio.gather(*closes)
        if self._mixer is not None:
            await asyncio.to_thread(self._mixer.finish)
        self._ended = time.time()
        self._write_manifest()

    # --- events ------------------------------------------------------------------------------

    def _on(self, event: object) -> None:
        if isinstance(event, TrackReceived):
            part = "screen" if event.track.label == "screen" else "camera"
            join = self._joins.setdefault((event.user_id, event.session_id, part), _Join())
            join.kinds.add(event.track.kind)
            if join.closing is not None:
                join.closing.cancel()
                join.closing = None
            key = (event.user_id, event.session_id, part)
            join.readers.add(self._spawn(self._read(key, join, event.track)))
        elif isinstance(event, ParticipantLeft):
            for key in [k for k in self._joins if k[:2] == (event.user_id, event.session_id)]:
                self._close_soon(key, 0.0)

    async def _read(self, key: Key, join: _Join, track: RemoteTrack) -> None:
        try:
            async for frame in track.frames(maxsize=0):
                if join.file is None:
                    join.file = self._open(key, join)
                join.file.put(track.kind, frame, time.monotonic())
        finally:
            join.readers.discard(asyncio.current_task())
            if not join.readers and self._joins.get(key) is join and not self._ending:
                join.closing = self._close_soon(key, GRACE)

    def _open(self, key: Key, join: _Join) -> ParticipantFile:
        user, session, part = key
        suffix = "_screen" if part == "screen" else ""
        name = f"{ids.file_part(user)}_{manifest.stamp(time.time())}_{_short(session)}{suffix}"
        file = FORMATS[self.format](
            self._path(name, SUFFIXES[self.format]),
            time.monotonic(),
            user,
            session,
            frozenset(join.kinds),
            label=part,
            mix=self._mixer,
        )
        self.files.append(file)
        log.info("recording %s to %s", user, file.path.name)
        self._write_manifest()
        return file

    def _close_soon(self, key: Key, delay: float) -> asyncio.TimerHandle:
        """Closing is not cancelled with the readers: a file half-closed would lose its end."""

        def close() -> None:
            task = asyncio.create_task(self._close(key))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

        return asyncio.get_running_loop().call_later(delay, close)

    async def _close(self, key: Key) -> None:
        join = self._joins.pop(key, None)
        if join is None:
            return
        if join.closing is not None:
            join.closing.cancel()
        for reader in list(join.readers):
            reader.cancel()
        if join.file is not None:
            await asyncio.to_thread(join.file.finish)
            log.info("closed %s (%.1f s)", join.file.path.name, join.file.duration)
            self._write_manifest()

    # --- files -------------------------------------------------------------------------------

    def _path(self, name: str, suffixes: tuple[str, ...]) -> Path:
        """A name no file has, whichever of `suffixes` it ends up with (mkv may become webm)."""
        stem, n = name, 1
        taken = {f.path.with_suffix("") for f in self.files}
        while any((self.out / f"{stem}{s}").exists() for s in suffixes) or self.out / stem in taken:
            n += 1
            stem = f"{name}-{n}"
        return self.out / f"{stem}{suffixes[0]}"

    def _write_manifest(self) -> None:
        document = {
            "meetingId": self.room.meeting_id,
            "recorder": {"userId": self.room.user_id, "sessionId": self.room.session_id},
            **manifest.times("start", self._started),
            **manifest.times("end", self._ended),
            "files": [f.describe() for f in self.files],
        }
        manifest.write(self.out, document)

    async def _keep_manifest(self) -> None:
        """Durations of open files grow; a killed recorder leaves them at most this stale."""
        while True:
            await asyncio.sleep(MANIFEST_INTERVAL)
            self._write_manifest()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def _short(session_id: str) -> str:
    """Enough of a session id to tell two joins of one user apart, safe in a file name."""
    safe = ids.file_part(session_id)
    return safe[:8] if safe == session_id else safe


@dataclass(frozen=True)
class RecordOptions:
    target: JoinTarget
    out: Path
    mix: bool = False
    duration: float | None = None
    format: str = "mkv"


async def run_recorder(options: RecordOptions) -> int:
    room = options.target.room(request(options.format))
    recorder = Recorder(room, options.out, mix=options.mix, format=options.format)
    files = await recorder.run(options.duration)
    print(f"{len(files)} files, manifest {options.out / manifest.NAME}", flush=True)
    if room.stats().replaced:
        raise Replaced()
    short = [f["file"] for f in files if any(f["dropped"].values())]
    if short:  # the writer fell behind, or refused frames: said here, not only in the manifest
        print(f"connvo-agent record: frames dropped in {', '.join(short)}", file=sys.stderr)
    return 1 if short else 0

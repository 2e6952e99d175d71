"""Posts the spool's chunks to ingestTranscriptChunk, oldest first, one at a time.

One at a time keeps the meeting's order: chunk N+1 is never sent before chunk N is accepted,
so the backend's sequence numbers follow the spool. A chunk that cannot be posted (backend
down, RATE_LIMIT_EXCEEDED, a timeout) stays at the head and is retried with exponential backoff;
a chunk the backend refuses for good (VALIDATION_ERROR, MEETING_NOT_ACTIVE, ...) is marked
rejected in the spool, where its text stays, and the next one goes.

Duplicates: a post whose answer was lost (a timeout, a dropped connection after the request went
out, a crash before the ack was written) may have been stored. Before re-posting such a chunk
the poster reads the meeting's chunks after the last sequence it knows is ours and looks for
one with the same speaker, startTime and text; if found, that is the ack. The head of a spool
opened at start is treated the same way, since the previous run may have died mid-post.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from agent.workers.spool import Spool
from signaling.api import ConnvoAPI
from signaling.errors import (
    ApplicationError,
    ConnvoError,
    RateLimitExceeded,
    SchemaError,
    TransportError,
    Unauthorized,
)

log = logging.getLogger(__name__)

PAGE = 200  # getTranscriptChunks answers at most 200 chunks per call


class Poster:
    def __init__(
        self,
        api: ConnvoAPI,
        spool: Spool,
        *,
        timeout: float = 10.0,
        base_delay: float = 0.5,
        max_delay: float = 10.0,
    ) -> None:
        self.api = api
        self.spool = spool
        self.posted = 0
        self.timeout = timeout
        self._base_delay, self._max_delay = base_delay, max_delay
        self._uncertain = bool(spool.pending)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def submit(self, chunk: dict[str, Any]) -> int:
        chunk_id = self.spool.add(chunk)
        self._wake.set()
        return chunk_id

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="transcript poster")

    async def stop(self, drain: float) -> int:
        """Gives pending chunks `drain` seconds to go; answers how many are left for next time."""
        deadline = time.monotonic() + drain
        while self.spool.pending and time.monotonic() < deadline and self._running():
            await asyncio.sleep(0.05)
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
        return len(self.spool.pending)

    def _running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        failures = 0
        while True:
            head = self.spool.head()
            if head is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            if await self._post(*head):
                failures = 0
                continue
            delay = random.uniform(0.5, 1.0) * min(self._max_delay, self._base_delay * 2**failures)
            failures += 1
            await asyncio.sleep(delay)

    async def _post(self, chunk_id: int, chunk: dict[str, Any]) -> bool:
        """One attempt at the head chunk; True when it left the head (accepted or rejected)."""
        try:
            if self._uncertain and await self._found(chunk_id, chunk):
                return True
            async with asyncio.timeout(self.timeout):
                result = await self.api.ingest_transcript(**ingest_args(chunk))
        except TimeoutError:
            self._uncertain = True
            log.warning("chunk %d: no answer in time; will look for it before retrying", chunk_id)
            return False
        except (TransportError, RateLimitExceeded, Unauthorized) as e:
            self._uncertain |= isinstance(e, TransportError) and e.sent
            log.warning("chunk %d not posted yet: %s", chunk_id, e)
            return False
        except SchemaError as e:
            if e.direction == "answer":  # it ran, but the answer is odd: maybe stored
                self._uncertain = True
                log.warning("chunk %d: %s", chunk_id, e)
                return False
            return self._reject(chunk_id, e)
        except ApplicationError as e:
            return self._reject(chunk_id, e)
        self.spool.ack(chunk_id, result.sequence)
        self.posted += 1
        return True

    async def _found(self, chunk_id: int, chunk: dict[str, Any]) -> bool:
        """Settles an uncertain head: acks it when the backend has it already."""
        sequence = await self._stored(chunk)
        self._uncertain = False
        if sequence is None:
            return False
        log.info("chunk %d was already stored as sequence %d", chunk_id, sequence)
        self.spool.ack(chunk_id, sequence)
        self.posted += 1
        return True

    def _reject(self, chunk_id: int, error: ConnvoError) -> bool:
        self._uncertain = False
        log.error("chunk %d refused for good, kept in %s: %s", chunk_id, self.spool.path, error)
        self.spool.reject(chunk_id, str(error))
        return True

    async def _stored(self, chunk: dict[str, Any]) -> int | None:
        """The sequence of a stored chunk with this chunk's speaker, start and text, if any."""
        meeting = chunk["meetingId"]
        after = self.spool.last_sequence.get(meeting, 0)
        text = chunk["text"].strip()
        while True:
            async with asyncio.timeout(self.timeout):
                page = await self.api.transcript_chunks(meeting, from_sequence=after, limit=PAGE)
            for stored in page:
                if (
                    stored.speakerId == chunk.get("speakerId")
                    and stored.startMs == chunk["startTime"]
                    and stored.text == text
                ):
                    return stored.sequence
            if len(page) < PAGE:
                return None
            after = page[-1].sequence


def ingest_args(chunk: dict[str, Any]) -> dict[str, Any]:
    return {
        "meeting_id": chunk["meetingId"],
        "text": chunk["text"],
        "confidence": chunk["confidence"],
        "start_time": chunk["startTime"],
        "end_time": chunk["endTime"],
        "speaker_id": chunk.get("speakerId"),
        "language": chunk.get("language"),
    }

"""Posts the spool's chunks to ingestTranscriptChunk, oldest first, one at a time.

One at a time keeps the meeting's order: chunk N+1 is never sent before chunk N is accepted,
so the backend's sequence numbers follow the spool. A chunk that cannot be posted (backend
down, a timeout, RATE_LIMIT_EXCEEDED) stays at the head and is retried, with exponential backoff
or once the limiter's window turns; a chunk the backend refuses for good (VALIDATION_ERROR,
MEETING_NOT_ACTIVE, ...) is marked rejected in the spool, where its text stays, and the next goes.

Rate budget: Connvo takes at most 50 chunks per user per fixed one-minute window (BACKEND.md),
and one transcriber posts every speaker's chunks as one user. The poster counts its posts itself
(the real backend's `rateLimitRemaining` always reads 0) and spreads the window's budget evenly,
saving what a quiet spell leaves for a burst. When the next post would spend faster than that
pace, or the window cannot take every pending chunk, the budget is low: the poster waits for its
turn, then folds every pending chunk of the head's speaker into the head (texts joined in order,
times spanning them all, confidence weighted by duration), so a talkative meeting costs at most
one post per speaker per turn. The merge is written to the spool before the post. A
RATE_LIMIT_EXCEEDED all the same (a restart within a window, another client with this token)
closes the window until the backend's `resetTime` and teaches the poster the backend's `limit`.
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
from signaling.models import TranscriptChunkArgs as Chunk

log = logging.getLogger(__name__)

PAGE = 200  # getTranscriptChunks answers at most 200 chunks per call
PER_MINUTE = 50  # ingestTranscriptChunk's limit per user (BACKEND.md, observed)
WINDOW = 60.0  # seconds: the limiter's fixed windows start on the minute
MAX_CHUNK_TEXT = 10_000  # UTF-16 code units the backend takes in one chunk


class Budget:
    """Posts left in the backend's current window, counted here, spent at an even pace."""

    def __init__(self, per_minute: int = PER_MINUTE) -> None:
        self.limit = per_minute
        self._window = 0.0
        self._used = 0
        self._closed_until = 0.0

    def _left(self, now: float) -> int:
        window = now // WINDOW * WINDOW
        if window != self._window:
            self._window, self._used = window, 0
        return self.limit - self._used

    def _pace_at(self, now: float) -> float:
        """When the next post keeps a post's worth of budget for every 1/limit of the window."""
        left = self._left(now)
        if left <= 0:
            return self._window + WINDOW
        return self._window + WINDOW - left * WINDOW / self.limit

    def wait(self, now: float) -> float:
        """Seconds until the next post may go."""
        return max(0.0, self._closed_until - now, self._pace_at(now) - now)

    def short(self, now: float, pending: int) -> bool:
        """The window cannot take every pending chunk on its own."""
        return pending > self._left(now)

    def spend(self, now: float) -> None:
        self._left(now)
        self._used += 1

    def refused(self, now: float, metadata: dict[str, Any]) -> None:
        """RATE_LIMIT_EXCEEDED: nothing more until the backend's window turns."""
        if isinstance(metadata.get("limit"), int) and metadata["limit"] > 0:
            self.limit = metadata["limit"]
        after = metadata.get("retryAfterSeconds")  # relative: our clock need not match theirs
        self._closed_until = (
            now + after if isinstance(after, int | float) else now // WINDOW * WINDOW + WINDOW
        )
        self._left(now)
        self._used = self.limit


class Poster:
    def __init__(
        self,
        api: ConnvoAPI,
        spool: Spool,
        *,
        per_minute: int = PER_MINUTE,
        timeout: float = 10.0,
        base_delay: float = 0.5,
        max_delay: float = 10.0,
    ) -> None:
        self.api = api
        self.spool = spool
        self.budget = Budget(per_minute)
        self.posted = 0
        self.merged = 0
        """Chunks folded into an earlier one of their speaker because the budget ran low."""
        self.refusals = 0
        """RATE_LIMIT_EXCEEDED answers: the budget counted here was wrong."""
        self.timeout = timeout
        self._base_delay, self._max_delay = base_delay, max_delay
        self._uncertain = bool(spool.pending)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def submit(self, chunk: Chunk) -> int:
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
        failures, held = 0, False
        while True:
            head = self.spool.head()
            if head is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            if (wait := self.budget.wait(time.time())) > 0:
                await asyncio.sleep(wait)
                held = True  # the budget runs low: what piled up meanwhile goes merged
                continue
            # An uncertain head may be stored already: it is settled (and posted) as it is, never
            # merged, or its text would go again inside the merge.
            short = held or self.budget.short(time.time(), len(self.spool.pending))
            if short and not self._uncertain:
                head = self._merge(*head)
            if await self._post(*head):
                failures, held = 0, False
                continue
            if self.budget.wait(time.time()) > 0:  # refused by the rate limiter: wait its turn
                continue
            delay = random.uniform(0.5, 1.0) * min(self._max_delay, self._base_delay * 2**failures)
            failures += 1
            await asyncio.sleep(delay)

    def _merge(self, chunk_id: int, chunk: Chunk) -> tuple[int, Chunk]:
        """Folds the pending chunks of the head's speaker into the head, in order, as far as one
        chunk's text may go; spooled before it is posted."""
        folded: list[int] = []
        for other_id, other in list(self.spool.pending.items())[1:]:
            if (other.meetingId, other.speakerId, other.language) != (
                chunk.meetingId,
                chunk.speakerId,
                chunk.language,
            ):
                continue
            joined = merged(chunk, other)
            if len(joined.text.encode("utf-16-le")) // 2 > MAX_CHUNK_TEXT:
                break
            folded.append(other_id)
            chunk = joined
        if folded:
            self.spool.merge(chunk_id, folded, chunk)
            self.merged += len(folded)
        return chunk_id, chunk

    async def _post(self, chunk_id: int, chunk: Chunk) -> bool:
        """One attempt at the head chunk; True when it left the head (accepted or rejected)."""
        try:
            if self._uncertain and await self._found(chunk_id, chunk):
                return True
            async with asyncio.timeout(self.timeout):
                result = await self.api.ingest_transcript(chunk)
        except TimeoutError:
            self._uncertain = True
            self.budget.spend(time.time())  # it may have run
            log.warning("chunk %d: no answer in time; will look for it before retrying", chunk_id)
            return False
        except RateLimitExceeded as e:
            self.refusals += 1
            self.budget.refused(time.time(), e.metadata)
            log.warning("chunk %d waits for the rate limit: %s", chunk_id, e)
            return False
        except (TransportError, Unauthorized) as e:
            if isinstance(e, TransportError) and e.sent:
                self._uncertain = True
                self.budget.spend(time.time())
            log.warning("chunk %d not posted yet: %s", chunk_id, e)
            return False
        except SchemaError as e:
            if e.direction == "answer":  # it ran, but the answer is odd: maybe stored
                self._uncertain = True
                self.budget.spend(time.time())
                log.warning("chunk %d: %s", chunk_id, e)
                return False
            return self._reject(chunk_id, e)
        except ApplicationError as e:
            return self._reject(chunk_id, e)
        self.budget.spend(time.time())
        self.spool.ack(chunk_id, result.sequence)
        self.posted += 1
        return True

    async def _found(self, chunk_id: int, chunk: Chunk) -> bool:
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

    async def _stored(self, chunk: Chunk) -> int | None:
        """The sequence of a stored chunk with this chunk's speaker, start and text, if any."""
        meeting = chunk.meetingId
        after = self.spool.last_sequence.get(meeting, 0)
        text = chunk.text.strip()
        while True:
            async with asyncio.timeout(self.timeout):
                page = await self.api.transcript_chunks(meeting, from_sequence=after, limit=PAGE)
            for stored in page:
                if (
                    stored.speakerId == chunk.speakerId
                    and stored.startMs == chunk.startTime
                    and stored.text == text
                ):
                    return stored.sequence
            if len(page) < PAGE:
                return None
            after = page[-1].sequence


def merged(first: Chunk, then: Chunk) -> Chunk:
    """One chunk saying `first` then `then`: nothing of either text lost, none repeated."""
    weights = (max(first.endTime - first.startTime, 1.0), max(then.endTime - then.startTime, 1.0))
    confidence = (first.confidence * weights[0] + then.confidence * weights[1]) / sum(weights)
    return first.model_copy(
        update={
            "text": f"{first.text.strip()} {then.text.strip()}",
            "endTime": max(first.endTime, then.endTime),
            "confidence": min(max(confidence, 0.0), 1.0),
        }
    )

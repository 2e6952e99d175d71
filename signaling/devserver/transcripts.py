"""Transcript chunks: convex/transcripts/ingestion.ts and its per-user limiter
(convex/lib/rateLimiter.ts: fixed one-minute windows)."""

from __future__ import annotations

import math

from signaling import models as m
from signaling.devserver import convex_error as err
from signaling.devserver.guards import Ctx, assert_meeting_access, now_ms
from signaling.devserver.store import Doc

BUCKET_MS = 300_000
MAX_TEXT = 10_000
WINDOW_MS = 60_000
RATE_ACTION = "transcriptIngestion"
MAX_PAGE = 200
DEFAULT_PAGE = 100


def _js_length(text: str) -> int:
    """String length as JavaScript counts it (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


def _validate(args: m.TranscriptChunkArgs) -> None:
    if not args.text.strip():
        raise err.validation("Transcript text cannot be empty")
    if not 0 <= args.confidence <= 1:
        raise err.validation("Confidence must be between 0 and 1")
    if args.startTime >= args.endTime:
        raise err.validation("Start time must be before end time")
    if _js_length(args.text) > MAX_TEXT:
        raise err.validation("Transcript text too long (max 10,000 characters)")


def _take_rate(ctx: Ctx, user_id: str) -> int:
    """Counts one call in the current window; answers what is left of it."""
    limit = ctx.settings.transcript_rate
    now = now_ms()
    window = now // WINDOW_MS * WINDOW_MS
    row = ctx.tx.first("rateLimits", userId=user_id, action=RATE_ACTION, windowStartMs=window)
    count = row["count"] if row else 0
    if count >= limit:
        raise err.rate_limited(RATE_ACTION, limit, window, window + WINDOW_MS, now)
    if row is None:
        ctx.tx.insert(
            "rateLimits",
            {
                "userId": user_id,
                "action": RATE_ACTION,
                "windowStartMs": window,
                "count": 1,
                "createdAt": now,
                "updatedAt": now,
            },
        )
    else:
        ctx.tx.patch("rateLimits", row["_id"], {"count": count + 1, "updatedAt": now})
    return limit - count - 1


def _next_sequence(ctx: Ctx, meeting_id: str) -> int:
    counter = ctx.tx.first("meetingCounters", meetingId=meeting_id)
    if counter is None:
        ctx.tx.insert(
            "meetingCounters", {"meetingId": meeting_id, "lastSequence": 1, "updatedAt": now_ms()}
        )
        return 1
    sequence = counter["lastSequence"] + 1
    ctx.tx.patch(
        "meetingCounters", counter["_id"], {"lastSequence": sequence, "updatedAt": now_ms()}
    )
    return sequence


def ingest_chunk(ctx: Ctx, args: m.TranscriptChunkArgs) -> Doc:
    participant = assert_meeting_access(ctx, args.meetingId)
    meeting = ctx.tx.get("meetings", args.meetingId)
    if meeting is None or meeting["state"] != "active":
        raise err.meeting_not_active(args.meetingId)
    _validate(args)
    remaining = _take_rate(ctx, participant["userId"])
    bucket = math.floor(args.startTime / BUCKET_MS) * BUCKET_MS
    sequence = _next_sequence(ctx, args.meetingId)
    text = args.text.strip()
    ctx.tx.insert(
        "transcripts",
        {
            "meetingId": args.meetingId,
            "bucketMs": bucket,
            "sequence": sequence,
            "speakerId": args.speakerId,
            "text": text,
            "confidence": args.confidence,
            "startMs": args.startTime,
            "endMs": args.endTime,
            "isInterim": args.isInterim,
            "wordCount": len(text.split()),
            "language": args.language or "en",
            "createdAt": now_ms(),
        },
    )
    return {
        "success": True,
        "sequence": sequence,
        "bucketMs": bucket,
        "rateLimitRemaining": remaining,
    }


def get_chunks(ctx: Ctx, args: m.TranscriptChunksArgs) -> list[Doc]:
    """Chunks after `fromSequence`, ascending, at most 200 (100 unless `limit` says)."""
    assert_meeting_access(ctx, args.meetingId)
    after = args.fromSequence or 0
    limit = max(0, min(DEFAULT_PAGE if args.limit is None else args.limit, MAX_PAGE))
    where: Doc = {"meetingId": args.meetingId}
    if args.bucketMs:
        where["bucketMs"] = args.bucketMs
    chunks = sorted(ctx.tx.find("transcripts", **where), key=lambda c: c["sequence"])
    keys = (
        "_id",
        "sequence",
        "speakerId",
        "text",
        "confidence",
        "startMs",
        "endMs",
        "wordCount",
        "language",
        "createdAt",
    )
    picked = [c for c in chunks if c["sequence"] > after][:limit]
    return [{k: c[k] for k in keys if k in c} for c in picked]

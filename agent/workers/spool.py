"""The transcriber's local spool: every chunk is written here before it is posted, so no text is
lost to a backend outage, a rate limit or a restart.

An append-only JSON-lines file, fsynced after each record:

    {"op": "chunk", "id": 7, "chunk": {...TranscriptChunkArgs...}}
    {"op": "merge", "id": 7, "ids": [9, 12], "chunk": {...}}  9 and 12 folded into 7
    {"op": "ack", "id": 7, "meeting": "m1", "sequence": 42}    accepted, with its sequence
    {"op": "reject", "id": 8, "error": "..."}       refused for good; the text stays in the file

A merge (the poster's answer to a low rate budget) is written before the merged chunk is
posted, so a restart posts exactly what may already be stored, and never the parts again.

Opening it replays the records: chunks with neither ack nor reject are pending, oldest first,
and are posted before anything new. A torn last line (a crash mid-write) is ignored. When
nothing is pending on open, the file is compacted to its rejected chunks (rewritten, then
renamed over the old one) so it does not grow forever.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from signaling.models import TranscriptChunkArgs as Chunk


class Spool:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.pending: OrderedDict[int, Chunk] = OrderedDict()
        self.last_sequence: dict[str, int] = {}
        """Per meeting, the highest sequence the backend gave one of our chunks: a stored
        chunk of ours that we never heard back about can only come after it."""
        self._rejected: list[str] = []
        self._next_id = 1
        self._replay()
        self._file = self.path.open("ab")

    def __repr__(self) -> str:
        return f"Spool({str(self.path)!r}, pending={len(self.pending)})"

    def add(self, chunk: Chunk) -> int:
        chunk_id = self._next_id
        self._next_id += 1
        self._write({"op": "chunk", "id": chunk_id, "chunk": _dump(chunk)})
        self.pending[chunk_id] = chunk
        return chunk_id

    def head(self) -> tuple[int, Chunk] | None:
        return next(iter(self.pending.items()), None)

    def merge(self, chunk_id: int, folded: list[int], chunk: Chunk) -> None:
        """`chunk_id` now holds `chunk`, which carries the text of the `folded` chunks too."""
        self._write({"op": "merge", "id": chunk_id, "ids": folded, "chunk": _dump(chunk)})
        for other in folded:
            del self.pending[other]
        self.pending[chunk_id] = chunk  # an existing key keeps its place: order holds

    def ack(self, chunk_id: int, sequence: int) -> None:
        meeting = self.pending[chunk_id].meetingId
        self._write({"op": "ack", "id": chunk_id, "meeting": meeting, "sequence": sequence})
        self.pending.pop(chunk_id)
        self._saw(meeting, sequence)

    def _saw(self, meeting: str, sequence: int) -> None:
        self.last_sequence[meeting] = max(self.last_sequence.get(meeting, 0), sequence)

    def reject(self, chunk_id: int, error: str) -> None:
        self._write({"op": "reject", "id": chunk_id, "error": error})
        self.pending.pop(chunk_id, None)

    def close(self) -> None:
        self._file.close()

    def _write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    # --- opening -----------------------------------------------------------------------------

    def _replay(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            return
        chunks: dict[int, Chunk] = {}
        kept: dict[int, list[str]] = {}  # the lines a pending chunk replays from
        for line in self.path.read_bytes().splitlines():
            record = _parse(line)
            if record is None:
                continue
            chunk_id = record["id"]
            self._next_id = max(self._next_id, chunk_id + 1)
            if record["op"] in ("chunk", "merge"):
                chunk = _load(record["chunk"])
                if chunk is None:  # ours, so never expected; kept as if rejected, never lost
                    self._rejected.append(line.decode())
                    continue
                chunks[chunk_id] = chunk
                kept.setdefault(chunk_id, []).append(line.decode())
                for other in record.get("ids", ()):
                    chunks.pop(other, None)
                    kept[chunk_id][-1:-1] = kept.pop(other, [])
            elif record["op"] == "ack":
                chunks.pop(chunk_id, None)
                kept.pop(chunk_id, None)
                if record.get("meeting"):
                    self._saw(record["meeting"], record["sequence"])
            elif record["op"] == "reject":
                chunks.pop(chunk_id, None)
                self._rejected += [*kept.pop(chunk_id, []), line.decode()]
        self.pending = OrderedDict(sorted(chunks.items()))
        if not self.pending:
            self._compact()

    def _compact(self) -> None:
        """Keeps the rejected chunks and where the ids and sequences had got to."""
        markers = [
            json.dumps({"op": "ack", "id": self._next_id - 1, "meeting": m, "sequence": s})
            for m, s in self.last_sequence.items()
        ]
        lines = [line for line in self._rejected if line] + markers
        temporary = self.path.with_suffix(self.path.suffix + ".tmp")
        with temporary.open("wb") as out:
            out.write("".join(line + "\n" for line in lines).encode())
            out.flush()
            os.fsync(out.fileno())
        temporary.replace(self.path)


def _dump(chunk: Chunk) -> dict[str, Any]:
    return chunk.model_dump(mode="json", exclude_none=True)


def _load(data: Any) -> Chunk | None:
    try:
        return Chunk.model_validate(data)
    except ValidationError:
        return None


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("op") not in ("chunk", "merge", "ack", "reject"):
        return None
    return record

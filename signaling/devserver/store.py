"""Convex-like documents in one SQLite file.

Each table keeps whole documents as JSON plus copies of the fields it is queried by, so the
functions read and write plain dicts shaped like the real Convex documents. `ord` is the
insertion order ("oldest first"); ids are random and say nothing about time, as in Convex, where
`lastSignalId` compares as a string and is no cursor.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Doc = dict[str, Any]

TABLES: dict[str, tuple[str, tuple[tuple[str, ...], ...]]] = {
    # name: (id tag, indexes); the columns of the indexes are the queryable fields
    "users": ("usr", (("workosUserId",),)),
    "meetings": ("mtg", ()),
    "meetingParticipants": ("mpt", (("meetingId", "userId"),)),
    "meetingState": ("mst", (("meetingId",),)),
    "webrtcSessions": (
        "wss",
        (("meetingId", "sessionId"), ("userId", "meetingId"), ("meetingId", "state")),
    ),
    "webrtcSignals": ("sig", (("meetingId", "toUserId", "processed"),)),
    "videoRoomConfigs": ("vrc", (("meetingId",),)),
    "connectionMetrics": ("cmx", (("meetingId",),)),
    "transcripts": ("trn", (("meetingId", "sequence"), ("meetingId", "bucketMs"))),
    "meetingCounters": ("mct", (("meetingId",),)),
    "rateLimits": ("rlm", (("userId", "action", "windowStartMs"),)),
    "devRoomOverrides": ("dro", (("meetingId",),)),
}

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford's base32, lower case
_ID_LENGTH = 26


IdStyle = Literal["convex", "convex-test"]
"""convex: a table tag and 26 base32 letters, shaped like a deployment's ids; convex-test: what
Convex's test library hands out, a number and the table ("10004;meetings"). Clients must take
both as opaque: `serve --ids convex-test` is how the tests prove it."""


def new_id(table: str, style: IdStyle = "convex", number: int = 0) -> str:
    if style == "convex-test":
        return f"{10_000 + number};{table}"
    return TABLES[table][0] + "_" + "".join(secrets.choice(_ALPHABET) for _ in range(_ID_LENGTH))


def is_id(table: str, value: str) -> bool:
    """Whether `value` is shaped like an id of `table` (what Convex's v.id(table) checks)."""
    number, test_table = value.partition(";")[::2]
    if test_table:
        return test_table == table and number.isdigit()
    tag, rest = value.partition("_")[::2]
    return tag == TABLES[table][0] and len(rest) == _ID_LENGTH and all(c in _ALPHABET for c in rest)


def _columns(table: str) -> list[str]:
    seen: dict[str, None] = {}
    for index in TABLES[table][1]:
        seen.update(dict.fromkeys(index))
    return list(seen)


def _schema() -> Iterator[str]:
    for table, (_, indexes) in TABLES.items():
        cols = "".join(f', "{c}"' for c in _columns(table))
        yield (
            f'CREATE TABLE IF NOT EXISTS "{table}" (ord INTEGER PRIMARY KEY AUTOINCREMENT,'
            f" id TEXT NOT NULL UNIQUE, doc TEXT NOT NULL{cols})"
        )
        for index in indexes:
            name = f"{table}_by_" + "_".join(index)
            cols = ", ".join(f'"{c}"' for c in index)
            yield f'CREATE INDEX IF NOT EXISTS "{name}" ON "{table}" ({cols}, ord)'
    yield "CREATE TABLE IF NOT EXISTS devMeta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"


class Store:
    """One connection, one writer at a time: each function runs as one serialised transaction,
    as Convex mutations do."""

    def __init__(self, path: Path, ids: IdStyle | None = None) -> None:
        """`ids` sets the style of new ids for good (kept in the file, so `connvo-agent token`
        follows it); None keeps the file's."""
        self._lock = threading.Lock()
        self._ids: IdStyle = "convex"
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=10000")  # `connvo-agent token` may write meanwhile
        with self.transaction():
            for statement in _schema():
                self._db.execute(statement)
            if ids is not None:
                self._db.execute("INSERT OR REPLACE INTO devMeta VALUES ('ids', ?)", [ids])
            row = self._db.execute("SELECT value FROM devMeta WHERE key = 'ids'").fetchone()
        self._ids = row[0] if row else "convex"

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            tx = Tx(self._db, self._ids)
            try:
                yield tx
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()


@dataclass(frozen=True)
class Read:
    """What one lookup depended on: the documents of `table` whose fields equal `where`."""

    table: str
    where: tuple[tuple[str, Any], ...]

    def matches(self, table: str, doc: Doc) -> bool:
        return table == self.table and all(_equals(doc.get(k), v) for k, v in self.where)


@dataclass(frozen=True)
class Write:
    """One document as it was before a write (None: inserted) and after it."""

    table: str
    before: Doc | None
    after: Doc


class Tx:
    """Reads and writes inside one transaction. Patching a field to None removes it, as
    patching to `undefined` does in Convex. Every lookup is kept in `reads` and every write in
    `writes`, so the sync protocol knows which subscribed queries a mutation changed."""

    def __init__(self, db: sqlite3.Connection, ids: IdStyle = "convex") -> None:
        self._db = db
        self._ids = ids
        self.reads: list[Read] = []
        self.writes: list[Write] = []

    def _read(self, table: str, where: dict[str, Any]) -> None:
        frozen = tuple(
            (k, frozenset(v) if isinstance(v, list | tuple | set | frozenset) else v)
            for k, v in where.items()
        )
        self.reads.append(Read(table, frozen))

    def insert(self, table: str, fields: Doc) -> str:
        doc: Doc = {"_id": self._new_id(table), "_creationTime": time.time() * 1000}
        doc.update((k, v) for k, v in fields.items() if v is not None)
        cols = _columns(table)
        names = "".join(f', "{c}"' for c in cols)
        marks = ", ?" * len(cols)
        self._db.execute(
            f'INSERT INTO "{table}" (id, doc{names}) VALUES (?, ?{marks})',
            [doc["_id"], json.dumps(doc), *(doc.get(c) for c in cols)],
        )
        self.writes.append(Write(table, None, doc))
        return doc["_id"]

    def _new_id(self, table: str) -> str:
        if self._ids == "convex":
            return new_id(table)
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", [table]).fetchone()
        return new_id(table, "convex-test", (row[0] if row else 0) + 1)

    def get(self, table: str, doc_id: str) -> Doc | None:
        self._read(table, {"_id": doc_id})
        row = self._db.execute(f'SELECT doc FROM "{table}" WHERE id = ?', [doc_id]).fetchone()
        return json.loads(row[0]) if row else None

    def patch(self, table: str, doc_id: str, fields: Doc) -> Doc:
        doc = self.get(table, doc_id)
        if doc is None:
            raise KeyError(f"{table} has no document {doc_id}")
        before = dict(doc)
        for key, value in fields.items():
            if value is None:
                doc.pop(key, None)
            else:
                doc[key] = value
        cols = _columns(table)
        sets = "".join(f', "{c}" = ?' for c in cols)
        self._db.execute(
            f'UPDATE "{table}" SET doc = ?{sets} WHERE id = ?',
            [json.dumps(doc), *(doc.get(c) for c in cols), doc_id],
        )
        self.writes.append(Write(table, before, doc))
        return doc

    def find(
        self, table: str, *, limit: int | None = None, newest_first: bool = False, **where: Any
    ) -> list[Doc]:
        """Documents whose fields equal `where` (a list/tuple/set value means any of them)."""
        self._read(table, where)
        clauses, params = _where(table, where)
        sql = f'SELECT doc FROM "{table}"{clauses} ORDER BY ord {"DESC" if newest_first else ""}'
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [json.loads(row[0]) for row in self._db.execute(sql, params)]

    def first(self, table: str, **where: Any) -> Doc | None:
        found = self.find(table, limit=1, **where)
        return found[0] if found else None

    def latest(self, table: str, **where: Any) -> Doc | None:
        found = self.find(table, limit=1, newest_first=True, **where)
        return found[0] if found else None

    def count(self, table: str, **where: Any) -> int:
        self._read(table, where)
        clauses, params = _where(table, where)
        return self._db.execute(f'SELECT count(*) FROM "{table}"{clauses}', params).fetchone()[0]


def _equals(value: Any, wanted: Any) -> bool:
    if isinstance(wanted, frozenset):
        return value in wanted
    return value == wanted


def _where(table: str, where: dict[str, Any]) -> tuple[str, list[Any]]:
    """SQL for `where`. Only indexed fields are columns: SQLite would read any other quoted
    name as a string literal and silently match nothing."""
    if unknown := set(where) - set(_columns(table)):
        raise KeyError(f"{table} cannot be looked up by {sorted(unknown)}: not an indexed field")
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in where.items():
        if isinstance(value, list | tuple | set | frozenset):
            values = list(value)
            clauses.append(f'"{column}" IN ({", ".join("?" * len(values))})')
            params.extend(values)
        elif value is None:
            clauses.append(f'"{column}" IS NULL')
        else:
            clauses.append(f'"{column}" = ?')
            params.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

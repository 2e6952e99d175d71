"""What a dev backend is started with. Defaults keep every byte on this machine."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from signaling.devserver.store import IdStyle

DEFAULT_TRANSCRIPT_RATE = 50
"""Transcript chunks per user per minute: the real backend's limit (docs/contract/BACKEND.md,
"Observed on Connvo's own functions"), so the transcriber is tested against what it will meet."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8787
    stun_urls: tuple[str, ...] = ()
    """Empty by default: the real deployment's public STUN servers would send traffic away."""
    turn_url: str | None = None
    turn_username: str | None = None
    turn_credential: str | None = field(default=None, repr=False)
    transcript_rate: int = DEFAULT_TRANSCRIPT_RATE
    access_log: bool = True
    ids: IdStyle = "convex"
    """The shape of new ids (store.IdStyle): convex-test's "10004;meetings" proves clients take
    ids as opaque."""

    @property
    def database(self) -> Path:
        return self.data_dir / "connvo.sqlite3"

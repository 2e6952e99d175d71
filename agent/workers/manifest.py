"""`manifest.json`: what the recorder wrote, readable while it runs and after it is killed.

It is rewritten whole (temp file + os.replace) whenever a file opens or closes and every few
seconds, so a reader never sees half a manifest and a SIGKILL leaves every file listed, with its
last-known duration and `complete: false`.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

NAME = "manifest.json"


def stamp(epoch: float) -> str:
    """For file names: sorts by time, readable, no characters a filesystem dislikes."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y%m%dT%H%M%SZ")


def times(prefix: str, epoch: float | None) -> dict[str, Any]:
    """Both forms: ISO for people, epoch ms for programs (Connvo's own timestamps)."""
    if epoch is None:
        return {prefix: None, f"{prefix}Ms": None}
    iso = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
    return {prefix: iso.replace("+00:00", "Z"), f"{prefix}Ms": round(epoch * 1000)}


def write(directory: Path, document: dict[str, Any]) -> None:
    target = directory / NAME
    temp = directory / f".{NAME}.tmp"
    temp.write_text(json.dumps(document, indent=2) + "\n")
    os.replace(temp, target)

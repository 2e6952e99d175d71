"""Ids are opaque: a deployment decides their shape, and a client must not be stricter.

Convex's own ids are base32 strings (`jd7f...`), convex-test's are `10004;meetings`, and a
deployment may change its shape. So a client refuses only what cannot be an id at all and lets
the deployment answer for the rest; where an id becomes part of a file name, it is made safe
without letting two ids meet in one name.
"""

from __future__ import annotations

import hashlib
import re

MAX_ID = 256
"""Characters. Convex's ids are about 32; anything this long is a mistake, not an id."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def problem(value: str) -> str | None:
    """Why `value` cannot be an id (empty, whitespace or control characters, absurd length), or
    None when only the deployment can tell."""
    if not value:
        return "is empty"
    if len(value) > MAX_ID:
        return f"is longer than {MAX_ID} characters"
    if any(c.isspace() or not c.isprintable() for c in value):
        return "holds whitespace or control characters"
    return None


def file_part(value: str) -> str:
    """`value` as part of a file name: unchanged when it is made of letters, digits, '.', '_'
    and '-' (and does not start with '.'); otherwise those kept, the rest replaced by '-', and
    a short hash of the id added, so that `a;b` and `a-b` never share a file."""
    safe = _UNSAFE.sub("-", value)
    if safe == value and not value.startswith("."):
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:8]
    return f"{safe.lstrip('.')}-{digest}"

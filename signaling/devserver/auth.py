"""Dev identities: HS256 JWTs whose `sub` is a user's workosUserId, signed with a secret that
lives in the data dir (mode 0600), so tokens survive a restart and die with the data dir.

The real deployment verifies WorkOS tokens; here anyone with the data dir can mint one, which is
the point of a dev backend. Tokens and the secret never go into logs or error texts.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import jwt

from signaling.devserver.settings import Settings
from signaling.devserver.store import Store, Tx

ISSUER = "connvo-dev"
DEFAULT_TTL = 7 * 24 * 3600.0
_SECRET_FILE = "jwt-secret"


class InvalidToken(Exception):
    """The bearer token was not issued by this data dir's secret, or has expired."""


def load_secret(data_dir: Path) -> bytes:
    """The data dir's signing secret, created (readable by its owner only) on first use."""
    path = Path(data_dir) / _SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_hex(32).encode())
    return path.read_bytes().strip()


def verify(token: str, secret: bytes) -> str:
    """The token's subject, or InvalidToken (whose text never repeats the token)."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=["HS256"], issuer=ISSUER, options={"require": ["exp", "sub"]}
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("expired") from None
    except jwt.PyJWTError:
        raise InvalidToken("not verifiable") from None
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise InvalidToken("no subject")
    return subject


def provision_user(data_dir: Path | str, user_name: str, *, admin: bool | None = None) -> str:
    """The `_id` of the user whose workosUserId is `user_name`, created if new (an org member
    unless `admin`). `admin` True or False also sets an existing user's org role; admins are
    on the "paid" plan, which picks getstream for large rooms."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(Settings(data_dir).database)
    try:
        with store.transaction() as tx:
            return upsert_user(tx, user_name, admin)
    finally:
        store.close()


def upsert_user(tx: Tx, user_name: str, admin: bool | None) -> str:
    now = int(time.time() * 1000)
    role = None if admin is None else ("admin" if admin else "member")
    user = tx.first("users", workosUserId=user_name)
    if user is not None:
        if role is not None and user.get("orgRole") != role:
            tx.patch("users", user["_id"], {"orgRole": role, "updatedAt": now})
        return user["_id"]
    return tx.insert(
        "users",
        {
            "workosUserId": user_name,
            "email": f"{user_name}@example.com",
            "displayName": user_name,
            "orgId": "org_dev",
            "orgRole": role or "member",
            "isActive": True,
            "lastSeenAt": now,
            "createdAt": now,
            "updatedAt": now,
        },
    )


def mint_token(
    data_dir: Path | str, user_name: str, *, admin: bool = False, ttl: float = DEFAULT_TTL
) -> str:
    """A bearer token for `user_name`, provisioning the user first with the org role `admin`
    asks for (see provision_user)."""
    provision_user(data_dir, user_name, admin=admin)
    return sign(user_name, load_secret(Path(data_dir)), ttl)


def sign(user_name: str, secret: bytes, ttl: float = DEFAULT_TTL) -> str:
    """A token for a user that exists already."""
    now = int(time.time())
    claims = {"sub": user_name, "iss": ISSUER, "iat": now, "exp": now + int(ttl)}
    return jwt.encode(claims, secret, algorithm="HS256")

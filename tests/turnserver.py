"""A real coturn on loopback for relay tests (installed by scripts/setup.sh)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from lanes import require_marker

from signaling.devserver import DevServer


@dataclass(frozen=True)
class Turn:
    url: str
    username: str
    credential: str = field(repr=False)
    log: Path
    pid: int


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def coturn(workdir: Path) -> Iterator[Turn]:
    require_marker("turn", "coturn")
    binary = shutil.which("turnserver")
    if binary is None:
        raise RuntimeError("coturn is not installed: run scripts/setup.sh")
    port = _free_udp_port()
    log = workdir / "turnserver.log"
    user, password = "connvo", "turn-secret-for-tests"
    args = [
        binary,
        "-n",
        "--listening-ip=127.0.0.1",
        f"--listening-port={port}",
        "--relay-ip=127.0.0.1",
        "--min-port=49400",
        "--max-port=49900",
        f"--user={user}:{password}",
        "--realm=connvo",
        "--lt-cred-mech",
        "--no-tls",
        "--no-dtls",
        "--no-tcp-relay",
        "--allow-loopback-peers",
        "--no-cli",
        "--fingerprint",
        "--no-software-attribute",
        "--simple-log",
        f"--log-file={log}",
        f"--pidfile={workdir / 'turnserver.pid'}",
        f"--db={workdir / 'turndb'}",
    ]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while "Total General servers" not in (log.read_text() if log.exists() else ""):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"coturn did not start; its log is {log}")
            time.sleep(0.05)
        yield Turn(f"turn:127.0.0.1:{port}?transport=udp", user, password, log, process.pid)
    finally:
        process.terminate()
        process.wait(timeout=5)


@contextmanager
def relayed_backend(workdir: Path, **options: object) -> Iterator[tuple[Turn, DevServer]]:
    """A coturn on loopback and a dev backend (in workdir/backend) whose rooms hand it out."""
    with (
        coturn(workdir) as turn,
        DevServer(
            workdir / "backend",
            turn_url=turn.url,
            turn_username=turn.username,
            turn_credential=turn.credential,
            **options,  # type: ignore[arg-type]
        ) as server,
    ):
        yield turn, server

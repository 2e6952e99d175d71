"""A dev backend in a child process on a free loopback port, for tests and demos.

    with DevServer() as server:               # or: async with DevServer() as server
        token = server.token("alice")
        api = ConnvoAPI(server.url, token)

The child runs `python -m agent serve --port 0` and writes its output to `devserver.log` in the
data dir (a file, not a pipe nobody drains); the URL comes from its ready line, and `restart()`
comes back on the same port, so clients holding the URL reconnect. Stopping keeps
the data dir, so `restart()` comes back with everything; a temp dir made here is removed on
exit from the `with` block.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx

from signaling.devserver.auth import mint_token, provision_user

_READY = re.compile(r"connvo dev backend on (http://\S+) \(data ")
LOG_FILE = "devserver.log"


class DevServerError(RuntimeError):
    """The dev backend did not come up; the message carries the end of its output."""


class DevServer:
    def __init__(
        self,
        data_dir: Path | str | None = None,
        *,
        host: str = "127.0.0.1",
        stun_urls: tuple[str, ...] = (),
        turn_url: str | None = None,
        turn_username: str | None = None,
        turn_credential: str | None = None,
        transcript_rate: int | None = None,
        access_log: bool = False,
        ids: str | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self._owns_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="connvo-dev-"))
        self.host = host
        self.startup_timeout = startup_timeout
        self._options = _options(stun_urls, turn_url, turn_username, transcript_rate, access_log)
        if ids is not None:
            self._options += ["--ids", ids]
        self._env = {"CONNVO_TURN_CREDENTIAL": turn_credential} if turn_credential else {}
        self._process: subprocess.Popen[bytes] | None = None
        self._url: str | None = None
        self._port = 0

    def __repr__(self) -> str:
        return f"DevServer({self._url or 'stopped'}, data={self.data_dir})"

    @property
    def url(self) -> str:
        if self._url is None:
            raise DevServerError("the dev backend is not running")
        return self._url

    @property
    def pid(self) -> int:
        """The backend's process (a test stalls it with SIGSTOP)."""
        if self._process is None:
            raise DevServerError("the dev backend is not running")
        return self._process.pid

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_FILE

    def token(self, user_name: str, *, admin: bool = False) -> str:
        return mint_token(self.data_dir, user_name, admin=admin)

    def user_id(self, user_name: str) -> str:
        """The user's `_id` (provisioned as an org member if new)."""
        return provision_user(self.data_dir, user_name)

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> DevServer:
        if self._process is not None:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "agent",
            "serve",
            "--host",
            self.host,
            "--port",
            str(self._port),
            "--data",
            str(self.data_dir),
            *self._options,
        ]
        with self.log_path.open("ab") as log:
            offset = log.tell()
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self._env, "PYTHONUNBUFFERED": "1"},
                preexec_fn=_die_with_parent,
            )
        try:
            self._url = self._await_ready(offset)
            self._port = int(self._url.rsplit(":", 1)[1])  # a restart comes back on the same port
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        process, self._process, self._url = self._process, None, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> DevServer:
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stops, and removes the data dir if this object made it."""
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> DevServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> DevServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.close)

    # --- waiting for the ready line ------------------------------------------------------------

    def _await_ready(self, offset: int) -> str:
        deadline = time.monotonic() + self.startup_timeout
        assert self._process is not None
        while time.monotonic() < deadline:
            output = self._output(offset)
            found = _READY.search(output)
            if found and _answers(found.group(1)):
                return found.group(1)
            if self._process.poll() is not None:
                raise DevServerError(
                    f"the dev backend exited with code {self._process.returncode}:\n{output}"
                )
            time.sleep(0.05)
        raise DevServerError(
            f"the dev backend did not start within {self.startup_timeout:.0f}s:\n"
            f"{self._output(offset)}"
        )

    def _output(self, offset: int) -> str:
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read()[-8000:].decode(errors="replace")


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM when its parent dies, even by SIGKILL; no orphan servers."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def _answers(url: str) -> bool:
    try:
        with httpx.Client(trust_env=False, timeout=2.0) as http:
            return http.get(f"{url}/version").status_code == 200
    except httpx.HTTPError:
        return False


def _options(
    stun_urls: tuple[str, ...],
    turn_url: str | None,
    turn_username: str | None,
    transcript_rate: int | None,
    access_log: bool,
) -> list[str]:
    """Command-line options; the TURN credential goes by environment, out of `ps`."""
    options = [part for url in stun_urls for part in ("--stun-url", url)]
    for flag, value in (
        ("--turn-url", turn_url),
        ("--turn-username", turn_username),
        ("--transcript-rate", transcript_rate),
    ):
        if value is not None:
            options += [flag, str(value)]
    return options if access_log else [*options, "--quiet"]

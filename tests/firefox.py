"""Debian's Firefox ESR, headless, driven through Marionette (Mozilla's own protocol, no
downloaded browser or driver), with fake camera and microphone.

Firefox gathers ICE candidates on every interface it sees, whatever its prefs say, so it is
started inside a namespace of the test's own (tests/netns.py) where loopback is all there is.

    with Firefox.started(workdir, origin=backend.url) as firefox:
        await firefox.open(backend.url + "/")
        await firefox.js("return document.title")
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from marionette_driver.marionette import Marionette

FIREFOX = shutil.which("firefox-esr") or shutil.which("firefox")
PORT = 2828  # Marionette's: free in a namespace of our own

PREFS: dict[str, Any] = {
    # fake devices, no prompts; loopback candidates, with their addresses (no mDNS names)
    "media.navigator.streams.fake": True,
    "media.navigator.permission.disabled": True,
    "media.peerconnection.ice.loopback": True,
    "media.peerconnection.ice.obfuscate_host_addresses": False,
    "media.autoplay.default": 0,
    # no calls out: updates, telemetry, studies, safe browsing, captive portal and connectivity
    # checks, DNS prefetch and DNS over HTTPS, push, add-on and plugin (OpenH264) downloads
    "app.update.disabledForTesting": True,
    "app.normandy.enabled": False,
    "browser.region.update.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.blockedURIs.enabled": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.page": 0,
    "datareporting.healthreport.uploadEnabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "dom.push.connection.enabled": False,
    "extensions.getAddons.cache.enabled": False,
    "extensions.update.enabled": False,
    "media.gmp-manager.updateEnabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "network.dns.disablePrefetch": True,
    "network.http.speculative-parallel-limit": 0,
    "network.predictor.enabled": False,
    "network.prefetch-next": False,
    "network.trr.mode": 5,
    "services.settings.server": "data:,#remote-settings-dummy/v1",
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "marionette.port": PORT,
}


def write_profile(profile: Path, origin: str) -> None:
    """Prefs, and a camera and microphone permission stored for `origin`: without one Firefox
    gathers candidates on the default route's address only (and a namespace has no route)."""
    profile.mkdir(parents=True, exist_ok=True)
    permissions = profile / "permissions.txt"
    permissions.write_text(
        "".join(f"origin\t{kind}\t1\t{origin}\n" for kind in ("camera", "microphone"))
    )
    prefs = {**PREFS, "permissions.manager.defaultsUrl": permissions.as_uri()}
    lines = (f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in prefs.items())
    (profile / "user.js").write_text("".join(lines))


class Firefox:
    def __init__(self, client: Marionette) -> None:
        self.client = client

    @classmethod
    @contextlib.contextmanager
    def started(cls, workdir: Path, *, origin: str) -> Iterator[Firefox]:
        if FIREFOX is None:
            raise RuntimeError("Firefox is not installed: run scripts/setup.sh")
        profile = workdir / "profile"
        write_profile(profile, origin)
        env = {**os.environ, "HOME": str(workdir), "MOZ_REMOTE_SETTINGS_DEVTOOLS": "1"}
        with (workdir / "firefox.log").open("wb") as log:
            process = subprocess.Popen(
                [FIREFOX, "--marionette", "-headless", "-no-remote", "-profile", str(profile)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            client = Marionette(host="127.0.0.1", port=PORT, startup_timeout=60)
            client.start_session()
            yield cls(client)
            with contextlib.suppress(Exception):
                client.delete_session()
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    async def open(self, url: str) -> None:
        await asyncio.to_thread(self.client.navigate, url)

    async def js(self, body: str, *args: Any) -> Any:
        """The value of `body`, an async function's body in the page's own scope (its globals
        are seen, `await` works, `args` are `args[0]`, ...); its exceptions are raised here."""
        script = (
            "const done = arguments[arguments.length - 1];"
            f"(async (...args) => {{ {body} }})(...[...arguments].slice(0, -1))"
            ".then((value) => done({value}), (e) => done({error: String(e?.stack ?? e)}));"
        )
        answer = await asyncio.to_thread(
            self.client.execute_async_script, script, script_args=args, sandbox=None
        )
        if "error" in answer:
            raise RuntimeError(f"in Firefox: {answer['error']}")
        return answer.get("value")

    async def until(self, condition: str, *args: Any, timeout: float = 30.0) -> Any:
        """Polls `condition` (a function body, as for `js`) until it answers something truthy."""
        deadline = time.monotonic() + timeout
        while not (value := await self.js(condition, *args)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"still false after {timeout} s: {condition}")
            await asyncio.sleep(0.2)
        return value

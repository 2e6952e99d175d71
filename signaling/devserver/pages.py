"""The meeting page: a browser participant served by the dev backend.

`/` signs a person in (a dev user name; the server mints the token, as `connvo-agent token`
does), lists their meetings and creates one; `/meet/{meetingId}` joins it. The page is plain
HTML, CSS and ES modules from `web/`: no build step, nothing fetched from elsewhere, so it works
offline. It speaks the README's mesh convention through the same functions as the bots, with
the same numbers: `/web/convention.js` is made from `signaling.convention`.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from signaling import convention
from signaling.devserver.auth import sign
from signaling.devserver.handlers import ENDPOINTS
from signaling.devserver.lobby import USER_NAME

if TYPE_CHECKING:
    from signaling.devserver.backend import Backend

PAGES = Path(__file__).parent / "web"
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; media-src 'self' blob: mediastream:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
    ),
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
"""Chat text and display names come from other participants: the page only ever sets them as
text, and the policy forbids any script or connection not from this server besides."""
MAX_SIGN_IN = 1024


def page_routes(backend: Backend) -> list[BaseRoute]:
    return [
        Route("/", _page("index.html"), methods=["GET"]),
        Route("/meet/{meeting_id}", _page("meet.html"), methods=["GET"]),
        Route("/web/convention.js", _convention, methods=["GET"]),
        Mount("/web", app=_Static(directory=PAGES), name="web"),
        Route("/dev/signin", _sign_in(backend), methods=["POST"]),
    ]


def _page(name: str):
    async def page(request: Request) -> Response:
        return FileResponse(PAGES / name, headers=HEADERS)

    return page


async def _convention(request: Request) -> Response:
    """`signaling.convention` as an ES module, with the path of every function this backend
    serves by its name (`FN.getPendingSignals`): the page imports them, never copies them."""
    values = {name: value for name, value in vars(convention).items() if name.isupper()}
    values["FN"] = {path.rsplit("/", 1)[-1]: path for path in ENDPOINTS}
    lines = [f"export const {name} = {json.dumps(value)};" for name, value in values.items()]
    module = "\n".join(["// Made by the dev backend from signaling/convention.py.", *lines, ""])
    return Response(module, media_type="text/javascript", headers=HEADERS)


class _Static(StaticFiles):
    async def get_response(self, path: str, scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(HEADERS)
        return response


def _sign_in(backend: Backend):
    async def sign_in(request: Request) -> JSONResponse:
        """`{"name"}` -> `{"token", "userId", "name"}`: anyone who can reach a dev backend may
        be any of its members, as anyone with its data dir may (`connvo-agent token`); admins
        are only minted by that command."""
        try:
            name = _name_of(await _body_of(request))
            user = await backend.provision(name)
            if user.get("orgRole") == "admin":
                raise _Refused(403, "admins sign in with a token from `connvo-agent token --admin`")
        except _Refused as e:
            return JSONResponse({"error": e.message}, status_code=e.status)
        token = sign(name, backend.secret)
        return JSONResponse({"token": token, "userId": user["_id"], "name": name})

    return sign_in


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message


async def _body_of(request: Request) -> bytes:
    """The body of a sign-in that only this server's own page can send: JSON (a form or a
    plain-text POST from another site is refused; JSON needs a CORS preflight nobody answers),
    to an address, not a name (a site whose name was rebound to 127.0.0.1 is refused), capped."""
    host = request.url.hostname or ""
    if host != "localhost" and not _is_address(host):
        raise _Refused(403, f"sign in at an address (e.g. http://127.0.0.1), not at {host!r}")
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise _Refused(415, "the request must be application/json")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_SIGN_IN:
            raise _Refused(413, "the request is too large")
    return body


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _name_of(body: bytes) -> str:
    try:
        name = json.loads(body).get("name")
    except (ValueError, AttributeError, RecursionError):
        raise _Refused(400, 'the request is not JSON of the form {"name": ...}') from None
    if not isinstance(name, str) or not re.fullmatch(USER_NAME, name.strip()):
        raise _Refused(400, "a name is 1 to 64 characters: letters, digits, '.', '_' or '-'")
    return name.strip()

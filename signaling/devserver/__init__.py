"""A Connvo-compatible backend for local use and tests: Convex's HTTP API over SQLite.

Entry points: `serve(Settings(...))` (blocking), `DevServer` (a child process for tests and
demos), `mint_token(data_dir, user)`, `create_app(settings)` (the ASGI app).

Where the real backend is odd, this one copies it. Deliberate differences:
- bad or expired tokens answer UNAUTHORIZED as a function error (Convex rejects them earlier,
  in its own format);
- the newest room configuration row is used where the real code fails once a meeting has two;
- `rateLimitRemaining` is the real remaining count (the real code answers 0); the per-user
  transcript limit is `--transcript-rate` per minute (default 50, the real one);
- `getTranscriptChunks` without `bucketMs` returns every chunk (the real one, about 30 minutes);
- arguments are checked strictly: id fields must look like ids of their table;
- the `dev/*` functions (`dev/configureRoom`; the meeting page's `dev/myMeetings` and
  `dev/invite`) and the page itself (`/`, `/meet/{id}`, `POST /dev/signin`) exist only here.
"""

from signaling.devserver.app import create_app
from signaling.devserver.auth import mint_token, provision_user
from signaling.devserver.process import DevServer, DevServerError
from signaling.devserver.server import serve
from signaling.devserver.settings import Settings

__all__ = [
    "DevServer",
    "DevServerError",
    "Settings",
    "create_app",
    "mint_token",
    "provision_user",
    "serve",
]

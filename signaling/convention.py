"""The numbers of the README's mesh convention, and of the sync socket that carries it, in one
place: the bots take their defaults from here, and the dev backend serves the same values to the
meeting page as `/web/convention.js` (with every function path), so the two sides cannot drift
apart. tests/test_convention.py checks that the page takes them from there.

Every upper-case name here reaches the page as it is. Times are in seconds.
"""

# Reading signals (item 6)
POLL_FAST = 0.05
"""While a negotiation is in flight (or signals just arrived), where nothing is pushed."""
POLL_IDLE = 1.0
"""The longest wait between polls: each one is a billed call."""
SIGNAL_PAGE = 50
"""getPendingSignals answers at most this many: a full page is read again at once."""
REMEMBERED_SIGNALS = 4096
"""Signal ids kept, so that none is handled twice."""
TRICKLE_WINDOW = 3.0
"""After a description, trickled candidates are worth polling fast for this long."""

# Sessions (items 3 and 6)
DISCOVERY_INTERVAL = 5.0
"""Where the session list is not pushed: how often it is read again."""
ANSWER_TIMEOUT = 10.0
"""An offer (or answer) not connected by then is a stale session."""
STALE_RETRY = 30.0
"""A stale session is offered to again after this, twice as long after each unanswered try..."""
STALE_RETRY_MAX = 600.0
"""...up to this."""
MAX_STALE = 1024
"""Stale sessions remembered; the oldest are forgotten first."""

# Descriptions and candidates (items 4 to 6)
MAX_SDP = 64 * 1024
"""Characters of one SDP; real ones are a few KiB."""
MAX_MLINES = 8
"""A mesh connection has at most 4 (audio, camera, screen, data); more is not a participant."""
MAX_CANDIDATE = 1024
"""Characters of one candidate line; real ones are about 100."""
MAX_EARLY_SESSIONS = 32
"""Sessions whose candidates are held until their description arrives."""
MAX_EARLY_CANDIDATES = 64
"""Per session; a browser trickles a few dozen at most."""

# Chat (item 7)
MAX_CHAT_TEXT = 16 * 1024
"""Bytes of UTF-8 text in one message."""
MAX_CHAT_WIRE = 6 * MAX_CHAT_TEXT + 1024
"""Characters of one message as received: the text escaped by JSON at worst, and its envelope."""
MAX_CHAT_ID = 128
CHAT_OUTBOX = 64
"""Messages held for a channel that is not open yet; the oldest are dropped first."""
CHAT_BURST = 128
"""Messages taken from one participant at once (twice its outbox, which a reconnect flushes)..."""
CHAT_RATE = 20
"""...and per second after that: past them a message is dropped unread and counted, so what a
participant's chat costs us is bounded however fast it sends."""

# Health (item 8)
QUALITY_INTERVAL = 5.0
"""How often peers are measured and quality reported; silence is noticed at this pace."""
DEAD_AFTER = 15.0
"""A peer not connected, or whose media stopped arriving, this long has left."""

# The sync socket (README, "Signals pushed")
SYNC_OPEN_TIMEOUT = 5.0
"""For the TCP connection, TLS and the upgrade together, as the HTTP transports' connect."""
SYNC_BACKOFF = (0.1, 5.0)
"""First and longest wait between reconnects (doubling, with jitter), as convex-js waits."""
SYNC_HEALTHY = 10.0
"""A socket must stay up this long before a drop starts the backoff over."""
SYNC_INACTIVE = 30.0
"""A server silent this long is gone (convex-rs's SERVER_INACTIVITY_THRESHOLD)."""
MAX_CHUNKS = 1024
"""Parts of one chunked transition: with the 16 MiB cap, parts of 16 KiB at least."""
MAX_ANSWER_BYTES = 16 * 1024 * 1024
"""The largest answer or pushed result read: Convex's own limit on a function's return value.
Not lower: other participants choose what our signal pages hold (up to 1 MiB a signal, Convex's
document limit), so a smaller cap would let one of them stop us reading signals that Convex
itself still returns. A page we act on is far smaller (an SDP over 64 KiB is refused, about
4.5 MiB for a full page)."""

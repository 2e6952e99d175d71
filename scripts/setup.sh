#!/usr/bin/env bash
# Sets a fresh machine up: system tools (coturn, espeak-ng, chromium and firefox-esr for the
# meeting page's browser tests, iproute2 and util-linux for the network namespaces of the Firefox
# and Ray tests) and the project's virtualenv.
# Idempotent and quiet when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v turnserver >/dev/null || need+=(coturn)
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v chromium >/dev/null || need+=(chromium)
command -v firefox-esr >/dev/null || need+=(firefox-esr)
command -v ip >/dev/null || need+=(iproute2)
command -v unshare >/dev/null || need+=(util-linux)
if ((${#need[@]})); then
    echo "setup: installing ${need[*]} from Debian's packages" >&2
    sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
    log=$(mktemp)
    if ! { $sudo_ apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        $sudo_ apt-get install -y -qq --no-install-recommends "${need[@]}"; } >"$log" 2>&1; then
        cat "$log" >&2
        echo "setup: installing ${need[*]} failed (output above)" >&2
        exit 1
    fi
    rm -f "$log"
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
    echo "setup: installing Python packages into .venv" >&2
    log=$(mktemp)
    if ! { .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e '.[dev]'; } \
        >"$log" 2>&1; then
        cat "$log" >&2
        echo "setup: installing Python packages failed (output above)" >&2
        exit 1
    fi
    rm -f "$log"
    rm -f .venv/.installed-* && touch "$stamp"
fi

#!/usr/bin/env bash
# Sets a fresh machine up: system tools (coturn, espeak-ng) and the project's virtualenv.
# Idempotent and quiet when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v turnserver >/dev/null || need+=(coturn)
command -v espeak-ng >/dev/null || need+=(espeak-ng)
if ((${#need[@]})); then
    echo "setup: installing ${need[*]} from Debian's packages" >&2
    sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
    $sudo_ apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
    echo "setup: installing Python packages into .venv" >&2
    .venv/bin/pip install -q --upgrade pip >&2
    .venv/bin/pip install -q -e '.[dev]' >&2
    rm -f .venv/.installed-* && touch "$stamp"
fi

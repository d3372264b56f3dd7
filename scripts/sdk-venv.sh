#!/usr/bin/env bash
# Creates .venv-sdk/ (Python 3.13, which the wrenn SDK needs) with tests/sdk/requirements.txt.
# Idempotent: a venv that already has the current requirements installed is left alone.
#   scripts/sdk-venv.sh            create or update .venv-sdk
#   .venv-sdk/bin/python -m pytest tests/sdk
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=.venv-sdk
REQS=tests/sdk/requirements.txt

is_313() { "$@" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' >/dev/null 2>&1; }

# pyenv's 3.13.0 first (what this machine has), then any python3.13 on PATH.
if is_313 env PYENV_VERSION=3.13.0 python3.13; then
    PY=(env PYENV_VERSION=3.13.0 python3.13)
elif command -v python3.13 >/dev/null && is_313 python3.13; then
    PY=(python3.13)
else
    echo "error: Python 3.13 not found (wanted pyenv's 3.13.0 or python3.13 on PATH)" >&2
    exit 1
fi

if [[ -x $VENV/bin/python ]] && ! is_313 "$VENV/bin/python"; then
    echo "==> $VENV is not Python 3.13: recreating it" >&2
    rm -rf "$VENV"
fi
if [[ ! -x $VENV/bin/python ]]; then
    echo "==> creating $VENV with $("${PY[@]}" --version)" >&2
    "${PY[@]}" -m venv "$VENV"
fi

stamp="$VENV/.requirements.sha256"
want=$(sha256sum "$REQS" | cut -d' ' -f1)
if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
    exit 0
fi
echo "==> installing $REQS into $VENV" >&2
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS"
echo "$want" >"$stamp"

#!/usr/bin/env bash
# Creates .venv-api/ with tests/api/requirements.txt (schemathesis, pytest) for the API fuzz
# suite. Idempotent: a venv that already has the current requirements installed is left alone.
#   scripts/api-venv.sh            create or update .venv-api
#   .venv-api/bin/python -m pytest tests/api
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=.venv-api
REQS=tests/api/requirements.txt
PY=${PYTHON:-python3}

ok_version() { "$@" -c 'import sys; sys.exit(sys.version_info < (3, 10))' >/dev/null 2>&1; }

ok_version "$PY" || {
    echo "error: $PY is missing or older than 3.10 (schemathesis needs >= 3.10)" >&2
    exit 1
}
if [[ -x $VENV/bin/python ]] && ! ok_version "$VENV/bin/python"; then
    echo "==> $VENV is too old: recreating it" >&2
    rm -rf "$VENV"
fi
if [[ ! -x $VENV/bin/python ]]; then
    echo "==> creating $VENV with $("$PY" --version)" >&2
    "$PY" -m venv "$VENV"
fi

stamp="$VENV/.requirements.sha256"
want=$(sha256sum "$REQS" | cut -d' ' -f1)
if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
    exit 0
fi
echo "==> installing $REQS into $VENV" >&2
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS"
echo "$want" >"$stamp"

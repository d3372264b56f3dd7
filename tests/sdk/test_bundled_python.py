"""The bundled `python` recipe (recipes/python): built through the API with the CLI
(`wrenn template build --bundled python`), it becomes a `base` template whose capsules run as
`wrenn-user` with a venv on PATH holding requests, numpy, pandas and pyyaml. Debian packages and
PyPI must be reachable from capsules (host NAT).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from helpers import boot_capsule, destroy_quietly

TEMPLATE = "python"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def python_template(server, http):
    if not any(t["name"] == TEMPLATE for t in http.get("/v1/snapshots").json()):
        bin_path = Path(os.environ.get("WRENN_BIN", REPO / "target" / "release" / "wrenn"))
        env = {**os.environ, "WRENN_BASE_URL": server.base_url, "WRENN_API_KEY": server.api_key}
        started = time.monotonic()
        run = subprocess.run([str(bin_path), "template", "build", "--bundled", TEMPLATE],
                             env=env, capture_output=True, text=True, timeout=1800)
        print(f"\n{TEMPLATE} build took {time.monotonic() - started:.0f}s")
        assert run.returncode == 0, f"building {TEMPLATE} failed:\n{run.stderr[-4000:]}"
    templates = {t["name"]: t for t in http.get("/v1/snapshots").json()}
    assert templates[TEMPLATE]["type"] == "base", templates[TEMPLATE]
    return TEMPLATE


def test_python_template_has_its_packages(python_template):
    c = boot_capsule(template=python_template)
    try:
        r = c.commands.run(
            "whoami; command -v python; python -c "
            "'import numpy, pandas, requests, yaml; "
            "print(pandas.DataFrame({\"a\": numpy.arange(3)})[\"a\"].sum())'"
        )
        assert r.exit_code == 0, r.stderr
        user, python, total = r.stdout.split()
        assert user == "wrenn-user"
        assert python == "/home/wrenn-user/.venv/bin/python"
        assert total == "3"
    finally:
        destroy_quietly(c)

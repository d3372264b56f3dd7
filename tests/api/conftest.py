"""A real `wrenn server` (control plane only, no host agent) on a free loopback port, with a
signed-up user (the first one, so a platform admin) logged in, for the schemathesis suite.

Environment:
  WRENN_BIN        the wrenn binary (default target/release/wrenn, else target/debug/wrenn)
  WRENN_API_EXAMPLES  examples per operation and generation mode (default 50)
  WRENN_API_KEEP=1 keep the scratch data dir after the run

Logs: target/api/wrenn-server.log (the server's stderr: panics and `internal error` lines show
up there); target/api/requests-by-route.txt: the requests sent, by route and status (from the
server's /metrics).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
LOG_DIR = REPO / "target" / "api"
EMAIL = "fuzz-admin@example.com"
PASSWORD = "fuzz-password-123"


@dataclass
class Server:
    base_url: str
    token: str
    api_key: str
    log_path: Path
    proc: subprocess.Popen


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wrenn_bin() -> Path:
    raw = os.environ.get("WRENN_BIN")
    if raw:
        return Path(raw)
    for profile in ("release", "debug"):
        p = REPO / "target" / profile / "wrenn"
        if p.is_file():
            return p
    pytest.fail("no wrenn binary: build it (cargo build -p wrenn-cli) or set WRENN_BIN")


def log_tail(path: Path, n: int = 40) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


@contextlib.contextmanager
def running_server(log_name: str = "wrenn-server.log", env_extra: dict | None = None):
    """Yields (base URL, log path) of a `wrenn server` on a scratch data dir; stops it after."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / log_name
    data_dir = Path(tempfile.mkdtemp(prefix="wrenn-api-"))
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)
    env.pop("WRENN_AGENT_URL", None)
    env.setdefault("RUST_LOG", "info")
    env.update(env_extra or {})
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(_wrenn_bin()), "server", "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{port}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"wrenn server exited with {proc.returncode}:\n{log_tail(log_path)}")
            try:
                if requests.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"wrenn server did not answer /health in 60 s:\n{log_tail(log_path)}")
            time.sleep(0.2)
        yield base, log_path, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if os.environ.get("WRENN_API_KEEP") != "1":
            shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def server():
    with running_server() as (base, log_path, proc):
        r = requests.post(
            f"{base}/v1/auth/signup",
            json={"email": EMAIL, "password": PASSWORD, "name": "Fuzz Admin"},
            timeout=10,
        )
        assert r.status_code == 201, r.text
        r = requests.post(f"{base}/v1/auth/login", json={"email": EMAIL, "password": PASSWORD}, timeout=10)
        assert r.status_code == 200, r.text
        token = r.json()["token"]
        r = requests.post(
            f"{base}/v1/api-keys",
            json={"name": "fuzz"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert r.status_code == 201, r.text
        yield Server(base, token, r.json()["key"], log_path, proc)
        # What the fuzzer reached, by route and status (the server's own /metrics).
        r = requests.get(f"{base}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        if r.status_code == 200:
            lines = [line for line in r.text.splitlines() if line.startswith("wrenn_http_requests_total")]
            (LOG_DIR / "requests-by-route.txt").write_text("\n".join(sorted(lines)) + "\n")

"""Fixtures of the e2b SDK end-to-end suite.

The public `e2b` SDK in debug mode (`E2B_DEBUG=true`) needs no E2B API: `Sandbox.create()`
returns a sandbox with id "debug_sandbox_id", envd version 99.99.99 (every feature gate
open) and envd URL http://localhost:49983. This suite therefore starts the release envd
binary as root on that port, makes sure the SDK's default user `user` exists, and points
the SDK at it.

Environment: ENVD_BIN (envd binary; default: the static release build), E2B_LOG_DIR
(where envd's log goes; default target/e2b).
"""

import os

# Read by the SDK whenever it builds a connection config; set before anything imports it.
os.environ["E2B_DEBUG"] = "true"

import pwd  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import httpx  # noqa: E402
import pytest  # noqa: E402
from e2b import ConnectionConfig, Sandbox  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
PORT = ConnectionConfig.envd_port  # 49983: fixed by the SDK in debug mode
ENVD_BIN = Path(
    os.environ.get("ENVD_BIN")
    or REPO_ROOT / "target/x86_64-unknown-linux-gnu/release/envd"
)
LOG_DIR = Path(os.environ.get("E2B_LOG_DIR") or REPO_ROOT / "target/e2b")
TEST_USER = "user"  # e2b's default_username; capsule images have it


class Envd:
    """The envd process under test."""

    def __init__(self, proc: subprocess.Popen, log_path: Path):
        self.proc = proc
        self.log_path = log_path
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as e:
            return f"(cannot read {self.log_path}: {e})"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_envd(port: int, log_path: Path):
    """Starts envd on `port` (0: any free port) and waits until GET /health answers.
    Returns the running Envd, or an error message."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(ENVD_BIN), "--port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Envd(proc, log_path)
    server.port = port or None
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            return f"envd exited with code {proc.returncode} at startup:\n{server.log_tail()}"
        if server.port is None:
            # envd prints "envd listening on <addr>:<port>" once bound.
            found = re.search(rb"envd listening on \S*:(\d+)", log_path.read_bytes())
            if found:
                server.port = int(found.group(1))
        if server.port is not None:
            try:
                if httpx.get(f"{server.url}/health", timeout=1).status_code == 200:
                    return server
            except httpx.HTTPError:
                pass
        if time.monotonic() > deadline:
            server.stop()
            return f"envd did not answer GET /health within 30 s:\n{server.log_tail()}"
        time.sleep(0.05)


def _port_taken(port: int) -> bool:
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.settimeout(1)
                if s.connect_ex((host, port)) == 0:
                    return True
        except OSError:
            pass
    return False


def _who_listens(port: int) -> str:
    try:
        out = subprocess.run(
            ["ss", "-Hltnp", f"sport = :{port}"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out = ""
    return out or "(ss shows nothing)"


def _ensure_user(name: str) -> None:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", name], check=True)
        entry = pwd.getpwnam(name)
    home = Path(entry.pw_dir)
    if not home.is_dir():
        home.mkdir(parents=True)
        os.chown(home, entry.pw_uid, entry.pw_gid)


class MainEnvd:
    """The envd on port 49983 that the suite shares. If a test crashes it, the next test
    restarts it (logging to envd-restart<N>.log), so one crash fails one test, not the rest."""

    def __init__(self):
        self.server: Envd | None = None
        self.restarts = 0

    def start(self) -> None:
        name = "envd.log" if self.restarts == 0 else f"envd-restart{self.restarts}.log"
        server = start_envd(PORT, LOG_DIR / name)
        if isinstance(server, str):
            pytest.exit(server, returncode=2)
        self.server = server

    def restart(self) -> None:
        self.restarts += 1
        self.start()

    @property
    def proc(self) -> subprocess.Popen:
        return self.server.proc

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def log_path(self) -> Path:
        return self.server.log_path

    def log_tail(self, lines: int = 40) -> str:
        return self.server.log_tail(lines)


@pytest.fixture(scope="session")
def envd():
    if os.geteuid() != 0:
        pytest.exit("the e2b suite runs envd as root: run it as root", returncode=2)
    if not os.access(ENVD_BIN, os.X_OK):
        pytest.exit(
            f"envd binary not found at {ENVD_BIN}: build it with `./scripts/setup.sh --no-run`"
            " or set ENVD_BIN",
            returncode=2,
        )
    if _port_taken(PORT):
        pytest.exit(
            f"port {PORT} is already taken (the SDK's debug mode always uses it); stop that "
            f"listener first:\n{_who_listens(PORT)}",
            returncode=2,
        )
    _ensure_user(TEST_USER)
    main = MainEnvd()
    main.start()
    yield main
    main.server.stop()


@pytest.fixture(autouse=True)
def envd_stays_up(envd):
    """Fails the test during which envd died, with the end of its log."""
    if envd.proc.poll() is not None:
        envd.restart()  # the crash was reported by the test that caused it
    yield
    if envd.proc.poll() is not None:
        pytest.fail(
            f"envd exited with code {envd.proc.returncode} during this test "
            f"(log {envd.log_path}):\n{envd.log_tail()}"
        )


@pytest.fixture(scope="session")
def sandbox(envd):
    # Debug mode: no API call; the SDK talks straight to envd on localhost:49983.
    return Sandbox.create(request_timeout=30)


@pytest.fixture(scope="session")
def scratch_root():
    root = Path(f"/tmp/wrenn-e2b-{uuid.uuid4().hex[:8]}")
    root.mkdir(mode=0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def scratch(request, scratch_root):
    """A fresh root-owned directory for one test, removed afterwards."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:60]
    d = scratch_root / f"{name}-{uuid.uuid4().hex[:6]}"
    d.mkdir(mode=0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def user_scratch(request):
    """A fresh directory in the test user's home, owned by that user, removed afterwards."""
    entry = pwd.getpwnam(TEST_USER)
    d = Path(entry.pw_dir) / f"wrenn-e2b-{uuid.uuid4().hex[:8]}"
    d.mkdir(mode=0o755)
    os.chown(d, entry.pw_uid, entry.pw_gid)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def cleanup_pids(sandbox):
    """Processes a test started: killed (SIGKILL through envd) when the test ends."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            sandbox.commands.kill(pid, request_timeout=5)
        except Exception:
            # envd could not do it: do not leave the process behind.
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


@pytest.fixture
def private_envd(envd, request):
    """A second envd on a free port, for tests that change daemon-wide state (/init,
    access token, snapshot quiesce). Point the SDK at it with
    `Sandbox.create(sandbox_url=private_envd.url)`."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:60]
    server = start_envd(0, LOG_DIR / f"envd-{name}.log")
    if isinstance(server, str):
        pytest.fail(server)
    yield server
    server.stop()
    if server.proc.returncode not in (0, -signal.SIGTERM):
        pytest.fail(f"private envd exited with {server.proc.returncode}:\n{server.log_tail()}")

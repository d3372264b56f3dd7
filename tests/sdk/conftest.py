"""Session fixtures for the SDK end-to-end suite: a real `wrenn up`, driven by the official
`wrenn` 0.3.0 Python SDK (tests/sdk/SDK-CALLS.md lists what the SDK sends).

Environment:
  WRENN_BIN            the wrenn binary (default target/release/wrenn)
  WRENN_IMAGES_DIR     a prebuilt `minimal` image to reuse (the image dir itself, i.e. the one
                       holding image.json, or an images dir holding minimal/); linked into the
                       scratch data dir as images/minimal so `wrenn up` need not build one
  WRENN_SDK_TEMPLATE   template the tests boot (default minimal)
  WRENN_SDK_START_TIMEOUT  seconds to wait for DIR/admin-api-key (default 900: a first run
                       without WRENN_IMAGES_DIR builds the image)
  WRENN_SDK_EXTERNAL_URL   test an already running server instead (with WRENN_API_KEY set)
  WRENN_SDK_KEEP=1     keep the scratch data dir after the run
  CI=true              a server that cannot start fails the tests instead of skipping them

Logs: target/sdk/wrenn-up.log.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from helpers import boot_capsule, create_api_key, destroy_quietly, signup_and_login, unavailable

REPO = Path(__file__).resolve().parents[2]
LOG_DIR = REPO / "target" / "sdk"
# Every capsule test, bench and experiment on this host takes this lock: an agent that starts
# reclaims every `wrenn-` netns it does not own (crates/agent/tests/common/mod.rs, HOST_LOCK).
HOST_LOCK = Path("/run/lock/wrenn-capsules.lock")


@dataclass
class Server:
    base_url: str
    host: str
    port: int
    api_key: str
    data_dir: Path | None
    log_path: Path | None
    proc: subprocess.Popen | None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _find_minimal_image() -> Path | None:
    raw = os.environ.get("WRENN_IMAGES_DIR")
    if not raw:
        return None
    p = Path(raw)
    if (p / "image.json").is_file():
        return p
    if (p / "minimal" / "image.json").is_file():
        return p / "minimal"
    unavailable(f"WRENN_IMAGES_DIR={raw} holds no minimal image (no image.json)")
    return None


def _log_tail(path: Path | None, n: int = 60) -> str:
    if path is None or not path.exists():
        return ""
    lines = path.read_text(errors="replace").splitlines()
    return "\n".join(lines[-n:])


def _take_host_lock(timeout: float):
    HOST_LOCK.parent.mkdir(parents=True, exist_ok=True)
    f = open(HOST_LOCK, "a")
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return f
        except BlockingIOError:
            if time.monotonic() >= deadline:
                f.close()
                unavailable(f"{HOST_LOCK} still held by another capsule test after {timeout}s")
            time.sleep(1)


def _stop(proc: subprocess.Popen, grace: float = 30.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    # Anything left in the process group we created for it (started_new_session below).
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _cleanup_capsules(base_url: str, key: str) -> None:
    from wrenn import WrennClient

    try:
        with WrennClient(api_key=key, base_url=base_url, timeout=30) as c:
            for cap in c.capsules.list():
                try:
                    c.capsules.destroy(cap.id)
                except Exception:  # noqa: BLE001 - best effort
                    pass
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and c.capsules.list():
                time.sleep(1)
    except Exception:  # noqa: BLE001 - best effort
        pass


@pytest.fixture(scope="session")
def server() -> Server:
    external = os.environ.get("WRENN_SDK_EXTERNAL_URL")
    if external:
        key = os.environ.get("WRENN_API_KEY")
        if not key:
            unavailable("WRENN_SDK_EXTERNAL_URL is set but WRENN_API_KEY is not")
        url = httpx.URL(external)
        os.environ["WRENN_BASE_URL"] = external
        yield Server(external, url.host, url.port or 80, key, None, None, None)
        return

    bin_path = Path(os.environ.get("WRENN_BIN", REPO / "target" / "release" / "wrenn"))
    if not bin_path.is_file():
        unavailable(f"wrenn binary not found at {bin_path} (build it or set WRENN_BIN)")
    image = _find_minimal_image()
    lock = _take_host_lock(float(os.environ.get("WRENN_SDK_LOCK_TIMEOUT", "1800")))

    scratch = Path(tempfile.mkdtemp(prefix="wrenn-sdk-"))
    data_dir = scratch / "data"
    (data_dir / "images").mkdir(parents=True)
    if image is not None:
        (data_dir / "images" / "minimal").symlink_to(image, target_is_directory=True)
    port = _free_port()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / "wrenn-up.log"
    log = open(log_path, "wb")
    cmd = [str(bin_path), "up", "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{port}"]
    env = {k: v for k, v in os.environ.items() if k not in ("WRENN_API_KEY", "WRENN_BASE_URL")}
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env=env, start_new_session=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    key_file = data_dir / "admin-api-key"  # contract: written 0600 once the API is ready
    timeout = float(os.environ.get("WRENN_SDK_START_TIMEOUT", "900"))
    deadline = time.monotonic() + timeout
    key = ""
    try:
        while True:
            if proc.poll() is not None:
                unavailable(
                    f"`{' '.join(cmd)}` exited with {proc.returncode} before writing "
                    f"{key_file}; log tail:\n{_log_tail(log_path)}"
                )
            if key_file.is_file():
                key = key_file.read_text().strip()
                if key:
                    break
            if time.monotonic() >= deadline:
                unavailable(
                    f"no {key_file} after {timeout}s; log tail:\n{_log_tail(log_path)}"
                )
            time.sleep(0.25)
        # Ready means ready: the API answers as soon as the key file exists.
        r = httpx.get(f"{base_url}/health", timeout=10)
        if r.status_code != 200:
            unavailable(f"GET /health answered {r.status_code} after the key file appeared")
    except BaseException:
        _stop(proc)
        log.close()
        lock.close()
        if os.environ.get("WRENN_SDK_KEEP") != "1":
            shutil.rmtree(scratch, ignore_errors=True)
        raise

    os.environ["WRENN_API_KEY"] = key
    os.environ["WRENN_BASE_URL"] = base_url
    os.environ.pop("WRENN_PROXY_DOMAIN", None)  # get_url then derives from the base URL
    try:
        yield Server(base_url, "127.0.0.1", port, key, data_dir, log_path, proc)
    finally:
        _cleanup_capsules(base_url, key)
        _stop(proc)
        log.close()
        lock.close()
        link = data_dir / "images" / "minimal"
        if link.is_symlink():
            link.unlink()
        if os.environ.get("WRENN_SDK_KEEP") != "1":
            shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture(scope="session")
def client(server):
    from wrenn import WrennClient

    with WrennClient(api_key=server.api_key, base_url=server.base_url) as c:
        yield c


@pytest.fixture(scope="session")
def http(server):
    """Raw HTTP, only for what the SDK has no method for (auth, raw bodies, status codes)."""
    with httpx.Client(
        base_url=server.base_url, headers={"X-API-Key": server.api_key}, timeout=60
    ) as h:
        yield h


@pytest.fixture(scope="session")
def capsule(server):
    """One running capsule shared by every test that does not change its lifecycle
    (exec, files, PTY, proxy, cross-team, validation). Keeps the capsule count low: the machine
    has 2 cores and each capsule is a gVisor sandbox."""
    c = boot_capsule()
    try:
        yield c
    finally:
        destroy_quietly(c)


@dataclass
class Team:
    email: str
    password: str
    token: str
    user_id: str
    team_id: str
    api_key: str
    api_key_id: str


@pytest.fixture(scope="session")
def second_team(server) -> Team:
    """A second user (hence a second team) with its own API key, for cross-team tests."""
    email, password, auth = signup_and_login(server, "sdk-other")
    key = create_api_key(server, auth["token"])
    return Team(
        email=email, password=password, token=auth["token"], user_id=auth["user_id"],
        team_id=auth["team_id"], api_key=key["key"], api_key_id=key["id"],
    )


@pytest.fixture(scope="session")
def other_client(server, second_team):
    from wrenn import WrennClient

    with WrennClient(api_key=second_team.api_key, base_url=server.base_url) as c:
        yield c


def pytest_terminal_summary(terminalreporter):
    if (LOG_DIR / "wrenn-up.log").exists():
        terminalreporter.write_line(f"wrenn up log: {LOG_DIR / 'wrenn-up.log'}")

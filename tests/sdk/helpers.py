"""Helpers shared by the SDK suite's test modules (imported as `helpers`)."""

from __future__ import annotations

import os
import queue
import re
import secrets
import threading
import time
from datetime import datetime

import httpx
import pytest

TEMPLATE = os.environ.get("WRENN_SDK_TEMPLATE", "minimal")
CAPSULE_ID_RE = re.compile(r"^cl-[0-9a-z]{25}$")  # spec §F.1
API_KEY_RE = re.compile(r"^wrn_[0-9a-f]{32}$")  # spec §B.8
PTY_TAG_RE = re.compile(r"^pty-[0-9a-f]{8}$")  # spec §C.3, §F.1
PROC_TAG_RE = re.compile(r"^proc-[0-9a-f]{8}$")  # spec §B.2 (default background tag)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def unavailable(msg: str):
    """Skip locally, fail under CI=true (never skip in CI)."""
    if in_ci():
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def wait_until(fn, timeout: float, interval: float = 0.5, what: str = "condition"):
    """Calls fn() until it returns something truthy and returns that value; fails on timeout."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = fn()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - reported on timeout
            last_exc = exc
        if time.monotonic() >= deadline:
            extra = f" (last error: {last_exc!r})" if last_exc else ""
            pytest.fail(f"timed out after {timeout}s waiting for {what}{extra}")
        time.sleep(interval)


def rand_name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def _base36(n: int, width: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out.rjust(width, "0")


def random_id(prefix: str = "cl-") -> str:
    """A well-formed id nobody owns: prefix + 25 base36 chars of a random v4 UUID (§F.1)."""
    b = bytearray(secrets.token_bytes(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    return prefix + _base36(int.from_bytes(b, "big"), 25)


def assert_aware(value, field: str, optional: bool = False) -> None:
    """Timestamps are RFC 3339 UTC; the SDK models parse them as timezone-aware (§B.0)."""
    if value is None and optional:
        return
    assert isinstance(value, datetime), f"{field} is {value!r}, not a datetime"
    assert value.tzinfo is not None, f"{field} is not timezone-aware: {value!r}"


def boot_capsule(template: str = TEMPLATE, **kwargs):
    """A running capsule made the way users do: Capsule(..., wait=True) (§K.1)."""
    from wrenn import Capsule

    return Capsule(template=template, wait=True, **kwargs)


def destroy_quietly(capsule) -> None:
    try:
        capsule.destroy(wait=True)
    except Exception:  # noqa: BLE001 - teardown
        pass
    try:
        capsule._client.close()
    except Exception:  # noqa: BLE001
        pass


def status_of(client, capsule_id: str) -> str:
    from wrenn import WrennNotFoundError

    try:
        return client.capsules.get(capsule_id).status.value
    except WrennNotFoundError:
        return "missing"


class PtyReader:
    """Iterates a PtySession (the SDK's own iterator) on a thread, so a test can wait for
    output with a deadline instead of blocking forever in ws.receive()."""

    def __init__(self, session):
        self.session = session
        self.events: queue.Queue = queue.Queue()
        self.seen: list = []
        self.output = b""
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            for ev in self.session:
                self.events.put(ev)
        except Exception as exc:  # noqa: BLE001 - surfaced to the test
            self.events.put(exc)
        self.events.put(None)  # end of stream

    def next_event(self, timeout: float = 30):
        try:
            ev = self.events.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no PTY event within {timeout}s; output so far: {self.output!r}")
        if isinstance(ev, Exception):
            raise ev
        if ev is not None:
            self.seen.append(ev)
            if ev.type == "output" and isinstance(ev.data, bytes):
                self.output += ev.data
        return ev

    def wait_output(self, needle: bytes | re.Pattern, timeout: float = 30) -> bytes:
        """Reads events until the accumulated output contains needle; returns the output."""
        deadline = time.monotonic() + timeout
        while True:
            found = (
                needle.search(self.output) if isinstance(needle, re.Pattern)
                else needle in self.output
            )
            if found:
                return self.output
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"PTY output lacks {needle!r} after {timeout}s: {self.output!r}")
            ev = self.next_event(timeout=left)
            if ev is None:
                pytest.fail(f"PTY stream ended before {needle!r}: {self.output!r}")

    def wait_type(self, type_: str, timeout: float = 30):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"no PTY {type_!r} event within {timeout}s: {self.seen!r}")
            ev = self.next_event(timeout=left)
            if ev is None:
                pytest.fail(f"PTY stream ended before a {type_!r} event: {self.seen!r}")
            if ev.type == type_:
                return ev


def signup_and_login(server, name: str) -> tuple[str, str, dict]:
    """POST /v1/auth/signup then /v1/auth/login (spec §B.6); returns (email, password, auth)."""
    email = f"{rand_name(name)}@example.com"
    password = "sdk-" + secrets.token_hex(8)
    with httpx.Client(base_url=server.base_url, timeout=30) as h:
        r = h.post("/v1/auth/signup", json={"email": email, "password": password, "name": name})
        assert r.status_code in (200, 201), f"signup: {r.status_code} {r.text}"
        r = h.post("/v1/auth/login", json={"email": email, "password": password})
        assert r.status_code == 200, (
            f"login right after signup: {r.status_code} {r.text} "
            "(a self-hosted `wrenn up` must not require e-mail activation)"
        )
        auth = r.json()
    for field in ("token", "user_id", "team_id", "email"):
        assert field in auth, f"AuthResponse lacks {field}: {auth}"
    return email, password, auth


def create_api_key(server, token: str, name: str = "sdk-tests") -> dict:
    """POST /v1/api-keys with the bearer JWT (spec §B.8)."""
    r = httpx.post(
        f"{server.base_url}/v1/api-keys",
        json={"name": name},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert r.status_code == 201, f"create API key: {r.status_code} {r.text}"
    return r.json()

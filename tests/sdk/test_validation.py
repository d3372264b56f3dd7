"""Input validation: ids, SafeName, metadata limits, malformed JSON, oversized bodies
(spec §B.0 error envelope, §B.2, §B.3, §B.4, §F.1, §J). Raw HTTP only where the SDK cannot
send the input (metadata, broken JSON, > 100 MiB bodies)."""

from __future__ import annotations

import select
import socket

import pytest
from wrenn import WrennNotFoundError, WrennValidationError
from wrenn.commands import Commands

from helpers import destroy_quietly, random_id, status_of, wait_until


def assert_invalid(resp, status: int = 400, code: str = "invalid_request"):
    assert resp.status_code == status, f"{resp.status_code} {resp.text}"
    err = resp.json()["error"]  # §B.0 envelope
    assert err["code"] == code and isinstance(err["message"], str) and err["message"]


# ── ids (§F.1: prefix + exactly 25 base36 chars, parsed before any lookup) ──────────────────

BAD_IDS = [
    "not-an-id",
    "cl-123",
    "cl-" + "0" * 26,
    "cl-" + "A" * 25,  # upper case is not base36 here
    "sb-" + "0" * 25,  # the pre-v0.1 prefix
    "cl-" + "z" * 25,  # 25 chars but more than 128 bits
]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_bad_capsule_ids_are_400(client, bad):
    with pytest.raises(WrennValidationError) as ei:
        client.capsules.get(bad)
    assert ei.value.code == "invalid_request" and ei.value.status_code == 400


def test_bad_id_on_other_routes(client, capsule):
    bad = "cl-123"
    for call in (
        lambda: client.capsules.destroy(bad),
        lambda: client.capsules.pause(bad),
        lambda: client.capsules.resume(bad),
        lambda: client.capsules.ping(bad),
        lambda: client.capsules.metrics(bad),
        lambda: Commands(bad, capsule._client.http).run("true"),
        lambda: client.snapshots.create(bad),
    ):
        with pytest.raises(WrennValidationError):
            call()


def test_well_formed_unknown_ids_are_404(client):
    with pytest.raises(WrennNotFoundError):
        client.capsules.get(random_id())
    with pytest.raises(WrennNotFoundError):
        client.snapshots.create(random_id(), name="ghost-snap")


def test_unknown_process_selector(capsule):
    with pytest.raises(WrennNotFoundError):
        capsule.commands.kill(424242)


# ── SafeName: ^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$ (§J) ────────────────────────────────────────

BAD_NAMES = ["../etc", "a/b", ".hidden", "-dash", "a" * 65, "sp ace", "ünï"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_template_names_are_400(client, name):
    with pytest.raises(WrennValidationError):
        client.capsules.create(template=name)


def test_unknown_template_is_404(client):
    with pytest.raises(WrennNotFoundError) as ei:
        client.capsules.create(template="no-such-template-here")
    assert ei.value.code == "not_found"


@pytest.mark.parametrize("name", ["a/b", ".hidden", "-dash", "a" * 65, "sp ace"])
def test_bad_snapshot_names_are_400(client, capsule, name):
    with pytest.raises(WrennValidationError):
        client.snapshots.create(capsule.capsule_id, name=name)


@pytest.mark.parametrize("name", [".hidden", "-dash", "a" * 65, "sp ace"])
def test_bad_snapshot_delete_names_are_400(client, name):
    with pytest.raises(WrennValidationError):
        client.snapshots.delete(name)


def test_snapshot_list_bad_type(client):
    with pytest.raises(WrennValidationError):
        client.snapshots.list(type="weird")


def test_negative_timeout_is_400(client):
    with pytest.raises(WrennValidationError):
        client.capsules.create(timeout_sec=-1)  # timeout_sec ≥ 0 (§B.2)


# ── metadata (not sent by SDK 0.3.0's create: raw body; §B.2, §J) ───────────────────────────


@pytest.mark.parametrize("metadata", [
    {f"k{i}": "v" for i in range(21)},  # > 20 keys
    {"key": "v" * 65},  # value > 64 chars
    {"bad/key": "v"},  # key not SafeName
    {".key": "v"},
    {"kernel_version": "6.1"},  # reserved system keys
    {"envd_version": "x"},
    {"agent_version": "x"},
    {"vmm_version": "x"},
    {"key": 5},  # values are strings
])
def test_bad_metadata_is_400(http, metadata):
    assert_invalid(http.post("/v1/capsules", json={"metadata": metadata}))


@pytest.mark.timeout(120)
def test_metadata_limits_accepted_and_returned(client, http):
    md = {f"k{i}": "v" * 64 for i in range(19)}
    md["owner"] = "sdk-tests"  # 20 keys, 64-char values: the limits themselves
    r = http.post("/v1/capsules", json={"metadata": md})
    assert r.status_code in (201, 202), r.text
    cid = r.json()["id"]
    from wrenn import Capsule

    c = Capsule.connect(cid)  # waits for running
    try:
        got = client.capsules.get(cid)
        assert got.metadata is not None
        assert {k: got.metadata.get(k) for k in md} == md
        assert cid in [x.id for x in client.capsules.list()]
    finally:
        destroy_quietly(c)
    wait_until(lambda: status_of(client, cid) in ("stopped", "missing"), 30)


# ── malformed bodies (§B.0: 400 invalid_request) ────────────────────────────────────────────


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'{"template": 5}',
                                  b'{"vcpus": "two"}'])
def test_malformed_create_body(http, body):
    assert_invalid(http.post("/v1/capsules", content=body,
                             headers={"Content-Type": "application/json"}))


def test_malformed_exec_bodies(http, capsule):
    path = f"/v1/capsules/{capsule.capsule_id}/exec"
    assert_invalid(http.post(path, content=b'{"cmd": ', headers={"Content-Type":
                                                                   "application/json"}))
    assert_invalid(http.post(path, json={"args": ["-c", "true"]}))  # cmd is required
    assert_invalid(http.post(path, json={"cmd": "/bin/true", "args": "not-a-list"}))


def test_malformed_file_bodies(http, capsule):
    base = f"/v1/capsules/{capsule.capsule_id}/files"
    assert_invalid(http.post(f"{base}/read", content=b"nope",
                             headers={"Content-Type": "application/json"}))
    assert_invalid(http.post(f"{base}/list", json={"path": 7}))
    # multipart without the `file` part (§B.3: missing parts → 400)
    assert_invalid(http.post(f"{base}/write", files={"path": (None, "/tmp/x")}))
    assert_invalid(http.post(f"{base}/write", files={"file": ("upload", b"x")}))


def test_snapshot_body_needs_sandbox_id(http):
    assert_invalid(http.post("/v1/snapshots", json={"name": "no-source"}))


# ── oversized body (§B.3: files/write ≤ 100 MiB, else 413 too_large) ─────────────────────────


def response_complete(data: bytes) -> bool:
    if b"\r\n\r\n" not in data:
        return False
    head, body = data.split(b"\r\n\r\n", 1)
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return body.endswith(b"0\r\n\r\n")  # chunked


def post_oversized(host: str, port: int, path: str, api_key: str, size: int) -> tuple[int, bytes]:
    """Sends a multipart files/write of `size` bytes with an honest Content-Length, stopping as
    soon as the server answers (it may reject on the header alone). Returns (status, body)."""
    boundary = "sdktestsboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"path\"\r\n\r\n/tmp/big\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"upload\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    total = len(head) + size + len(tail)
    req = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nX-API-Key: {api_key}\r\n"
           f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
           f"Content-Length: {total}\r\nConnection: close\r\n\r\n").encode()
    chunk = b"\0" * (1 << 20)
    with socket.create_connection((host, port), timeout=60) as s:
        s.sendall(req + head)
        sent = 0
        try:
            while sent < size:
                if select.select([s], [], [], 0)[0]:
                    break  # the server has answered already
                n = min(len(chunk), size - sent)
                s.sendall(chunk[:n])
                sent += n
            else:
                s.sendall(tail)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        try:
            while not response_complete(data):
                part = s.recv(65536)
                if not part:
                    break
                data += part
        except (ConnectionResetError, TimeoutError):
            pass
    status_line = data.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 "), f"no HTTP response: {data[:200]!r}"
    return int(status_line.split()[1]), data.split(b"\r\n\r\n", 1)[-1]


@pytest.mark.timeout(180)
def test_oversized_upload_is_413(server, capsule):
    status, body = post_oversized(server.host, server.port,
                                  f"/v1/capsules/{capsule.capsule_id}/files/write",
                                  server.api_key, 101 * 1024 * 1024)
    assert status == 413, body[:300]
    assert b"too_large" in body
    assert not capsule.files.exists("/tmp/big")

"""Files through the SDK: write/read/exists/list/mkdir/remove and the streaming upload and
download (spec §B.3, §K 13-17). Uses the shared session capsule, under a private directory."""

from __future__ import annotations

import hashlib
import os
import re
import time

import httpx
import pytest
from wrenn import FileEntry, WrennNotFoundError, WrennValidationError

from helpers import rand_name

PERMS_RE = re.compile(r"^[-dLbcpS?][-rwxsStT]{9}$")  # §B.0 FileEntry.permissions


@pytest.fixture(scope="module")
def root(capsule):
    d = f"/tmp/{rand_name('sdk-files')}"
    yield d
    try:
        capsule.files.remove(d)
    except Exception:  # noqa: BLE001 - teardown
        pass


def test_write_creates_parents_and_read(capsule, root):
    path = f"{root}/a/b.txt"  # parents do not exist yet (§K.13)
    assert capsule.files.write(path, "hello") is None
    assert capsule.files.read(path) == "hello"
    assert capsule.commands.run(f"cat {path}").stdout == "hello"
    capsule.files.write(path, "hi")  # overwrite truncates
    assert capsule.files.read(path) == "hi"
    capsule.files.write(path, "hello")


def test_binary_round_trip(capsule, root):
    data = bytes(range(256)) * 4
    capsule.files.write(f"{root}/bin/all.bin", data)
    assert capsule.files.read_bytes(f"{root}/bin/all.bin") == data
    text = "héllo ✓ 世界\n"
    capsule.files.write(f"{root}/bin/utf8.txt", text)
    assert capsule.files.read(f"{root}/bin/utf8.txt") == text
    # Files written with exec are readable through the API and vice versa.
    capsule.commands.run(f"printf 'from-exec' > {root}/bin/e.txt")
    assert capsule.files.read_bytes(f"{root}/bin/e.txt") == b"from-exec"
    capsule.files.write(f"{root}/bin/empty", b"")
    assert capsule.files.read_bytes(f"{root}/bin/empty") == b""


def test_not_found_is_typed(capsule, root):
    # §K.14, §B.3: missing paths are 404 not_found (the SDK's exists() depends on it).
    with pytest.raises(WrennNotFoundError) as ei:
        capsule.files.read("/nope")
    assert ei.value.code == "not_found" and ei.value.status_code == 404
    with pytest.raises(WrennNotFoundError):
        capsule.files.read_bytes(f"{root}/missing.txt")
    with pytest.raises(WrennNotFoundError):
        capsule.files.list("/definitely/missing")
    with pytest.raises(WrennNotFoundError):
        capsule.files.remove(f"{root}/missing-dir")


def test_exists(capsule, root):
    capsule.files.write(f"{root}/a/b.txt", "hello")
    assert capsule.files.exists(f"{root}/a/b.txt") is True
    assert capsule.files.exists(f"{root}/a") is True
    assert capsule.files.exists(f"{root}/a/nope.txt") is False
    assert capsule.files.exists("/definitely/missing/x") is False  # parent 404 → False


def test_list_entries(capsule, root):
    capsule.files.write(f"{root}/a/b.txt", "hello")
    before = int(time.time())
    entries = capsule.files.list(f"{root}/a")
    assert all(isinstance(e, FileEntry) for e in entries)
    by_name = {e.name: e for e in entries}
    b = by_name["b.txt"]  # §K.15
    assert b.type.value == "file"
    assert b.size == 5
    assert b.path == f"{root}/a/b.txt"
    assert PERMS_RE.match(b.permissions) and b.permissions.startswith("-rw"), b.permissions
    assert isinstance(b.mode, int) and b.mode & 0o600 == 0o600 and b.mode <= 0o7777
    assert isinstance(b.owner, str) and b.owner and isinstance(b.group, str) and b.group
    assert isinstance(b.modified_at, int) and abs(b.modified_at - before) < 300

    listing = capsule.files.list("/")
    assert {"tmp", "etc", "usr"} <= {e.name for e in listing}
    for e in listing:
        assert e.type.value in ("file", "directory", "symlink")  # SDK rejects anything else
        assert PERMS_RE.match(e.permissions), e.permissions
    assert {e.name: e for e in listing}["etc"].permissions.startswith("d")


def test_list_depth(capsule, root):
    capsule.files.write(f"{root}/deep/x/y/z.txt", "z")
    one = {e.path for e in capsule.files.list(f"{root}/deep")}
    assert one == {f"{root}/deep/x"}  # the root itself is excluded (§B.3)
    three = {e.path for e in capsule.files.list(f"{root}/deep", depth=3)}
    assert {f"{root}/deep/x", f"{root}/deep/x/y", f"{root}/deep/x/y/z.txt"} <= three


def test_list_symlink_type(capsule, root):
    capsule.commands.run(f"mkdir -p {root}/ln && ln -sf /etc/hostname {root}/ln/link "
                         f"&& ln -sf /nowhere {root}/ln/broken")
    entries = {e.name: e for e in capsule.files.list(f"{root}/ln")}
    # Broken links must still map to file|directory|symlink (§B.0, Appendix 1.6).
    assert entries["broken"].type.value in ("file", "directory", "symlink")
    link = entries["link"]
    assert link.symlink_target and link.symlink_target.endswith("hostname"), link


def test_make_dir_twice_and_remove(capsule, root):
    d = f"{root}/x/y"
    e = capsule.files.make_dir(d)  # parents created (§K.16)
    assert isinstance(e, FileEntry) and e.type.value == "directory"
    assert e.name == "y" and e.path == d
    again = capsule.files.make_dir(d)  # server 409 conflict → SDK returns the existing entry
    assert again.type.value == "directory" and again.name == "y"
    assert capsule.files.exists(d)
    assert capsule.files.remove(f"{root}/x") is None  # recursive
    assert capsule.files.exists(f"{root}/x") is False
    assert capsule.files.exists(d) is False


def test_make_dir_conflict_code(capsule, root, http):
    # The SDK's make_dir idempotence relies on 409 `conflict` (or `already_exists`).
    capsule.files.make_dir(f"{root}/dup")
    r = http.post(f"/v1/capsules/{capsule.capsule_id}/files/mkdir", json={"path": f"{root}/dup"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict", r.text


def test_wrong_kinds(capsule, root):
    capsule.files.write(f"{root}/plain.txt", "x")
    capsule.files.make_dir(f"{root}/adir")
    with pytest.raises(WrennValidationError):
        capsule.files.make_dir(f"{root}/plain.txt")  # exists as a file → 400 (§B.3)
    with pytest.raises(WrennValidationError):
        capsule.files.read(f"{root}/adir")  # a directory → 400
    with pytest.raises(WrennValidationError):
        capsule.files.list(f"{root}/plain.txt")  # not a directory → 400


@pytest.mark.timeout(300)
def test_stream_upload_download_20mib(capsule, root):
    # §K.17: upload_stream sends chunked multipart; download_stream reads chunked octets.
    size, chunk = 20 * 1024 * 1024, 1024 * 1024
    data = os.urandom(size)
    want = hashlib.sha256(data).hexdigest()
    path = f"{root}/big/blob.bin"
    capsule.files.upload_stream(path, (data[i:i + chunk] for i in range(0, size, chunk)))
    r = capsule.commands.run(f"sha256sum {path} | cut -d' ' -f1; wc -c < {path}")
    assert r.stdout.split() == [want, str(size)]
    h, n, chunks = hashlib.sha256(), 0, 0
    for part in capsule.files.download_stream(path):
        assert isinstance(part, bytes)
        h.update(part)
        n += len(part)
        chunks += 1
    assert n == size and h.hexdigest() == want
    assert chunks > 1, "download_stream should stream, not answer in one piece"
    # The unary read also works on a file this size (≤ 100 MiB, §B.3).
    assert hashlib.sha256(capsule.files.read_bytes(path)).hexdigest() == want
    capsule.files.remove(f"{root}/big")


def test_download_stream_missing_raises_http_404(capsule, root):
    # The SDK calls httpx raise_for_status here (SDK-CALLS.md): HTTPStatusError, not WrennError.
    with pytest.raises(httpx.HTTPStatusError) as ei:
        b"".join(capsule.files.download_stream(f"{root}/nope.bin"))
    assert ei.value.response.status_code == 404


def test_upload_stream_then_write_small(capsule, root):
    capsule.files.upload_stream(f"{root}/s.txt", iter([b"ab", b"", b"cd"]))
    assert capsule.files.read(f"{root}/s.txt") == "abcd"

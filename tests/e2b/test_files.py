"""sandbox.files: GET/POST /files and filesystem.Filesystem (Stat, MakeDir, Move, ListDir,
Remove, CreateWatcher/GetWatcherEvents/RemoveWatcher, WatchDir)."""

import asyncio
import os
import pwd
import random
import time

import httpx
import pytest
from e2b import (
    AsyncSandbox,
    FileNotFoundException,
    FilesystemEventType,
    FileType,
    InvalidArgumentException,
    SandboxException,
)

from helpers import wait_until

# 1 MiB of random bytes plus every byte value: any text decoding or truncation shows.
BINARY = random.Random(7).randbytes(1 << 20) + bytes(range(256))


def test_write_read_text(sandbox, scratch):
    path = str(scratch / "hello.txt")
    info = sandbox.files.write(path, "hello\nwörld\n")
    assert info.path == path
    assert info.name == "hello.txt"
    assert info.type == FileType.FILE
    assert sandbox.files.read(path) == "hello\nwörld\n"


@pytest.mark.parametrize(
    "octet_stream,gzip",
    [(False, False), (True, False), (True, True)],
    ids=["multipart", "octet-stream", "octet-stream-gzip"],
)
def test_write_bytes_binary_safe(sandbox, scratch, octet_stream, gzip):
    path = scratch / "blob.bin"
    sandbox.files.write(str(path), BINARY, use_octet_stream=octet_stream, gzip=gzip)
    assert path.read_bytes() == BINARY  # what landed on disk
    assert bytes(sandbox.files.read(str(path), format="bytes")) == BINARY


@pytest.mark.parametrize("mode", ["bytes", "gzip", "stream"])
def test_read_bytes_binary_safe(sandbox, scratch, mode):
    path = scratch / "blob.bin"
    path.write_bytes(BINARY)
    if mode == "stream":
        with sandbox.files.read(str(path), format="stream") as chunks:
            data = b"".join(chunks)
    else:
        data = bytes(sandbox.files.read(str(path), format="bytes", gzip=(mode == "gzip")))
    assert data == BINARY


def test_write_creates_parents_and_overwrites(sandbox, scratch):
    path = str(scratch / "a" / "b" / "c.txt")
    sandbox.files.write(path, "first version, longer")
    assert sandbox.files.get_info(str(scratch / "a" / "b")).type == FileType.DIR
    sandbox.files.write(path, "second")
    assert sandbox.files.read(path) == "second"


def test_write_multiple_files(sandbox, scratch):
    entries = [
        {"path": str(scratch / "one.txt"), "data": "1"},
        {"path": str(scratch / "nested" / "two.txt"), "data": "22"},
        {"path": str(scratch / "three.bin"), "data": b"\x00\x01\x02"},
    ]
    infos = sandbox.files.write_files(entries)
    assert sorted(i.path for i in infos) == sorted(e["path"] for e in entries)
    assert sandbox.files.read(entries[0]["path"]) == "1"
    assert sandbox.files.read(entries[1]["path"]) == "22"
    assert bytes(sandbox.files.read(entries[2]["path"], format="bytes")) == b"\x00\x01\x02"


@pytest.mark.parametrize("octet_stream", [False, True], ids=["multipart", "octet-stream"])
def test_write_with_metadata(sandbox, scratch, octet_stream):
    path = str(scratch / "tagged.txt")
    info = sandbox.files.write(
        path, "x", metadata={"Owner": "Alice", "purpose": "e2e"}, use_octet_stream=octet_stream
    )
    expected = {"owner": "Alice", "purpose": "e2e"}  # keys are lowercased by envd
    assert info.metadata == expected
    assert sandbox.files.get_info(path).metadata == expected
    assert [e.metadata for e in sandbox.files.list(str(scratch))] == [expected]


def test_write_as_user_owns_file_and_resolves_relative_paths(sandbox, user_scratch):
    # A relative path is relative to the user's home.
    relative = f"{user_scratch.name}/mine.txt"
    info = sandbox.files.write(relative, "owned", user="user")
    assert info.path == str(user_scratch / "mine.txt")
    stat = sandbox.files.get_info(info.path)
    assert (stat.owner, stat.group) == ("user", "user")
    assert os.stat(info.path).st_uid == pwd.getpwnam("user").pw_uid
    assert sandbox.files.read(relative, user="user") == "owned"


def test_user_cannot_write_where_permissions_forbid(sandbox, scratch):
    # scratch is root's, mode 0755.
    with pytest.raises(SandboxException):
        sandbox.files.write(str(scratch / "denied.txt"), "x", user="user")
    assert not (scratch / "denied.txt").exists()
    with pytest.raises(SandboxException) as info:
        sandbox.files.make_dir(str(scratch / "denied-dir"), user="user")
    assert "permission" in str(info.value).lower()
    assert not (scratch / "denied-dir").exists()


def test_read_missing_raises_not_found(sandbox, scratch):
    with pytest.raises(FileNotFoundException) as info:
        sandbox.files.read(str(scratch / "missing.txt"))
    assert str(scratch / "missing.txt") in str(info.value)  # envd's own error


def test_read_directory_is_rejected(sandbox, scratch):
    with pytest.raises(InvalidArgumentException):
        sandbox.files.read(str(scratch))


def test_write_onto_directory_is_rejected(sandbox, scratch):
    (scratch / "adir").mkdir()
    with pytest.raises(InvalidArgumentException):
        sandbox.files.write(str(scratch / "adir"), "x")
    assert (scratch / "adir").is_dir()


def test_list_with_depth(sandbox, scratch):
    (scratch / "sub" / "deep").mkdir(parents=True)
    (scratch / "a.txt").write_text("aaa")
    (scratch / "sub" / "b.txt").write_text("b")
    (scratch / "sub" / "deep" / "c.txt").write_text("c")

    def listed(depth):
        return {e.path: e for e in sandbox.files.list(str(scratch), depth=depth)}

    level1 = listed(1)
    assert set(level1) == {str(scratch / "a.txt"), str(scratch / "sub")}
    assert level1[str(scratch / "a.txt")].type == FileType.FILE
    assert level1[str(scratch / "a.txt")].size == 3
    assert level1[str(scratch / "sub")].type == FileType.DIR
    assert level1[str(scratch / "sub")].name == "sub"
    assert set(listed(2)) == set(level1) | {str(scratch / "sub" / "b.txt"), str(scratch / "sub" / "deep")}
    assert str(scratch / "sub" / "deep" / "c.txt") in listed(3)


def test_list_missing_or_file_is_rejected(sandbox, scratch):
    with pytest.raises(FileNotFoundException) as info:
        sandbox.files.list(str(scratch / "missing"))
    assert str(scratch / "missing") in str(info.value)
    (scratch / "f.txt").write_text("x")
    with pytest.raises(InvalidArgumentException):
        sandbox.files.list(str(scratch / "f.txt"))


def test_exists(sandbox, scratch):
    (scratch / "f.txt").write_text("x")
    assert sandbox.files.exists(str(scratch / "f.txt")) is True
    assert sandbox.files.exists(str(scratch)) is True
    assert sandbox.files.exists(str(scratch / "missing")) is False


def test_get_info_of_file(sandbox, scratch):
    path = scratch / "five.txt"
    path.write_text("12345")
    os.chmod(path, 0o640)
    info = sandbox.files.get_info(str(path))
    assert info.name == "five.txt"
    assert info.path == str(path)
    assert info.type == FileType.FILE
    assert info.size == 5
    assert info.mode & 0o777 == 0o640
    assert info.permissions.endswith("rw-r-----")
    assert (info.owner, info.group) == ("root", "root")
    assert abs(info.modified_time.timestamp() - path.stat().st_mtime) < 1


def test_get_info_of_directory_and_symlink(sandbox, scratch):
    assert sandbox.files.get_info(str(scratch)).type == FileType.DIR
    (scratch / "target.txt").write_text("t")
    os.symlink(scratch / "target.txt", scratch / "link")
    link = sandbox.files.get_info(str(scratch / "link"))
    assert link.type == FileType.SYMLINK
    assert link.symlink_target == str(scratch / "target.txt")


def test_get_info_missing_raises_not_found(sandbox, scratch):
    with pytest.raises(FileNotFoundException) as info:
        sandbox.files.get_info(str(scratch / "missing"))
    assert str(scratch / "missing") in str(info.value)


def test_make_dir(sandbox, scratch):
    path = str(scratch / "x" / "y")
    assert sandbox.files.make_dir(path) is True
    assert (scratch / "x" / "y").is_dir()
    assert sandbox.files.make_dir(path) is False  # already there
    (scratch / "file").write_text("x")
    with pytest.raises(InvalidArgumentException):
        sandbox.files.make_dir(str(scratch / "file"))


def test_rename(sandbox, scratch):
    (scratch / "old.txt").write_text("content")
    info = sandbox.files.rename(str(scratch / "old.txt"), str(scratch / "new.txt"))
    assert info.path == str(scratch / "new.txt")
    assert info.name == "new.txt"
    assert sandbox.files.exists(str(scratch / "old.txt")) is False
    assert sandbox.files.read(str(scratch / "new.txt")) == "content"
    (scratch / "dir" / "inner").mkdir(parents=True)
    sandbox.files.rename(str(scratch / "dir"), str(scratch / "moved"))
    assert (scratch / "moved" / "inner").is_dir()
    with pytest.raises(FileNotFoundException):
        sandbox.files.rename(str(scratch / "missing"), str(scratch / "other"))


def test_remove(sandbox, scratch):
    (scratch / "f.txt").write_text("x")
    sandbox.files.remove(str(scratch / "f.txt"))
    assert sandbox.files.exists(str(scratch / "f.txt")) is False
    (scratch / "tree" / "sub").mkdir(parents=True)
    (scratch / "tree" / "sub" / "g.txt").write_text("g")
    sandbox.files.remove(str(scratch / "tree"))
    assert not (scratch / "tree").exists()


def _seen(events, name, kind):
    return any(e.name == name and e.type == kind for e in events)


def test_watch_dir_sees_create_write_remove(sandbox, scratch):
    handle = sandbox.files.watch_dir(str(scratch))
    try:
        path = str(scratch / "watched.txt")
        sandbox.files.write(path, "one")
        events = []

        def collect(*wanted):
            events.extend(handle.get_new_events())
            return all(_seen(events, "watched.txt", k) for k in wanted)

        wait_until(lambda: collect(FilesystemEventType.CREATE, FilesystemEventType.WRITE),
                   what="create and write events")
        sandbox.files.remove(path)
        wait_until(lambda: collect(FilesystemEventType.REMOVE), what="remove event")
        # Events are drained: nothing new once the directory is quiet.
        time.sleep(0.3)
        assert handle.get_new_events() == []
    finally:
        handle.stop()
    with pytest.raises(SandboxException):
        handle.get_new_events()


def test_watch_dir_recursive(sandbox, scratch):
    (scratch / "sub").mkdir()
    handle = sandbox.files.watch_dir(str(scratch), recursive=True)
    try:
        sandbox.files.write(str(scratch / "sub" / "deep.txt"), "x")
        events = []

        def collect():
            events.extend(handle.get_new_events())
            return _seen(events, "sub/deep.txt", FilesystemEventType.CREATE)

        wait_until(collect, what="create event of sub/deep.txt")
    finally:
        handle.stop()


def test_watch_missing_dir_raises_not_found(sandbox, scratch):
    with pytest.raises(FileNotFoundException) as info:
        sandbox.files.watch_dir(str(scratch / "missing"))
    assert str(scratch / "missing") in str(info.value)


def test_watch_dir_stream_async(envd, scratch):
    """AsyncSandbox.files.watch_dir uses the WatchDir server stream (with entry info)."""

    async def scenario():
        sbx = await AsyncSandbox.create(request_timeout=30)
        events = []
        handle = await sbx.files.watch_dir(
            str(scratch), on_event=events.append, include_entry=True, timeout=60
        )
        try:
            await sbx.files.write(str(scratch / "streamed.txt"), "hello")
            deadline = time.monotonic() + 10
            while not _seen(events, "streamed.txt", FilesystemEventType.CREATE):
                assert time.monotonic() < deadline, f"no create event, got {events}"
                await asyncio.sleep(0.05)
        finally:
            await handle.stop()
        return events

    events = asyncio.run(scenario())
    create = next(e for e in events if e.type == FilesystemEventType.CREATE)
    assert create.entry is not None
    assert create.entry.path == str(scratch / "streamed.txt")


def test_download_and_upload_urls(sandbox, scratch):
    path = scratch / "via-url.txt"
    path.write_text("download me")
    r = httpx.get(sandbox.download_url(str(path)), timeout=30)
    assert r.status_code == 200
    assert r.content == b"download me"
    assert r.headers["content-type"].startswith("text/plain")
    assert 'filename="via-url.txt"' in r.headers["content-disposition"]

    target = scratch / "uploaded.bin"
    r = httpx.post(
        sandbox.upload_url(str(target)), files={"file": ("ignored.bin", BINARY)}, timeout=30
    )
    assert r.status_code == 200
    assert r.json()[0]["path"] == str(target)
    assert target.read_bytes() == BINARY


"""Commands through the SDK: foreground exec, background processes, exec stream, re-attach
(spec §B.2 exec/processes, §C.1, §C.2, §K 5-12). Uses the shared session capsule."""

from __future__ import annotations

import time

import httpx_ws
import pytest
from wrenn import (
    CommandHandle,
    CommandResult,
    StreamErrorEvent,
    StreamExitEvent,
    StreamStartEvent,
    WrennError,
    WrennNotFoundError,
)

from helpers import PROC_TAG_RE, rand_name, wait_until


def test_echo(capsule):
    r = capsule.commands.run("echo hi")
    assert isinstance(r, CommandResult)
    assert r.stdout == "hi\n" and r.stderr == "" and r.exit_code == 0
    assert isinstance(r.duration_ms, int) and r.duration_ms >= 0


def test_stderr_and_exit_code_are_not_errors(capsule):
    r = capsule.commands.run("echo out; echo err >&2; exit 3")  # HTTP 200, not an error (§K.6)
    assert (r.stdout, r.stderr, r.exit_code) == ("out\n", "err\n", 3)


def test_cwd_and_envs_apply_to_foreground(capsule):
    # §B.2 exec: REQUIRED for foreground too (the SDK's git helpers rely on it).
    assert capsule.commands.run("pwd", cwd="/tmp").stdout == "/tmp\n"
    assert capsule.commands.run("echo $FOO", envs={"FOO": "bar"}).stdout == "bar\n"
    r = capsule.commands.run('echo "$A-$B"; pwd', envs={"A": "1", "B": "two words"}, cwd="/usr")
    assert r.stdout == "1-two words\n/usr\n"


def test_missing_cwd_is_an_error(capsule):
    # §B.2: a non-existent cwd should surface as 400 invalid_request.
    with pytest.raises(WrennError) as ei:
        capsule.commands.run("true", cwd="/definitely/not/here")
    assert ei.value.status_code == 400 and ei.value.code == "invalid_request"


def test_non_utf8_output(capsule, http):
    # §K.8: the server answers encoding "base64"; the SDK decodes with replacement.
    r = capsule.commands.run("printf '\\377\\376'")
    assert r.stdout == "\ufffd\ufffd" and r.exit_code == 0
    r = capsule.commands.run("printf 'a\\377b'; printf 'ok' >&2")
    assert r.stdout == "a\ufffdb" and r.stderr == "ok"
    # The wire format the SDK decodes (raw, to see `encoding`): both streams base64.
    raw = http.post(
        f"/v1/capsules/{capsule.capsule_id}/exec",
        json={"cmd": "/bin/sh", "args": ["-c", "printf '\\377'; printf e >&2"],
              "background": False},
    )
    assert raw.status_code == 200, raw.text
    body = raw.json()
    assert body["encoding"] == "base64"
    assert body["stdout"] == "/w==" and body["stderr"] == "ZQ=="
    assert body["sandbox_id"] == capsule.capsule_id and body["exit_code"] == 0
    ok = http.post(f"/v1/capsules/{capsule.capsule_id}/exec",
                   json={"cmd": "/bin/sh", "args": ["-c", "echo hi"], "background": False})
    assert ok.json()["encoding"] == "utf-8" and ok.json()["stdout"] == "hi\n"


def test_large_output(capsule):
    r = capsule.commands.run("head -c 1048576 /dev/zero | tr '\\0' a")
    assert len(r.stdout) == 1048576 and set(r.stdout) == {"a"}


@pytest.mark.timeout(60)
def test_timeout_returns_error_without_hanging(client, capsule):
    # §K.9: an error response within ~12 s (SDK HTTP timeout = timeout + 10 s); [R] 502
    # agent_error, [N] 504 timeout. A hang shows up here as httpx.ReadTimeout instead.
    marker = rand_name("sleeper")
    t0 = time.monotonic()
    with pytest.raises(WrennError) as ei:
        capsule.commands.run(f"sleep 60 # {marker}", timeout=2)
    assert time.monotonic() - t0 < 12
    assert ei.value.status_code in (502, 504), (ei.value.status_code, ei.value.code)
    assert client.capsules.get(capsule.capsule_id).status.value == "running"
    assert capsule.commands.run("echo still-ok").stdout == "still-ok\n"
    # Recommended by §K.9 and done by the agent: the timed-out process is killed.
    wait_until(
        lambda: marker not in capsule.commands.run("ps -eo args").stdout, 10,
        what="the timed-out process to be killed",
    )


def test_background_list_kill(capsule):
    h = capsule.commands.run("sleep 30", background=True, tag="t1")  # 202 (§K.10)
    assert isinstance(h, CommandHandle)
    assert isinstance(h.pid, int) and h.pid > 0
    assert h.tag == "t1" and h.capsule_id == capsule.capsule_id

    procs = {p.pid: p for p in capsule.commands.list()}
    assert h.pid in procs
    assert procs[h.pid].tag == "t1"
    assert procs[h.pid].cmd == "/bin/sh" and procs[h.pid].args == ["-c", "sleep 30"]

    assert capsule.commands.kill(h.pid) is None  # 204
    wait_until(lambda: h.pid not in [p.pid for p in capsule.commands.list()], 10,
               what="killed process to leave the list")
    with pytest.raises(WrennNotFoundError):
        capsule.commands.kill(h.pid)
    with pytest.raises(WrennNotFoundError):
        capsule.commands.kill(999_999)


def test_background_default_tag_cwd_envs(capsule):
    h = capsule.commands.run("echo \"$X $(pwd)\" > /tmp/bg-out; sleep 30", background=True,
                             envs={"X": "bg"}, cwd="/var")
    try:
        assert PROC_TAG_RE.match(h.tag), h.tag  # default tag proc-<8 hex> (§B.2)
        wait_until(lambda: capsule.commands.run("cat /tmp/bg-out").stdout == "bg /var\n", 10,
                   what="background process output file")
    finally:
        capsule.commands.kill(h.pid)


def test_exec_stream_events(capsule):
    events = list(capsule.commands.stream("echo a; echo b >&2"))  # §K.11
    assert isinstance(events[0], StreamStartEvent) and events[0].pid > 0
    assert isinstance(events[-1], StreamExitEvent) and events[-1].exit_code == 0
    middle = events[1:-1]
    assert "".join(e.data for e in middle if e.type == "stdout") == "a\n"
    assert "".join(e.data for e in middle if e.type == "stderr") == "b\n"
    assert all(e.type in ("stdout", "stderr") for e in middle)


def test_exec_stream_with_args_and_exit_code(capsule):
    events = list(capsule.commands.stream("/bin/echo", ["x", "y z"]))
    assert "".join(e.data for e in events if e.type == "stdout") == "x y z\n"
    events = list(capsule.commands.stream("echo partial; exit 7"))
    assert events[-1].type == "exit" and events[-1].exit_code == 7


def test_exec_stream_live_output(capsule):
    # Output arrives while the process runs, not only at the end.
    t0 = time.monotonic()
    first_data_at = None
    for ev in capsule.commands.stream("echo one; sleep 2; echo two"):
        if ev.type == "stdout" and first_data_at is None:
            first_data_at = time.monotonic() - t0
    assert first_data_at is not None and first_data_at < 1.8, first_data_at


def test_reattach_background_process(capsule):
    # §K.12, §C.2: start, then live stdout (earlier output is not replayed), then exit(0).
    h = capsule.commands.run("sleep 1; for i in 1 2 3; do echo $i; sleep 1; done",
                             background=True, tag="counter3")
    events = list(capsule.commands.connect(h.pid))
    assert isinstance(events[0], StreamStartEvent)
    assert events[0].pid == h.pid
    out = "".join(e.data for e in events if e.type == "stdout")
    assert out.endswith("3\n") and "2\n" in out, out
    assert isinstance(events[-1], StreamExitEvent) and events[-1].exit_code == 0


def test_reattach_unknown_process_reports_error(capsule):
    # §C.2: `error` message in-band (`failed to connect to process: ...`), then the end.
    events = list(capsule.commands.connect(999_999))
    assert events and isinstance(events[-1], StreamErrorEvent)
    assert not any(e.type == "exit" for e in events)


def test_exec_on_unknown_capsule_is_not_found(capsule):
    from wrenn.commands import Commands

    from helpers import random_id

    cmds = Commands(random_id(), capsule._client.http)
    with pytest.raises(WrennNotFoundError):
        cmds.run("true")
    with pytest.raises(WrennNotFoundError):
        cmds.list()
    # §C: pre-checks are reported in-band after the upgrade; a 404 before it is tolerated.
    try:
        evs = list(cmds.stream("true"))
    except httpx_ws.WebSocketUpgradeError as exc:
        assert exc.response.status_code == 404
    else:
        assert evs and evs[-1].type == "error" and not any(e.type == "exit" for e in evs)

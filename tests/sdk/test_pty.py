"""Terminals through the SDK: start, binary output, resize, reconnect by tag, exit, kill
(spec §C.3, §K.18). Uses the shared session capsule.

Note: `with capsule.pty() as t` only closes the WebSocket on exit; it does not kill the process
(the PTY session lives on, by design, for pty_connect). Tests kill what they start."""

from __future__ import annotations

import re

from wrenn import PtyEvent, PtyEventType

from helpers import PTY_TAG_RE, PtyReader, wait_until


def test_start_output_resize_exit(capsule):
    with capsule.pty(cols=80, rows=24) as t:
        r = PtyReader(t)
        first = r.next_event()
        assert isinstance(first, PtyEvent) and first.type == PtyEventType.started
        assert PTY_TAG_RE.match(first.tag), first.tag
        assert isinstance(first.pid, int) and first.pid > 0
        assert t.tag == first.tag and t.pid == first.pid

        t.write(b"echo pty-$((40+2))-ok\n")
        r.wait_output(b"pty-42-ok")
        outputs = [e for e in r.seen if e.type == PtyEventType.output]
        assert outputs and all(isinstance(e.data, bytes) for e in outputs)  # binary frames

        t.write(b"stty size\n")
        r.wait_output(re.compile(rb"\b24 80\b"))
        t.resize(120, 40)
        t.write(b"stty size\n")
        r.wait_output(re.compile(rb"\b40 120\b"))

        t.write(b"exit\n")
        ev = r.wait_type("exit")
        assert ev.exit_code == 0
        assert r.next_event(timeout=10) is None  # the iterator ends after exit


def test_reconnect_by_tag(capsule):
    with capsule.pty() as t:
        r = PtyReader(t)
        tag = r.wait_type("started").tag
        t.write(b"export MARK=kept-$((1+1))\n")
        t.write(b"echo set-done\n")
        r.wait_output(b"set-done")
    # Closing the socket detaches; the shell keeps running (§C.3).
    with capsule.pty_connect(tag) as t2:
        r2 = PtyReader(t2)
        started = r2.wait_type("started")  # re-attach begins with a started event
        assert started.tag == tag
        t2.write(b"echo reattach-$MARK\n")
        r2.wait_output(b"reattach-kept-2")
        t2.write(b"exit 3\n")
        assert r2.wait_type("exit").exit_code == 3


def test_connect_unknown_tag_is_an_error(capsule):
    with capsule.pty_connect("pty-00000000") as t:
        r = PtyReader(t)
        ev = r.next_event()
        assert ev is not None and ev.type == PtyEventType.error, r.seen


def test_kill(capsule):
    with capsule.pty(cmd="/bin/sleep", args=["600"]) as t:
        r = PtyReader(t)
        pid = r.wait_type("started").pid
        t.kill()
        r.wait_type("exit")
    wait_until(lambda: pid not in [p.pid for p in capsule.commands.list()], 10,
               what="killed PTY process to leave the process list")


def test_cmd_args_envs_cwd(capsule):
    with capsule.pty(cmd="/bin/sh", args=["-c", 'echo "v=$FOO"; pwd; tty'],
                     envs={"FOO": "bar"}, cwd="/tmp", cols=100, rows=30) as t:
        r = PtyReader(t)
        r.wait_type("exit")
        out = r.output.replace(b"\r\n", b"\n")
        assert b"v=bar\n" in out and b"/tmp\n" in out
        assert b"/dev/pts/" in out  # a real terminal


def test_binary_input_passthrough(capsule):
    # Raw bytes in both directions: a Ctrl-C reaches the foreground job.
    with capsule.pty() as t:
        r = PtyReader(t)
        r.wait_type("started")
        t.write(b"sleep 600\n")
        t.write(b"\x03")
        t.write(b"echo after-$((6*7))\n")
        r.wait_output(b"after-42")
        t.kill()
        r.wait_type("exit")

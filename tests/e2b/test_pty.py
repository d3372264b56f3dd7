"""sandbox.pty: Process.Start with a PTY, SendInput/StreamInput (pty), Update (resize),
SendSignal, Connect.

Shell arithmetic ($((6*7))) makes the expected output differ from the echoed input, so a
match proves the command ran, not just that the terminal echoed what was typed.
"""

import pytest
from e2b import CommandExitException, NotFoundException, PtySize, SandboxException

from helpers import PtyReader, wait_until

NO_SUCH_PID = 4_999_999


@pytest.fixture
def open_pty(sandbox, cleanup_pids):
    """Starts PTYs (bash -i -l) with a reader thread each; kills them after the test."""
    readers = []

    def start(rows=24, cols=80, **kwargs):
        handle = sandbox.pty.create(PtySize(rows=rows, cols=cols), timeout=60, **kwargs)
        cleanup_pids.append(handle.pid)
        reader = PtyReader(handle)
        readers.append(reader)
        return handle, reader

    yield start
    for reader in readers:
        try:
            sandbox.pty.kill(reader.handle.pid, request_timeout=5)
        except Exception:
            pass
        reader.join(5)


def test_pty_input_is_echoed_and_executed(sandbox, open_pty):
    handle, out = open_pty()
    assert handle.pid > 0
    sandbox.pty.send_stdin(handle.pid, b"echo pty-$((6*7))\n")
    out.wait_for(b"echo pty-$((6*7))")  # the terminal echoes what was typed
    out.wait_for(b"pty-42")  # and the shell ran it


def test_pty_is_a_terminal_with_user_cwd_env(sandbox, open_pty, user_scratch):
    handle, out = open_pty(user="user", cwd=str(user_scratch), envs={"WRENN_PTY": "yes"})
    sandbox.pty.send_stdin(
        handle.pid,
        b'printf "R=%s:%s:%s:%s\\n" "$(whoami)" "$WRENN_PTY" "$PWD" "$TERM"; '
        b"[ -t 0 ] && echo is-$((2*3))-tty\n",
    )
    out.wait_for(f"R=user:yes:{user_scratch}:xterm-256color".encode())
    out.wait_for(b"is-6-tty")


def test_pty_resize(sandbox, open_pty):
    handle, out = open_pty(rows=24, cols=80)
    sandbox.pty.send_stdin(handle.pid, b"stty size\n")
    seen = out.wait_for(b"24 80\r\n")
    sandbox.pty.resize(handle.pid, PtySize(rows=40, cols=120))
    sandbox.pty.send_stdin(handle.pid, b"stty size\n")
    out.wait_for(b"40 120\r\n", start=seen)


def test_pty_stream_input(sandbox, open_pty):
    handle, out = open_pty()
    sandbox.pty.stream_input(handle.pid, ["echo str", b"eam-$((3+4))", "\n"], timeout=30)
    out.wait_for(b"stream-7")


def test_pty_kill(sandbox, open_pty):
    handle, out = open_pty()
    sandbox.pty.send_stdin(handle.pid, b"echo ready-$((1+1))\n")
    out.wait_for(b"ready-2")
    assert sandbox.pty.kill(handle.pid) is True
    assert out.join(10), "PTY stream did not end after kill"
    assert isinstance(out.error, CommandExitException)
    assert out.error.exit_code == -1
    wait_until(
        lambda: handle.pid not in {p.pid for p in sandbox.commands.list()},
        what="killed PTY to leave the list",
    )


def test_pty_connect_and_exit_code(sandbox, open_pty):
    handle, first = open_pty()
    attached = sandbox.pty.connect(handle.pid, timeout=60)
    assert attached.pid == handle.pid
    second = PtyReader(attached)
    sandbox.pty.send_stdin(handle.pid, b"echo via-$((40+2))-connect\n")
    first.wait_for(b"via-42-connect")
    second.wait_for(b"via-42-connect")
    sandbox.pty.send_stdin(handle.pid, b"exit 7\n")
    assert first.join(10) and second.join(10), "PTY streams did not end after exit"
    for reader in (first, second):
        assert isinstance(reader.error, CommandExitException)
        assert reader.error.exit_code == 7


def test_pty_input_to_non_pty_process_is_rejected(sandbox, cleanup_pids):
    handle = sandbox.commands.run("exec sleep 30", background=True, stdin=True)
    cleanup_pids.append(handle.pid)
    with pytest.raises(SandboxException) as info:
        sandbox.pty.send_stdin(handle.pid, b"x")
    assert "precondition" in str(info.value).lower()


def test_pty_unknown_pid_raises_not_found(sandbox):
    with pytest.raises(NotFoundException) as resize:
        sandbox.pty.resize(NO_SUCH_PID, PtySize(rows=10, cols=10))
    assert str(NO_SUCH_PID) in str(resize.value)  # envd's own error, not a bare 404
    with pytest.raises(NotFoundException) as send:
        sandbox.pty.send_stdin(NO_SUCH_PID, b"x")
    assert str(NO_SUCH_PID) in str(send.value)

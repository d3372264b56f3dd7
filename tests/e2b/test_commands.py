"""sandbox.commands: Process.Start/Connect/List/SendInput/StreamInput/CloseStdin/SendSignal."""

import pwd
import time
import uuid

import pytest
from e2b import (
    AuthenticationException,
    CommandExitException,
    InvalidArgumentException,
    NotFoundException,
    SandboxException,
    TimeoutException,
)

from helpers import wait_until

# A pid no process can have (above the kernel's pid_max limit of 2^22).
NO_SUCH_PID = 4_999_999


def running_pids(sandbox) -> set[int]:
    return {p.pid for p in sandbox.commands.list()}


def test_run_echo_returns(sandbox):
    # The old Wrenn envd never ended this stream: the call must return promptly.
    started = time.monotonic()
    result = sandbox.commands.run("echo hello-wrenn", timeout=15)
    elapsed = time.monotonic() - started
    assert result.stdout == "hello-wrenn\n"
    assert result.stderr == ""
    assert result.exit_code == 0
    assert result.error is None
    assert elapsed < 5, f"commands.run('echo') took {elapsed:.1f}s"


def test_run_separates_stdout_and_stderr_callbacks(sandbox):
    out, err = [], []
    result = sandbox.commands.run(
        "echo to-out; echo to-err >&2; echo more-out",
        on_stdout=out.append,
        on_stderr=err.append,
        timeout=15,
    )
    assert "".join(out) == "to-out\nmore-out\n" == result.stdout
    assert "".join(err) == "to-err\n" == result.stderr


def test_nonzero_exit_raises_command_exit_exception(sandbox):
    with pytest.raises(CommandExitException) as info:
        sandbox.commands.run("echo partial; echo oops >&2; exit 3", timeout=15)
    assert info.value.exit_code == 3
    assert info.value.stderr == "oops\n"
    assert info.value.stdout == "partial\n"


def test_utf8_output_intact(sandbox):
    result = sandbox.commands.run("printf 'h\\xc3\\xa9llo \\xe2\\x9c\\x93'", timeout=15)
    assert result.stdout == "héllo ✓"


def test_background_then_wait(sandbox, cleanup_pids):
    handle = sandbox.commands.run("sleep 0.5; echo done", background=True, timeout=30)
    cleanup_pids.append(handle.pid)
    assert handle.pid > 0
    result = handle.wait()
    assert result.exit_code == 0
    assert result.stdout == "done\n"


def test_stdin_send_then_close(sandbox, cleanup_pids):
    handle = sandbox.commands.run("cat", background=True, stdin=True, timeout=30)
    cleanup_pids.append(handle.pid)
    handle.send_stdin("line1\n")
    handle.send_stdin(b"line2\x00\xff\n")
    handle.close_stdin()  # EOF: cat exits
    result = handle.wait()
    assert result.exit_code == 0
    assert result.stdout == "line1\nline2\x00\ufffd\n"  # the SDK decodes stdout as UTF-8


def test_stream_input_keeps_order(sandbox, cleanup_pids):
    handle = sandbox.commands.run("cat", background=True, stdin=True, timeout=30)
    cleanup_pids.append(handle.pid)
    chunks = [f"chunk{i};" for i in range(50)]
    sandbox.commands.stream_input(handle.pid, chunks, timeout=30)
    sandbox.commands.close_stdin(handle.pid)
    assert handle.wait().stdout == "".join(chunks)


def test_stdin_closed_by_default(sandbox):
    # Without stdin=True the command gets no input stream and `cat` ends at once.
    result = sandbox.commands.run("cat; echo after-cat", timeout=15)
    assert result.stdout == "after-cat\n"


def test_kill_running_command(sandbox, cleanup_pids):
    handle = sandbox.commands.run("exec sleep 60", background=True, timeout=30)
    cleanup_pids.append(handle.pid)
    assert handle.kill() is True
    with pytest.raises(CommandExitException) as info:
        handle.wait()
    # Killed by a signal: envd reports exited=false with exit code -1.
    assert info.value.exit_code == -1
    wait_until(lambda: handle.pid not in running_pids(sandbox), what="killed pid to leave the list")
    # Killing a pid envd does not know is "not found", which kill() reports as False.
    assert sandbox.commands.kill(NO_SUCH_PID) is False


def test_list_shows_running_background_command(sandbox, scratch, cleanup_pids):
    mark = uuid.uuid4().hex
    handle = sandbox.commands.run(
        "exec sleep 30", background=True, envs={"WRENN_MARK": mark}, cwd=str(scratch)
    )
    cleanup_pids.append(handle.pid)
    listed = {p.pid: p for p in sandbox.commands.list()}
    assert handle.pid in listed
    info = listed[handle.pid]
    assert info.cmd == "/bin/bash"
    assert info.args == ["-l", "-c", "exec sleep 30"]
    assert info.envs.get("WRENN_MARK") == mark
    assert info.cwd == str(scratch)
    handle.kill()
    wait_until(lambda: handle.pid not in running_pids(sandbox), what="pid to leave the list")


def test_connect_to_running_command(sandbox, cleanup_pids):
    handle = sandbox.commands.run(
        "sleep 1; for i in 1 2 3; do echo tick$i; sleep 0.2; done; exit 5",
        background=True,
        timeout=30,
    )
    cleanup_pids.append(handle.pid)
    attached = sandbox.commands.connect(handle.pid, timeout=30)
    assert attached.pid == handle.pid
    with pytest.raises(CommandExitException) as info:
        attached.wait()
    assert info.value.exit_code == 5
    assert info.value.stdout.endswith("tick1\ntick2\ntick3\n")
    # The original stream sees the same process end.
    with pytest.raises(CommandExitException) as original:
        handle.wait()
    assert original.value.stdout == "tick1\ntick2\ntick3\n"


def test_disconnect_leaves_command_running_and_connect_after_exit(sandbox, scratch, cleanup_pids):
    out = scratch / "survived"
    handle = sandbox.commands.run(
        f"sleep 1; echo alive > {out}; exit 4", background=True, timeout=30
    )
    cleanup_pids.append(handle.pid)
    handle.disconnect()  # closes the RPC stream only
    wait_until(out.exists, timeout=15, what="the disconnected command to finish its work")
    assert out.read_text() == "alive\n"
    wait_until(lambda: handle.pid not in running_pids(sandbox), what="command to exit")
    # Re-attaching to a finished command yields its cached end event.
    with pytest.raises(CommandExitException) as info:
        sandbox.commands.connect(handle.pid, timeout=15).wait()
    assert info.value.exit_code == 4


def test_connect_unknown_pid_raises_not_found(sandbox):
    with pytest.raises(NotFoundException) as info:
        sandbox.commands.connect(NO_SUCH_PID, timeout=15)
    assert str(NO_SUCH_PID) in str(info.value)  # envd's own error, not a bare 404


def test_env_vars(sandbox):
    result = sandbox.commands.run(
        'echo "$FOO|$BAR|$USER|$LOGNAME|$HOME"', envs={"FOO": "x", "BAR": "y z"}, timeout=15
    )
    assert result.stdout == "x|y z|root|root|/root\n"


def test_cwd(sandbox, scratch):
    assert sandbox.commands.run("pwd", cwd=str(scratch), timeout=15).stdout == f"{scratch}\n"
    # No cwd: the user's home.
    assert sandbox.commands.run("pwd", timeout=15).stdout == "/root\n"


def test_relative_cwd_is_under_home(sandbox, user_scratch):
    result = sandbox.commands.run("pwd", cwd=user_scratch.name, user="user", timeout=15)
    assert result.stdout == f"{user_scratch}\n"


def test_missing_cwd_is_rejected(sandbox, scratch):
    with pytest.raises(InvalidArgumentException) as info:
        sandbox.commands.run("pwd", cwd=str(scratch / "missing"), timeout=15)
    assert str(scratch / "missing") in str(info.value)


@pytest.mark.parametrize("user", [None, "root", "user"], ids=["default", "root", "user"])
def test_user(sandbox, user):
    expected = user or "root"
    entry = pwd.getpwnam(expected)
    result = sandbox.commands.run('whoami; id -u; echo "$HOME"; pwd', user=user, timeout=15)
    assert result.stdout.split("\n") == [expected, str(entry.pw_uid), entry.pw_dir, entry.pw_dir, ""]


def test_unknown_user_is_rejected(sandbox):
    with pytest.raises((SandboxException, AuthenticationException)) as info:
        sandbox.commands.run("true", user="no-such-user-e2e", timeout=15)
    assert "no-such-user-e2e" in str(info.value)


def test_large_output_intact(sandbox):
    # ~4.8 MB on stdout and ~0.6 MB on stderr at the same time, checked byte for byte.
    result = sandbox.commands.run("seq 1 700000; seq 1 100000 >&2", timeout=60)
    assert len(result.stdout) == 4_788_895
    assert result.stdout == "".join(f"{i}\n" for i in range(1, 700_001))
    assert result.stderr == "".join(f"{i}\n" for i in range(1, 100_001))


def test_timeout_ends_the_command(sandbox, cleanup_pids):
    # As on E2B, `timeout` (sent as Connect-Timeout-Ms) bounds the command's life too.
    started = time.monotonic()
    handle = sandbox.commands.run("exec sleep 30", background=True, timeout=2)
    cleanup_pids.append(handle.pid)
    assert handle.pid in running_pids(sandbox)
    with pytest.raises(TimeoutException):
        handle.wait()
    assert time.monotonic() - started < 10
    wait_until(
        lambda: handle.pid not in running_pids(sandbox), timeout=5, what="the command to be ended"
    )

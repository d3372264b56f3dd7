"""Small helpers shared by the e2b suite's test modules."""

import threading
import time
from typing import Callable, Optional, TypeVar

from e2b import CommandHandle

T = TypeVar("T")


def wait_until(
    check: Callable[[], T], timeout: float = 10, interval: float = 0.05, what: str = ""
) -> T:
    """Polls `check` until it returns something truthy; fails the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
        time.sleep(interval)


class PtyReader:
    """Consumes a PTY (or command) handle on a thread, collecting its output bytes.

    `on_pty` is the SDK's on_data callback for PTYs; the thread ends when the stream
    ends (process exit, kill, or stream error) and keeps what ended it.
    """

    def __init__(self, handle: CommandHandle):
        self.handle = handle
        self._buf = bytearray()
        self._cond = threading.Condition()
        self.result = None
        self.error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _on_data(self, chunk: bytes) -> None:
        with self._cond:
            self._buf.extend(chunk)
            self._cond.notify_all()

    def _run(self) -> None:
        try:
            self.result = self.handle.wait(on_pty=self._on_data)
        except BaseException as e:  # noqa: BLE001 - kept for the test to inspect
            self.error = e
        finally:
            with self._cond:
                self._cond.notify_all()

    @property
    def output(self) -> bytes:
        with self._cond:
            return bytes(self._buf)

    def wait_for(self, needle: bytes, timeout: float = 10, start: int = 0) -> int:
        """Waits until `needle` appears in the output after offset `start`; returns the
        offset just past it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                i = self._buf.find(needle, start)
                if i >= 0:
                    return i + len(needle)
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    tail = bytes(self._buf[-400:])
                    raise AssertionError(
                        f"{needle!r} not seen in PTY output within {timeout}s "
                        f"(stream ended: {not self._thread.is_alive()}, error: {self.error!r}); "
                        f"last output: {tail!r}"
                    )
                self._cond.wait(min(left, 0.2))

    def join(self, timeout: float = 10) -> bool:
        """Waits for the stream to end; returns whether it did."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

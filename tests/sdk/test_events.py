"""The SSE event stream through the SDK: connected frame, capsule.create / pause / destroy
events with actor and resource, keepalive comments, team scoping (spec §B.5, §K.24)."""

from __future__ import annotations

import queue
import threading
import time

import pytest
from wrenn import WrennAuthenticationError, WrennClient
from wrenn.models import SSEEvent

from helpers import assert_aware, boot_capsule, destroy_quietly

ACTION_EVENTS = {"capsule.create", "capsule.pause", "capsule.resume", "capsule.destroy"}


class Collector:
    """Runs client.events.stream() on a thread (it blocks) and queues what it yields."""

    def __init__(self, api_key: str, base_url: str):
        self.client = WrennClient(api_key=api_key, base_url=base_url)
        self.events: queue.Queue = queue.Queue()
        self.all: list[SSEEvent] = []
        self.error: BaseException | None = None
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        try:
            for ev in self.client.events.stream():
                self.events.put(ev)
        except BaseException as exc:  # noqa: BLE001 - includes parse errors of bad frames
            self.error = exc
            self.events.put(exc)

    def next(self, timeout: float) -> SSEEvent | None:
        try:
            ev = self.events.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(ev, BaseException):
            raise ev
        self.all.append(ev)
        return ev

    def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.next(left)

    def wait_for(self, kind: str, resource_id: str, timeout: float) -> SSEEvent:
        for ev in self.all:
            if ev.event and ev.event.value == kind and ev.resource and ev.resource.id == resource_id:
                return ev
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            ev = self.next(left)
            if ev and ev.event and ev.event.value == kind and ev.resource \
                    and ev.resource.id == resource_id:
                return ev
        seen = [(e.event, e.resource.id if e.resource else None) for e in self.all]
        pytest.fail(f"no {kind} event for {resource_id} within {timeout}s; saw {seen}")

    def close(self):
        try:
            self.client.close()
        except Exception:  # noqa: BLE001
            pass


def check_action(ev: SSEEvent, capsule_id: str) -> None:
    assert ev.resource.id == capsule_id
    assert ev.resource.type == "sandbox"
    assert ev.actor is not None and ev.actor.type.value == "api_key"  # we acted with a key
    assert ev.outcome is not None and ev.outcome.value == "success"
    assert_aware(ev.timestamp, "timestamp")
    if ev.sandbox is not None:  # hydrated Capsule, null if the lookup failed
        assert ev.sandbox.id == capsule_id


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_lifecycle_events(server, second_team):
    mine = Collector(server.api_key, server.base_url)
    theirs = Collector(second_team.api_key, server.base_url)
    c = None
    try:
        first = mine.next(15)
        assert first is not None, "no `connected` frame within 15 s"
        # §B.5 allows `{"message":"connected"}` alone (→ event None in the SDK); the SDK's enum
        # has "connected" for servers that also send "event" (SDK-CALLS.md §6).
        assert first.event is None or first.event.value == "connected", first
        assert first.resource is None
        t_connected = time.monotonic()
        assert theirs.next(15) is not None

        c = boot_capsule()
        check_action(mine.wait_for("capsule.create", c.capsule_id, 30), c.capsule_id)
        c.pause(wait=True)
        check_action(mine.wait_for("capsule.pause", c.capsule_id, 30), c.capsule_id)
        c.resume(wait=True)
        check_action(mine.wait_for("capsule.resume", c.capsule_id, 30), c.capsule_id)

        # Hold the stream past one keepalive (every 30 s, §B.5): comments must not break it.
        left = 35 - (time.monotonic() - t_connected)
        if left > 0:
            mine.drain(left)
        c.destroy(wait=True)
        check_action(mine.wait_for("capsule.destroy", c.capsule_id, 30), c.capsule_id)
        assert mine.error is None

        kinds = {e.event.value for e in mine.all if e.event is not None}
        assert kinds <= {"connected", "capsule.state.changed", "template.snapshot.create",
                         "template.snapshot.delete", "host.up", "host.down"} | ACTION_EVENTS
        for e in mine.all:
            if e.event is not None and e.event.value == "capsule.state.changed":
                assert e.outcome is None  # §B.5: no outcome on state changes

        # Team scoping: the other team saw nothing about our capsule.
        theirs.drain(1)
        assert theirs.error is None
        assert not [e for e in theirs.all if e.resource and e.resource.id == c.capsule_id]
    finally:
        mine.close()
        theirs.close()
        if c is not None:
            destroy_quietly(c)


def test_stream_with_bad_key_is_authentication_error(server):
    with WrennClient(api_key="wrn_" + "0" * 32, base_url=server.base_url) as bad:
        with pytest.raises(WrennAuthenticationError):
            next(iter(bad.events.stream()))

"""Capsule lifecycle through the SDK: create (wait) / get / list / destroy, defaults, the
auto-pause TTL and ping, and the metrics / stats / usage shapes (spec §B.2, §K 1, 2, 4, 21, 23)."""

from __future__ import annotations

import time
from datetime import date, timedelta

import pytest
from wrenn import Capsule, WrennConflictError, WrennNotFoundError, WrennValidationError
from wrenn.models import Status

from helpers import (
    CAPSULE_ID_RE,
    TEMPLATE,
    assert_aware,
    boot_capsule,
    destroy_quietly,
    random_id,
    status_of,
    wait_until,
)


def test_create_with_defaults_then_wait_running(client):
    # §K.1: the bare call uses the server's default template, which must exist on a fresh
    # `wrenn up`; the answer is 201 (running) or 202 (starting), both fine for the SDK.
    info = client.capsules.create()
    try:
        assert CAPSULE_ID_RE.match(info.id), info.id
        assert info.status in (Status.starting, Status.running, Status.pending), info.status
        assert isinstance(info.template, str) and info.template
        # Capsule.connect on a starting capsule waits for `running` (§B.2 resume notes).
        c = Capsule.connect(info.id)
        assert c.is_running()
        assert c.commands.run("echo up").stdout == "up\n"
        c._client.close()
    finally:
        client.capsules.destroy(info.id)


def test_create_wait_get_list_destroy(client):
    t0 = time.monotonic()
    c = boot_capsule(vcpus=1, memory_mb=512)
    try:
        assert time.monotonic() - t0 < 40, "Capsule(wait=True) took longer than its 30 s wait"
        assert CAPSULE_ID_RE.match(c.capsule_id)
        assert c.info.status == Status.running

        # §K.2: GET returns the same id/template/vcpus/memory_mb, aware timestamps.
        got = client.capsules.get(c.capsule_id)
        assert got.id == c.capsule_id
        assert got.template == TEMPLATE
        assert got.vcpus == 1 and got.memory_mb == 512
        assert got.timeout_sec == 0  # no TTL asked for: never auto-pause (§B.2)
        assert got.status == Status.running
        assert_aware(got.created_at, "created_at")
        assert_aware(got.last_updated, "last_updated")
        assert_aware(got.started_at, "started_at", optional=True)
        assert_aware(got.last_active_at, "last_active_at", optional=True)
        if got.metadata is not None:
            assert all(isinstance(v, str) for v in got.metadata.values())

        # §K.4: list holds it, and never stopped/error capsules.
        listed = client.capsules.list()
        assert c.capsule_id in [x.id for x in listed]
        assert all(x.status not in (Status.stopped, Status.error) for x in listed)
        assert Capsule.list()  # the classmethod reads WRENN_API_KEY / WRENN_BASE_URL

        c.destroy(wait=True)  # polls GET until stopped or 404 (§B.2 destroy)
        assert status_of(client, c.capsule_id) in ("stopped", "missing")
        assert c.capsule_id not in [x.id for x in client.capsules.list()]
        # Destroy is idempotent (the SDK retries DELETE on transport errors): §B.2, §K.25.
        client.capsules.destroy(c.capsule_id)
    finally:
        destroy_quietly(c)


def test_context_manager_destroys_on_exit(client):
    with boot_capsule() as c:
        cid = c.capsule_id
        assert c.commands.run("true").exit_code == 0
    # __exit__ sends DELETE without waiting; the capsule must end up stopped or gone.
    wait_until(lambda: status_of(client, cid) in ("stopped", "missing"), 30,
               what="capsule stopped after the with block")


def test_get_unknown_capsule_is_not_found(client):
    with pytest.raises(WrennNotFoundError) as ei:
        client.capsules.get(random_id())
    assert ei.value.code == "not_found"
    assert ei.value.status_code == 404
    with pytest.raises(WrennNotFoundError):
        Capsule.connect(random_id())
    with pytest.raises(WrennNotFoundError):
        client.capsules.destroy(random_id())
    with pytest.raises(WrennNotFoundError):
        client.capsules.pause(random_id())


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_idle_capsule_auto_pauses_pinged_one_stays_running(client):
    # §K.21, §H: timeout_sec > 0 auto-pauses after that much inactivity; 1..59 is clamped to 60
    # (§B.2); ping resets the timer and answers 204 (SDK returns None).
    idle = boot_capsule(timeout=30)
    t_idle = time.monotonic()
    busy = boot_capsule(timeout=60)
    try:
        assert idle.get_info().timeout_sec == 60, "timeout_sec 30 must be clamped to 60"
        assert busy.get_info().timeout_sec == 60
        paused_after = None
        next_ping = 0.0
        while time.monotonic() - t_idle < 110:
            now = time.monotonic()
            if now >= next_ping:
                assert busy.ping() is None
                next_ping = now + 20
            if paused_after is None and status_of(client, idle.capsule_id) == "paused":
                paused_after = now - t_idle
            if paused_after is not None and now - t_idle > 85:
                break
            time.sleep(2)
        assert paused_after is not None, "idle capsule (TTL 60 s) was not auto-paused in 110 s"
        assert 50 <= paused_after <= 80, f"auto-paused after {paused_after:.0f}s, want ~60-75"
        assert status_of(client, busy.capsule_id) == "running", "pinged capsule was paused"
        # Ping needs a running capsule (§B.2).
        with pytest.raises(WrennConflictError):
            client.capsules.ping(idle.capsule_id)
    finally:
        destroy_quietly(idle)
        destroy_quietly(busy)


# ── metrics / stats / usage (§B.2, §K.23) ────────────────────────────────────────────────


def test_metrics_shape(client, capsule):
    def points():
        m = client.capsules.metrics(capsule.capsule_id, range="10m")
        return m if m.points else None

    m = wait_until(points, 20, 1, what="metric points for a running capsule")
    assert m.sandbox_id == capsule.capsule_id
    assert m.range.value == "10m"
    for p in m.points:
        assert isinstance(p.timestamp_unix, int) and p.timestamp_unix > 1_600_000_000
        assert isinstance(p.cpu_pct, float) and 0 <= p.cpu_pct <= 100
        assert isinstance(p.mem_bytes, int) and p.mem_bytes >= 0
        assert isinstance(p.disk_bytes, int) and p.disk_bytes >= 0
    assert abs(m.points[-1].timestamp_unix - time.time()) < 120
    # Default range is 10m; every documented range is accepted.
    assert client.capsules.metrics(capsule.capsule_id).range.value == "10m"
    for r in ("5m", "1h", "2h", "6h", "12h", "24h"):
        assert client.capsules.metrics(capsule.capsule_id, range=r).range.value == r


def test_metrics_bad_range_and_unknown_capsule(client, capsule):
    with pytest.raises(WrennValidationError) as ei:
        client.capsules.metrics(capsule.capsule_id, range="7m")
    assert ei.value.code == "invalid_request" and ei.value.status_code == 400
    with pytest.raises(WrennNotFoundError):
        client.capsules.metrics(random_id())


def test_stats_shape(client, capsule):
    s = client.capsules.stats()
    assert s.range.value == "1h"  # server default
    assert isinstance(s.current.running_count, int) and s.current.running_count >= 1
    assert isinstance(s.current.vcpus_reserved, int) and s.current.vcpus_reserved >= 1
    assert isinstance(s.current.memory_mb_reserved, int) and s.current.memory_mb_reserved >= 1
    assert isinstance(s.peaks.running_count, int)
    ser = s.series
    assert ser is not None and isinstance(ser.labels, list)
    assert len(ser.labels) == len(ser.running) == len(ser.vcpus) == len(ser.memory_mb)
    for label in ser.labels:
        assert_aware(label, "series.labels[]")
    for r in ("5m", "6h", "24h", "30d"):
        assert client.capsules.stats(range=r).range.value == r
    with pytest.raises(WrennValidationError):
        client.capsules.stats(range="10m")  # not a stats range (§B.2)


def test_usage_shape(client):
    u = client.capsules.usage()
    today = date.today()
    assert isinstance(u.from_, date) and isinstance(u.to, date)
    assert u.from_ <= u.to
    assert abs((u.to - today).days) <= 1  # default: today (UTC)
    assert isinstance(u.points, list)
    for p in u.points:
        assert isinstance(p.date, date)
        assert isinstance(p.cpu_minutes, float) and p.cpu_minutes >= 0
        assert isinstance(p.ram_mb_minutes, float) and p.ram_mb_minutes >= 0

    week = client.capsules.usage(from_=today - timedelta(days=7), to=today)
    assert week.from_ == today - timedelta(days=7) and week.to == today
    with pytest.raises(WrennValidationError):
        client.capsules.usage(from_=today, to=today - timedelta(days=1))  # from > to
    with pytest.raises(WrennValidationError):
        client.capsules.usage(from_=today - timedelta(days=120), to=today)  # > 92 days
    with pytest.raises(WrennValidationError):
        client.capsules.usage(from_="yesterday")
